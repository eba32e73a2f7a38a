"""Scaled dot-product attention and multi-head attention, written out in plain torch.

Chapter 01 builds :func:`scaled_dot_product_attention` step by step; chapter 02
builds :class:`MultiHeadAttention`. Both are proven equal to torch's own
(``torch.nn.functional.scaled_dot_product_attention`` and
``torch.nn.MultiheadAttention``) by the tests and in the chapters.

Masks are boolean and mean what torch's SDPA ``attn_mask`` means:
**True = this query may attend to this key.** A mask must broadcast to
``(..., L_q, L_k)``. A query whose row is all False has nothing to attend to;
like torch (2.5 and later), it gets all-zero weights and a zero output
instead of the NaN that a softmax over ``-inf`` would give.
"""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F


class AttentionShapeError(ValueError):
    """Raised with a sentence that names the wrong shape and what was expected."""


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() < 2:
            raise AttentionShapeError(
                f"{name} has shape {tuple(t.shape)}; attention needs at least 2 dimensions "
                f"(..., sequence length, features). Add a batch or sequence axis, e.g. {name}.unsqueeze(0)."
            )
    if q.shape[-1] == 0:
        raise AttentionShapeError(
            f"q and k have 0 features per position (q {tuple(q.shape)}): the scores q @ k^T / sqrt(d_k) need d_k >= 1."
        )
    if q.shape[-1] != k.shape[-1]:
        raise AttentionShapeError(
            f"q has {q.shape[-1]} features per position but k has {k.shape[-1]}: "
            f"q @ k^T needs the same last dimension (q {tuple(q.shape)}, k {tuple(k.shape)})."
        )
    if k.shape[-2] != v.shape[-2]:
        raise AttentionShapeError(
            f"k has {k.shape[-2]} positions but v has {v.shape[-2]}: every key needs one value "
            f"(k {tuple(k.shape)}, v {tuple(v.shape)})."
        )
    try:
        torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise AttentionShapeError(
            f"the leading (batch/head) dimensions of q {tuple(q.shape[:-2])}, k {tuple(k.shape[:-2])} "
            f"and v {tuple(v.shape[:-2])} do not broadcast together."
        ) from None


def _check_mask(mask: torch.Tensor, scores_shape: torch.Size) -> None:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a boolean torch.Tensor (True = may attend), got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(
            f"mask has dtype {mask.dtype}; use a boolean mask where True means 'may attend' "
            "(for a 0/1 padding mask m, pass m.bool())."
        )
    try:
        if torch.broadcast_shapes(mask.shape, scores_shape) != scores_shape:
            raise RuntimeError
    except RuntimeError:
        raise AttentionShapeError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to the attention scores "
            f"{tuple(scores_shape)} = (..., L_q, L_k). A padding mask over keys is usually "
            "(batch, 1, 1, L_k) or (batch, 1, L_k); a causal mask is (L_q, L_k)."
        ) from None


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d_k)) v, returning ``(output, weights)``.

    q: (..., L_q, d_k), k: (..., L_k, d_k), v: (..., L_k, d_v);
    mask: boolean, broadcastable to (..., L_q, L_k), True = may attend.
    output: (..., L_q, d_v); weights: (..., L_q, L_k), each row sums to 1
    (or to 0 for a fully masked row).
    """
    _check_qkv(q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    # scaling q (L_q x d) is cheaper than scaling the scores (L_q x L_k); torch does the same
    scores = torch.matmul(q * scale, k.transpose(-2, -1))  # (..., L_q, L_k)
    if mask is not None:
        _check_mask(mask, scores.shape)
        scores.masked_fill_(~mask, float("-inf"))  # in place: scores is our own fresh tensor
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:
        # a row of -inf softmaxes to NaN; such a query attends to nothing, so give it zeros
        attends_to_nothing = ~mask.any(dim=-1, keepdim=True)
        if attends_to_nothing.any():
            weights = weights.masked_fill(attends_to_nothing, 0.0)
    if dropout_p > 0.0:
        weights = torch.dropout(weights, dropout_p, train=True)
    return torch.matmul(weights, v), weights


def causal_mask(length: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(length, length) boolean mask: position i may attend to positions 0..i."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


def padding_mask(lengths: torch.Tensor | list[int], max_len: int | None = None) -> torch.Tensor:
    """(batch, 1, 1, max_len) boolean mask, True at the real (non-padding) keys.

    The two singleton axes broadcast over heads and queries.
    """
    lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1 or lengths.numel() == 0:
        raise AttentionShapeError(f"lengths must be 1-D with one length per sequence, got shape {tuple(lengths.shape)}")
    max_len = int(lengths.max()) if max_len is None else max_len
    if int(lengths.max()) > max_len:
        raise AttentionShapeError(f"a length {int(lengths.max())} is longer than max_len={max_len}")
    keep = torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]
    return keep[:, None, None, :]


class MultiHeadAttention(nn.Module):
    """Multi-head attention, batch first: split d_model into heads, attend in each, merge.

    forward(query (B, L_q, d_model), key (B, L_k, d_model), value (B, L_k, d_model), mask)
    returns ``(output (B, L_q, d_model), weights (B, num_heads, L_q, L_k))``. ``mask`` is
    boolean, True = may attend, broadcastable to (B, num_heads, L_q, L_k) (for example a
    causal (L_q, L_k) mask); ``key_padding_mask`` (B, L_k), True at real keys, is combined
    with it. ``need_weights=False`` returns ``weights=None`` and runs torch's fused
    attention kernel (same result, faster). Note torch's ``nn.MultiheadAttention`` uses the opposite convention
    (True = ignore) for its boolean masks.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if d_model <= 0 or num_heads <= 0:
            raise ValueError(f"d_model and num_heads must be positive, got d_model={d_model}, num_heads={num_heads}")
        if d_model % num_heads != 0:
            raise ValueError(
                f"d_model={d_model} is not divisible by num_heads={num_heads}: each head gets "
                f"d_model / num_heads features. Try num_heads in {_divisors(d_model)}."
            )
        self.d_model, self.num_heads, self.d_head = d_model, num_heads, d_model // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, d_model) -> (B, num_heads, L, d_head)."""
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.d_head).transpose(1, 2)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, num_heads, L, d_head) -> (B, L, d_model)."""
        batch, _, length, _ = x.shape
        return x.transpose(1, 2).reshape(batch, length, self.d_model)

    def check_inputs(self, query, key, value) -> None:
        """Shapes both paths need; torch's fused kernel would accept some wrong ones without a word."""
        for name, t in (("query", query), ("key", key), ("value", value)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dim() != 3 or t.shape[-1] != self.d_model:
                raise AttentionShapeError(
                    f"{name} has shape {tuple(t.shape)}; MultiHeadAttention expects (batch, length, "
                    f"d_model={self.d_model}), batch first."
                )
        if key.shape[1] != value.shape[1]:
            raise AttentionShapeError(
                f"key has {key.shape[1]} positions but value has {value.shape[1]}: every key needs one value "
                f"(key {tuple(key.shape)}, value {tuple(value.shape)})."
            )
        if not query.shape[0] == key.shape[0] == value.shape[0]:  # as torch's nn.MultiheadAttention: no broadcasting
            raise AttentionShapeError(
                f"query, key and value have batch sizes {query.shape[0]}, {key.shape[0]} and {value.shape[0]}: "
                "give each query sequence its own keys and values (expand a shared one with .expand(batch, -1, -1))."
            )

    def forward(
        self,
        query,
        key,
        value,
        mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
    ):
        self.check_inputs(query, key, value)
        if key_padding_mask is not None:
            if key_padding_mask.shape != key.shape[:2] or key_padding_mask.dtype != torch.bool:
                raise AttentionShapeError(
                    f"key_padding_mask must be boolean of shape (batch, L_k) = {tuple(key.shape[:2])}, "
                    f"True at real keys; got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}."
                )
            keys_ok = key_padding_mask[:, None, None, :]  # broadcast over heads and queries
            mask = keys_ok if mask is None else mask & keys_ok
        q = self.split_heads(self.q_proj(query))
        k = self.split_heads(self.k_proj(key))
        v = self.split_heads(self.v_proj(value))
        dropout_p = self.dropout if self.training else 0.0
        if mask is not None:
            _check_mask(mask, torch.Size((q.shape[0], self.num_heads, q.shape[2], k.shape[2])))
        if need_weights:
            out, weights = scaled_dot_product_attention(q, k, v, mask=mask, dropout_p=dropout_p)
        else:
            # Same arithmetic through torch's fused kernel, which never materialises the weights:
            # faster for training; the tests prove both paths agree.
            out, weights = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p), None
        return self.out_proj(self.merge_heads(out)), weights

    @classmethod
    def from_torch(cls, torch_mha: nn.MultiheadAttention) -> "MultiHeadAttention":
        """A copy of ``torch.nn.MultiheadAttention``'s weights in this module (same outputs)."""
        if not isinstance(torch_mha, nn.MultiheadAttention):
            raise TypeError(f"from_torch expects torch.nn.MultiheadAttention, got {type(torch_mha).__name__}")
        if not torch_mha._qkv_same_embed_dim:
            raise ValueError("from_torch needs kdim == vdim == embed_dim (one packed in_proj_weight)")
        if torch_mha.bias_k is not None or torch_mha.add_zero_attn:
            raise ValueError("from_torch does not support add_bias_kv or add_zero_attn")
        bias = torch_mha.in_proj_bias is not None
        ours = cls(torch_mha.embed_dim, torch_mha.num_heads, dropout=torch_mha.dropout, bias=bias)
        w_q, w_k, w_v = torch_mha.in_proj_weight.detach().chunk(3, dim=0)
        with torch.no_grad():
            for proj, w in zip((ours.q_proj, ours.k_proj, ours.v_proj), (w_q, w_k, w_v)):
                proj.weight.copy_(w)
            ours.out_proj.weight.copy_(torch_mha.out_proj.weight)
            if bias:
                for proj, b in zip((ours.q_proj, ours.k_proj, ours.v_proj), torch_mha.in_proj_bias.detach().chunk(3)):
                    proj.bias.copy_(b)
                ours.out_proj.bias.copy_(torch_mha.out_proj.bias)
        return ours.to(torch_mha.in_proj_weight.device, torch_mha.in_proj_weight.dtype)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0][:8]
