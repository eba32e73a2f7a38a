"""The chapter-03 corpus: clean prose, documents and sentences, a fixed held-out split."""

import gzip
import re

import pytest

from course_utils.text import corpus
from course_utils.text.corpus import Document

MARKUP = re.compile(r"``|:[a-z]+:`|`|\.\. [a-z]+::|>>>|::=|\*\*")


@pytest.fixture(scope="module")
def shipped():
    return corpus.load_corpus()


def test_shipped_corpus_is_a_few_hundred_kb_and_big_enough(shipped):
    assert corpus.CORPUS_FILE.stat().st_size < 3_000_000
    stats = corpus.corpus_stats(shipped)
    assert stats["documents"] > 500 and stats["sentences"] > 8000 and stats["characters"] > 700_000


def test_shipped_corpus_is_prose_without_markup_code_or_doctests(shipped):
    for doc in shipped:
        assert doc.source.startswith(("topic:", "doc:"))
        for sentence in doc.sentences:
            assert not MARKUP.search(sentence), (doc.source, sentence)
            assert sentence == sentence.strip() and "\n" not in sentence
            assert len(sentence.split()) >= 3
            assert re.search(r"[.!?][\"')\]]*$", sentence), (doc.source, sentence)


def test_each_sentence_occurs_once_so_held_out_text_is_unseen(shipped):
    sentences = [s for d in shipped for s in d.sentences]
    assert len(sentences) == len(set(sentences))


def test_cleaning_keeps_prose_and_drops_headings_code_doctests_and_markup():
    text = """The "for" statement
*******************

The :func:`len` of a ``list`` is its *number* of items.  See **this**.
It is written like this::

   for x in range(3):
       print(x)

>>> len([1, 2])
2

.. note:: A directive.

* A list item that wraps onto
  a second line is kept.

for_stmt ::= "for" target_list "in" starred_list
"""
    paragraphs = corpus.prose_paragraphs(text)
    assert paragraphs == [
        "The len of a list is its number of items. See this. It is written like this:",
        "A list item that wraps onto a second line is kept.",
    ]
    sentences = [s for p in paragraphs for s in corpus.split_sentences(p)]
    # "It is written like this:" introduced a listing that is gone: not a whole sentence.
    assert sentences == [
        "The len of a list is its number of items.",
        "A list item that wraps onto a second line is kept.",
    ]


def test_sentence_split_spares_abbreviations():
    text = (
        "Use a key function, e.g. The one from operator, to sort the items. "
        "Then print them (i.e. Show the result). Finally stop here."
    )
    assert corpus.split_sentences(text) == [
        "Use a key function, e.g. The one from operator, to sort the items.",
        "Then print them (i.e. Show the result).",
        "Finally stop here.",
    ]


def test_fresh_build_from_this_python_is_clean_too():
    documents = corpus.build_pydocs_corpus(include_docstrings=False)
    assert len(documents) > 50
    assert all(d.source.startswith("topic:") for d in documents)
    for doc in documents:
        for sentence in doc.sentences:
            assert not MARKUP.search(sentence), sentence


def test_split_is_deterministic_disjoint_complete_and_about_ten_percent(shipped):
    train, heldout = corpus.split_documents(shipped)
    train2, heldout2 = corpus.split_documents(list(reversed(shipped)))
    assert {d.source for d in heldout} == {d.source for d in heldout2}
    assert not {d.source for d in train} & {d.source for d in heldout}
    assert len(train) + len(heldout) == len(shipped)
    assert 0.05 < len(heldout) / len(shipped) < 0.15
    assert {d.source for d in train2} == {d.source for d in train}


def test_split_rejects_a_bad_fraction():
    with pytest.raises(ValueError, match="heldout_percent must be between 1 and 99"):
        corpus.split_documents([], heldout_percent=0)


def test_write_read_round_trip_is_byte_deterministic(tmp_path):
    docs = [Document("doc:a", ("One sentence here.", "Another one.")), Document("topic:b", ("Third sentence.",))]
    first = corpus.write_corpus(docs, tmp_path / "a.txt.gz")
    second = corpus.write_corpus(docs, tmp_path / "b.txt.gz")
    assert first.read_bytes() == second.read_bytes()
    assert corpus.read_corpus(first) == docs
    text = gzip.decompress(first.read_bytes()).decode()
    assert text == "# doc:a\nOne sentence here.\nAnother one.\n\n# topic:b\nThird sentence.\n"


def test_read_corpus_errors_say_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m course_utils.text.corpus"):
        corpus.read_corpus(tmp_path / "missing.txt.gz")
    bad = tmp_path / "bad.txt"
    bad.write_text("no header line\nsecond line\n")
    with pytest.raises(ValueError, match="must start with a '# <source>' line"):
        corpus.read_corpus(bad)


def test_unknown_corpus_name_is_refused():
    with pytest.raises(ValueError, match="corpus must be one of"):
        corpus.load_corpus("books")


def test_wikitext_falls_back_offline_with_one_line(monkeypatch, capsys, shipped):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(corpus, "load_wikitext", offline)
    documents = corpus.load_corpus("wikitext")
    message = capsys.readouterr().out
    assert documents == shipped
    assert message.count("\n") == 1 and "using the offline Python-docs corpus" in message


def test_wikitext_lines_become_articles_and_sentences():
    lines = [
        "",
        " = Valkyria = ",
        "",
        " The game was released in 2011 . It sold 1 @,@ 000 copies . ",
        " = = Plot = = ",
        " The story follows a squad . ",
        " = Tower = ",
        " A tower stands here . ",
    ]
    docs = corpus.wikitext_documents(lines)
    assert [d.source for d in docs] == ["wiki:Valkyria", "wiki:Tower"]
    assert docs[0].sentences == (
        "The game was released in 2011 .",
        "It sold 1,000 copies .",
        "The story follows a squad .",
    )
