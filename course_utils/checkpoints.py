"""Checks on the files of a saved model directory, each failing with one line: which file, what is
wrong with it, what to do.

A model directory in the transformers layout holds ``config.json``, the weights
(``model.safetensors``, or shards listed in ``model.safetensors.index.json``) and the tokenizer
(``tokenizer.json`` and/or ``vocab.txt``). Libraries report a damaged file deep inside their own
code (``SafetensorError: Error while deserializing header``, ``JSONDecodeError``, a tokenizer
that fails ten frames down); these checks read only the small parts that tell (a JSON file, the
safetensors header, the tokenizer's vocabulary) and say plainly what is wrong before any of that.

Used by :func:`course_utils.text.ner_models.check_bert_dir`, :func:`course_utils.text.pretraining_run.check_bert_dir`
and :mod:`course_utils.text.bert`'s loaders.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
TOKENIZER = "tokenizer.json"

# bytes per element of the safetensors dtypes (the format's own names)
_ITEMSIZE = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
_MAX_HEADER = 100_000_000  # safetensors' own limit on the header's size

# transformers' BertConfig defaults, for a config.json that leaves a size out
BERT_DEFAULTS = {"vocab_size": 30522, "hidden_size": 768, "max_position_embeddings": 512, "type_vocab_size": 2}

FIX_CONFIG = "copy config.json again from where the model came from, or re-save the model with save_pretrained(dir)"
FIX_WEIGHTS = (
    "the file is damaged or incomplete (an interrupted download or copy?): copy it again, "
    "or re-save the model with save_pretrained(dir)"
)
FIX_TOKENIZER = (
    "re-save the tokenizer with tokenizer.save_pretrained(dir) (or model.save_pretrained(dir, tokenizer=...))"
)


class CheckpointError(ValueError):
    """A model directory, file or state dict that cannot be used as it is, naming what is wrong."""


def _short(err: Exception) -> str:
    """An exception's message cut to its first line (library messages can run over many)."""
    text = str(err).strip().splitlines()
    return text[0][:160] if text else type(err).__name__


def read_json(path: str | Path, fix: str = FIX_CONFIG) -> dict:
    """A JSON file that must hold an object: one-line errors for unreadable, non-UTF-8, invalid JSON or non-objects."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{path} cannot be read ({err.strerror or _short(err)}): {fix}.") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{path} is not UTF-8 text (byte {err.start}): {fix}.") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise CheckpointError(
            f"{path} is not valid JSON ({err.msg}, line {err.lineno} column {err.colno}): {fix}."
        ) from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} is not a JSON object ({{...}}) but a {type(value).__name__}: {fix}.")
    return value


# ---------------------------------------------------------------- weights


def safetensors_header(path: str | Path) -> dict:
    """The tensors a safetensors file holds, ``{name: {"dtype", "shape", "data_offsets"}}``, after
    checking that the file is complete: a readable header, and every tensor's bytes inside the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            raw = f.read(n) if 0 < n <= min(size - 8, _MAX_HEADER) else b""
    except OSError as err:
        raise CheckpointError(f"{path} cannot be read ({err.strerror or _short(err)}): {FIX_WEIGHTS}.") from None
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): {FIX_WEIGHTS}.")
    if n < 0 or n > size - 8 or n > _MAX_HEADER:
        raise CheckpointError(
            f"{path} is not a complete safetensors file: its first 8 bytes announce a header of "
            f"{max(n, 0)} bytes but the file has {size}; {FIX_WEIGHTS}."
        )
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a safetensors file (its header is not a JSON object); {FIX_WEIGHTS}.")
    data_size, end = size - 8 - n, 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, stop = (int(v) for v in info["data_offsets"])
            shape = [int(d) for d in info["shape"]]
            dtype = str(info["dtype"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: the header entry of tensor {name!r} is malformed; {FIX_WEIGHTS}.") from None
        expected = math.prod(shape) * _ITEMSIZE[dtype] if dtype in _ITEMSIZE and min(shape, default=0) >= 0 else None
        if not 0 <= begin <= stop or (expected is not None and stop - begin != expected):
            raise CheckpointError(
                f"{path}: tensor {name!r} ({dtype} {tuple(shape)}) has inconsistent offsets "
                f"{begin}..{stop} in its header; {FIX_WEIGHTS}."
            )
        end = max(end, stop)
    if end > data_size:
        raise CheckpointError(
            f"{path} is truncated: its tensors need {end} bytes of data but the file holds {data_size}; {FIX_WEIGHTS}."
        )
    if end < data_size:
        raise CheckpointError(
            f"{path} has {data_size - end} bytes after its last tensor (two files joined, or a "
            f"damaged copy?); {FIX_WEIGHTS}."
        )
    return {k: v for k, v in header.items() if k != "__metadata__"}


def weight_files(directory: str | Path) -> list[Path]:
    """The safetensors files of a model directory: ``model.safetensors``, or the shards its index lists
    (each must be a file inside the directory). Empty when the directory has neither."""
    directory = Path(directory)
    single, index_path = directory / WEIGHTS, directory / WEIGHTS_INDEX
    if single.is_file():
        return [single]
    if not index_path.is_file():
        return []
    fix = "re-save the model with save_pretrained(dir), or copy the index and every shard again"
    index = read_json(index_path, fix)
    if "weight_map" not in index:
        raise CheckpointError(f"{index_path} has no weight_map (which shard holds which tensor); {fix}.")
    weight_map = index["weight_map"]
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise CheckpointError(
            f"{index_path}: weight_map must map tensor names to shard file names "
            f"(strings), got {type(weight_map).__name__}; {fix}."
        )
    if not weight_map:
        raise CheckpointError(f"{index_path}: weight_map is empty, it lists no tensor; {fix}.")
    root = directory.resolve()
    shards = []
    for shard in sorted(set(weight_map.values())):
        target = (directory / shard).resolve()
        if not shard or Path(shard).is_absolute() or (target != root and root not in target.parents):
            raise CheckpointError(
                f"{index_path}: shard {shard!r} lies outside the model directory; refusing to "
                f"read it (an index names files inside its own folder); {fix}."
            )
        if not target.is_file():
            raise CheckpointError(f"{index_path}: shard {shard} does not exist in {directory}; {fix}.")
        shards.append(target)
    return shards


def check_weights(directory: str | Path, config: dict | None = None) -> dict:
    """Check every weight file of ``directory`` (complete, readable header) and, given the parsed
    config.json, that the embedding tables have the sizes the config says. Returns the merged header."""
    files = weight_files(directory)
    header = {}
    for path in files:
        header.update(safetensors_header(path))
    if config is not None and files:
        sizes = {**BERT_DEFAULTS, **config}  # what BertConfig will use
        for table, rows_key in (
            ("word_embeddings", "vocab_size"),
            ("position_embeddings", "max_position_embeddings"),
            ("token_type_embeddings", "type_vocab_size"),
        ):
            name = next(
                (k for k in (f"bert.embeddings.{table}.weight", f"embeddings.{table}.weight") if k in header), None
            )
            if name is None:
                continue
            saved, said = tuple(header[name]["shape"]), (sizes[rows_key], sizes["hidden_size"])
            if saved != said:
                raise CheckpointError(
                    f"{files[0]} holds {table} of shape {saved} but {Path(directory) / CONFIG} says "
                    f"({rows_key}, hidden_size) = {said}: the weights belong to a model of another size; "
                    "keep config.json and the weights of the same save_pretrained together."
                )
    return header


# ---------------------------------------------------------------- tokenizer


def tokenizer_json_size(path: str | Path) -> int:
    """The vocabulary size (added tokens included) of a ``tokenizer.json``, after checking that the
    tokenizers library can read it."""
    path = Path(path)
    read_json(path, FIX_TOKENIZER)  # the JSON itself first: names non-UTF-8, truncation, a list
    try:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(path))
    except Exception as err:  # noqa: BLE001 - the library's errors carry no file name
        raise CheckpointError(
            f"{path} is not a tokenizer the tokenizers library can read "
            f"({type(err).__name__}: {_short(err)}); {FIX_TOKENIZER}."
        ) from None
    return tokenizer.get_vocab_size(with_added_tokens=True)


def tokenizer_mismatch(where, tokenizer_size: int, vocab_size: int) -> CheckpointError:
    """The error for a tokenizer whose vocabulary is not the model's (both numbers named)."""
    return CheckpointError(
        f"{where}: the tokenizer has {tokenizer_size} tokens but the model's vocab_size is {vocab_size}: they were "
        "not made for each other (another model's tokenizer?); save the model's own tokenizer with it, "
        "model.save_pretrained(dir, tokenizer=tokenizer)."
    )


def check_loaded_tokenizer(where, tokenizer, config: dict) -> None:
    """A loaded transformers tokenizer against a BERT's config.json: the same vocabulary size and padding id."""
    vocab_size = {**BERT_DEFAULTS, **config}["vocab_size"]
    if len(tokenizer) != vocab_size:
        raise tokenizer_mismatch(where, len(tokenizer), vocab_size)
    pad_model, pad_tokenizer = config.get("pad_token_id"), getattr(tokenizer, "pad_token_id", None)
    if pad_model is not None and pad_tokenizer is not None and pad_model != pad_tokenizer:
        raise CheckpointError(
            f"{where}: the tokenizer's padding token {tokenizer.pad_token!r} has id {pad_tokenizer} but the model's "
            f"pad_token_id is {pad_model}: the tokenizer numbers its tokens differently from the model "
            "(another model's tokenizer?); save the model's own tokenizer with it."
        )


def check_model_files(directory: str | Path, config: dict) -> None:
    """Every file of a BERT directory that can be checked without loading the model: the weights
    (complete, the config's sizes) and ``tokenizer.json`` (readable, the model's vocabulary size)."""
    directory = Path(directory)
    check_weights(directory, config)
    if (directory / TOKENIZER).is_file():
        size, vocab_size = tokenizer_json_size(directory / TOKENIZER), {**BERT_DEFAULTS, **config}["vocab_size"]
        if size != vocab_size:
            raise tokenizer_mismatch(directory / TOKENIZER, size, vocab_size)


def save_transformers_dir(directory, hf_config, hf_state_dict: dict, tokenizer=None) -> Path:
    """Write a model in transformers' layout: config.json, model.safetensors and, if given, the tokenizer.
    ``hf_state_dict`` must already leave out tied copies (safetensors refuses tensors that share memory)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hf_config.save_pretrained(str(directory))
    tensors = {k: v.detach().cpu().contiguous() for k, v in hf_state_dict.items()}
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))
    return directory
