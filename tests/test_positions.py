"""course_utils.layers.positions (RoPE) against Hugging Face's Llama implementation and against the
RoFormer paper's complex-number form, written here independently."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import (
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
)

from course_utils.layers.attention import AttentionShapeError, MultiHeadAttention
from course_utils.layers.positions import (
    RotaryMultiHeadAttention,
    apply_rope,
    rope_cos_sin,
    rope_frequencies,
    rotate_half,
)

PROPERTY = settings(max_examples=15, deadline=None, derandomize=True)


def llama_rotary(d_head: int, num_heads: int = 2, base: float = 10000.0) -> LlamaRotaryEmbedding:
    config = LlamaConfig(
        hidden_size=d_head * num_heads,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        intermediate_size=8,
        num_hidden_layers=1,
        vocab_size=10,
        max_position_embeddings=64,
        rope_parameters={"rope_type": "default", "rope_theta": base},
    )
    return LlamaRotaryEmbedding(config)


@pytest.mark.parametrize("d_head, base", [(2, 10000.0), (8, 10000.0), (16, 500.0), (64, 10000.0)])
def test_frequencies_equal_llamas(d_head, base):
    assert torch.allclose(rope_frequencies(d_head, base), llama_rotary(d_head, base=base).inv_freq, rtol=1e-6)


@pytest.mark.parametrize("d_head, length", [(2, 1), (8, 10), (16, 33), (64, 7)])
def test_apply_rope_equals_transformers(d_head, length):
    torch.manual_seed(d_head + length)
    q, k = torch.randn(3, 2, length, d_head), torch.randn(3, 2, length, d_head)
    position_ids = torch.arange(length)[None].expand(3, length)
    cos, sin = llama_rotary(d_head)(q, position_ids)
    want_q, want_k = apply_rotary_pos_emb(q, k, cos, sin)
    ours_cos, ours_sin = rope_cos_sin(torch.arange(length), d_head)
    assert torch.allclose(apply_rope(q, ours_cos, ours_sin), want_q, atol=1e-6)
    assert torch.allclose(apply_rope(k, ours_cos, ours_sin), want_k, atol=1e-6)


def test_apply_rope_with_per_sequence_positions_equals_transformers():
    """Positions need not start at 0 (a cached prefix, left padding): (batch, L) position ids."""
    torch.manual_seed(0)
    positions = torch.tensor([[5, 6, 7, 8], [0, 1, 2, 3]])
    q, k = torch.randn(2, 4, 4, 8), torch.randn(2, 4, 4, 8)
    cos, sin = llama_rotary(8)(q, positions)
    want_q, _ = apply_rotary_pos_emb(q, k, cos, sin)
    ours_cos, ours_sin = rope_cos_sin(positions, 8)  # (batch, L, d_head): broadcast over heads
    assert torch.allclose(apply_rope(q, ours_cos[:, None], ours_sin[:, None]), want_q, atol=1e-5)


def roformer_complex(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """The RoFormer paper's form: neighbouring features (2i, 2i+1) as one complex number, times
    exp(1j * position * theta_i), theta_i = base^(-2i/d)."""
    d = x.shape[-1]
    theta = torch.tensor([base ** (-2 * i / d) for i in range(d // 2)], dtype=torch.float64)
    z = torch.complex(x[..., 0::2].double(), x[..., 1::2].double())
    rotated = z * torch.polar(torch.ones_like(theta), positions[:, None].double() * theta)
    return torch.stack([rotated.real, rotated.imag], dim=-1).reshape(x.shape).float()


def test_rope_is_the_roformer_rotation_up_to_a_fixed_feature_order():
    """Llama pairs feature i with i + d/2, RoFormer pairs 2i with 2i + 1: the same rotation after
    reordering the features (which a learned projection absorbs)."""
    torch.manual_seed(1)
    d, length = 8, 6
    x = torch.randn(length, d)
    interleaved_to_halves = torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])  # [0 2 4 6 1 3 5 7]
    ours = apply_rope(x[:, interleaved_to_halves], *rope_cos_sin(torch.arange(length), d))
    want = roformer_complex(x, torch.arange(length))[:, interleaved_to_halves]
    assert torch.allclose(ours, want, atol=1e-5)


@PROPERTY
@given(m=st.integers(0, 200), n=st.integers(0, 200), shift=st.integers(0, 300), seed=st.integers(0, 99))
def test_scores_depend_only_on_the_offset(m, n, shift, seed):
    generator = torch.Generator().manual_seed(seed)
    q, k = torch.randn(16, generator=generator), torch.randn(16, generator=generator)

    def score(position_q, position_k):
        cos, sin = rope_cos_sin(torch.tensor([position_q, position_k]), 16)
        rotated = apply_rope(torch.stack([q, k]), cos, sin)
        return (rotated[0] @ rotated[1]).item()

    assert score(m, n) == pytest.approx(score(m + shift, n + shift), abs=1e-3)


def test_rotation_keeps_lengths_and_position_zero_is_the_identity():
    torch.manual_seed(2)
    x = torch.randn(10, 8)
    rotated = apply_rope(x, *rope_cos_sin(torch.arange(10), 8))
    assert torch.allclose(rotated.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert torch.equal(rotated[0], x[0])
    assert torch.equal(rotate_half(rotate_half(x)), -x)  # two quarter turns: a half turn


def reference_rotary_attention(mha: MultiHeadAttention, x: torch.Tensor, mask=None) -> torch.Tensor:
    """Linear projections, transformers' RoPE, torch's fused attention, output projection."""
    batch, length, d = x.shape
    h, d_head = mha.num_heads, d // mha.num_heads

    def split(t):
        return t.view(batch, length, h, d_head).transpose(1, 2)

    q, k, v = split(mha.q_proj(x)), split(mha.k_proj(x)), split(mha.v_proj(x))
    cos, sin = llama_rotary(d_head, h)(q, torch.arange(length)[None].expand(batch, length))
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return mha.out_proj(out.transpose(1, 2).reshape(batch, length, d))


@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_rotary_attention_equals_a_reference_built_from_transformers(need_weights, masked):
    torch.manual_seed(3)
    mha = RotaryMultiHeadAttention(16, 4).eval()
    x = torch.randn(3, 7, 16)
    real = torch.arange(7)[None, :] < torch.tensor([7, 4, 1])[:, None]
    with torch.no_grad():
        got, weights = mha(x, x, x, key_padding_mask=real if masked else None, need_weights=need_weights)
        want = reference_rotary_attention(mha, x, real[:, None, None, :] if masked else None)
    assert torch.allclose(got, want, atol=1e-5)
    assert (weights is not None) == need_weights
    if need_weights and masked:
        assert torch.all(weights[1, :, :, 4:] == 0)


def test_rotary_attention_shares_the_plain_modules_weights_and_differs_only_by_position():
    torch.manual_seed(4)
    rotary, plain = RotaryMultiHeadAttention(8, 2).eval(), MultiHeadAttention(8, 2).eval()
    plain.load_state_dict(rotary.state_dict())  # same parameter names
    x = torch.randn(2, 1, 8)  # one position: rotation by 0
    with torch.no_grad():
        assert torch.allclose(rotary(x, x, x)[0], plain(x, x, x)[0], atol=1e-6)
        x = torch.randn(2, 6, 8)
        perm = torch.randperm(6)
        diff = (rotary(x[:, perm], x[:, perm], x[:, perm])[0] - rotary(x, x, x)[0][:, perm]).abs().max()
    assert diff > 1e-3  # not permutation equivariant


@pytest.mark.parametrize(
    "d_head, base, message",
    [
        (7, 10000.0, "d_head must be a positive even integer, got 7"),
        (0, 10000.0, "d_head must be a positive even integer, got 0"),
        (8, 1.0, "base must be larger than 1"),
    ],
)
def test_bad_frequencies_say_what_to_change(d_head, base, message):
    with pytest.raises(ValueError, match=message):
        rope_frequencies(d_head, base)


def test_rotary_attention_refuses_odd_heads_at_construction():
    with pytest.raises(ValueError, match="d_head must be a positive even integer, got 3"):
        RotaryMultiHeadAttention(6, 2)


def test_apply_rope_refuses_mismatched_tables():
    cos, sin = rope_cos_sin(torch.arange(5), 8)
    with pytest.raises(AttentionShapeError, match=r"build them with rope_cos_sin\(torch.arange\(L\), d_head\)"):
        apply_rope(torch.randn(2, 6, 8), cos, sin)
    assert math.isclose(cos[1, 0].item(), math.cos(1.0), abs_tol=1e-6)


def test_rotary_attention_checks_shapes_like_the_course_attention():
    from course_utils.layers.positions import RotaryMultiHeadAttention

    attn = RotaryMultiHeadAttention(8, 2)
    q, k, v = torch.randn(1, 3, 8), torch.randn(1, 5, 8), torch.randn(1, 4, 8)
    for need_weights in (True, False):  # torch's fused kernel alone would not notice L_k != L_v
        with pytest.raises(AttentionShapeError):
            attn(q, k, v, need_weights=need_weights)
