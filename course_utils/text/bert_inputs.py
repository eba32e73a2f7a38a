"""What BERT accepts: checks of its inputs and labels, each failing with a one-line error that says the fix.

Every way an input can be wrong (not a tensor, floats, a missing batch axis, too long for the
position table, ids outside the vocabulary, a mask that is not 1/0) is caught here before it
turns into an index error deep inside the model; :func:`_keep_mask` turns a 1/0 attention mask
into the boolean one the course's attention takes. Used by every model of
:mod:`course_utils.text.bert` and :mod:`course_utils.text.bert_tasks`.
"""

from __future__ import annotations

import torch

__all__ = ["BertInputError", "IGNORE_INDEX"]

IGNORE_INDEX = -100  # label of positions that take no part in a loss (as torch and transformers)


class BertInputError(ValueError):
    """Input the model cannot take (too long, ids outside the vocabulary, wrong shape), with the fix."""


def _check_int_tensor(name: str, t, example: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise BertInputError(f"{name} must be a torch.Tensor, got {type(t).__name__}; {example}")
    if t.dtype not in (torch.long, torch.int32):  # what nn.Embedding indexes with; uint8 would fail deep inside
        raise BertInputError(
            f"{name} must be torch.long (or torch.int32) integer ids, got dtype {t.dtype}: convert with {name}.long()."
        )


def _check_inputs(config, input_ids, attention_mask, token_type_ids) -> None:
    """Every way the input can be wrong, caught before it turns into an index error deep inside."""
    _check_int_tensor("input_ids", input_ids, "use tokenizer(..., return_tensors='pt')['input_ids'].")
    if input_ids.dim() != 2:
        raise BertInputError(
            f"input_ids has shape {tuple(input_ids.shape)}; BERT expects (batch, length). "
            "For one sequence add a batch axis: input_ids.unsqueeze(0)."
        )
    if input_ids.numel() == 0:
        raise BertInputError(f"input_ids is empty (shape {tuple(input_ids.shape)}): give at least one token.")
    length, limit = input_ids.shape[1], config.max_position_embeddings
    if length > limit:
        raise BertInputError(
            f"input has {length} tokens but the model has position embeddings for at most {limit} "
            f"(max_position_embeddings): truncate it, e.g. tokenizer(..., truncation=True, max_length={limit})."
        )
    low, high = (int(v) for v in torch.aminmax(input_ids))
    if high >= config.vocab_size or low < 0:
        bad = high if high >= config.vocab_size else low
        raise BertInputError(
            f"input id {bad} is outside the vocabulary (vocab_size={config.vocab_size}, ids 0..{config.vocab_size - 1}): "
            "the tokenizer does not match this model; check it with check_tokenizer_matches(model, tokenizer)."
        )
    if token_type_ids is not None:
        _check_int_tensor("token_type_ids", token_type_ids, "pass tokenizer(...)['token_type_ids'].")
        if token_type_ids.shape != input_ids.shape:
            raise BertInputError(
                f"token_type_ids has shape {tuple(token_type_ids.shape)} but input_ids has "
                f"{tuple(input_ids.shape)}: give one segment id per token."
            )
        low, high = (int(v) for v in torch.aminmax(token_type_ids))
        if low < 0 or high >= config.type_vocab_size:
            raise BertInputError(
                f"token_type_ids must be in 0..{config.type_vocab_size - 1} "
                f"(type_vocab_size={config.type_vocab_size}), found {high if high > 0 else low}."
            )
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor):
            raise BertInputError(f"attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}.")
        if attention_mask.shape != input_ids.shape:
            raise BertInputError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has {tuple(input_ids.shape)}: "
                "give one entry per token, 1 (or True) for a real token and 0 (or False) for padding."
            )


def _keep_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, L) 1/0 or bool -> boolean (B, L), True at real tokens; None when nothing is padding."""
    if attention_mask is None:
        return None
    if attention_mask.dtype == torch.bool:
        keep = attention_mask
    else:
        if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
            raise BertInputError("attention_mask must hold only 1 (real token) and 0 (padding), or be boolean.")
        keep = attention_mask != 0
    # no padding at all: skip the mask, which lets torch pick its fastest attention kernel
    return None if bool(keep.all()) else keep


def _check_labels(labels: torch.Tensor, shape: torch.Size, num_classes: int, what: str) -> None:
    if not isinstance(labels, torch.Tensor):
        raise BertInputError(f"{what} labels must be a torch.Tensor, got {type(labels).__name__}.")
    if labels.shape != shape:
        raise BertInputError(f"{what} labels have shape {tuple(labels.shape)}; expected {tuple(shape)}.")
    if labels.dtype.is_floating_point:
        raise BertInputError(f"{what} labels must be integer class ids (torch.long), got {labels.dtype}.")
    valid = (labels == IGNORE_INDEX) | ((labels >= 0) & (labels < num_classes))
    if not bool(valid.all()):
        bad = int(labels[~valid][0])
        raise BertInputError(
            f"{what} label {bad} is not a class id in 0..{num_classes - 1} nor {IGNORE_INDEX} (= ignore this position)."
        )
