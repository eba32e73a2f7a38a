"""course_utils.layers.transformer against torch.nn.TransformerEncoderLayer / TransformerEncoder,
and the sinusoidal table against the paper's formula computed independently with numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings, strategies as st
from torch import nn

from course_utils.layers.attention import AttentionShapeError
from course_utils.layers.transformer import (
    FeedForward,
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    TransformerEncoder,
    TransformerEncoderLayer,
    sinusoidal_positions,
)

PROPERTY = settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
D_MODEL, HEADS, D_FF, BATCH, LENGTH = 16, 4, 32, 3, 6
LENGTHS = torch.tensor([6, 4, 1])  # real tokens per sequence; the rest is padding


def torch_layer(norm_first: bool, activation: str, seed: int = 0, dropout: float = 0.0) -> nn.TransformerEncoderLayer:
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(
        D_MODEL, HEADS, D_FF, dropout=dropout, activation=activation, norm_first=norm_first, batch_first=True
    )
    with torch.no_grad():  # LayerNorm starts at (1, 0): randomise it so a swapped norm shows
        for norm in (layer.norm1, layer.norm2):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    return layer.eval()


def masks(kind: str):
    """(ours: True = may attend, torch: True = not allowed) for the attention and the key padding."""
    real = torch.arange(LENGTH)[None, :] < LENGTHS[:, None]
    causal = torch.ones(LENGTH, LENGTH, dtype=torch.bool).tril()
    attn = causal if kind in ("causal", "both") else None
    keys = real if kind in ("padding", "both") else None
    flip = lambda m: None if m is None else ~m  # noqa: E731
    return (attn, keys), (flip(attn), flip(keys)), real


@pytest.mark.parametrize("kind", ["none", "causal", "padding", "both"])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_layer_from_torch_equals_torch(norm_first, activation, kind):
    theirs = torch_layer(norm_first, activation)
    ours = TransformerEncoderLayer.from_torch(theirs).eval()
    assert ours.norm_first == norm_first
    x = torch.randn(BATCH, LENGTH, D_MODEL, requires_grad=True)  # grad on: torch's slow path, every position
    (attn, keys), (src_mask, src_kpm), real = masks(kind)
    expected = theirs(x, src_mask=src_mask, src_key_padding_mask=src_kpm)
    actual = ours(x, mask=attn, key_padding_mask=keys)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=2e-5)
    cotangent = torch.randn_like(actual)
    (own_grad,) = torch.autograd.grad((actual * cotangent).sum(), x)
    (ref_grad,) = torch.autograd.grad((expected * cotangent).sum(), x)
    torch.testing.assert_close(own_grad, ref_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["none", "padding", "both"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_layer_equals_torch_fast_path(norm_first, kind):
    """Under no_grad in eval torch takes its fused "fast path"; with a key padding mask its
    padded positions are not defined the same way, so compare the real tokens only."""
    theirs = torch_layer(norm_first, "relu", seed=1)
    ours = TransformerEncoderLayer.from_torch(theirs).eval()
    x = torch.randn(BATCH, LENGTH, D_MODEL)
    (attn, keys), (src_mask, src_kpm), real = masks(kind)
    with torch.no_grad():
        expected = theirs(x, src_mask=src_mask, src_key_padding_mask=src_kpm)
        actual = ours(x, mask=attn, key_padding_mask=keys)
    rows = real if keys is not None else torch.ones_like(real)
    torch.testing.assert_close(actual[rows], expected[rows], rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_fused_flag_gives_same_result(norm_first):
    ours = TransformerEncoderLayer.from_torch(torch_layer(norm_first, "gelu", seed=2)).eval()
    x = torch.randn(BATCH, LENGTH, D_MODEL)
    (attn, keys), _, _ = masks("both")
    plain = ours(x, mask=attn, key_padding_mask=keys)
    ours.fused = True
    torch.testing.assert_close(ours(x, mask=attn, key_padding_mask=keys), plain, rtol=1e-5, atol=1e-6)
    ours.keep_attention = True  # weights wanted: the weights path runs and keeps them
    torch.testing.assert_close(ours(x, mask=attn, key_padding_mask=keys), plain, rtol=1e-5, atol=1e-6)
    assert ours.last_attention.shape == (BATCH, HEADS, LENGTH, LENGTH)
    assert not ours.last_attention.requires_grad


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_kept_attention_equals_torch_weights(norm_first):
    theirs = torch_layer(norm_first, "relu", seed=4)
    ours = TransformerEncoderLayer.from_torch(theirs).eval()
    ours.keep_attention = True
    x = torch.randn(BATCH, LENGTH, D_MODEL)
    (attn, keys), (src_mask, src_kpm), real = masks("both")
    ours(x, mask=attn, key_padding_mask=keys)
    attended = theirs.norm1(x) if norm_first else x  # what the attention block sees
    _, expected = theirs.self_attn(
        attended,
        attended,
        attended,
        attn_mask=src_mask,
        key_padding_mask=src_kpm,
        need_weights=True,
        average_attn_weights=False,
    )
    torch.testing.assert_close(ours.last_attention, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_encoder_stack_equals_torch(norm_first):
    torch.manual_seed(3)
    layer = nn.TransformerEncoderLayer(D_MODEL, HEADS, D_FF, dropout=0.0, norm_first=norm_first, batch_first=True)
    final = nn.LayerNorm(D_MODEL) if norm_first else None
    theirs = nn.TransformerEncoder(layer, num_layers=2, norm=final, enable_nested_tensor=False).eval()
    ours = TransformerEncoder(2, D_MODEL, HEADS, D_FF, norm_first=norm_first).eval()
    ours.layers = nn.ModuleList(TransformerEncoderLayer.from_torch(t) for t in theirs.layers)
    if norm_first:
        ours.final_norm.load_state_dict(theirs.norm.state_dict())
    x = torch.randn(BATCH, LENGTH, D_MODEL, requires_grad=True)
    (attn, keys), (src_mask, src_kpm), _ = masks("both")
    expected = theirs(x, mask=src_mask, src_key_padding_mask=src_kpm)
    torch.testing.assert_close(ours(x, mask=attn, key_padding_mask=keys), expected, rtol=1e-5, atol=2e-5)
    ours.keep_attention(True)(x)
    maps = ours.attention_maps()
    assert len(maps) == 2 and all(m.shape == (BATCH, HEADS, LENGTH, LENGTH) for m in maps)


def test_dropout_is_copied():
    ours = TransformerEncoderLayer.from_torch(torch_layer(False, "relu", dropout=0.25))
    assert ours.dropout1.p == ours.dropout2.p == ours.ff.dropout.p == ours.self_attn.dropout == 0.25


# ---------------------------------------------------------------- positions
@pytest.mark.parametrize("max_len,d_model", [(1, 2), (50, 16), (128, 64)])
def test_sinusoidal_positions_match_formula(max_len, d_model):
    p = np.arange(max_len)[:, None]
    i = np.arange(d_model // 2)[None, :]
    angle = p / np.power(10000.0, 2 * i / d_model)
    expected = np.empty((max_len, d_model))
    expected[:, 0::2], expected[:, 1::2] = np.sin(angle), np.cos(angle)
    table = sinusoidal_positions(max_len, d_model)
    assert table.shape == (max_len, d_model)
    # float32 angles up to ~max_len radians: error grows like max_len * 2^-24
    np.testing.assert_allclose(table.double().numpy(), expected, atol=2e-5, rtol=0)


def test_sinusoidal_first_rows_by_hand():
    table = sinusoidal_positions(2, 4)
    torch.testing.assert_close(table[0], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    expected = [math.sin(1.0), math.cos(1.0), math.sin(1 / 100), math.cos(1 / 100)]  # 10000^(2/4) = 100
    torch.testing.assert_close(table[1], torch.tensor(expected))


def test_sinusoidal_odd_d_model():
    with pytest.raises(ValueError, match="d_model must be even, got 7"):
        sinusoidal_positions(10, 7)


def test_positional_encodings_add_their_table():
    x = torch.randn(2, 5, 8)
    sinus = SinusoidalPositionalEncoding(8, max_len=10)
    torch.testing.assert_close(sinus(x), x + sinusoidal_positions(10, 8)[:5])
    learned = LearnedPositionalEmbedding(8, max_len=10)
    torch.testing.assert_close(learned(x), x + learned.embedding(torch.arange(5)))
    assert "table" not in sinus.state_dict()  # a fixed table: nothing to save


@pytest.mark.parametrize("module", [SinusoidalPositionalEncoding, LearnedPositionalEmbedding])
def test_position_table_too_short(module):
    with pytest.raises(
        AttentionShapeError, match=r"sequence length 12 is longer than the position table \(10\).*max_len >= 12"
    ):
        module(8, max_len=10)(torch.randn(2, 12, 8))
    with pytest.raises(
        AttentionShapeError, match=r"expected \(batch, length, d_model\) embeddings, got shape \(12, 8\)"
    ):
        module(8, max_len=10)(torch.randn(12, 8))


def test_feed_forward_unknown_activation():
    with pytest.raises(ValueError, match=r"activation must be one of \['gelu', 'relu'\], got 'tanh'"):
        FeedForward(8, 16, activation="tanh")


def test_from_torch_rejects_other_modules():
    with pytest.raises(TypeError, match="expects torch.nn.TransformerEncoderLayer, got Linear"):
        TransformerEncoderLayer.from_torch(nn.Linear(4, 4))


# ---------------------------------------------------------------- permutation equivariance
@PROPERTY
@given(length=st.integers(1, 8), norm_first=st.booleans(), padded=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_encoder_without_positions_is_permutation_equivariant(length, norm_first, padded, seed):
    """Without positions, self-attention cannot tell order: permuting the tokens (and their
    padding flags) permutes the outputs the same way."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    encoder = TransformerEncoder(2, D_MODEL, HEADS, D_FF, norm_first=norm_first).eval()
    x = torch.randn(2, length, D_MODEL, generator=gen)
    real = torch.rand(2, length, generator=gen) < 0.7 if padded else None
    if real is not None:
        real[:, 0] = True  # at least one real key per sequence
    perm = torch.randperm(length, generator=gen)
    with torch.no_grad():
        out = encoder(x, key_padding_mask=real)
        out_perm = encoder(x[:, perm], key_padding_mask=None if real is None else real[:, perm])
    torch.testing.assert_close(out_perm, out[:, perm], rtol=1e-5, atol=1e-5)


# from_torch refuses what it cannot copy exactly, saying why.
@pytest.mark.parametrize("activation", [F.silu, nn.GELU(approximate="tanh")], ids=["silu", "gelu-tanh"])
def test_from_torch_refuses_an_activation_it_cannot_copy(activation):
    torch.manual_seed(0)
    theirs = nn.TransformerEncoderLayer(D_MODEL, HEADS, D_FF, dropout=0.0, activation=activation, batch_first=True)
    with pytest.raises(ValueError, match="activation"):
        TransformerEncoderLayer.from_torch(theirs)


def test_from_torch_without_bias_says_so():
    theirs = nn.TransformerEncoderLayer(D_MODEL, HEADS, D_FF, dropout=0.0, bias=False, batch_first=True)
    with pytest.raises(ValueError, match="bias"):
        TransformerEncoderLayer.from_torch(theirs)
