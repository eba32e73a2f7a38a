"""Chapter 02 teaches multi-head attention, the feed-forward network, the encoder layer and the
sinusoidal table inline; with the same weights they must equal the package's copies and torch's
own modules (torch.nn.MultiheadAttention, torch.nn.TransformerEncoderLayer), under masks."""

from __future__ import annotations

import math

import pytest
import torch
from notebook_code import inline_namespace
from torch import nn

from course_utils.layers import attention, transformer

D_MODEL, HEADS, D_FF, LENGTH = 16, 4, 32, 6
LENGTHS = torch.tensor([6, 4, 1])  # real tokens per sequence; the rest is padding


@pytest.fixture(scope="module")
def inline():
    return inline_namespace("02_transformer_from_scratch.ipynb")


def masks(kind: str):
    """(ours: True = may attend) and (torch: True = not allowed) for the attention and the key padding."""
    real = torch.arange(LENGTH)[None, :] < LENGTHS[:, None]
    causal = torch.ones(LENGTH, LENGTH, dtype=torch.bool).tril()
    attn = causal if kind in ("causal", "both") else None
    keys = real if kind in ("padding", "both") else None

    def flip(m):
        return None if m is None else ~m

    return (attn, keys), (flip(attn), flip(keys))


KINDS = ["none", "causal", "padding", "both"]


def test_inline_defines_the_taught_pieces(inline):
    for name in (
        "MultiHeadAttention",
        "FeedForward",
        "TransformerEncoderLayer",
        "sinusoidal_positions",
        "best_position_blind_guess",
        "rope_cos_sin",
        "rotate_half",
        "apply_rope",
    ):
        assert name in inline, f"chapter 02 should define {name} in a cell tagged inline"


# ----------------------------------------------------------------------------- multi-head attention


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(3))
def test_inline_attention_equals_torch_after_from_torch(inline, kind, seed):
    torch.manual_seed(seed)
    theirs = nn.MultiheadAttention(D_MODEL, HEADS, batch_first=True).eval()
    ours = inline["MultiHeadAttention"].from_torch(theirs).eval()
    x = torch.randn(3, LENGTH, D_MODEL)
    (attn, keys), (torch_attn, torch_keys) = masks(kind)
    out, weights = ours(x, x, x, mask=attn, key_padding_mask=keys)
    want_out, want_weights = theirs(
        x, x, x, attn_mask=torch_attn, key_padding_mask=torch_keys, need_weights=True, average_attn_weights=False
    )
    assert torch.allclose(out, want_out, atol=1e-5)
    assert torch.allclose(weights, want_weights, atol=1e-6)


def test_inline_attention_cross_attention_equals_torch(inline):
    """Queries from one sequence, keys and values from another (different lengths)."""
    torch.manual_seed(7)
    theirs = nn.MultiheadAttention(D_MODEL, HEADS, batch_first=True).eval()
    ours = inline["MultiHeadAttention"].from_torch(theirs).eval()
    query, memory = torch.randn(2, 3, D_MODEL), torch.randn(2, 5, D_MODEL)
    real = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    out, _ = ours(query, memory, memory, key_padding_mask=real)
    want, _ = theirs(query, memory, memory, key_padding_mask=~real)
    assert torch.allclose(out, want, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_inline_attention_equals_package(inline, kind):
    torch.manual_seed(1)
    ours = inline["MultiHeadAttention"](D_MODEL, HEADS).eval()
    package = attention.MultiHeadAttention(D_MODEL, HEADS).eval()
    assert set(ours.state_dict()) == set(package.state_dict())
    package.load_state_dict(ours.state_dict())
    x = torch.randn(3, LENGTH, D_MODEL)
    (attn, keys), _ = masks(kind)
    out, weights = ours(x, x, x, mask=attn, key_padding_mask=keys)
    want_out, want_weights = package(x, x, x, mask=attn, key_padding_mask=keys)
    assert torch.allclose(out, want_out, atol=1e-6) and torch.allclose(weights, want_weights, atol=1e-6)


def test_inline_attention_without_bias_equals_torch(inline):
    torch.manual_seed(2)
    theirs = nn.MultiheadAttention(D_MODEL, HEADS, bias=False, batch_first=True).eval()
    ours = inline["MultiHeadAttention"].from_torch(theirs).eval()
    assert ours.q_proj.bias is None
    x = torch.randn(2, LENGTH, D_MODEL)
    assert torch.allclose(ours(x, x, x)[0], theirs(x, x, x)[0], atol=1e-5)


def test_inline_split_and_merge_heads(inline):
    mha = inline["MultiHeadAttention"](D_MODEL, HEADS)
    x = torch.arange(2 * LENGTH * D_MODEL, dtype=torch.float32).view(2, LENGTH, D_MODEL)
    heads = mha.split_heads(x)
    d_head = D_MODEL // HEADS
    assert heads.shape == (2, HEADS, LENGTH, d_head)
    for h in range(HEADS):  # head h owns features h*d_head .. (h+1)*d_head of every position
        assert torch.equal(heads[:, h], x[:, :, h * d_head : (h + 1) * d_head])
    assert torch.equal(mha.merge_heads(heads), x)


def test_inline_attention_refuses_indivisible_heads(inline):
    with pytest.raises(ValueError, match="d_model=10 must be divisible by num_heads=4"):
        inline["MultiHeadAttention"](10, 4)


# ----------------------------------------------------------------------------- the encoder layer


def torch_layer(norm_first: bool, activation: str, seed: int = 0) -> nn.TransformerEncoderLayer:
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(
        D_MODEL, HEADS, D_FF, dropout=0.0, activation=activation, norm_first=norm_first, batch_first=True
    )
    with torch.no_grad():  # LayerNorm starts as the identity: randomise it so a misplaced norm shows
        for norm in (layer.norm1, layer.norm2):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    return layer.eval()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_inline_layer_equals_torch_after_from_torch(inline, norm_first, activation, kind):
    theirs = torch_layer(norm_first, activation)
    ours = inline["TransformerEncoderLayer"].from_torch(theirs).eval()
    assert ours.norm_first == norm_first
    x = torch.randn(3, LENGTH, D_MODEL, requires_grad=True)  # grad on: torch's ordinary path, every position
    (attn, keys), (torch_attn, torch_keys) = masks(kind)
    got = ours(x, mask=attn, key_padding_mask=keys)
    want = theirs(x, src_mask=torch_attn, src_key_padding_mask=torch_keys)
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_inline_layer_equals_torch_fast_path_at_real_positions(inline, norm_first):
    """Under no_grad in eval mode torch may take its fused path; the real positions must still agree."""
    theirs = torch_layer(norm_first, "relu", seed=3)
    ours = inline["TransformerEncoderLayer"].from_torch(theirs).eval()
    (_, keys), (_, torch_keys) = masks("padding")
    x = torch.randn(3, LENGTH, D_MODEL)
    with torch.inference_mode():
        got, want = ours(x, key_padding_mask=keys), theirs(x, src_key_padding_mask=torch_keys)
    assert torch.allclose(got[keys], want[keys], atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_inline_layer_equals_package(inline, norm_first, kind):
    torch.manual_seed(4)
    ours = inline["TransformerEncoderLayer"](D_MODEL, HEADS, D_FF, norm_first=norm_first).eval()
    package = transformer.TransformerEncoderLayer(D_MODEL, HEADS, D_FF, norm_first=norm_first).eval()
    assert set(ours.state_dict()) == set(package.state_dict())
    with torch.no_grad():  # random LayerNorms, then the same weights in both
        for norm in (ours.norm1, ours.norm2):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    package.load_state_dict(ours.state_dict())
    x = torch.randn(3, LENGTH, D_MODEL)
    (attn, keys), _ = masks(kind)
    assert torch.allclose(
        ours(x, mask=attn, key_padding_mask=keys), package(x, mask=attn, key_padding_mask=keys), atol=1e-6
    )


def test_inline_layer_dropout_is_off_in_eval_and_on_in_training(inline):
    torch.manual_seed(5)
    theirs = nn.TransformerEncoderLayer(D_MODEL, HEADS, D_FF, dropout=0.3, batch_first=True).eval()
    ours = inline["TransformerEncoderLayer"].from_torch(theirs).eval()
    x = torch.randn(2, LENGTH, D_MODEL, requires_grad=True)
    assert torch.allclose(ours(x), theirs(x), atol=1e-5)
    ours.train()
    assert not torch.allclose(ours(x), ours(x))


def test_inline_feed_forward_equals_torch_layer_parts(inline):
    theirs = torch_layer(False, "gelu", seed=6)
    ff = inline["FeedForward"](D_MODEL, D_FF, activation="gelu")
    ff.load_state_dict(
        {
            "linear1.weight": theirs.linear1.weight,
            "linear1.bias": theirs.linear1.bias,
            "linear2.weight": theirs.linear2.weight,
            "linear2.bias": theirs.linear2.bias,
        }
    )
    x = torch.randn(2, LENGTH, D_MODEL)
    want = theirs.linear2(nn.functional.gelu(theirs.linear1(x)))
    assert torch.allclose(ff(x), want, atol=1e-6)


# ----------------------------------------------------------------------------- positions


@pytest.mark.parametrize("max_len, d_model", [(1, 2), (10, 8), (50, 64)])
def test_inline_sinusoidal_equals_formula_and_package(inline, max_len, d_model):
    got = inline["sinusoidal_positions"](max_len, d_model)
    formula = torch.tensor(
        [
            [
                math.sin(p / 10000 ** (c / d_model)) if c % 2 == 0 else math.cos(p / 10000 ** ((c - 1) / d_model))
                for c in range(d_model)
            ]
            for p in range(max_len)
        ]
    )
    assert torch.allclose(got, formula, atol=1e-5)
    assert torch.allclose(got, transformer.sinusoidal_positions(max_len, d_model), atol=1e-6)


def test_inline_sinusoidal_refuses_odd_width(inline):
    with pytest.raises(ValueError, match="d_model must be even"):
        inline["sinusoidal_positions"](4, 5)


def test_inline_classes_get_from_torch_from_their_own_cells(inline):
    """from_torch sits next to its proof, attached to the class after the fact: still a classmethod."""
    assert inline["MultiHeadAttention"].from_torch.__func__ is inline["attention_from_torch"]
    assert inline["TransformerEncoderLayer"].from_torch.__func__ is inline["layer_from_torch"]


# ----------------------------------------------------------------------------- the position-blind optimum


def test_inline_position_blind_guess_equals_package(inline):
    from course_utils.layers import toy_tasks

    inline_fn = inline["best_position_blind_guess"]
    inputs, _ = toy_tasks.make_sequences(300, 11, min_length=1, seed=6)
    assert torch.equal(inline_fn(inputs), toy_tasks.best_position_blind_guess(inputs))


# ----------------------------------------------------------------------------- RoPE


@pytest.mark.parametrize("d_head, length", [(2, 1), (8, 10), (32, 17)])
def test_inline_rope_equals_package_and_transformers(inline, d_head, length):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import (
        LlamaRotaryEmbedding,
        apply_rotary_pos_emb,
    )

    from course_utils.layers import positions

    torch.manual_seed(d_head)
    q, k = torch.randn(2, 3, length, d_head), torch.randn(2, 3, length, d_head)
    cos, sin = inline["rope_cos_sin"](torch.arange(length), d_head)
    got_q, got_k = inline["apply_rope"](q, cos, sin), inline["apply_rope"](k, cos, sin)
    package_cos, package_sin = positions.rope_cos_sin(torch.arange(length), d_head)
    assert torch.equal(got_q, positions.apply_rope(q, package_cos, package_sin))
    config = LlamaConfig(
        hidden_size=3 * d_head,
        num_attention_heads=3,
        num_key_value_heads=3,
        intermediate_size=8,
        num_hidden_layers=1,
        vocab_size=10,
    )
    hf_cos, hf_sin = LlamaRotaryEmbedding(config)(q, torch.arange(length)[None].expand(2, length))
    want_q, want_k = apply_rotary_pos_emb(q, k, hf_cos, hf_sin)
    assert torch.allclose(got_q, want_q, atol=1e-6) and torch.allclose(got_k, want_k, atol=1e-6)
