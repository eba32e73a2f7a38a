"""course_utils.text.intents: the offline customer-service intent data set and its TSV files."""

from __future__ import annotations

import re

import pytest

from course_utils.text import intents


def phrasing_pattern(phrasing: str) -> re.Pattern:
    """A regex that matches the messages made from ``phrasing`` (any slot value, greeting, sign-off, case)."""
    body = re.escape(phrasing)
    for slot in ("order", "product", "colour", "size", "city", "day"):
        body = body.replace(re.escape("{" + slot + "}"), r"\S+")
    body = body.replace(r"\ ,", ",").replace(r"\ \.", r"\.").replace(r"\ \?", r"\?").replace(r"\ !", "!")
    body = body.replace(r"\ :", ":").rstrip(r"\.\?!")
    return re.compile(r"(^|[\s,:.!])" + body, re.IGNORECASE)


def phrasings_used(examples):
    used = set()
    for text, intent in examples:
        for i, phrasing in enumerate(intents.PHRASINGS[intent]):
            if phrasing_pattern(phrasing).search(text):
                used.add((intent, i))
    return used


def test_deterministic_and_shipped_files_match():
    assert intents.generate(3, {"train": 20, "test": 5}) == intents.generate(3, {"train": 20, "test": 5})
    assert intents.generate(3, {"train": 20, "test": 5}) != intents.generate(4, {"train": 20, "test": 5})
    assert intents.offline_data(0) == intents.generate(0)


def test_every_message_comes_from_a_phrasing_of_its_intent():
    data = intents.generate(0, {"train": 300, "test": 100})
    for text, intent in data["train"] + data["test"]:
        assert any(phrasing_pattern(p).search(text) for p in intents.PHRASINGS[intent]), (text, intent)


def test_test_phrasings_are_held_out_from_training():
    data = intents.generate(0)
    train, test = phrasings_used(data["train"]), phrasings_used(data["test"])
    assert train.isdisjoint(test)
    assert {i for i, _ in test} == set(intents.INTENTS) == {i for i, _ in train}
    assert {i for _, i in data["test"]} == set(intents.INTENTS)


def test_tsv_round_trip_and_errors(tmp_path):
    examples = intents.generate(1, {"train": 30, "test": 0})["train"]
    assert intents.read_tsv(intents.write_tsv(examples, tmp_path / "a.tsv")) == examples
    with pytest.raises(ValueError, match="contains a tab or a newline"):
        intents.write_tsv([("a\tb", "x")], tmp_path / "b.tsv")
    (tmp_path / "c.tsv").write_text("message\tlabel\nhi\tx\n")
    with pytest.raises(ValueError, match="first line must be the header 'text<TAB>intent'"):
        intents.read_tsv(tmp_path / "c.tsv")
    (tmp_path / "d.tsv").write_text("text\tintent\nhi there\n")
    with pytest.raises(ValueError, match="line 2: expected a message and an intent separated by one tab"):
        intents.read_tsv(tmp_path / "d.tsv")
    (tmp_path / "e.tsv").write_text("text\tintent\n")
    with pytest.raises(ValueError, match="has a header but no messages"):
        intents.read_tsv(tmp_path / "e.tsv")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        intents.read_tsv(tmp_path / "missing.tsv")
