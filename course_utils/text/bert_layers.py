"""BERT's building blocks: the config check, embeddings, the encoder stack, the pooler, the MLM and NSP heads.

Chapter 03 assembles BERT from the pieces of chapters 01-02: token, position and segment
(token type) embeddings (:class:`BertEmbeddings`); a stack of the course's post-LN
:class:`~course_utils.layers.transformer.TransformerEncoderLayer` set up exactly as BERT's layer
(:func:`build_encoder`); a pooler (dense + tanh on the [CLS] position); and the heads of the
two pretraining tasks, masked-language modelling (:class:`BertLMPredictionHead`, its output
matrix tied to the word embeddings by the model) and next-sentence prediction
(:class:`BertPreTrainingHeads`). :func:`_init_weights` is BERT's initialisation.

The models that put these together are in :mod:`course_utils.text.bert` (the encoder and the
pretraining model) and :mod:`course_utils.text.bert_tasks` (one task head each); chapter 07's
:class:`~course_utils.vision.bert_decoder.BertDecoder` reuses them too.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
import torch.nn.functional as F

from course_utils.layers.transformer import TransformerEncoder, TransformerEncoderLayer

try:
    from transformers import BertConfig
except ImportError:  # the package imports without transformers; building a model needs it
    BertConfig = None

__all__ = [
    "BertEmbeddings",
    "BertPooler",
    "BertPredictionHeadTransform",
    "BertLMPredictionHead",
    "BertOnlyMLMHead",
    "BertPreTrainingHeads",
    "build_encoder",
]

# hidden_act names of transformers' BertConfig that we support, and the function each means
_ACTIVATIONS = {
    "gelu": F.gelu,
    "relu": F.relu,
    "gelu_pytorch_tanh": functools.partial(F.gelu, approximate="tanh"),
    "gelu_new": functools.partial(F.gelu, approximate="tanh"),
}


def _require_transformers():
    if BertConfig is None:
        raise ModuleNotFoundError(
            "course_utils.text.bert needs the `transformers` package (for BertConfig and the checkpoint "
            "layout): run `./course setup` or `pip install transformers`."
        )


def _check_config(config) -> None:
    _require_transformers()
    if getattr(config, "model_type", None) != "bert":
        raise TypeError(
            f"expected a transformers.BertConfig, got {type(config).__name__}; "
            "build one with transformers.BertConfig(vocab_size=..., hidden_size=..., ...)."
        )
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"hidden_size={config.hidden_size} is not divisible by num_attention_heads="
            f"{config.num_attention_heads}: each head gets hidden_size / num_attention_heads features."
        )
    if not isinstance(config.hidden_act, str) or config.hidden_act not in _ACTIVATIONS:
        raise ValueError(f"hidden_act={config.hidden_act!r} is not supported here; use one of {sorted(_ACTIVATIONS)}.")
    position = getattr(config, "position_embedding_type", "absolute")
    if position not in (None, "absolute"):
        raise ValueError(f"position_embedding_type={position!r}: this BERT has learned absolute positions only.")
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        raise ValueError("this BERT is an encoder: set is_decoder=False and add_cross_attention=False in the config.")


# ---------------------------------------------------------------- modules


class BertEmbeddings(nn.Module):
    """word + position + token type (segment) embeddings, then LayerNorm and dropout."""

    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = self.word_embeddings(input_ids)
        if token_type_ids is None:  # every token in segment A
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings.weight[: input_ids.shape[1]]  # positions 0..L-1, broadcast over batch
        return self.dropout(self.LayerNorm(x))


def build_encoder(config) -> TransformerEncoder:
    """num_hidden_layers of the course's post-LN encoder layer, set up exactly as BERT's.

    BERT applies dropout to the attention probabilities (attention_probs_dropout_prob) and to
    each sub-layer's output (hidden_dropout_prob), but not between the two feed-forward
    linears, so that inner dropout is removed. ``fused``: torch's fused attention kernel
    whenever the attention weights are not asked for.
    """
    encoder = TransformerEncoder(
        0,
        config.hidden_size,
        config.num_attention_heads,
        config.intermediate_size,
        dropout=config.hidden_dropout_prob,
        norm_first=False,
        activation="gelu",
    )
    for _ in range(config.num_hidden_layers):
        layer = TransformerEncoderLayer(
            config.hidden_size,
            config.num_attention_heads,
            config.intermediate_size,
            dropout=config.hidden_dropout_prob,
            norm_first=False,
            activation="gelu",
            layer_norm_eps=config.layer_norm_eps,
        )
        layer.self_attn.dropout = config.attention_probs_dropout_prob
        layer.ff.dropout = nn.Identity()
        layer.ff.activation = _ACTIVATIONS[config.hidden_act]
        layer.fused = True
        encoder.layers.append(layer)
    return encoder


class BertPooler(nn.Module):
    """dense + tanh on the hidden state of the first token ([CLS]): one vector per sequence."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class BertPredictionHeadTransform(nn.Module):
    """dense + activation + LayerNorm before the MLM output layer."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = _ACTIVATIONS[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.activation(self.dense(hidden)))


class BertLMPredictionHead(nn.Module):
    """MLM head: transform, then scores over the vocabulary. ``decoder.weight`` is tied to the
    word embeddings by the model (one matrix both reads and writes tokens); ``bias`` is the
    output-only bias per token (``decoder.bias`` is the same tensor, as in transformers)."""

    def __init__(self, config):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.decoder.bias = self.bias

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden))


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.predictions(hidden)


class BertPreTrainingHeads(nn.Module):
    """MLM head (``predictions``) and NSP head (``seq_relationship``: Linear(hidden, 2) on the pooled output)."""

    def __init__(self, config):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


def _init_weights(module: nn.Module, std: float) -> None:
    """BERT's initialisation (as transformers): N(0, std) weights, zero biases, LayerNorm = identity."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, BertLMPredictionHead):
        nn.init.zeros_(module.bias)
