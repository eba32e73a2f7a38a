"""BERT with one task head: masked-LM only, a label per token (NER), a label per sequence.

Each class is the course's :class:`~course_utils.text.bert.BertModel` under a head, with the
transformers class of the same name as its twin: same parameter names, ``from_hf`` / ``to_hf``
and ``save_pretrained`` / ``from_pretrained`` as every model of :mod:`course_utils.text.bert`.

* :class:`BertForMaskedLM`: the MLM head only (no pooler, no NSP);
* :class:`BertForTokenClassification`: dropout + Linear(hidden, num_labels) on every position
  (chapter 04's NER model);
* :class:`BertForSequenceClassification`: the same on the pooled [CLS] vector, with the loss
  chosen by ``config.problem_type`` as transformers does.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F

from course_utils.text.bert import BertModel, _BertPreTrainedBase, _mean_loss_or_zero, _mlm_logits_and_loss
from course_utils.text.bert_inputs import _check_labels
from course_utils.text.bert_layers import BertOnlyMLMHead, _check_config, _init_weights

__all__ = [
    "BertForMaskedLM",
    "BertForTokenClassification",
    "BertForSequenceClassification",
    "MaskedLMOutput",
    "ClassifierOutput",
]


@dataclass
class MaskedLMOutput:
    """What :class:`BertForMaskedLM` returns."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, L, vocab), or (n_masked, vocab) with masked_only
    attentions: tuple[torch.Tensor, ...] | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class ClassifierOutput:
    """What the token- and sequence-classification models return."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, L, num_labels) per token or (B, num_labels) per sequence
    attentions: tuple[torch.Tensor, ...] | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


class BertForMaskedLM(_BertPreTrainedBase):
    """BERT with the MLM head only (no pooler, no NSP), as transformers' BertForMaskedLM."""

    hf_class_name = "BertForMaskedLM"

    def __init__(self, config):
        super().__init__()
        _check_config(config)
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        self.cls.apply(functools.partial(_init_weights, std=config.initializer_range))
        self._tie_output_layer()

    def forward(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        labels=None,
        masked_only: bool = False,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> MaskedLMOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, output_attentions, output_hidden_states)
        if labels is not None:
            _check_labels(labels, input_ids.shape, self.config.vocab_size, "MLM")
        logits, loss = _mlm_logits_and_loss(
            self.cls.predictions, out.last_hidden_state, labels, masked_only, self.config.vocab_size
        )
        return MaskedLMOutput(loss, logits, out.attentions, out.hidden_states)


def _classifier_dropout(config) -> float:
    p = getattr(config, "classifier_dropout", None)
    return config.hidden_dropout_prob if p is None else p


class BertForTokenClassification(_BertPreTrainedBase):
    """One label per token (e.g. NER BIO tags): dropout + Linear(hidden, num_labels) on every position.

    Labels (B, L), -100 at positions that take no part in the loss (padding, later sub-words).
    ``config.id2label`` / ``label2id`` are saved with the model, for transformers' pipelines.
    """

    hf_class_name = "BertForTokenClassification"

    def __init__(self, config):
        super().__init__()
        _check_config(config)
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        _init_weights(self.classifier, config.initializer_range)

    def forward(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        labels=None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> ClassifierOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, output_attentions, output_hidden_states)
        logits = self.classifier(self.dropout(out.last_hidden_state))
        loss = None
        if labels is not None:
            _check_labels(labels, input_ids.shape, self.config.num_labels, "token-classification")
            loss = _mean_loss_or_zero(
                logits.view(-1, self.config.num_labels), labels.reshape(-1), "token-classification loss"
            )
        return ClassifierOutput(loss, logits, out.attentions, out.hidden_states)


class BertForSequenceClassification(_BertPreTrainedBase):
    """One label per sequence: pooled [CLS] -> dropout -> Linear(hidden, num_labels).

    The loss follows ``config.problem_type`` as transformers does: cross-entropy for integer
    labels, mean squared error when num_labels == 1 (regression), binary cross-entropy for
    float multi-label targets.
    """

    hf_class_name = "BertForSequenceClassification"

    def __init__(self, config):
        super().__init__()
        _check_config(config)
        self.config = config
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        _init_weights(self.classifier, config.initializer_range)

    def forward(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        labels=None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> ClassifierOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, output_attentions, output_hidden_states)
        logits = self.classifier(self.dropout(out.pooler_output))
        loss = None
        if labels is not None:
            loss = self._loss(logits, labels)
        return ClassifierOutput(loss, logits, out.attentions, out.hidden_states)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        num_labels = self.config.num_labels
        problem = self.config.problem_type
        if problem is None:
            if num_labels == 1:
                problem = "regression"
            elif not labels.dtype.is_floating_point:
                problem = "single_label_classification"
            else:
                problem = "multi_label_classification"
        if problem == "regression":
            return F.mse_loss(logits.squeeze(), labels.squeeze()) if num_labels == 1 else F.mse_loss(logits, labels)
        if problem == "single_label_classification":
            _check_labels(labels.view(-1), logits.shape[:1], num_labels, "sequence-classification")
            return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
        return F.binary_cross_entropy_with_logits(logits, labels)
