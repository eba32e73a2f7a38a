"""BERT as a decoder (chapter 07): chapter 03's layers, causal, with a cross-attention sub-layer.

:class:`BertDecoder` is the course's BERT embeddings (:mod:`course_utils.text.bert_layers`), each
encoder layer made causal and given a cross-attention sub-layer between its self-attention and
its feed-forward network (transformers' ``BertLayer`` with ``add_cross_attention=True``), and the
MLM head predicting the next token. It is weight-compatible with
``transformers.BertLMHeadModel(is_decoder=True, add_cross_attention=True)`` both ways
(:meth:`~BertDecoder.from_hf`, :meth:`~BertDecoder.to_hf`), parameter names mapped as
:mod:`course_utils.text.bert_weights` maps the encoder's.
"""

from __future__ import annotations

import copy
import functools

import torch
from torch import nn

from course_utils.text.bert_layers import BertEmbeddings, BertOnlyMLMHead, _init_weights, build_encoder
from course_utils.text.bert_weights import _LAYER_TO_HF
from course_utils.checkpoints import CheckpointError
from course_utils.vision.cross_attention import CaptionerInputError, CrossAttention

__all__ = ["BertDecoder", "BertDecoderLayer", "BertCrossAttentionSublayer"]

# the cross-attention sub-layer's names -> transformers' (inside encoder.layer.{i})
_CROSS_TO_HF = {
    "cross.attn.q_proj": "crossattention.self.query",
    "cross.attn.k_proj": "crossattention.self.key",
    "cross.attn.v_proj": "crossattention.self.value",
    "cross.attn.out_proj": "crossattention.output.dense",
    "cross.norm": "crossattention.output.LayerNorm",
}


class BertCrossAttentionSublayer(nn.Module):
    """BERT's cross-attention sub-layer: attention over the memory, dropout, residual, LayerNorm (post-LN)."""

    def __init__(self, config):
        super().__init__()
        self.attn = CrossAttention(
            config.hidden_size, config.num_attention_heads, dropout=config.attention_probs_dropout_prob
        )
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x, memory, memory_mask=None):
        return self.norm(
            x + self.dropout(self.attn(x, memory, memory, key_padding_mask=memory_mask, need_weights=False)[0])
        )


class BertDecoderLayer(nn.Module):
    """One of chapter 03's BERT layers, causal, with a cross-attention sub-layer between its
    self-attention and its feed-forward network (transformers' ``BertLayer`` with
    ``add_cross_attention=True``). The self-attention and feed-forward are the course's
    :class:`~course_utils.layers.transformer.TransformerEncoderLayer` pieces, reused as they are."""

    def __init__(self, encoder_layer: nn.Module, config):
        super().__init__()
        self.layer = encoder_layer
        self.cross = BertCrossAttentionSublayer(config)

    def forward(self, x, memory, causal_and_padding, memory_mask=None):
        layer = self.layer
        x = layer.norm1(x + layer._attend(x, causal_and_padding, None))
        x = self.cross(x, memory, memory_mask)
        return layer.norm2(x + layer.dropout2(layer.ff(x)))


class BertDecoder(nn.Module):
    """BERT as a decoder: the course's embeddings, causal BERT layers with cross-attention over a
    memory, and the MLM head (tied to the word embeddings) predicting the next token.

    ``forward(input_ids (B, L), encoder_hidden_states (B, N, hidden), attention_mask (B, L) 1/0,
    encoder_attention_mask (B, N) 1/0)`` -> logits (B, L, vocab). Weights move from / to
    ``transformers.BertLMHeadModel(config)`` with ``is_decoder=True, add_cross_attention=True``
    (:meth:`from_hf`, :meth:`to_hf`)."""

    def __init__(self, config):
        super().__init__()
        if not (getattr(config, "is_decoder", False) and getattr(config, "add_cross_attention", False)):
            raise ValueError("BertDecoder needs a BertConfig with is_decoder=True and add_cross_attention=True.")
        self.config = copy.deepcopy(config)
        self.embeddings = BertEmbeddings(config)
        self.layers = nn.ModuleList(BertDecoderLayer(layer, config) for layer in build_encoder(config).layers)
        for block in self.layers:
            block.layer.fused = False  # padded query rows stay finite through the course's own attention
        self.cls = BertOnlyMLMHead(config)
        self.apply(functools.partial(_init_weights, std=config.initializer_range))
        self.cls.predictions.decoder.weight = self.embeddings.word_embeddings.weight

    def forward(self, input_ids, encoder_hidden_states, attention_mask=None, encoder_attention_mask=None):
        length = input_ids.shape[1]
        if length > self.config.max_position_embeddings:
            raise CaptionerInputError(
                f"{length} tokens do not fit the {self.config.max_position_embeddings} positions."
            )
        mask = torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril()[None, None]
        if attention_mask is not None:
            mask = mask & attention_mask.bool()[:, None, None, :]
        memory_mask = None if encoder_attention_mask is None else encoder_attention_mask.bool()
        x = self.embeddings(input_ids)
        for block in self.layers:
            x = block(x, encoder_hidden_states, mask, memory_mask)
        return self.cls(x)

    # --- weights in transformers' names
    def hf_state_dict(self) -> dict:
        out = {}
        for name, tensor in self.state_dict().items():
            if name.startswith("layers."):
                index, rest = name[len("layers.") :].split(".", 1)
                module, param = rest.rsplit(".", 1)
                if module.startswith("layer."):
                    hf = _LAYER_TO_HF[module[len("layer.") :]]
                else:
                    hf = _CROSS_TO_HF[module]
                name = f"bert.encoder.layer.{index}.{hf}.{param}"
            elif name.startswith("embeddings."):
                name = "bert." + name
            if name == "cls.predictions.decoder.weight" or name == "cls.predictions.decoder.bias":
                continue  # tied: the word embeddings and cls.predictions.bias hold them
            out[name] = tensor.detach()
        return out

    def load_hf_state_dict(self, state: dict) -> None:
        own = self.hf_state_dict()
        state = {
            k: v
            for k, v in state.items()
            if k not in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")
            and not k.endswith(("position_ids", "token_type_ids"))
        }
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
        if missing or unexpected or wrong:
            raise CheckpointError(
                f"the weights do not fit this BertDecoder: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}, other shapes {wrong[:5]}"
            )
        with torch.no_grad():
            for k, v in own.items():
                v.copy_(state[k])  # own[k] shares storage with the parameter

    @classmethod
    def from_hf(cls, hf_model) -> BertDecoder:
        ours = cls(hf_model.config)
        ours.load_hf_state_dict(hf_model.state_dict())
        return ours.train(hf_model.training)

    def to_hf(self):
        import transformers

        config = copy.deepcopy(self.config)
        config._attn_implementation = "eager"
        hf = transformers.BertLMHeadModel(config)
        result = hf.load_state_dict(self.hf_state_dict(), strict=False)
        leftover = [k for k in result.missing_keys if not k.startswith("cls.predictions.decoder")]
        if leftover or result.unexpected_keys:
            raise CheckpointError(f"transformers' layout changed: {leftover[:5]} {result.unexpected_keys[:5]}")
        return hf.train(self.training)
