"""Property-based fuzzing of model directories (issue 16): a damaged file is refused in one line that
names it, or the model loads with the weights it was saved with.

Corruptions tried on a tiny saved BERT: ``model.safetensors`` truncated anywhere, with bytes
flipped anywhere (header or data), replaced by random bytes, with bytes appended, or with its
header length rewritten; ``config.json`` truncated, byte-flipped, wrapped in a list, re-encoded
as Latin-1 or UTF-16; ``tokenizer.json`` truncated or byte-flipped; a sharded index with its
weight_map damaged or pointing outside the directory. Each goes through ``ner_models.check_bert_dir``,
``pretraining_run.check_bert_dir``, ``bert_weights.load_state_dict_file`` and ``from_pretrained``.

The references: the safetensors library reading the same (damaged) file, and the original file's
tensor names and shapes. A flipped byte inside tensor *data* leaves a valid file with other numbers
in it; safetensors has no checksum, so that case loads (as it does in transformers).
Derandomized, so CI sees the same examples every run.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from course_utils import checkpoints
from course_utils.text import ner_models, pretraining_run

transformers = pytest.importorskip("transformers")
from course_utils.text import bert, bert_weights  # noqa: E402  (needs transformers)

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny BERT directory and its weights as the safetensors library reads them (the reference)."""
    from safetensors.torch import load_file
    from tokenizers import Tokenizer, models, pre_tokenizers

    raw = Tokenizer(models.WordPiece({v: i for i, v in enumerate(VOCAB)}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer = transformers.BertTokenizerFast(tokenizer_object=raw)
    config = transformers.BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=4,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=8,
        max_position_embeddings=8,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("saved") / "bert"
    bert.BertModel(config).save_pretrained(folder, tokenizer=tokenizer)
    return folder, load_file(folder / "model.safetensors")


def loaders(folder):
    return {
        "ner_models.check_bert_dir": lambda: ner_models.check_bert_dir(folder),
        "pretraining_run.check_bert_dir": lambda: pretraining_run.check_bert_dir(folder),
        "load_state_dict_file": lambda: bert_weights.load_state_dict_file(folder),
        "from_pretrained": lambda: bert.BertModel.from_pretrained(folder),
    }


def check_all(folder, damaged: str, reference: dict):
    """Every loader: a one-line error naming the damaged file (or its directory), or the right weights."""
    for name, load in loaders(folder).items():
        try:
            result = load()
        except (ValueError, TypeError, OSError) as err:
            message = str(err)
            assert message and "\n" not in message, f"{name}: {message!r}"
            assert damaged in message or str(folder) in message, f"{name} does not name the file: {message}"
            continue
        if name == "load_state_dict_file":  # what the file holds, as the safetensors library reads it
            from safetensors.torch import load_file

            held = load_file(folder / "model.safetensors")
            assert result.keys() == held.keys()
            assert all(torch.equal(result[k], held[k]) or torch.isnan(held[k]).any() for k in held)
        if name == "from_pretrained":  # a model of the saved architecture: every tensor, every shape
            shapes = {k: v.shape for k, v in result.hf_state_dict().items()}
            assert shapes == {k: v.shape for k, v in reference.items()}


def damaged_copy(saved, tmp_path_factory):
    folder, _ = saved
    target = tmp_path_factory.mktemp("case") / "bert"
    shutil.copytree(folder, target)
    return target


def flip(data: bytes, positions, values) -> bytes:
    data = bytearray(data)
    for p, v in zip(positions, values):
        if data:
            data[p % len(data)] ^= v or 1
    return bytes(data)


corruptions = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 0.999)),
    st.tuples(
        st.just("flip"),
        st.lists(st.integers(0, 10**6), min_size=1, max_size=4),
        st.lists(st.integers(1, 255), min_size=4, max_size=4),
    ),
    st.tuples(
        st.just("flip header"),
        st.lists(st.integers(0, 600), min_size=1, max_size=3),
        st.lists(st.integers(1, 255), min_size=3, max_size=3),
    ),
    st.tuples(st.just("random"), st.binary(max_size=2000)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("header length"), st.integers(0, 2**64 - 1)),
)


def corrupt(data: bytes, how) -> bytes:
    kind = how[0]
    if kind == "truncate":
        return data[: int(how[1] * len(data))]
    if kind == "flip":
        return flip(data, how[1], how[2])
    if kind == "flip header":
        return (
            flip(data[: 8 + int.from_bytes(data[:8], "little")], how[1], how[2])
            + data[8 + int.from_bytes(data[:8], "little") :]
        )
    if kind == "random":
        return how[1]
    if kind == "append":
        return data + how[1]
    return how[1].to_bytes(8, "little") + data[8:]


@given(how=corruptions)
@FUZZ
def test_damaged_safetensors(saved, tmp_path_factory, how):
    folder = damaged_copy(saved, tmp_path_factory)
    path = folder / "model.safetensors"
    path.write_bytes(corrupt(path.read_bytes(), how))
    check_all(folder, "model.safetensors", saved[1])


config_corruptions = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 0.999)),
    st.tuples(
        st.just("flip"),
        st.lists(st.integers(0, 10**4), min_size=1, max_size=3),
        st.lists(st.integers(1, 255), min_size=3, max_size=3),
    ),
    st.tuples(st.sampled_from(["list", "latin-1", "utf-16", "empty object", "null"])),
)


def corrupt_json(data: bytes, how) -> bytes:
    kind = how[0]
    if kind in ("truncate", "flip"):
        return corrupt(data, how)
    text = data.decode("utf-8")
    return {
        "list": ("[" + text + "]").encode(),
        "latin-1": text.replace("bert", "bért").encode("latin-1"),
        "utf-16": text.encode("utf-16"),
        "empty object": b"{}",
        "null": b"null",
    }[kind]


@given(how=config_corruptions)
@FUZZ
def test_damaged_config_json(saved, tmp_path_factory, how):
    folder = damaged_copy(saved, tmp_path_factory)
    path = folder / "config.json"
    path.write_bytes(corrupt_json(path.read_bytes(), how))
    check_all(folder, "config.json", saved[1])


@given(how=config_corruptions)
@FUZZ
def test_damaged_tokenizer_json(saved, tmp_path_factory, how):
    folder = damaged_copy(saved, tmp_path_factory)
    path = folder / "tokenizer.json"
    path.write_bytes(corrupt_json(path.read_bytes(), how))
    for load in (
        lambda: ner_models.check_bert_dir(folder),
        lambda: ner_models.load_tokenizer(folder),
        lambda: bert.load_tokenizer(folder),
    ):
        try:
            tokenizer = load()
        except (ValueError, TypeError, OSError) as err:
            message = str(err)
            assert message and "\n" not in message and ("tokenizer.json" in message or str(folder) in message), message
            continue
        if not isinstance(tokenizer, type(folder)):  # a loaded tokenizer must be the model's
            assert len(tokenizer) == len(VOCAB)


index_values = st.one_of(
    st.dictionaries(
        st.text(max_size=5),
        st.sampled_from(
            [
                "model-1.safetensors",
                "../model-1.safetensors",
                "/tmp/x.safetensors",
                "",
                ".",
                "sub/../model-1.safetensors",
                "missing.safetensors",
            ]
        ),
        max_size=3,
    ),
    st.lists(st.text(max_size=3), max_size=2),
    st.none(),
    st.integers(),
    st.text(max_size=5),
)


@given(weight_map=index_values, drop=st.booleans())
@FUZZ
def test_damaged_shard_index(saved, tmp_path_factory, weight_map, drop):
    folder = damaged_copy(saved, tmp_path_factory)
    (folder / "model.safetensors").rename(folder / "model-1.safetensors")
    (folder.parent / "model-1.safetensors").write_bytes((folder / "model-1.safetensors").read_bytes())
    index = {} if drop else {"metadata": {}, "weight_map": weight_map}
    (folder / checkpoints.WEIGHTS_INDEX).write_text(json.dumps(index))
    try:
        state = bert_weights.load_state_dict_file(folder)
    except (ValueError, TypeError) as err:
        message = str(err)
        assert "\n" not in message and checkpoints.WEIGHTS_INDEX in message, message
        return
    # followed only when every shard named lies inside the directory and exists
    assert isinstance(weight_map, dict) and weight_map
    assert set(weight_map.values()) <= {"model-1.safetensors", "sub/../model-1.safetensors"}
    assert state.keys() == saved[1].keys()
