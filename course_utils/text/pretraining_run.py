"""BERT pretraining end to end, on the data of :mod:`course_utils.text.pretraining`.

* :func:`pretraining_outputs` / :func:`pretraining_step` -- the two losses (MLM + NSP) of the
  course's ``BertForPreTraining`` or of transformers'.
* :func:`evaluate_pretraining` -- held-out accuracy and pseudo-perplexity at ``[MASK]`` against
  the unigram baseline (:func:`most_frequent_token`, :func:`unigram_log_probs`).
* :class:`PretrainSettings`, :func:`pretrain` -- chapter 03 in one call; :func:`save_bert` writes
  the transformers layout.
* :func:`load_or_pretrain` -- the default pretrained model of chapters 04 and 05
  (:func:`default_bert_dir`, checked by :func:`check_bert_dir`).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import torch
import torch.nn.functional as F

from course_utils import checkpoints
from course_utils.paths import runs_dir
from course_utils.text.pretraining import (
    IGNORE_INDEX,
    Collator,
    encode_documents,
    fixed_batches,
    make_nsp_examples,
    pretraining_batches,
)

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
