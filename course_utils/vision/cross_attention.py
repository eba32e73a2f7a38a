"""Cross-attention: decoder layers whose words look at a memory (chapter 07).

An encoder-decoder's decoder attends twice in every layer: to the words so far (causal
self-attention) and to the encoder's output, the *memory* (here the image's patch vectors):
queries from the text, keys and values from the memory.

* :class:`CrossAttention`: the course's multi-head attention with the memory's keys and values
  projected once (:meth:`~CrossAttention.memory_kv`) and reused at every generation step
  (:meth:`~CrossAttention.attend`);
* :class:`CrossAttentionDecoderLayer`: the textbook decoder layer (self-attention,
  cross-attention, feed-forward; post-LN or pre-LN); :meth:`~CrossAttentionDecoderLayer.from_torch`
  copies a ``torch.nn.TransformerDecoderLayer`` (the tests prove both give the same outputs).

:class:`CaptionerInputError` is the one-line error of every captioning model (this layer,
:class:`~course_utils.vision.bert_decoder.BertDecoder` and :class:`~course_utils.vision.captioning.Captioner`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from course_utils.layers.attention import MultiHeadAttention, scaled_dot_product_attention
from course_utils.layers.transformer import FeedForward, torch_activation_name

__all__ = ["CaptionerInputError", "CrossAttention", "CrossAttentionDecoderLayer"]


class CaptionerInputError(ValueError):
    """Input a captioner cannot take (wrong image size or dtype, memory of the wrong width...), with the fix."""


# ============================================================================ cross-attention


class CrossAttention(MultiHeadAttention):
    """Multi-head attention whose keys and values come from the image memory.

    ``forward(query, key, value, ...)`` is the course's :class:`MultiHeadAttention`. For generation
    the memory's keys and values are projected once (:meth:`memory_kv`) and reused at every step
    (:meth:`attend`): the same arithmetic, without projecting the same memory again for every word.
    """

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, d) memory -> keys and values (B, heads, N, d_head)."""
        return self.split_heads(self.k_proj(memory)), self.split_heads(self.v_proj(memory))

    def attend(
        self, query: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], memory_mask=None, need_weights: bool = False
    ):
        """(B, L, d) queries over precomputed keys and values; ``memory_mask`` (B, N) bool, True = real."""
        q = self.split_heads(self.q_proj(query))
        mask = None if memory_mask is None else memory_mask[:, None, None, :]
        dropout_p = self.dropout if self.training else 0.0
        if need_weights:
            out, weights = scaled_dot_product_attention(q, kv[0], kv[1], mask=mask, dropout_p=dropout_p)
        else:
            out, weights = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask, dropout_p=dropout_p), None
        return self.out_proj(self.merge_heads(out)), weights


# ============================================================================ the textbook layer


class CrossAttentionDecoderLayer(nn.Module):
    """The Transformer decoder layer (Vaswani et al. 2017): masked self-attention, then attention
    over the encoder's output (the memory), then the feed-forward network; each sub-layer in a
    residual connection with LayerNorm, after it (post-LN) or before it (pre-LN, ``norm_first``).

    ``forward(x (B, L, d), memory (B, N, d), tgt_mask=None, memory_key_padding_mask=None,
    tgt_key_padding_mask=None)``; every mask is boolean with **True = may attend / a real
    position** (torch's ``nn.TransformerDecoderLayer`` uses True = ignore). ``tgt_mask`` (L, L) is
    usually :func:`course_utils.layers.attention.causal_mask`. With ``keep_attention = True`` the last
    cross-attention weights (B, heads, L, N) are kept in ``last_cross_attention``.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        norm_first: bool = False,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout=dropout)
        self.cross_attn = CrossAttention(d_model, num_heads, dropout=dropout)
        self.ff = FeedForward(d_model, d_ff, dropout=dropout, activation=activation)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model, eps=layer_norm_eps) for _ in range(3))
        self.dropout1, self.dropout2, self.dropout3 = (nn.Dropout(dropout) for _ in range(3))
        self.norm_first = norm_first
        self.keep_attention = False
        self.last_cross_attention = None

    def _self_block(self, x, tgt_mask, tgt_key_padding_mask):
        return self.dropout1(self.self_attn(x, x, x, mask=tgt_mask, key_padding_mask=tgt_key_padding_mask)[0])

    def _cross_block(self, x, memory, memory_key_padding_mask):
        out, weights = self.cross_attn(x, memory, memory, key_padding_mask=memory_key_padding_mask)
        if self.keep_attention:
            self.last_cross_attention = weights.detach()
        return self.dropout2(out)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        tgt_mask: torch.Tensor | None = None,
        memory_key_padding_mask: torch.Tensor | None = None,
        tgt_key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if memory.dim() != 3 or memory.shape[0] != x.shape[0] or memory.shape[-1] != x.shape[-1]:
            raise CaptionerInputError(
                f"memory has shape {tuple(memory.shape)}; expected (batch={x.shape[0]}, "
                f"patches, d_model={x.shape[-1]}), the image encoder's output for each caption."
            )
        if self.norm_first:
            x = x + self._self_block(self.norm1(x), tgt_mask, tgt_key_padding_mask)
            x = x + self._cross_block(self.norm2(x), memory, memory_key_padding_mask)
            return x + self.dropout3(self.ff(self.norm3(x)))
        x = self.norm1(x + self._self_block(x, tgt_mask, tgt_key_padding_mask))
        x = self.norm2(x + self._cross_block(x, memory, memory_key_padding_mask))
        return self.norm3(x + self.dropout3(self.ff(x)))

    @classmethod
    def from_torch(cls, layer: nn.TransformerDecoderLayer) -> CrossAttentionDecoderLayer:
        """A copy of ``torch.nn.TransformerDecoderLayer``'s weights in this module (same outputs)."""
        if not isinstance(layer, nn.TransformerDecoderLayer):
            raise TypeError(f"from_torch expects torch.nn.TransformerDecoderLayer, got {type(layer).__name__}")
        name = torch_activation_name(layer.activation)
        ours = cls(
            layer.self_attn.embed_dim,
            layer.self_attn.num_heads,
            layer.linear1.out_features,
            dropout=layer.dropout.p,
            norm_first=layer.norm_first,
            activation=name,
            layer_norm_eps=layer.norm1.eps,
        )
        ours.self_attn = MultiHeadAttention.from_torch(layer.self_attn)
        cross = MultiHeadAttention.from_torch(layer.multihead_attn)
        ours.cross_attn.load_state_dict(cross.state_dict())
        with torch.no_grad():
            for mine, theirs in (
                (ours.ff.linear1, layer.linear1),
                (ours.ff.linear2, layer.linear2),
                (ours.norm1, layer.norm1),
                (ours.norm2, layer.norm2),
                (ours.norm3, layer.norm3),
            ):
                mine.weight.copy_(theirs.weight)
                mine.bias.copy_(theirs.bias)
        return ours.to(layer.linear1.weight.device, layer.linear1.weight.dtype)


# ============================================================================ BERT as a decoder
