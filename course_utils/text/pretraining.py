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

Also here: held-out evaluation against the unigram baseline, and the default pretrained
model for chapters 04 and 05 (:func:`load_or_pretrain`).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from course_utils import checkpoints
from course_utils.paths import runs_dir

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


# ---------------------------------------------------------------------------------------------
# The model's outputs, losses and evaluation
# ---------------------------------------------------------------------------------------------


def model_class():
    """The course's own ``BertForPreTraining`` (chapter 03), or transformers' while it is missing."""
    try:
        from course_utils.text.bert import BertForPreTraining
    except ModuleNotFoundError as err:
        if err.name != f"{__package__}.bert":
            raise
        from transformers import BertForPreTraining
    return BertForPreTraining


def _accepts_masked_only(model) -> bool:
    import inspect

    return "masked_only" in inspect.signature(model.forward).parameters


def pretraining_outputs(model, batch: dict[str, torch.Tensor], masked_only: bool = True) -> SimpleNamespace:
    """Run a BERT pretraining model on a batch; the two losses and the logits at labelled positions.

    Returns ``loss = mlm_loss + nsp_loss``, ``mlm_loss``, ``nsp_loss``, ``mlm_logits``
    ((n_labelled, vocab), rows in the order of ``labels[labels != -100]``) and ``nsp_logits``
    ((batch, 2)). Works with the course's model (which can compute the MLM head only where
    labels are, ``masked_only=True``) and with transformers' ``BertForPreTraining``.
    """
    labels = batch["labels"]
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    if _accepts_masked_only(model):
        out = model(**inputs, labels=labels, next_sentence_label=batch["next_sentence_label"], masked_only=masked_only)
    else:
        out = model(**inputs)
    logits = out.prediction_logits
    if logits.dim() == 3:  # full (batch, length, vocab): keep the labelled positions
        logits = logits[labels != IGNORE_INDEX]
    targets = labels[labels != IGNORE_INDEX]
    mlm_loss = getattr(out, "mlm_loss", None)
    if mlm_loss is None:
        mlm_loss = F.cross_entropy(logits, targets) if len(targets) else logits.sum() * 0.0
    nsp_loss = getattr(out, "nsp_loss", None)
    if nsp_loss is None:
        nsp_loss = F.cross_entropy(out.seq_relationship_logits, batch["next_sentence_label"])
    return SimpleNamespace(
        loss=mlm_loss + nsp_loss,
        mlm_loss=mlm_loss,
        nsp_loss=nsp_loss,
        mlm_logits=logits,
        nsp_logits=out.seq_relationship_logits,
    )


def pretraining_step(model, batch: dict[str, torch.Tensor]) -> dict:
    """A training step's loss and metrics, in the form :func:`course_utils.training.train` expects."""
    out = pretraining_outputs(model, batch)
    return {"loss": out.loss, "mlm_loss": out.mlm_loss.item(), "nsp_loss": out.nsp_loss.item()}


def most_frequent_token(doc_ids, special_ids: Sequence[int] = ()) -> int:
    """The unigram baseline's guess: the most frequent (non-special) token of the training text."""
    counts = Counter(t for doc in doc_ids for sentence in doc for t in sentence)
    for special in special_ids:
        counts.pop(special, None)
    if not counts:
        raise ValueError("no tokens to count: the training documents are empty")
    return counts.most_common(1)[0][0]


def unigram_log_probs(doc_ids, vocab_size: int, special_ids: Sequence[int] = ()) -> torch.Tensor:
    """log p(token) of the unigram model of the training text (add-one smoothed; special tokens get -inf).

    The perplexity baseline: a model that ignores the context and guesses by frequency alone.
    """
    counts = (
        torch.bincount(
            torch.tensor([t for doc in doc_ids for s in doc for t in s], dtype=torch.long), minlength=vocab_size
        )[:vocab_size].double()
        + 1.0
    )
    counts[list(special_ids)] = 0.0
    return (counts / counts.sum()).log().float()


@torch.no_grad()
def evaluate_pretraining(
    model, batches: Sequence[dict], mask_id: int, baseline_id: int, unigram: torch.Tensor | None = None
) -> dict[str, float]:
    """Held-out metrics on fixed, masked batches.

    ``mask_accuracy``/``mask_top5``: at positions replaced by ``[MASK]``, is the original token
    the model's first guess / among its five best? ``baseline_accuracy``: how often the unigram
    baseline (always ``baseline_id``) is right at those same positions. ``mask_perplexity``:
    exp of the mean cross-entropy at those positions, a *pseudo*-perplexity (each token predicted
    from both sides with the rest of the sentence visible, not left to right). With ``unigram``
    (log-probabilities, :func:`unigram_log_probs`): ``unigram_perplexity``, the same for the
    unigram model. ``all_accuracy``: at every MLM target (also the 10% random and 10% unchanged).
    ``nsp_accuracy``, and the losses (``mlm_loss`` over every MLM target).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n_mask = hits = hits5 = base = all_hits = n_all = nsp_hits = n_pairs = 0
    mlm_sum = nsp_sum = mask_nll = unigram_nll = 0.0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        out = pretraining_outputs(model, batch)
        labelled = batch["labels"] != IGNORE_INDEX
        targets = batch["labels"][labelled]
        at_mask = batch["input_ids"][labelled] == mask_id
        top5 = out.mlm_logits.topk(min(5, out.mlm_logits.shape[-1]), dim=-1).indices
        first = top5[:, 0] == targets
        n_mask += int(at_mask.sum())
        hits += int((first & at_mask).sum())
        hits5 += int(((top5 == targets[:, None]).any(-1) & at_mask).sum())
        base += int(((targets == baseline_id) & at_mask).sum())
        all_hits += int(first.sum())
        n_all += len(targets)
        nsp_hits += int((out.nsp_logits.argmax(-1) == batch["next_sentence_label"]).sum())
        n_pairs += len(batch["next_sentence_label"])
        mlm_sum += out.mlm_loss.item() * len(targets)
        mask_nll += F.cross_entropy(out.mlm_logits[at_mask].float(), targets[at_mask], reduction="sum").item()
        if unigram is not None:
            unigram_nll -= unigram.to(device)[targets[at_mask]].double().sum().item()
        nsp_sum += out.nsp_loss.item() * len(batch["next_sentence_label"])
    model.train(was_training)
    if n_mask == 0:
        raise ValueError("the held-out batches contain no [MASK] position: use more examples")
    metrics = {
        "mask_accuracy": hits / n_mask,
        "mask_top5": hits5 / n_mask,
        "baseline_accuracy": base / n_mask,
        "mask_perplexity": math.exp(mask_nll / n_mask),
        "all_accuracy": all_hits / n_all,
        "nsp_accuracy": nsp_hits / n_pairs,
        "mlm_loss": mlm_sum / n_all,
        "nsp_loss": nsp_sum / n_pairs,
        "mask_positions": n_mask,
    }
    if unigram is not None:
        metrics["unigram_perplexity"] = math.exp(unigram_nll / n_mask)
    return metrics


# ---------------------------------------------------------------------------------------------
# Pretraining end to end, and the default model of chapters 04 and 05
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PretrainSettings:
    """Every knob of a pretraining run (chapter 03's notebook uses the same names)."""

    corpus: str = "pydocs"
    vocab_size: int = 4000
    max_len: int = 64
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 512
    max_position_embeddings: int = 128
    dropout: float = 0.0
    batch_size: int = 32
    steps: int = 5000
    lr: float = 1e-3
    warmup_fraction: float = 0.06
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 0


FAST_SETTINGS = PretrainSettings(
    vocab_size=2000, hidden_size=64, num_layers=1, num_heads=2, intermediate_size=256, steps=200
)
# What load_or_pretrain trains in the full mode when chapter 03 was not run: a couple of minutes.
QUICK_SETTINGS = PretrainSettings(steps=1200)


def bert_config(settings: PretrainSettings, tokenizer):
    """The ``transformers.BertConfig`` for ``settings`` and the tokenizer's vocabulary."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=settings.hidden_size,
        num_hidden_layers=settings.num_layers,
        num_attention_heads=settings.num_heads,
        intermediate_size=settings.intermediate_size,
        max_position_embeddings=max(settings.max_position_embeddings, settings.max_len),
        type_vocab_size=2,
        hidden_dropout_prob=settings.dropout,
        attention_probs_dropout_prob=settings.dropout,
        pad_token_id=tokenizer.pad_token_id,
    )


def save_bert(model, tokenizer, directory: str | Path, extra: dict | None = None) -> Path:
    """Write the transformers layout: config.json, model.safetensors, tokenizer files
    (and ``course_pretraining.json`` with ``extra``: settings and metrics of the run)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        model.save_pretrained(directory, tokenizer=tokenizer)
    except TypeError:  # transformers' models take no tokenizer
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    if extra is not None:
        (directory / "course_pretraining.json").write_text(json.dumps(extra, indent=2), encoding="utf-8")
    return directory


def pretrain(
    output_dir: str | Path,
    settings: PretrainSettings = FAST_SETTINGS,
    progress: bool = True,
    heldout_examples: int = 1024,
    mode: str | None = None,
) -> dict:
    """Chapter 03 in one call: corpus, tokenizer, NSP+MLM training, held-out metrics, saving.

    Returns the held-out metrics; the model and tokenizer are saved in ``output_dir``.
    """
    from course_utils import config, training
    from course_utils.text import corpus, tokenization

    config.set_seed(settings.seed)
    start = time.perf_counter()
    documents = corpus.load_corpus(settings.corpus)
    train_docs, heldout_docs = corpus.split_documents(documents)
    tokenizer = tokenization.train_tokenizer(
        (s for d in train_docs for s in d.sentences),
        vocab_size=settings.vocab_size,
        model_max_length=max(settings.max_position_embeddings, settings.max_len),
    )
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    train_ids = encode_documents(train_docs, tokenizer)
    heldout_ids = encode_documents(heldout_docs, tokenizer)
    collator = Collator(tokenizer, seed=settings.seed)
    batches = pretraining_batches(
        train_ids, collator, settings.batch_size, settings.max_len, cls_id, sep_id, seed=settings.seed
    )
    heldout = make_nsp_examples(heldout_ids, settings.max_len, cls_id, sep_id, seed=10_000 + settings.seed)
    heldout_batches = fixed_batches(
        heldout[:heldout_examples], Collator(tokenizer, seed=10_000 + settings.seed), batch_size=128
    )
    model = model_class()(bert_config(settings, tokenizer))
    optimizer = training.make_optimizer(model, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = training.linear_warmup_schedule(
        optimizer, int(settings.warmup_fraction * settings.steps), settings.steps
    )
    history = training.train(
        model,
        batches,
        pretraining_step,
        optimizer,
        scheduler,
        steps=settings.steps,
        max_grad_norm=settings.max_grad_norm,
        progress=progress,
        desc="pretraining BERT",
    )
    baseline_id = most_frequent_token(train_ids, tokenizer.all_special_ids)
    metrics = evaluate_pretraining(model, heldout_batches, tokenizer.mask_token_id, baseline_id)
    metrics["seconds"] = time.perf_counter() - start
    metrics["final_train_loss"] = history.mean("loss", last=50)
    save_bert(
        model,
        tokenizer,
        output_dir,
        extra={
            "settings": asdict(settings),
            "heldout": metrics,
            "mode": mode or ("fast" if settings == FAST_SETTINGS else "full"),
        },
    )
    return metrics


def default_bert_dir() -> Path:
    """Where chapter 03 saves its BERT and chapters 04-05 look for it: ``runs/ch03_bert``."""
    return runs_dir() / "ch03_bert"


def check_bert_dir(path: str | Path) -> Path:
    """``path`` as a Path if it holds a BERT in the transformers layout; else a clear error."""
    path = Path(path).expanduser()
    fix = (
        "point pretrained_model to a folder written by save_pretrained (config.json, model.safetensors, "
        "tokenizer files), or leave it None to use chapter 03's model"
    )
    if not path.exists():
        raise FileNotFoundError(f"pretrained_model {str(path)!r} does not exist: {fix}.")
    if not path.is_dir():
        raise NotADirectoryError(f"pretrained_model {str(path)!r} is a file, not a model folder: {fix}.")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{path} is not a BERT directory: it has no config.json; {fix}.")
    config = checkpoints.read_json(config_file)  # one line for invalid JSON, a list, non-UTF-8
    model_type = config.get("model_type")
    if model_type != "bert":
        raise ValueError(f"{path} holds a {model_type!r} model, not a BERT (model_type 'bert'); {fix}.")
    if not (path / "model.safetensors").is_file():
        raise ValueError(f"{path} is not a BERT directory: it has no model.safetensors weights; {fix}.")
    if not any((path / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
        raise ValueError(f"{path} is not a BERT directory: it has no tokenizer (tokenizer.json or vocab.txt); {fix}.")
    checkpoints.check_model_files(path, config)  # complete weights of the config's size, the model's tokenizer
    return path


def is_bert_dir(path: str | Path) -> bool:
    try:
        check_bert_dir(path)
    except (OSError, ValueError):
        return False
    return True


def _fast_now(fast: bool | None) -> bool:
    from course_utils import config

    if fast is not None:
        return bool(fast)
    current = getattr(config, "_current", None)  # the mode the notebook chose, without re-seeding
    return current.fast if current is not None else config.resolve_mode(None) == "fast"


def load_or_pretrain(pretrained_model: str | Path | None = None, fast: bool | None = None) -> Path:
    """The BERT directory chapters 04 and 05 start from.

    ``pretrained_model`` given: it must be a BERT directory in the transformers layout (else a
    clear error). None: chapter 03's model in :func:`default_bert_dir`, pretrained on the spot
    if missing (seconds in the fast mode, a couple of minutes in the full mode).
    """
    if pretrained_model is not None:
        return check_bert_dir(pretrained_model)
    directory = default_bert_dir()
    fast = _fast_now(fast)
    if is_bert_dir(directory):
        info = directory / "course_pretraining.json"
        if not fast and info.is_file() and json.loads(info.read_text(encoding="utf-8")).get("mode") == "fast":
            print(f"Note: {directory} holds the fast-mode BERT; run chapter 03 in the full mode for a better one.")
        return directory
    settings = FAST_SETTINGS if fast else QUICK_SETTINGS
    print(
        f"No pretrained BERT in {directory}: pretraining a small one now "
        f"({settings.num_layers} layers, width {settings.hidden_size}, {settings.steps} steps; "
        "chapter 03 trains a better one)."
    )
    pretrain(directory, settings, progress=True, mode="fast" if fast else "full")
    return check_bert_dir(directory)
