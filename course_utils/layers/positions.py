"""Rotary position embeddings (RoPE), built from scratch (chapter 02).

RoPE (Su et al., 2021, *RoFormer*) adds no vector to the embeddings. Inside every attention
layer it rotates each query and each key by an angle proportional to its position, pair of
features by pair of features, so that the score q_m . k_n depends on the positions only
through the offset m - n.

Feature pairs follow the Llama convention of Hugging Face ``transformers`` ("rotate half"):
feature i is paired with feature i + d/2, and pair i turns at ``theta_i = base^(-2i/d)``.
The RoFormer paper pairs neighbours (2i, 2i+1) instead; the two differ only by a fixed
permutation of the features, which the learned projections absorb. The tests prove
:func:`apply_rope` equal to ``transformers.models.llama.modeling_llama.apply_rotary_pos_emb``.

:class:`RotaryMultiHeadAttention` is the course's multi-head attention with RoPE applied to
the queries and keys of every head, a drop-in replacement for a layer's ``self_attn``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from course_utils.layers.attention import AttentionShapeError, MultiHeadAttention, scaled_dot_product_attention


def rope_frequencies(d_head: int, base: float = 10000.0) -> torch.Tensor:
    """(d_head / 2,) angular speeds theta_i = base^(-2i / d_head), i = 0 .. d_head/2 - 1."""
    if not isinstance(d_head, int) or d_head <= 0 or d_head % 2:
        raise ValueError(f"RoPE rotates pairs of features: d_head must be a positive even integer, got {d_head!r}")
    if base <= 1:
        raise ValueError(f"base must be larger than 1 (10000 in RoFormer and Llama), got {base!r}")
    return base ** (-torch.arange(0, d_head, 2, dtype=torch.float32) / d_head)


def rope_cos_sin(positions: torch.Tensor, d_head: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every position's angles, each (..., L, d_head): the angles of pair i,
    position * theta_i, appear twice, at features i and i + d_head/2 (Llama's layout)."""
    positions = torch.as_tensor(positions)
    angles = positions[..., None].float() * rope_frequencies(d_head, base).to(positions.device)  # (..., L, d/2)
    angles = torch.cat([angles, angles], dim=-1)  # (..., L, d)
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x_first_half, x_second_half) -> (-x_second_half, x_first_half): a quarter turn of every pair."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate every pair (x_i, x_{i+d/2}) of (..., L, d_head) by its position's angle:
    (x_i cos a - x_{i+d/2} sin a,  x_i sin a + x_{i+d/2} cos a)."""
    if x.shape[-1] % 2:
        raise AttentionShapeError(f"RoPE needs an even number of features per head, got {x.shape[-1]}")
    if cos.shape[-2:] != x.shape[-2:] or sin.shape != cos.shape:
        raise AttentionShapeError(
            f"cos/sin of shape {tuple(cos.shape)} do not match the (..., L, d_head) = "
            f"(..., {x.shape[-2]}, {x.shape[-1]}) of x: build them with rope_cos_sin(torch.arange(L), d_head)"
        )
    return x * cos + rotate_half(x) * sin


class RotaryMultiHeadAttention(MultiHeadAttention):
    """Multi-head attention whose queries and keys are rotated by RoPE (positions 0, 1, 2, ...).

    Same constructor, parameters and ``forward`` as :class:`~course_utils.layers.attention.MultiHeadAttention`,
    plus ``base``; a state_dict moves between the two unchanged.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, bias: bool = True, base: float = 10000.0):
        super().__init__(d_model, num_heads, dropout=dropout, bias=bias)
        rope_frequencies(self.d_head, base)  # validates d_head and base now, not at the first call
        self.base = base

    def forward(self, query, key, value, mask=None, key_padding_mask=None, need_weights=True):
        self.check_inputs(query, key, value)  # the same shape checks as the course's attention
        if key_padding_mask is not None:
            keys_ok = key_padding_mask[:, None, None, :]  # (B, L_k) -> every head, every query
            mask = keys_ok if mask is None else mask & keys_ok
        q = self.split_heads(self.q_proj(query))  # (B, h, L_q, d_head)
        k = self.split_heads(self.k_proj(key))  # (B, h, L_k, d_head)
        v = self.split_heads(self.v_proj(value))
        q = apply_rope(q, *rope_cos_sin(torch.arange(q.shape[2], device=q.device), self.d_head, self.base))
        k = apply_rope(k, *rope_cos_sin(torch.arange(k.shape[2], device=k.device), self.d_head, self.base))
        dropout_p = self.dropout if self.training else 0.0
        if need_weights:
            out, weights = scaled_dot_product_attention(q, k, v, mask=mask, dropout_p=dropout_p)
        else:
            out, weights = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p), None
        return self.out_proj(self.merge_heads(out)), weights
