"""BIO tags: which tags are valid, mending entities that start with I-, reading entities out of tags.

``B-TYPE`` begins an entity, ``I-TYPE`` continues it, ``O`` is outside. :func:`bio_problems`
finds entities that start with ``I-`` and :func:`repair_bio` mends them (which also turns IOB1
files into BIO); :func:`entity_spans` reads the entities out of a tag sequence, as seqeval does;
:func:`label_list` builds the tag set from the data. For looking at results,
:func:`type_confusion` counts which entity type was predicted for which and
:func:`format_entities` brackets the entities of a sentence. Chapter 04 teaches these and
:mod:`course_utils.text.ner` reads and predicts with them.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

__all__ = [
    "BioTagError",
    "is_bio_tag",
    "bio_problems",
    "repair_bio",
    "entity_spans",
    "label_list",
    "type_confusion",
    "format_entities",
]


class BioTagError(ValueError):
    """A tag that is not BIO (O, B-TYPE, I-TYPE), or an entity that starts with I- when asked to refuse."""


_BIO = re.compile(r"^(O|[BI]-\S+)$")


def is_bio_tag(tag: str) -> bool:
    """True for ``O``, ``B-TYPE`` and ``I-TYPE`` (TYPE any non-empty text without spaces)."""
    return isinstance(tag, str) and bool(_BIO.fullmatch(tag))  # fullmatch: "$" would accept a final newline


def bio_problems(tags: Sequence[str]) -> list[int]:
    """Positions where an entity starts with ``I-`` (after ``O``, at the start, or after another type)."""
    problems = []
    previous = "O"
    for i, tag in enumerate(tags):
        if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
            problems.append(i)
        previous = tag
    return problems


def repair_bio(tags: Sequence[str]) -> list[str]:
    """Turn every ``I-X`` that starts an entity into ``B-X`` (also converts IOB1 files to BIO)."""
    fixed = list(tags)
    for i in bio_problems(tags):
        fixed[i] = "B-" + fixed[i][2:]
    return fixed


def entity_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The entities of a tag sequence as (type, start, end), ``end`` exclusive.

    Lenient like seqeval's default mode: an ``I-X`` after ``O`` or after another type starts
    an entity, and a change of type ends one.
    """
    spans = []
    kind, start = None, 0
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, new_kind = (tag[0], tag[2:]) if tag != "O" else ("O", None)
        if kind is not None and (prefix in ("O", "B") or new_kind != kind):
            spans.append((kind, start, i))
            kind = None
        if prefix in ("B", "I") and kind is None:
            kind, start = new_kind, i
    return spans


def label_list(*splits: Iterable[tuple[list[str], list[str]]]) -> list[str]:
    """The tag set read from the data: ``O`` first, then ``B-T, I-T`` for each entity type T, sorted."""
    types = sorted({tag[2:] for split in splits for _, tags in split for tag in tags if tag != "O"})
    if not types:
        raise ValueError("the data has no entity at all (every tag is O): nothing to learn; check the tag column.")
    return ["O"] + [f"{prefix}-{t}" for t in types for prefix in ("B", "I")]


# ---------------------------------------------------------------- looking at results


def type_confusion(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]):
    """Entity-type confusion: (names, counts) with counts[g][p] for gold type g and predicted type p.

    A gold entity and a predicted one match when they cover exactly the same words; the last
    name, ``"none"``, collects the gold entities with no prediction of the same span (missed or
    wrong boundaries, last column) and the predictions with no gold span (spurious, last row).
    """
    types = sorted({k for seq in list(gold) + list(pred) for k, _, _ in entity_spans(seq)})
    names = types + ["none"]
    index = {n: i for i, n in enumerate(names)}
    counts = [[0] * len(names) for _ in names]
    for g_tags, p_tags in zip(gold, pred):
        g_spans = {(a, b): k for k, a, b in entity_spans(g_tags)}
        p_spans = {(a, b): k for k, a, b in entity_spans(p_tags)}
        for span, kind in g_spans.items():
            counts[index[kind]][index[p_spans.get(span, "none")]] += 1
        for span, kind in p_spans.items():
            if span not in g_spans:
                counts[index["none"]][index[kind]] += 1
    return names, counts


def format_entities(tokens: Sequence[str], tags: Sequence[str]) -> str:
    """A sentence with its entities in brackets: ``[Maria Lopez]PER flew to [Lyon]LOC .``"""
    words = list(tokens)
    for kind, start, end in reversed(entity_spans(tags)):
        words[start:end] = ["[" + " ".join(words[start:end]) + "]" + kind]
    return " ".join(words)
