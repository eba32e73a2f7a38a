"""The Transformer encoder, built from the course's own attention (chapter 02).

Pieces: positional encodings (sinusoidal and learned), the position-wise
feed-forward network, :class:`TransformerEncoderLayer` (post-LN as in the 2017
paper, or pre-LN with ``norm_first=True``), and a :class:`TransformerEncoder`
stack. The layer is proven equal to ``torch.nn.TransformerEncoderLayer`` after
copying weights with :meth:`TransformerEncoderLayer.from_torch`.
"""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from course_utils.layers.attention import AttentionShapeError, MultiHeadAttention

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def sinusoidal_positions(max_len: int, d_model: int) -> torch.Tensor:
    """(max_len, d_model) table: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...)."""
    if d_model % 2:
        raise ValueError(f"sinusoidal positions pair a sine with a cosine: d_model must be even, got {d_model}")
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)
    return table


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal table to (B, L, d_model) embeddings; nothing to learn."""

    def __init__(self, d_model: int, max_len: int = 512):
        super().__init__()
        self.register_buffer("table", sinusoidal_positions(max_len, d_model), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_positions(x, self.table.shape[0])
        return x + self.table[: x.shape[1]]


class LearnedPositionalEmbedding(nn.Module):
    """Adds a trained vector per position (as BERT does) to (B, L, d_model) embeddings."""

    def __init__(self, d_model: int, max_len: int = 512):
        super().__init__()
        self.embedding = nn.Embedding(max_len, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_positions(x, self.embedding.num_embeddings)
        return x + self.embedding.weight[: x.shape[1]]


def _check_positions(x: torch.Tensor, max_len: int) -> None:
    if x.dim() != 3:
        raise AttentionShapeError(f"expected (batch, length, d_model) embeddings, got shape {tuple(x.shape)}")
    if x.shape[1] > max_len:
        raise AttentionShapeError(
            f"sequence length {x.shape[1]} is longer than the position table ({max_len}); "
            f"truncate the input or build the encoding with max_len >= {x.shape[1]}."
        )


class FeedForward(nn.Module):
    """Position-wise feed-forward: Linear(d_model, d_ff) -> activation -> dropout -> Linear(d_ff, d_model)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "relu"):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)
        self.activation = _ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


def torch_activation_name(act) -> str:
    """'relu' or 'gelu' for the activation of a torch Transformer layer (what ``from_torch`` can copy)."""
    if act is F.relu or isinstance(act, nn.ReLU):
        return "relu"
    if act is F.gelu or (isinstance(act, nn.GELU) and act.approximate == "none"):
        return "gelu"
    raise ValueError(
        f"from_torch copies layers whose activation is relu or exact gelu; this one "
        f"uses {act!r}. Build the torch layer with activation='relu' or 'gelu'."
    )


class TransformerEncoderLayer(nn.Module):
    """Self-attention and feed-forward, each wrapped in a residual connection and LayerNorm.

    post-LN (``norm_first=False``, the 2017 paper): x = norm(x + sublayer(x)).
    pre-LN  (``norm_first=True``, most modern models): x = x + sublayer(norm(x)).

    forward(x (B, L, d_model), mask=None, key_padding_mask=None) -> (B, L, d_model);
    masks as in :class:`~course_utils.layers.attention.MultiHeadAttention` (True = may attend).
    The last call's attention weights (B, heads, L, L) are kept in ``self.last_attention``
    when ``self.keep_attention`` is True, for the attention viewers.
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
        self.ff = FeedForward(d_model, d_ff, dropout=dropout, activation=activation)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm_first = norm_first
        self.keep_attention = False
        self.last_attention: torch.Tensor | None = None
        self.fused = False  # True: torch's fused attention kernel whenever weights aren't kept

    def _attend(self, x, mask, key_padding_mask):
        out, weights = self.self_attn(
            x, x, x, mask=mask, key_padding_mask=key_padding_mask, need_weights=self.keep_attention or not self.fused
        )
        if self.keep_attention:
            self.last_attention = weights.detach()
        return self.dropout1(out)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.norm_first:
            x = x + self._attend(self.norm1(x), mask, key_padding_mask)
            return x + self.dropout2(self.ff(self.norm2(x)))
        x = self.norm1(x + self._attend(x, mask, key_padding_mask))
        return self.norm2(x + self.dropout2(self.ff(x)))

    @classmethod
    def from_torch(cls, layer: nn.TransformerEncoderLayer) -> "TransformerEncoderLayer":
        """A copy of ``torch.nn.TransformerEncoderLayer``'s weights in this module (same outputs)."""
        if not isinstance(layer, nn.TransformerEncoderLayer):
            raise TypeError(f"from_torch expects torch.nn.TransformerEncoderLayer, got {type(layer).__name__}")
        name = torch_activation_name(layer.activation)
        if layer.linear1.bias is None or layer.norm1.bias is None:
            raise ValueError(
                "from_torch needs a torch layer with biases (bias=True, the default); "
                "this course's encoder layer always has them."
            )
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
        with torch.no_grad():
            for mine, theirs in (
                (ours.ff.linear1, layer.linear1),
                (ours.ff.linear2, layer.linear2),
                (ours.norm1, layer.norm1),
                (ours.norm2, layer.norm2),
            ):
                mine.weight.copy_(theirs.weight)
                mine.bias.copy_(theirs.bias)
        return ours.to(layer.linear1.weight.device, layer.linear1.weight.dtype)


class TransformerEncoder(nn.Module):
    """A stack of ``num_layers`` encoder layers; pre-LN stacks end with a final LayerNorm."""

    def __init__(
        self,
        num_layers: int,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        norm_first: bool = False,
        activation: str = "relu",
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(d_model, num_heads, d_ff, dropout, norm_first, activation)
            for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()

    def forward(self, x, mask=None, key_padding_mask=None):
        for layer in self.layers:
            x = layer(x, mask=mask, key_padding_mask=key_padding_mask)
        return self.final_norm(x)

    def attention_maps(self) -> list[torch.Tensor]:
        """Each layer's attention weights from the last forward call (needs ``keep_attention(True)``)."""
        return [layer.last_attention for layer in self.layers]

    def keep_attention(self, keep: bool = True) -> "TransformerEncoder":
        for layer in self.layers:
            layer.keep_attention = keep
        return self
