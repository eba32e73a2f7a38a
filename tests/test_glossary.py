"""The English / 中文 glossary: every shipped TSV loads and is well formed; lookups work
both ways; a broken file is reported with its name and line."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from course_utils import glossary

TSV_FILES = sorted(glossary.TERMS_DIR.glob("*.tsv"))
TERMS = glossary.load()
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_glossary_has_terms():
    assert TSV_FILES and TERMS, f"no terms in {glossary.TERMS_DIR}"


@pytest.mark.parametrize("path", TSV_FILES, ids=lambda p: p.name)
def test_each_file_loads(path):
    assert re.fullmatch(r"\d\d", path.stem), f"{path.name}: name glossary files after their chapter, e.g. 01.tsv"
    terms = glossary.load(path.stem)
    assert terms and all(t.chapter == path.stem for t in terms)


@pytest.mark.parametrize("chapter", sorted({p.name[:2] for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")}))
def test_each_chapter_with_a_notebook_has_terms(chapter):
    assert glossary.load(chapter), f"chapter {chapter} has a notebook but no glossary_terms/{chapter}.tsv"


def test_no_duplicate_terms_across_files():
    seen = Counter(t.term.lower() for t in TERMS)
    twice = {term: [t.chapter for t in TERMS if t.term.lower() == term] for term, n in seen.items() if n > 1}
    assert not twice, f"terms defined more than once (term: chapters): {twice}"


def test_no_duplicate_chinese_terms():
    seen = Counter(t.zh for t in TERMS)
    twice = {zh: [t.term for t in TERMS if t.zh == zh] for zh, n in seen.items() if n > 1}
    assert not twice, f"two English terms share one Chinese term, so lookup(zh) is ambiguous: {twice}"


@pytest.mark.parametrize("term", TERMS, ids=lambda t: f"{t.chapter}:{t.term}")
def test_chinese_columns_hold_chinese(term):
    # a name Chinese text also writes in Latin letters (CUDA, BERT) may keep zh == term
    assert CJK.search(term.zh) or term.zh == term.term, (
        f"{term.chapter}.tsv {term.term!r}: zh {term.zh!r} has no Chinese characters"
    )
    assert CJK.search(term.definition_zh), f"{term.chapter}.tsv {term.term!r}: definition_zh has no Chinese characters"
    assert not CJK.search(term.term), f"{term.chapter}.tsv: the English term {term.term!r} holds Chinese"


@pytest.mark.parametrize("term", TERMS, ids=lambda t: f"{t.chapter}:{t.term}")
def test_fields_keep_the_markdown_table_intact(term):
    for field in (term.term, term.zh, term.definition, term.definition_zh):
        assert "|" not in field and "\n" not in field, (
            f"{term.chapter}.tsv {term.term!r}: '|' or a line break in {field!r} breaks glossary.show()'s table"
        )


def test_lookup_both_ways():
    for t in TERMS:
        assert glossary.lookup(t.term) == t
        assert glossary.lookup(f"  {t.term.upper()} ") == t  # case and spaces do not matter
        assert glossary.lookup(t.zh) == t


def test_lookup_unknown_word():
    with pytest.raises(KeyError, match="'no such term' is not in the glossary; glossary.show"):
        glossary.lookup("no such term")


def test_markdown_table_has_a_row_per_term():
    table = glossary.to_markdown().splitlines()
    assert table[0] == "| term | 术语 | definition | 释义 |"
    assert len(table) == 2 + len(TERMS)
    first = TERMS[0]
    assert table[2] == f"| {first.term} | {first.zh} | {first.definition} | {first.definition_zh} |"
    chapter = first.chapter
    assert len(glossary.to_markdown(chapter).splitlines()) == 2 + len(glossary.load(chapter))


# ---------------------------------------------------------------- broken files, in a temporary folder
HEADER = "term\tzh\tdefinition\tdefinition_zh\n"


@pytest.fixture
def terms_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(glossary, "TERMS_DIR", tmp_path)
    return tmp_path


def test_temporary_file_loads(terms_dir):
    (terms_dir / "07.tsv").write_text(HEADER + "token\t词元\tA piece of text.\t一段文本。\n", encoding="utf-8")
    assert glossary.load() == [glossary.Term("token", "词元", "A piece of text.", "一段文本。", "07")]
    assert glossary.lookup("词元").term == "token"


@pytest.mark.parametrize(
    "header",
    ["term\tzh\tdefinition\n", "term,zh,definition,definition_zh\n", "zh\tterm\tdefinition\tdefinition_zh\n"],
    ids=["missing column", "commas", "wrong order"],
)
def test_bad_header_names_the_file(terms_dir, header):
    path = terms_dir / "07.tsv"
    path.write_text(header + "token\t词元\tA piece of text.\t一段文本。\n", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{path}: header must be term / zh / definition / definition_zh")):
        glossary.load()


@pytest.mark.parametrize(
    "row",
    ["token\t\tA piece of text.\t一段文本。", "token\t词元\tA piece of text.", "token\t词元\t   \t一段文本。"],
    ids=["empty zh", "missing column", "blank"],
)
def test_empty_cell_names_file_and_line(terms_dir, row):
    path = terms_dir / "07.tsv"
    path.write_text(HEADER + "word\t词\tA unit.\t一个单位。\n" + row + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{path}:3: every column needs text")):
        glossary.load()
