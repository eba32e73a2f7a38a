"""A decoder-only language model (a GPT) built from the course's own attention, weight-compatible
with ``transformers.GPT2LMHeadModel``.

Chapter 06 assembles it from the pieces of chapters 01-02:

* token and learned position embeddings, summed (positions of new tokens are *offset by the
  cache length*);
* a stack of pre-LN :class:`DecoderBlock` s: ``x = x + attn(norm1(x))``, ``x = x + mlp(norm2(x))``,
  where the attention is :class:`CausalSelfAttention`, the course's
  :class:`~course_utils.layers.attention.MultiHeadAttention` with a causal mask and a KV cache;
* a final LayerNorm and the LM head, whose weight *is* the token embedding matrix (tied).

``GPTModel(config)`` takes a ``transformers.GPT2Config``; ``from_hf`` / ``to_hf`` move weights
from / to ``transformers.GPT2LMHeadModel`` (GPT-2 stores its projections as ``Conv1D``, whose
weight is the transpose of ``nn.Linear``'s, and packs q, k, v into one ``c_attn``);
``save_pretrained(dir, tokenizer)`` writes config.json + model.safetensors (+ tokenizer) that
``AutoModelForCausalLM.from_pretrained(dir)`` and ``pipeline("text-generation", model=dir)`` read.

**forward** ``(input_ids (B, L), attention_mask=None, past_key_values=None, use_cache=False,
position_ids=None, output_attentions=False)`` returns a :class:`DecoderOutput` named tuple
``(logits (B, L, V), past_key_values, attentions)``: logits first, the cache only when
``use_cache=True``, attention weights only when asked.

**The cache format** (what :func:`course_utils.text.generation.generate` passes back in): a tuple with
one entry per block, each a tuple ``(keys, values)`` of tensors of shape
``(B, num_heads, T_past, head_dim)``, dimension 0 being the batch. A model that subclasses
:class:`DecoderBlock` may append more tensors per block (e.g. cross-attention keys and values);
generation reorders every tensor of the nested tuple along dimension 0 when beams are reordered.
``attention_mask`` (B, T_past + L), 1 = real token, 0 = padding, covers the cached positions too.

Positions: without ``position_ids`` the new tokens get positions ``T_past .. T_past + L - 1``,
as transformers' GPT-2 forward does; generation passes ``cumsum(attention_mask) - 1`` instead so
that left-padded prompts start at position 0 (as transformers' ``generate`` does).
"""

from __future__ import annotations

import copy
import functools
import json
import math
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from course_utils.layers.attention import MultiHeadAttention, scaled_dot_product_attention

__all__ = [
    "MLP",
    "CausalSelfAttention",
    "DecoderBlock",
    "DecoderInputError",
    "DecoderOutput",
    "GPTModel",
    "KVCache",
    "position_ids_from_mask",
    "tiny_config",
]

# GPT2Config.activation_function names we support, and the function each means
_ACTIVATIONS = {
    "gelu_new": functools.partial(F.gelu, approximate="tanh"),
    "gelu_pytorch_tanh": functools.partial(F.gelu, approximate="tanh"),
    "gelu": F.gelu,
    "relu": F.relu,
}

KVCache = tuple  # tuple over blocks of (keys, values), each (B, heads, T_past, head_dim)


class DecoderInputError(ValueError):
    """Input the decoder cannot take (too long, ids outside the vocabulary, wrong shape), with the fix."""


class DecoderOutput(NamedTuple):
    """What :meth:`GPTModel.forward` returns; ``out[0]`` and ``out.logits`` are the logits."""

    logits: torch.Tensor
    past_key_values: KVCache | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


def tiny_config(
    vocab_size: int = 50, n_positions: int = 32, n_embd: int = 16, n_layer: int = 2, n_head: int = 2, **overrides
):
    """A small ``GPT2Config`` for tests and demos (dropout 0 unless overridden)."""
    from transformers import GPT2Config

    settings = dict(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=vocab_size - 1,
        eos_token_id=vocab_size - 1,
    )
    settings.update(overrides)
    return GPT2Config(**settings)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip padding: ``cumsum(mask) - 1``, 0 at padded places (transformers' generate)."""
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


# ---------------------------------------------------------------- layers


class CausalSelfAttention(MultiHeadAttention):
    """The course's multi-head attention, used as *causal self*-attention with a KV cache.

    ``forward(x (B, L, d), past=None, key_mask=None, need_weights=False)`` returns
    ``(output (B, L, d), (keys, values), weights or None)``. ``past`` is this layer's
    ``(keys, values)`` of the T_past earlier positions; the new keys and values are appended,
    and query i (absolute position T_past + i) may attend to keys 0 .. T_past + i.
    ``key_mask`` (B, T_past + L) bool, True = a real token.
    """

    def __init__(
        self, d_model: int, num_heads: int, dropout: float = 0.0, resid_dropout: float = 0.0, scale: float | None = None
    ):
        super().__init__(d_model, num_heads, dropout=dropout, bias=True)
        self.resid_dropout = nn.Dropout(resid_dropout)
        self.scale = scale  # None: 1/sqrt(head_dim)

    def forward(
        self,
        x: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
        key_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ):
        q = self.split_heads(self.q_proj(x))
        k = self.split_heads(self.k_proj(x))
        v = self.split_heads(self.v_proj(x))
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        length, total = q.shape[2], k.shape[2]
        offset = total - length  # T_past: the new queries sit at positions offset .. total - 1
        mask = None
        if length > 1:
            # query i may see keys 0 .. offset + i: the causal mask shifted right by the cache length
            mask = torch.ones(length, total, dtype=torch.bool, device=x.device).tril(diagonal=offset)
        if key_mask is not None and not bool(key_mask.all()):
            keys_ok = key_mask[:, None, None, :]  # (B, 1, 1, total): broadcast over heads and queries
            mask = keys_ok if mask is None else mask & keys_ok
        dropout_p = self.dropout if self.training else 0.0
        if need_weights:
            out, weights = scaled_dot_product_attention(q, k, v, mask=mask, dropout_p=dropout_p, scale=self.scale)
        else:  # the same arithmetic in torch's fused kernel (faster, no weights); like ours, it gives
            # a query that may see nothing (a padding position) a zero output instead of NaN
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=self.scale)
            weights = None
        out = self.resid_dropout(self.out_proj(self.merge_heads(out)))
        return out, (k, v), weights


class MLP(nn.Module):
    """GPT-2's feed-forward: Linear(d, d_ff) -> GELU (tanh approximation) -> Linear(d_ff, d) -> dropout."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu_new", dropout: float = 0.0):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation_function {activation!r} is not supported; use one of {sorted(_ACTIVATIONS)}")
        self.fc = nn.Linear(d_model, d_ff)
        self.proj = nn.Linear(d_ff, d_model)
        self.activation = _ACTIVATIONS[activation]
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.activation(self.fc(x))))


class DecoderBlock(nn.Module):
    """One pre-LN decoder block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``.

    ``forward(x, past=None, key_mask=None, need_weights=False)`` returns
    ``(x, present, weights)`` where ``present = (keys, values)`` for the cache. A captioning
    decoder can subclass it and add a cross-attention sub-layer between the two.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        activation: str = "gelu_new",
        layer_norm_eps: float = 1e-5,
        scale: float | None = None,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.self_attn = CausalSelfAttention(
            d_model, num_heads, dropout=attn_dropout, resid_dropout=dropout, scale=scale
        )
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.mlp = MLP(d_model, d_ff, activation=activation, dropout=dropout)

    def forward(self, x: torch.Tensor, past=None, key_mask: torch.Tensor | None = None, need_weights: bool = False):
        attended, present, weights = self.self_attn(
            self.norm1(x), past=past, key_mask=key_mask, need_weights=need_weights
        )
        x = x + attended
        x = x + self.mlp(self.norm2(x))
        return x, present, weights


# ---------------------------------------------------------------- weight names

# the course's names -> GPT-2's (inside transformer.h.{i}); q/k/v are packed into attn.c_attn
_BLOCK_TO_HF = {
    "norm1": "ln_1",
    "norm2": "ln_2",
    "self_attn.out_proj": "attn.c_proj",
    "mlp.fc": "mlp.c_fc",
    "mlp.proj": "mlp.c_proj",
}
_IGNORED_HF_KEYS = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers of old checkpoints


def _check_config(config) -> None:
    from transformers import GPT2Config

    if not isinstance(config, GPT2Config):
        raise TypeError(
            f"GPTModel takes a transformers.GPT2Config, got {type(config).__name__}; "
            "build one with GPT2Config(vocab_size=..., n_positions=..., n_embd=..., n_layer=..., n_head=...)."
        )
    if config.n_embd % config.n_head:
        raise ValueError(
            f"n_embd={config.n_embd} is not divisible by n_head={config.n_head}: each head gets "
            "n_embd / n_head features."
        )
    if getattr(config, "add_cross_attention", False):
        raise ValueError("GPTModel is decoder-only: add_cross_attention=True is chapter 07's captioning decoder.")
    if config.activation_function not in _ACTIVATIONS:
        raise ValueError(
            f"activation_function {config.activation_function!r} is not supported; use one of {sorted(_ACTIVATIONS)}."
        )


class GPTModel(nn.Module):
    """A GPT-2-style decoder-only language model; see the module docstring for the interface."""

    def __init__(self, config):
        super().__init__()
        _check_config(config)
        self.config = copy.deepcopy(config)
        d, heads = config.n_embd, config.n_head
        d_ff = config.n_inner if config.n_inner is not None else 4 * d
        self.token_embedding = nn.Embedding(config.vocab_size, d)
        self.position_embedding = nn.Embedding(config.n_positions, d)
        self.dropout = nn.Dropout(config.embd_pdrop)
        self.blocks = nn.ModuleList()
        for i in range(config.n_layer):
            scale = 1.0 / math.sqrt(d // heads) if config.scale_attn_weights else 1.0
            if config.scale_attn_by_inverse_layer_idx:
                scale /= float(i + 1)
            self.blocks.append(
                DecoderBlock(
                    d,
                    heads,
                    d_ff,
                    dropout=config.resid_pdrop,
                    attn_dropout=config.attn_pdrop,
                    activation=config.activation_function,
                    layer_norm_eps=config.layer_norm_epsilon,
                    scale=scale,
                )
            )
        self.final_norm = nn.LayerNorm(d, eps=config.layer_norm_epsilon)
        self.lm_head = nn.Linear(d, config.vocab_size, bias=False)
        self.apply(functools.partial(_init_weights, std=config.initializer_range))
        for block in self.blocks:  # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer)
            for proj in (block.self_attn.out_proj, block.mlp.proj):
                nn.init.normal_(proj.weight, std=config.initializer_range / math.sqrt(2 * config.n_layer))
        if self.tied:
            self.lm_head.weight = self.token_embedding.weight  # one matrix: embedding in, scores out

    # --- properties
    @property
    def tied(self) -> bool:
        return getattr(self.config, "tie_word_embeddings", True) is not False

    @property
    def max_positions(self) -> int:
        """Length of the position table: generation stops (with a warning) before running past it."""
        return self.config.n_positions

    def num_parameters(self) -> int:
        """Distinct parameters (the tied LM head counted once)."""
        return sum(p.numel() for p in self.parameters())

    # --- forward
    def _check_inputs(self, input_ids, attention_mask, past_key_values, position_ids):
        if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.long, torch.int, torch.int16):
            raise DecoderInputError(
                f"input_ids must be an integer tensor (B, L), got "
                f"{type(input_ids).__name__ if not isinstance(input_ids, torch.Tensor) else input_ids.dtype}"
            )
        if input_ids.dim() != 2:
            raise DecoderInputError(
                f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}; "
                "for one sequence use ids.unsqueeze(0)."
            )
        if input_ids.shape[1] == 0:
            raise DecoderInputError("input_ids is empty (length 0): give at least one token.")
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.config.vocab_size):
            raise DecoderInputError(
                f"token ids must be in 0..{self.config.vocab_size - 1} (vocab_size), got "
                f"{int(input_ids.min())}..{int(input_ids.max())}: was the tokenizer made for this model?"
            )
        past_len = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        total = past_len + input_ids.shape[1]
        if position_ids is None and total > self.config.n_positions:
            raise DecoderInputError(
                f"{total} positions (cache {past_len} + input {input_ids.shape[1]}) do not fit "
                f"the position table of {self.config.n_positions}: truncate the input to the last "
                f"{self.config.n_positions - past_len} tokens."
            )
        if position_ids is not None and int(position_ids.max()) >= self.config.n_positions:
            raise DecoderInputError(
                f"position id {int(position_ids.max())} is past the position table "
                f"({self.config.n_positions} positions): shorten the input."
            )
        if attention_mask is not None and tuple(attention_mask.shape) != (input_ids.shape[0], total):
            raise DecoderInputError(
                f"attention_mask has shape {tuple(attention_mask.shape)}; expected (batch, cache + "
                f"input length) = ({input_ids.shape[0]}, {total}), 1 = real token, 0 = padding."
            )
        return past_len

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> DecoderOutput:
        past_len = self._check_inputs(input_ids, attention_mask, past_key_values, position_ids)
        length = input_ids.shape[1]
        if position_ids is None:
            position_ids = torch.arange(past_len, past_len + length, device=input_ids.device)[None, :]
        x = self.dropout(self.token_embedding(input_ids) + self.position_embedding(position_ids))
        key_mask = None if attention_mask is None else attention_mask.bool()
        presents, attentions = [], []
        for i, block in enumerate(self.blocks):
            past = None if past_key_values is None else past_key_values[i]
            x, present, weights = block(x, past=past, key_mask=key_mask, need_weights=output_attentions)
            if use_cache:
                presents.append(present)
            if output_attentions:
                attentions.append(weights.detach())
        logits = self.lm_head(self.final_norm(x))
        return DecoderOutput(
            logits, tuple(presents) if use_cache else None, tuple(attentions) if output_attentions else None
        )

    def loss(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token cross-entropy: the logits at position t predict token t + 1 (targets shifted by one).

        Padding positions (mask 0) are left out of the average, as transformers' ``labels`` with -100 are.
        """
        logits = self(input_ids, attention_mask=attention_mask).logits
        targets = input_ids[:, 1:]
        if attention_mask is not None:
            targets = targets.masked_fill(attention_mask[:, 1:] == 0, -100)
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)

    # --- transformers weights
    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under GPT-2's names and layout (Conv1D: (in, out), q/k/v packed in c_attn)."""
        out = {
            "transformer.wte.weight": self.token_embedding.weight.detach(),
            "transformer.wpe.weight": self.position_embedding.weight.detach(),
            "transformer.ln_f.weight": self.final_norm.weight.detach(),
            "transformer.ln_f.bias": self.final_norm.bias.detach(),
        }
        for i, block in enumerate(self.blocks):
            prefix = f"transformer.h.{i}."
            attn = block.self_attn
            out[prefix + "attn.c_attn.weight"] = (
                torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight], dim=0).detach().T.contiguous()
            )
            out[prefix + "attn.c_attn.bias"] = torch.cat(
                [attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]
            ).detach()
            for own, hf in _BLOCK_TO_HF.items():
                module = block.get_submodule(own)
                transpose = isinstance(module, nn.Linear)  # Conv1D stores (in, out)
                out[f"{prefix}{hf}.weight"] = (
                    module.weight.detach().T.contiguous() if transpose else module.weight.detach()
                )
                out[f"{prefix}{hf}.bias"] = module.bias.detach()
        if not self.tied:
            out["lm_head.weight"] = self.lm_head.weight.detach()
        return out

    def load_hf_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Copy GPT-2 weights (transformers' names, with or without ``transformer.``) into this model."""
        given = {}
        for key, tensor in state_dict.items():
            if key.endswith(_IGNORED_HF_KEYS):
                continue
            if not key.startswith(("transformer.", "lm_head.")):
                key = "transformer." + key
            given[key] = tensor
        if self.tied:
            given.pop("lm_head.weight", None)  # the same matrix as wte
        own = self.hf_state_dict()
        missing = sorted(set(own) - set(given))
        unexpected = sorted(set(given) - set(own))
        if missing or unexpected:
            raise ValueError(
                f"the checkpoint does not fit this GPTModel (is the config the checkpoint's own?): "
                f"missing {missing[:6]}, unexpected {unexpected[:6]}"
            )
        wrong = [
            f"{k}: {tuple(given[k].shape)} vs {tuple(own[k].shape)}" for k in own if given[k].shape != own[k].shape
        ]
        if wrong:
            raise ValueError("shapes differ between the checkpoint and the model: " + "; ".join(wrong[:6]))
        d = self.config.n_embd
        with torch.no_grad():
            self.token_embedding.weight.copy_(given["transformer.wte.weight"])
            self.position_embedding.weight.copy_(given["transformer.wpe.weight"])
            self.final_norm.weight.copy_(given["transformer.ln_f.weight"])
            self.final_norm.bias.copy_(given["transformer.ln_f.bias"])
            for i, block in enumerate(self.blocks):
                prefix = f"transformer.h.{i}."
                attn = block.self_attn
                w = given[prefix + "attn.c_attn.weight"]  # (d, 3d): columns are q | k | v
                b = given[prefix + "attn.c_attn.bias"]
                for j, proj in enumerate((attn.q_proj, attn.k_proj, attn.v_proj)):
                    proj.weight.copy_(w[:, j * d : (j + 1) * d].T)
                    proj.bias.copy_(b[j * d : (j + 1) * d])
                for own_name, hf in _BLOCK_TO_HF.items():
                    module = block.get_submodule(own_name)
                    weight = given[f"{prefix}{hf}.weight"]
                    module.weight.copy_(weight.T if isinstance(module, nn.Linear) else weight)
                    module.bias.copy_(given[f"{prefix}{hf}.bias"])
            if not self.tied:
                self.lm_head.weight.copy_(given["lm_head.weight"])

    @classmethod
    def from_hf(cls, hf_model) -> GPTModel:
        """A copy of a ``transformers.GPT2LMHeadModel`` (same weights, same train/eval mode)."""
        import transformers

        if not isinstance(hf_model, transformers.GPT2LMHeadModel):
            raise TypeError(f"from_hf expects transformers.GPT2LMHeadModel, got {type(hf_model).__name__}")
        ours = cls(hf_model.config)
        ours.load_hf_state_dict(hf_model.state_dict())
        weight = hf_model.transformer.wte.weight
        return ours.to(weight.device, weight.dtype).train(hf_model.training)

    def _hf_config(self):
        config = copy.deepcopy(self.config)
        config.architectures = ["GPT2LMHeadModel"]
        return config

    def to_hf(self, attn_implementation: str | None = None):
        """The same weights in ``transformers.GPT2LMHeadModel`` (default attention unless told: "eager", "sdpa")."""
        import transformers

        config = self._hf_config()
        if attn_implementation is not None:
            config._attn_implementation = attn_implementation
        hf_model = transformers.GPT2LMHeadModel(config)
        result = hf_model.load_state_dict(self.hf_state_dict(), strict=False)
        leftover = [
            k
            for k in result.missing_keys
            if not (self.tied and k == "lm_head.weight") and not k.endswith(_IGNORED_HF_KEYS)
        ]
        if leftover or result.unexpected_keys:  # only if transformers changed GPT-2's layout
            raise RuntimeError(
                f"transformers' GPT-2 layout changed: missing {leftover}, unexpected {result.unexpected_keys}"
            )
        if self.tied:
            hf_model.tie_weights()
        weight = self.token_embedding.weight
        return hf_model.to(weight.device, weight.dtype).train(self.training)

    # --- directories
    def save_pretrained(self, directory: str | Path, tokenizer=None) -> Path:
        """config.json + model.safetensors in transformers' layout, and the tokenizer when given
        (a transformers tokenizer, or a `tokenizers.Tokenizer`, saved as a fast GPT-2 tokenizer)."""
        from course_utils.checkpoints import save_transformers_dir

        if tokenizer is not None:
            tokenizer = as_transformers_tokenizer(tokenizer, self.config)
            if len(tokenizer) != self.config.vocab_size:
                raise ValueError(
                    f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
                    f"{self.config.vocab_size}: save the tokenizer the model was trained with."
                )
        return save_transformers_dir(directory, self._hf_config(), self.hf_state_dict(), tokenizer)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> GPTModel:
        """Read a GPT-2 directory in transformers' layout (config.json + model.safetensors), in eval mode."""
        from safetensors.torch import load_file
        from transformers import GPT2Config

        directory = Path(directory)
        config_file, weights = directory / "config.json", directory / "model.safetensors"
        if not config_file.is_file() or not weights.is_file():
            raise FileNotFoundError(
                f"{directory} is not a model directory: it needs config.json and "
                "model.safetensors (write one with model.save_pretrained(dir))."
            )
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
        if model_type != "gpt2":
            raise ValueError(f"{directory} holds a {model_type!r} model; GPTModel reads GPT-2 checkpoints only.")
        model = cls(GPT2Config.from_pretrained(str(directory)))
        model.load_hf_state_dict(load_file(str(weights)))
        return model.eval()


def _init_weights(module: nn.Module, std: float) -> None:
    """GPT-2's initialisation: N(0, std) for weights and embeddings, zero biases, LayerNorm 1 and 0."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=std)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def as_transformers_tokenizer(tokenizer, config=None):
    """A transformers tokenizer as is; a `tokenizers.Tokenizer` wrapped as ``PreTrainedTokenizerFast`` with the
    end-of-text token (``config.eos_token_id``) as its eos, bos and pad token."""
    if hasattr(tokenizer, "save_pretrained"):
        return tokenizer
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    if not isinstance(tokenizer, Tokenizer):
        raise TypeError(
            f"expected a transformers tokenizer or a `tokenizers.Tokenizer`, got {type(tokenizer).__name__}"
        )
    special = {}
    eos_id = getattr(config, "eos_token_id", None) if config is not None else None
    if eos_id is not None and tokenizer.id_to_token(eos_id) is not None:
        eos = tokenizer.id_to_token(eos_id)
        special = dict(eos_token=eos, bos_token=eos, pad_token=eos, unk_token=eos)
    max_len = getattr(config, "n_positions", None) if config is not None else None
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=max_len or 1024, **special)
