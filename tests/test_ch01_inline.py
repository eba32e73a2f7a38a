"""Chapter 01 teaches attention and the masks inline; they must equal the package and torch."""

import pytest
import torch
import torch.nn.functional as F

from course_utils.layers import attention
from notebook_code import inline_namespace


@pytest.fixture(scope="module")
def inline():
    return inline_namespace("01_attention_math.ipynb")


def _random_qkv(generator, batch=2, heads=3, l_q=5, l_k=7, d_k=8, d_v=4):
    return (
        torch.randn(batch, heads, l_q, d_k, generator=generator),
        torch.randn(batch, heads, l_k, d_k, generator=generator),
        torch.randn(batch, heads, l_k, d_v, generator=generator),
    )


def test_inline_defines_the_taught_functions(inline):
    for name in ("scaled_dot_product_attention", "causal_mask", "padding_mask"):
        assert callable(inline.get(name)), f"chapter 01 should define {name} in a cell tagged inline"


@pytest.mark.parametrize("length", [1, 2, 5])
def test_inline_causal_mask_equals_package(inline, length):
    got = inline["causal_mask"](length)
    assert got.dtype == torch.bool
    assert torch.equal(got, attention.causal_mask(length))
    assert torch.equal(got, torch.ones(length, length).tril().bool())  # independent of both


@pytest.mark.parametrize("lengths, max_len", [([3, 1, 4], None), ([2, 2], 5), ([1], 1)])
def test_inline_padding_mask_equals_package(inline, lengths, max_len):
    got = inline["padding_mask"](lengths, max_len)
    assert torch.equal(got, attention.padding_mask(lengths, max_len))
    width = max_len or max(lengths)
    want = torch.tensor([[j < n for j in range(width)] for n in lengths])[:, None, None, :]
    assert torch.equal(got, want)


def _masks(generator, l_q, l_k):
    lengths = torch.randint(1, l_k + 1, (2,), generator=generator)
    padding = attention.padding_mask(lengths, max_len=l_k)  # (2, 1, 1, L_k)
    causal = torch.ones(l_q, l_k, dtype=torch.bool).tril(diagonal=l_k - l_q)
    random = torch.rand(2, 3, l_q, l_k, generator=generator) > 0.5  # may leave rows empty
    random[0, 0, 1] = False  # one surely empty row
    return {"none": None, "padding": padding, "causal": causal, "both": causal & padding, "random": random}


@pytest.mark.parametrize("seed", range(4))
def test_inline_attention_equals_package_and_torch(inline, seed):
    generator = torch.Generator().manual_seed(seed)
    l_q, l_k = 5, 7
    q, k, v = _random_qkv(generator, l_q=l_q, l_k=l_k)
    for name, mask in _masks(generator, l_q, l_k).items():
        out, weights = inline["scaled_dot_product_attention"](q, k, v, mask=mask)
        package_out, package_weights = attention.scaled_dot_product_attention(q, k, v, mask=mask)
        torch_out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        has_key = torch.ones(2, 3, l_q, dtype=torch.bool) if mask is None else mask.any(dim=-1).expand(2, 3, l_q)
        torch.testing.assert_close(
            out[has_key], torch_out[has_key], atol=1e-6, rtol=1e-5, msg=f"inline vs torch, mask {name}"
        )
        assert (out[~has_key] == 0).all(), f"a fully masked row must give zeros, mask {name}"
        # torch's SDPA gives zeros there from 2.5 on (release notes of 2.5.0), NaN before
        empty = torch_out[~has_key]
        assert (empty == 0).all() if torch.__version__ >= "2.5" else torch.isnan(empty).all()
        torch.testing.assert_close(out, package_out, atol=1e-6, rtol=1e-5, msg=f"inline vs package, mask {name}")
        torch.testing.assert_close(weights, package_weights, atol=1e-6, rtol=1e-5)
        assert not torch.isnan(weights).any(), f"NaN weights with mask {name}"


def test_inline_attention_weights_match_a_softmax_written_out(inline):
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    v = torch.eye(3)
    _, weights = inline["scaled_dot_product_attention"](q, k, v)
    e = torch.tensor([2**-0.5, 0.0, 2**-0.5]).exp()  # query 0's scores 1, 0, 1 divided by sqrt(2)
    torch.testing.assert_close(weights[0], e / e.sum())


def test_inline_attention_cross_attention_shapes_and_values(inline):
    """Queries from one sequence (L_q=3), keys and values from another (L_k=6, d_v=5 != d_k=4)."""
    generator = torch.Generator().manual_seed(11)
    q = torch.randn(2, 3, 4, generator=generator)
    k, v = torch.randn(2, 6, 4, generator=generator), torch.randn(2, 6, 5, generator=generator)
    source_padding = attention.padding_mask([6, 2], max_len=6)[:, 0]  # (2, 1, 6)
    out, weights = inline["scaled_dot_product_attention"](q, k, v, mask=source_padding)
    assert out.shape == (2, 3, 5) and weights.shape == (2, 3, 6)
    torch.testing.assert_close(
        out, F.scaled_dot_product_attention(q, k, v, attn_mask=source_padding), atol=1e-6, rtol=1e-5
    )
    assert (weights[1, :, 2:] == 0).all()
