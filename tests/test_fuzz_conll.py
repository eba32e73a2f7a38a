"""Property-based fuzzing of CoNLL files and label alignment (issue 16).

* the write/read round trip: whatever ``write_conll`` accepts, ``read_conll`` gives back exactly;
  whatever it refuses, it refuses with one line and leaves an existing file as it was;
* the reader on generated files in every variant a CoNLL file comes in (UTF-8 with or without a
  byte-order mark, UTF-16 and Latin-1, LF / CRLF / CR line ends, spaces or tabs, 2-4 columns and
  extra ones, blank lines of spaces and tabs, ``-DOCSTART-`` lines, IOB1 tags, no final newline)
  and on files with a random character dropped in: only the package's own one-line errors
  (ConllFormatError, BioTagError) or the right sentences;
* sub-word label alignment on odd words (empty, zero-width, combining marks, emoji, CJK).

References: seqeval (entities of IOB1 and BIO tags), the tokenizer itself (word ids, lengths).
Derandomized: CI sees the same examples every run.
"""

from __future__ import annotations

import warnings

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from seqeval.metrics.sequence_labeling import get_entities

from course_utils.text import bio_tags, ner

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """One folder for every example (emptied by each): a fresh folder per example costs more than the test."""
    return tmp_path_factory.mktemp("fuzz_conll")


def fresh(folder):
    for p in folder.iterdir():
        p.unlink()
    return folder


TYPES = ["PER", "LOC", "ORG", "MISC", "X-Y", "东京"]
# characters that broke readers and writers before: whitespace of every kind, a BOM, a lone
# surrogate, zero-width and combining characters, line separators, emoji, CJK, control characters
ODD = [
    "-DOCSTART-",
    "\ufeff",
    "\udc80",
    "\u00a0",
    "\u2028",
    "\u3000",
    "\x0c",
    "\x85",
    "\x00",
    "\n",
    "\r",
    "\t",
    " ",
    "",
    "\u200b",
    "e\u0301",
    "🙂",
    "東京",
    "B-PER\n",
    "O",
    "-X-",
    "é",
]

words = st.one_of(
    st.text(
        st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc"), blacklist_characters="\ufeff"),
        min_size=1,
        max_size=8,
    ),
    st.sampled_from(["EU", "rejects", "German", "call", "New", "York", "-", ".", "(", "1996-08-22"]),
)
any_text = st.one_of(
    st.text(max_size=6), st.sampled_from(ODD), st.tuples(st.text(max_size=3), st.sampled_from(ODD)).map("".join)
)


@st.composite
def bio_sentences(draw, max_sentences=5, max_len=8):
    """Valid BIO sentences: ``O``, or an entity B-T followed by I-T's."""
    sentences = []
    for _ in range(draw(st.integers(1, max_sentences))):
        tokens, tags, length = [], [], draw(st.integers(1, max_len))
        while len(tokens) < length:
            if draw(st.booleans()):
                tokens.append(draw(words))
                tags.append("O")
            else:
                kind = draw(st.sampled_from(TYPES))
                for i in range(draw(st.integers(1, 3))):
                    tokens.append(draw(words))
                    tags.append(("B-" if i == 0 else "I-") + kind)
        sentences.append((tokens, tags))
    return sentences


def one_line(err: Exception) -> str:
    text = str(err)
    assert text and "\n" not in text, repr(text)
    return text


def read_quietly(path, bio="repair"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ner.read_conll(path, bio=bio)


# ---------------------------------------------------------------- the round trip


@given(
    sentences=st.lists(
        st.tuples(
            st.lists(st.one_of(words, any_text), max_size=4),
            st.lists(st.one_of(st.sampled_from(["O", "B-PER", "I-LOC", "B-X-Y", "I-东京"]), any_text), max_size=4),
        ),
        max_size=3,
    )
)
@FUZZ
def test_write_accepts_only_what_reads_back_exactly(folder, sentences):
    path = fresh(folder) / "x.conll"
    path.write_bytes(b"old O\n")
    try:
        ner.write_conll(sentences, path)
    except (ValueError, TypeError) as err:
        one_line(err)
        assert path.read_bytes() == b"old O\n", "a refused write changed the existing file"
        assert [p.name for p in folder.iterdir()] == ["x.conll"], "a temporary file was left behind"
        return
    assert read_quietly(path, bio="keep") == [(list(t), list(g)) for t, g in sentences]


@given(sentences=bio_sentences())
@FUZZ
def test_valid_bio_round_trips_with_the_default_reader(folder, sentences):
    path = ner.write_conll(sentences, fresh(folder) / "x.conll")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # valid BIO: nothing to repair, nothing to warn about
        assert ner.read_conll(path) == sentences


# ---------------------------------------------------------------- the reader on every variant of a file


def to_iob1(tags):
    """BIO -> IOB1: B- only where an entity follows one of the same type."""
    out, previous = [], "O"
    for tag in tags:
        if tag.startswith("B-") and previous[2:] != tag[2:]:
            tag = "I-" + tag[2:]
        out.append(tag)
        previous = tag
    return out


@st.composite
def conll_files(draw):
    """(bytes of a CoNLL file, the sentences it holds or None when it must be refused, what varies)."""
    sentences = draw(bio_sentences())
    n_columns = draw(st.sampled_from([2, 3, 4, 5]))
    iob1 = draw(st.booleans())
    separator = draw(st.sampled_from([" ", "\t", "  ", " \t"]))
    blank = draw(st.sampled_from(["", " ", "\t", " \t "]))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    docstart = draw(st.booleans())
    final_newline = draw(st.booleans())
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"]))
    lines = []
    if docstart:
        lines += [separator.join(["-DOCSTART-"] + ["-X-"] * (n_columns - 2) + ["O"]), blank]
    for tokens, tags in sentences:
        for token, tag in zip(tokens, to_iob1(tags) if iob1 else tags):
            lines.append(separator.join([token] + ["NN"] * (n_columns - 2) + [tag]))
        lines.append(blank)
        if docstart and draw(st.booleans()):
            lines += [separator.join(["-DOCSTART-"] + ["-X-"] * (n_columns - 2) + ["O"]), blank]
    text = newline.join(lines) + (newline if final_newline else "")
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:  # latin-1 cannot hold every token
        data = text.encode("utf-8")
        encoding = "utf-8"
    readable = n_columns <= 4 and encoding != "utf-16" and (encoding != "latin-1" or text.isascii())
    return data, (sentences if readable else None), dict(columns=n_columns, iob1=iob1, encoding=encoding)


@given(case=conll_files())
@FUZZ
def test_reader_on_every_variant_gives_the_sentences_or_a_clear_error(folder, case):
    data, expected, how = case
    path = fresh(folder) / "x.conll"
    path.write_bytes(data)
    if expected is None:
        with pytest.raises((ner.ConllFormatError, bio_tags.BioTagError)) as err:
            read_quietly(path)
        assert str(path) in one_line(err.value)
        return
    got = read_quietly(path)
    assert got == expected, how
    for (tokens, tags), (_, original) in zip(got, expected):  # IOB1 read as BIO keeps seqeval's entities
        assert get_entities(tags) == get_entities(to_iob1(original) if how["iob1"] else original)


@given(case=conll_files(), where=st.floats(0, 1), char=st.sampled_from(ODD[1:] + ["Ω", "x", "\ud800"]))
@FUZZ
def test_reader_on_a_damaged_file_never_crashes_nor_reads_a_damaged_token(folder, case, where, char):
    data, _, _ = case
    damage = char.encode("utf-8", errors="surrogatepass")  # a lone surrogate: bytes no UTF-8 reader accepts
    at = int(where * len(data))
    path = fresh(folder) / "x.conll"
    path.write_bytes(data[:at] + damage + data[at:])
    try:
        got = read_quietly(path)
    except (ner.ConllFormatError, bio_tags.BioTagError) as err:
        assert str(path) in one_line(err)
        return
    for tokens, tags in got:  # what comes back is well formed and survives another round trip
        assert tokens and len(tokens) == len(tags) and all(bio_tags.is_bio_tag(t) for t in tags)
        assert not any(c.isspace() or c == "\ufeff" for token in tokens for c in token)
    again = ner.write_conll(got, path.with_name("again.conll"))
    assert read_quietly(again, bio="keep") == got


# ---------------------------------------------------------------- label alignment on odd words

VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    ".",
    "Maria",
    "Lopez",
    "flew",
    "to",
    "Lyon",
    "東",
    "京",
    "##s",
    "e",
    "\u0301",
]
LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
LABEL2ID = {label: i for i, label in enumerate(LABELS)}


@pytest.fixture(scope="module")
def tokenizer():
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    raw = Tokenizer(models.WordPiece({v: i for i, v in enumerate(VOCAB)}, unk_token="[UNK]"))
    raw.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    raw.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return transformers.BertTokenizerFast(tokenizer_object=raw, do_lower_case=False)


odd_words = st.one_of(
    st.sampled_from(
        [
            "",
            "\u200b",
            "\u0301",
            "e\u0301",
            "🙂",
            "東京",
            "Maria",
            "Lyon's",
            "..",
            "\u00ad",
            "\ufeff",
            " ",
            "a\u200bb",
            "Lopez",
        ]
    ),
    st.text(max_size=4),
)


@given(
    words=st.lists(odd_words, min_size=1, max_size=10),
    tags=st.data(),
    all_sub=st.booleans(),
    max_length=st.integers(4, 24),
)
@FUZZ
def test_alignment_on_odd_words(tokenizer, words, tags, all_sub, max_length):
    tags = tags.draw(st.lists(st.sampled_from(LABELS), min_size=len(words), max_size=len(words)))
    # the reference: the tokenizer, word by word, without truncation
    pieces = [len(tokenizer(w, add_special_tokens=False)["input_ids"]) for w in words]
    total = sum(pieces) + 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (feature,) = ner.encode(tokenizer, [(words, tags)], LABEL2ID, max_length, label_all_subtokens=all_sub)
    warned = any("truncated" in str(w.message) for w in caught)
    assert warned == (total > max_length), (pieces, max_length)
    word_ids, labels = feature["word_ids"], feature["labels"]
    assert len(labels) == len(word_ids) == len(feature["input_ids"]) == min(total, max_length)
    kept = [w for w in range(len(words)) if w in word_ids]
    assert kept == [w for w in range(len(words)) if pieces[w]][: len(kept)]  # words with tokens, in order
    for w in kept:
        first = word_ids.index(w)
        assert labels[first] == LABEL2ID[tags[w]]
        later = [labels[i] for i, x in enumerate(word_ids) if x == w][1:]
        inside = LABEL2ID["I-" + tags[w][2:]] if tags[w].startswith("B-") else LABEL2ID[tags[w]]
        assert later == ([inside] * len(later) if all_sub else [-100] * len(later))
    assert all(label == -100 for label, x in zip(labels, word_ids) if x is None)
    # predictions read back per word: a word without a token (or cut off) is O
    back = ner.word_predictions(
        word_ids, [label if label >= 0 else 0 for label in labels], dict(enumerate(LABELS)), len(words)
    )
    assert back == [tags[w] if w in kept else "O" for w in range(len(words))]
