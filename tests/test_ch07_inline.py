"""Chapter 07 teaches the decoder layer with cross-attention inline; it must equal the package's layer
(itself proven equal to torch's nn.TransformerDecoderLayer in test_captioning.py)."""

import pytest
import torch
from notebook_code import inline_namespace
from torch import nn

from course_utils.vision import cross_attention
from course_utils.layers.attention import causal_mask


@pytest.fixture(scope="module")
def inline():
    return inline_namespace("07_image_captioning.ipynb")


def test_inline_defines_the_taught_layer(inline):
    assert callable(inline.get("DecoderLayerWithCrossAttention"))


@pytest.mark.parametrize("norm_first", [False, True])
def test_inline_layer_equals_package_and_torch(inline, norm_first):
    torch.manual_seed(3)
    reference = nn.TransformerDecoderLayer(24, 3, 48, dropout=0.0, batch_first=True, norm_first=norm_first).eval()
    package = cross_attention.CrossAttentionDecoderLayer.from_torch(reference).eval()
    ours = inline["DecoderLayerWithCrossAttention"](24, 3, 48, norm_first=norm_first).eval()
    missing, unexpected = ours.load_state_dict(package.state_dict(), strict=False)
    assert not missing and not unexpected
    x, memory = torch.randn(2, 5, 24), torch.randn(2, 4, 24)
    real = torch.tensor([[True] * 4, [True, True, False, False]])
    expected = reference(x, memory, tgt_mask=~causal_mask(5), memory_key_padding_mask=~real)
    got = ours(x, memory, tgt_mask=causal_mask(5), memory_key_padding_mask=real)
    torch.testing.assert_close(got, package(x, memory, tgt_mask=causal_mask(5), memory_key_padding_mask=real))
    assert (got - expected).abs().max().item() < 1e-5
