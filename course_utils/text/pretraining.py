"""BERT's two pretraining tasks, as data: next-sentence pairs (NSP) and masked tokens (MLM).

* :func:`make_nsp_examples` cuts documents into ``[CLS] A [SEP] B [SEP]`` pairs: half the
  time B is the text that really follows A (label 0, ``IS_NEXT``), half the time B comes
  from another document (label 1, ``NOT_NEXT``), the convention of transformers'
  ``next_sentence_label``. Segment (token type) ids are 0 for ``[CLS] A [SEP]``, 1 for ``B [SEP]``.
* :func:`mask_tokens` picks 15% of the non-special tokens as MLM targets and replaces 80% of
  them by ``[MASK]``, 10% by a random token, and leaves 10% unchanged; labels are the
  original ids there and -100 (ignored by the loss) everywhere else. Given which tokens are
  WordPiece continuations (``##x``), it masks **whole words** instead: 15% of the words, each
  with all its pieces, and one 80/10/10 decision per word.
* :class:`Collator` pads a list of examples into a batch and masks it, fresh each time
  (dynamic masking: a pair gets new masks every epoch).

The pretraining run built on them (the two losses, held-out evaluation, settings, saving, and
the default model of chapters 04 and 05) is :mod:`course_utils.text.pretraining_run`.
"""

from __future__ import annotations

import random
from typing import Iterator, Sequence

import torch

IS_NEXT, NOT_NEXT = 0, 1
IGNORE_INDEX = -100


# ---------------------------------------------------------------------------------------------
# Next-sentence pairs
# ---------------------------------------------------------------------------------------------


def encode_documents(documents, tokenizer) -> list[list[list[int]]]:
    """Token ids of every sentence, without special tokens: ``ids[doc][sentence] -> list[int]``."""
    sentences = [s for d in documents for s in d.sentences]
    encoded = tokenizer(sentences, add_special_tokens=False, verbose=False)["input_ids"] if sentences else []
    result, start = [], 0
    for d in documents:
        result.append([ids for ids in encoded[start : start + len(d.sentences)] if ids])
        start += len(d.sentences)
    return result


def truncate_pair(a: list[int], b: list[int], max_tokens: int) -> tuple[list[int], list[int]]:
    """Shorten the longer segment until ``len(a) + len(b) <= max_tokens``.

    A loses tokens at its start and B at its end, so the A|B junction (what NSP judges) stays.
    """
    a, b = list(a), list(b)
    while len(a) + len(b) > max_tokens:
        if len(a) > len(b):
            a.pop(0)
        else:
            b.pop()
    return a, b


def make_nsp_examples(
    doc_ids: Sequence[Sequence[Sequence[int]]], max_len: int, cls_id: int, sep_id: int, seed: int = 0
) -> list[dict]:
    """NSP examples ``{"input_ids", "token_type_ids", "next_sentence_label"}`` from tokenized documents.

    Walking through each document, segment A is one or more consecutive sentences (about half
    the token budget ``max_len - 3``); B is, with probability 1/2, the sentences that follow
    (``IS_NEXT``), otherwise sentences from a random other document (``NOT_NEXT``). The pair is
    truncated to fit ``[CLS] A [SEP] B [SEP]`` into ``max_len``. A document needs two
    sentences to give an A; one-sentence documents still serve as random Bs.
    """
    if max_len < 8:
        raise ValueError(f"max_len must be at least 8 tokens to hold [CLS] A [SEP] B [SEP], got {max_len}")
    if len([d for d in doc_ids if d]) < 2:
        raise ValueError("need at least two non-empty documents: NSP draws its negatives from another document")
    rng = random.Random(seed)
    budget = max_len - 3
    non_empty = [i for i, d in enumerate(doc_ids) if d]
    examples = []
    for doc_index, sentences in enumerate(doc_ids):
        start = 0
        while start < len(sentences) - 1:  # an A must leave at least one sentence for a real B
            end = start + 1
            length = len(sentences[start])
            while end < len(sentences) - 1 and length + len(sentences[end]) <= budget // 2:
                length += len(sentences[end])
                end += 1
            a = [t for s in sentences[start:end] for t in s]
            if rng.random() < 0.5:
                label, b_sentences = IS_NEXT, sentences[end:]
            else:
                other = doc_index
                while other == doc_index:
                    other = rng.choice(non_empty)
                first = rng.randrange(len(doc_ids[other]))
                label, b_sentences = NOT_NEXT, doc_ids[other][first:]
            b = []
            for s in b_sentences:  # whole sentences while they fit, at least one
                if b and len(a) + len(b) + len(s) > budget:
                    break
                b += s
            a, b = truncate_pair(a, b, budget)
            examples.append(
                {
                    "input_ids": [cls_id, *a, sep_id, *b, sep_id],
                    "token_type_ids": [0] * (len(a) + 2) + [1] * (len(b) + 1),
                    "next_sentence_label": label,
                }
            )
            start = end
    rng.shuffle(examples)
    return examples


# ---------------------------------------------------------------------------------------------
# Masked-language-model masking and batching
# ---------------------------------------------------------------------------------------------


def continuation_ids(tokenizer) -> torch.Tensor:
    """The vocabulary ids of WordPiece continuation pieces (``##ing``): the pieces that extend a word."""
    prefix = (
        getattr(
            getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None), "continuing_subword_prefix", None
        )
        or "##"
    )
    ids = [i for token, i in tokenizer.get_vocab().items() if token.startswith(prefix) and len(token) > len(prefix)]
    return torch.tensor(sorted(ids), dtype=torch.long)


def word_start_index(special_mask: torch.Tensor, continuation_mask: torch.Tensor) -> torch.Tensor:
    """For every position, the position of the first piece of its word (along the last dimension).

    A word is a piece followed by the continuation pieces (``##x``) after it, as in Google's
    ``create_pretraining_data.py``; a continuation right after a special token starts a word of its
    own (it cannot join a word across ``[CLS]``/``[SEP]``). Special positions point to themselves.
    """
    previous_special = torch.ones_like(special_mask)
    previous_special[..., 1:] = special_mask[..., :-1]
    starts = special_mask | ~continuation_mask | previous_special
    positions = torch.arange(special_mask.shape[-1]).expand(special_mask.shape)
    return torch.where(starts, positions, torch.zeros_like(positions)).cummax(dim=-1).values


def mask_tokens(
    input_ids: torch.Tensor,
    special_mask: torch.Tensor,
    mask_id: int,
    candidate_ids: torch.Tensor,
    mlm_probability: float = 0.15,
    generator: torch.Generator | None = None,
    continuation_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: returns ``(masked_input_ids, labels)``.

    Each non-special token is chosen with probability ``mlm_probability``; a chosen token
    becomes ``[MASK]`` with probability 0.8, a random token from ``candidate_ids`` with 0.1,
    and stays itself with 0.1. Labels hold the original id at chosen positions and -100
    elsewhere. ``special_mask`` (True = special or padding) positions are never chosen.

    ``continuation_mask`` (True = a ``##`` piece that continues the word before it) switches on
    **whole-word masking**: each word is chosen with probability ``mlm_probability`` (so 15% of
    the words and, on average, 15% of the tokens: "the overall masking rate remains the same", as
    Google's README puts it), all its pieces together, and the 80/10/10 decision is made once per
    word (a random replacement draws a random token for each piece). The random draws are the
    same as in token masking: the decisions of a word are those its first piece would get.
    """
    if input_ids.shape != special_mask.shape:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)} and special_mask {tuple(special_mask.shape)} must have the same shape"
        )
    if continuation_mask is not None and continuation_mask.shape != input_ids.shape:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)} and continuation_mask "
            f"{tuple(continuation_mask.shape)} must have the same shape"
        )
    if not 0.0 < mlm_probability < 1.0:
        raise ValueError(f"mlm_probability must be between 0 and 1, got {mlm_probability}")
    picked = torch.rand(input_ids.shape, generator=generator) < mlm_probability
    action = torch.rand(input_ids.shape, generator=generator)
    if continuation_mask is not None:  # every piece takes its word's first piece's draws
        first_piece = word_start_index(special_mask.bool(), continuation_mask.bool())
        picked, action = picked.gather(-1, first_piece), action.gather(-1, first_piece)
    chosen = picked & ~special_mask
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    to_mask = chosen & (action < 0.8)
    to_random = chosen & (action >= 0.8) & (action < 0.9)  # the last 10% keep their token
    random_ids = candidate_ids[torch.randint(len(candidate_ids), input_ids.shape, generator=generator)]
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    masked = torch.where(to_random, random_ids, masked)
    return masked, labels


class Collator:
    """Pads NSP examples into a batch and masks it for MLM (new masks on every call).

    Returns tensors ``input_ids``, ``attention_mask``, ``token_type_ids``, ``labels``
    (-100 = not a target) and ``next_sentence_label``. ``mask=False`` skips the masking;
    ``whole_word=True`` masks whole words (all the ``##`` pieces of a chosen word, see :func:`mask_tokens`).
    """

    def __init__(
        self, tokenizer, mlm_probability: float = 0.15, seed: int = 0, mask: bool = True, whole_word: bool = False
    ):
        self.pad_id = tokenizer.pad_token_id
        self.mask_id = tokenizer.mask_token_id
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        vocab = torch.arange(len(tokenizer))
        self.candidate_ids = vocab[~torch.isin(vocab, self.special_ids)]  # random replacements: real tokens
        self.mlm_probability = mlm_probability
        self.mask = mask
        self.whole_word = whole_word
        self.continuation_ids = continuation_ids(tokenizer) if whole_word else None
        if whole_word and not len(self.continuation_ids):
            raise ValueError(
                "whole_word=True needs a WordPiece vocabulary with '##' continuation pieces; "
                "this tokenizer has none (use whole_word=False)"
            )
        self.generator = torch.Generator().manual_seed(seed)

    def pad(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        length = max(len(e["input_ids"]) for e in examples)
        input_ids = torch.full((len(examples), length), self.pad_id, dtype=torch.long)
        token_type_ids = torch.zeros((len(examples), length), dtype=torch.long)
        attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
        for row, e in enumerate(examples):
            n = len(e["input_ids"])
            input_ids[row, :n] = torch.tensor(e["input_ids"])
            token_type_ids[row, :n] = torch.tensor(e["token_type_ids"])
            attention_mask[row, :n] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        labelled = sum("next_sentence_label" in e for e in examples)
        if 0 < labelled < len(examples):  # some with, some without: dropping or guessing would both be silent
            first = next(i for i, e in enumerate(examples) if "next_sentence_label" not in e)
            raise ValueError(
                f"next_sentence_label on {labelled} of {len(examples)} examples (example {first} has "
                "none): give every example of a batch its label, or none of them."
            )
        if labelled:
            batch["next_sentence_label"] = torch.tensor([e["next_sentence_label"] for e in examples])
        return batch

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch = self.pad(examples)
        if self.mask:
            special = torch.isin(batch["input_ids"], self.special_ids) | (batch["attention_mask"] == 0)
            continuation = torch.isin(batch["input_ids"], self.continuation_ids) if self.whole_word else None
            batch["input_ids"], batch["labels"] = mask_tokens(
                batch["input_ids"],
                special,
                self.mask_id,
                self.candidate_ids,
                self.mlm_probability,
                self.generator,
                continuation_mask=continuation,
            )
        return batch


def pretraining_batches(
    doc_ids, collator: Collator, batch_size: int, max_len: int, cls_id: int, sep_id: int, seed: int = 0
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches: every epoch new NSP pairs (seed + epoch), shuffled, freshly masked."""
    epoch = 0
    while True:
        examples = make_nsp_examples(doc_ids, max_len, cls_id, sep_id, seed=seed + epoch)
        for start in range(0, len(examples) - batch_size + 1, batch_size):
            yield collator(examples[start : start + batch_size])
        epoch += 1


def fixed_batches(examples: Sequence[dict], collator: Collator, batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Batches masked once (the collator's seed), for a held-out set that never changes."""
    return [collator(examples[i : i + batch_size]) for i in range(0, len(examples), batch_size)]
