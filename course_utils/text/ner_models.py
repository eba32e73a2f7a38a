"""The BERT that chapter 04 fine-tunes for NER: checking its directory, its tokenizer, the token classifier.

:func:`check_bert_dir` says in one line what a directory given as ``pretrained_model`` lacks
(config.json, safetensors weights, a tokenizer of the model's vocabulary); :func:`load_tokenizer`
loads its fast tokenizer (word ids and character offsets); :func:`token_classifier` builds a
:class:`course_utils.text.bert_tasks.BertForTokenClassification` for the data's tag set from it,
pretrained or freshly initialised; :func:`max_positions` is the longest input the model takes.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

from course_utils import checkpoints

__all__ = ["check_bert_dir", "load_tokenizer", "tokenizer_lowercases", "max_positions", "token_classifier"]


def check_bert_dir(directory: str | Path) -> Path:
    """Check that ``directory`` holds a BERT in the transformers layout, with its tokenizer.

    Raises with a message that names what is missing; returns the directory as a Path.
    """
    directory = Path(directory).expanduser()
    if not directory.exists():
        raise FileNotFoundError(
            f"pretrained_model {directory} does not exist: pass a directory saved by "
            "save_pretrained (config.json, model.safetensors, vocab.txt), or None for "
            "chapter 03's model."
        )
    if not directory.is_dir():
        raise FileNotFoundError(
            f"pretrained_model {directory} is a file; pass the directory that holds it "
            "(config.json, model.safetensors and the tokenizer files)."
        )
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ValueError(
            f"{directory} has no config.json, so it is not a model saved in the transformers "
            "layout; pass a BERT directory (config.json, model.safetensors, vocab.txt)."
        )
    config = checkpoints.read_json(config_file)  # one line for invalid JSON, a list, non-UTF-8
    if config.get("model_type") != "bert":
        raise ValueError(
            f"{directory} holds a {config.get('model_type')!r} model, not BERT (config.json "
            "model_type must be 'bert'): this chapter fine-tunes BERT checkpoints."
        )
    if not any((directory / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json")):
        raise ValueError(
            f"{directory} has no model.safetensors: the course reads safetensors weights only "
            "(convert a pytorch_model.bin where you trust it with save_pretrained)."
        )
    if not any((directory / f).is_file() for f in ("tokenizer.json", "vocab.txt")):
        raise ValueError(
            f"{directory} has no tokenizer (tokenizer.json or vocab.txt): save the tokenizer "
            "with the model, model.save_pretrained(dir, tokenizer=tokenizer)."
        )
    # the files themselves: complete weights of the config's size, a readable tokenizer of the model's vocabulary
    checkpoints.check_model_files(directory, config)
    return directory


def load_tokenizer(directory: str | Path):
    """The fast tokenizer saved with a BERT directory (fast: it knows word ids and character offsets)."""
    from transformers import AutoTokenizer

    directory = check_bert_dir(directory)
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    checkpoints.check_loaded_tokenizer(directory, tokenizer, checkpoints.read_json(directory / "config.json"))
    if not tokenizer.is_fast:
        raise ValueError(
            f"{directory}: only a slow tokenizer could be loaded; NER needs a fast one "
            "(tokenizer.json) for word ids and character offsets."
        )
    return tokenizer


def tokenizer_lowercases(tokenizer) -> bool:
    """True when the tokenizer lowercases its input (an uncased model: capital letters are lost)."""
    pieces = tokenizer.tokenize("Paris London Berlin A B C")
    return not any(ch.isupper() for piece in pieces if piece != tokenizer.unk_token for ch in piece)


def max_positions(model_or_config, tokenizer=None) -> int:
    """The longest input (in tokens) a model takes: its position table, capped by the tokenizer's limit."""
    limit = int(getattr(model_or_config, "config", model_or_config).max_position_embeddings)
    if tokenizer is not None and 0 < getattr(tokenizer, "model_max_length", limit) < limit:
        limit = int(tokenizer.model_max_length)
    return limit


def token_classifier(directory: str | Path, labels: Sequence[str], init: str = "pretrained", **config_overrides):
    """A :class:`course_utils.text.bert_tasks.BertForTokenClassification` for ``labels`` from a BERT directory.

    ``init="pretrained"`` loads the directory's weights (the classification head is new);
    ``init="random"`` builds the same architecture from its config with fresh random weights.
    """
    from course_utils.text.bert_tasks import BertForTokenClassification

    directory = check_bert_dir(directory)
    labels = list(labels)
    overrides = dict(
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        **config_overrides,
    )
    if init == "pretrained":
        with warnings.catch_warnings():  # "the classification head is newly initialised": that is the point
            warnings.filterwarnings("ignore", message=".*(newly|not used|missing|unexpected).*")
            return BertForTokenClassification.from_pretrained(directory, **overrides)
    if init == "random":
        from transformers import BertConfig

        return BertForTokenClassification(BertConfig.from_pretrained(str(directory), **overrides))
    raise ValueError(f"init must be 'pretrained' or 'random', got {init!r}")
