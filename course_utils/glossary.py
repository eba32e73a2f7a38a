"""The English / 中文 glossary of every term the chapters introduce.

Terms live in ``glossary_terms/NN.tsv`` (one file per chapter, so chapters
add terms without touching each other), with the columns
``term, zh, definition, definition_zh``. ``show()`` renders a table in a notebook.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

TERMS_DIR = Path(__file__).with_name("glossary_terms")
COLUMNS = ("term", "zh", "definition", "definition_zh")


@dataclass(frozen=True)
class Term:
    term: str
    zh: str
    definition: str
    definition_zh: str
    chapter: str


def load(chapter: str | None = None) -> list[Term]:
    """All terms (or one chapter's, e.g. ``"01"``), in chapter order."""
    terms = []
    for path in sorted(TERMS_DIR.glob("*.tsv")):
        if chapter is not None and path.stem != chapter:
            continue
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t")
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise ValueError(
                    f"{path}: header must be {' / '.join(COLUMNS)} (tab-separated), got {reader.fieldnames}"
                )
            for line, row in enumerate(reader, start=2):
                if any(not (row.get(c) or "").strip() for c in COLUMNS):
                    raise ValueError(f"{path}:{line}: every column needs text (term, zh, definition, definition_zh)")
                terms.append(Term(*(row[c].strip() for c in COLUMNS), chapter=path.stem))
    return terms


def lookup(word: str) -> Term:
    """The entry for an English or Chinese term (case-insensitive)."""
    if not isinstance(word, str):
        raise TypeError(f"glossary.lookup takes a term as a string, e.g. lookup('attention'); got {word!r}.")
    word_lower = word.strip().lower()
    for t in load():
        if word_lower in (t.term.lower(), t.zh.lower()):
            return t
    raise KeyError(f"{word!r} is not in the glossary; glossary.show() lists every term")


def to_markdown(chapter: str | None = None) -> str:
    rows = ["| term | 术语 | definition | 释义 |", "|---|---|---|---|"]
    rows += [f"| {t.term} | {t.zh} | {t.definition} | {t.definition_zh} |" for t in load(chapter)]
    return "\n".join(rows)


def show(chapter: str | None = None) -> None:
    """Display the glossary (or one chapter's part) as a table."""
    from IPython.display import Markdown, display

    display(Markdown(to_markdown(chapter)))
