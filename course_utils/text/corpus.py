"""Pretraining text for chapter 03: English prose that ships with Python itself.

Two sources, both offline: ``pydoc_data.topics`` (the language reference that
``help("for")`` prints) and the docstrings of the standard library's public
modules, classes and functions. Both are cleaned into plain prose (no code
listings, no reST markup, no doctest lines), split into documents (one topic
or one docstring each) and sentences.

The text depends on the Python version, so the course ships the cleaned corpus
in ``data/pydocs_corpus.txt.gz`` and loads it from there; :func:`build_pydocs_corpus`
rebuilds it from the running Python (``python -m course_utils.text.corpus`` rewrites the file).

File format: UTF-8, gzip; one document per block, blocks separated by a blank
line; a block's first line is ``# <source>`` (e.g. ``# doc:json.dumps``), every
other line is one sentence.

Online option: WikiText through ``datasets`` (:func:`load_corpus` with
``name="wikitext"``), falling back to the offline corpus with a one-line message.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib
import inspect
import io
import re
import sys
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

from course_utils.paths import DATA_DIR

CORPUS_FILE = DATA_DIR / "pydocs_corpus.txt.gz"
CORPUS_NAMES = ("pydocs", "wikitext")


@dataclass(frozen=True)
class Document:
    """One document: where it comes from, and its sentences in order."""

    source: str
    sentences: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


# ---------------------------------------------------------------------------------------------
# Cleaning: from reST-flavoured documentation text to prose paragraphs
# ---------------------------------------------------------------------------------------------

_UNDERLINE = re.compile(r"^\s*([*=\-~^#+\"'`])\1{2,}\s*$")  # "*****", "=====" under a heading
_ROLE = re.compile(r":[\w:.+-]+:`~?!?([^`<]*?)(?:\s*<[^>`]*>)?`")  # :func:`~json.dumps` -> json.dumps
_LINK = re.compile(r"`([^`<]+?)\s*<[^>`]+>`_{1,2}")  # `text <url>`_ -> text
_LITERAL = re.compile(r"``(.+?)``")  # ``x`` -> x
_INTERPRETED = re.compile(r"`([^`]+)`_{0,2}")  # `x` -> x
_STRONG = re.compile(r"\*\*(\S(?:.*?\S)?)\*\*")  # **x** -> x
_EMPHASIS = re.compile(r"(?<![\w*])\*(\S(?:[^*]*?\S)?)\*(?![\w*])")  # *x* -> x
_SIGNATURE = re.compile(r"^[\w.]+\(.*\)\s*(->.*)?$")  # "S.join(iterable) -> str"
_FOOTNOTE = re.compile(r"\s*\[\d+\]")  # "[1]" footnote marks
_NON_PROSE = ("::=", "#!", "$ ", "%%")  # grammar rules, shell sessions
_LIST_MARKER = re.compile(r"^(?:[*\-+\u2022]|\d+\.|\(\d+\)|\[\d+\]|[a-z]\))\s+")  # "* ", "2. ", "[1] "

_PROSE_PUNCTUATION = set("_'\".,;:()-?!/\u2018\u2019\u201c\u201d")

# Abbreviations after which a full stop does not end a sentence.
_ABBREVIATIONS = {"e.g", "i.e", "etc", "vs", "cf", "mr", "mrs", "dr", "no", "approx", "resp", "ca", "ie", "eg"}
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9])")


def strip_markup(text: str) -> str:
    """Remove reST inline markup, keeping the words: roles, literals, links, emphasis."""
    text = _ROLE.sub(lambda m: m.group(1).strip().lstrip("~"), text)
    text = _LINK.sub(r"\1", text)
    text = _LITERAL.sub(r"\1", text)
    text = _INTERPRETED.sub(r"\1", text)
    text = _STRONG.sub(r"\1", text)
    text = _EMPHASIS.sub(r"\1", text)
    text = _FOOTNOTE.sub("", text)
    text = text.replace("\\", "")
    return re.sub(r"\s+", " ", text).strip()


def prose_paragraphs(text: str) -> list[str]:
    """The prose paragraphs of a documentation text, joined into single lines, markup removed.

    A paragraph is a block of lines between blank lines. Kept: blocks whose lines share
    one indentation (a list item's hanging indent counts as shared; a definition's term
    line is dropped and its body kept). Dropped: headings (a line underlined with
    ``***``/``===``), blocks of mixed indentation (code listings), aligned tables,
    directives (``.. note::``), doctests, grammar rules, signature lines and blocks
    that are mostly symbols.
    """
    lines = text.expandtabs().splitlines()
    kept: list[str] = []
    for line in lines:
        if _UNDERLINE.match(line):  # a heading is the line above an underline: drop both
            if kept and kept[-1].strip():
                kept.pop()
            kept.append("")
        elif not line.strip().startswith("-["):  # "-[ Footnotes ]-" rubrics
            kept.append(line)
    blocks, block = [], []
    for line in kept + [""]:
        if line.strip():
            block.append(line)
        elif block:
            blocks.append(block)
            block = []
    result = []
    for block in blocks:
        prose = _prose_lines(block)
        if prose is None:
            continue
        paragraph = strip_markup(" ".join(prose))
        if paragraph.endswith("::"):
            paragraph = paragraph[:-1]  # "Example::" introduced a listing that was dropped
        if _looks_like_prose(paragraph):
            result.append(paragraph)
    return result


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _prose_lines(block: list[str]) -> list[str] | None:
    """The stripped lines of a prose block, or None when the block is code, a table or markup."""
    if any(line.lstrip().startswith((">>>", "... ", ".. ")) for line in block):
        return None  # doctest or directive
    if any(mark in line for line in block for mark in _NON_PROSE):
        return None
    if any(re.search(r"\S {3,}\S", line.strip()) for line in block):
        return None  # columns aligned with runs of spaces: a table or an option list
    base = min(_indent(line) for line in block)
    lines = [line[base:] for line in block]
    marker = _LIST_MARKER.match(lines[0])
    if marker:  # "* item", "2. item", "[1] footnote": continuation lines hang under the text
        lines[0] = lines[0][marker.end() :]
        hang = {marker.end()}
    else:
        hang = {0}
    rest = lines[1:]
    if (
        rest
        and len(lines[0].split()) <= 4
        and not marker
        and _indent(rest[0]) > 0
        and len({_indent(line) for line in rest}) == 1
    ):
        lines, rest = rest, rest[1:]  # a definition: "term" then its indented body; keep the body
        hang = {_indent(lines[0])}
        lines[0] = lines[0].strip()
    if any(_indent(line) not in hang for line in rest):
        return None  # mixed indentation: code, or a nested structure
    first = lines[0].strip()
    if _SIGNATURE.match(first) or first.startswith(("|", ":", "+-", "=")):
        return None  # a signature line, a table or a field list
    return [line.strip() for line in lines]


def _looks_like_prose(text: str, min_words: int = 3) -> bool:
    words = text.split()
    if len(words) < min_words:
        return False
    visible = text.replace(" ", "")
    symbols = sum(not ch.isalnum() and ch not in _PROSE_PUNCTUATION for ch in visible)
    if symbols > 0.05 * len(visible):
        return False  # operators and brackets: an expression or a table row
    lower_words = sum(w[:1].islower() for w in words)
    return lower_words >= 0.4 * len(words)  # code identifiers and titles have few plain lowercase words


def split_sentences(paragraph: str) -> list[str]:
    """Split a prose paragraph into sentences (a full stop, then a capital), sparing abbreviations."""
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(paragraph):
        before = paragraph[start : match.start()].rstrip("\"')]")
        last_word = before.rsplit(" ", 1)[-1].strip("([\"'.!?").lower()
        if last_word in _ABBREVIATIONS or (len(last_word) == 1 and last_word.isalpha()):
            continue  # "e.g. The", "A. Smith": not the end of a sentence
        pieces.append(paragraph[start : match.end()].strip())
        start = match.end()
    pieces.append(paragraph[start:].strip())
    return [p for p in pieces if _keep_sentence(p)]


def _keep_sentence(sentence: str) -> bool:
    if not re.search(r"[.!?][\"')\]]*$", sentence):
        return False  # cut short by a listing ("is equivalent to", "as follows:"): not a whole sentence
    if any(ch in sentence for ch in "`<>{}") or "**" in sentence or " # " in sentence:
        return False  # leftover markup, or code with a comment
    if re.match(r"[\w.]+(, ?[\w.]+)* = ", sentence):
        return False  # starts with an assignment: code
    words = sentence.split()
    return 3 <= len(words) <= 80 and _looks_like_prose(sentence)


def document_from_text(source: str, text: str) -> Document | None:
    """Clean one documentation text into a :class:`Document` (None if no prose is left)."""
    sentences = [s for p in prose_paragraphs(text) for s in split_sentences(p)]
    return Document(source, tuple(sentences)) if sentences else None


# ---------------------------------------------------------------------------------------------
# Building the corpus from the running Python
# ---------------------------------------------------------------------------------------------

# Modules with side effects on import (a browser, a printout, a GUI), platform-only ones, tests.
_SKIP_MODULES = {
    "antigravity",
    "this",
    "idlelib",
    "tkinter",
    "turtle",
    "turtledemo",
    "test",
    "lib2to3",
    "ensurepip",
    "pydoc_data",
    "msilib",
    "msvcrt",
    "nt",
    "winreg",
    "winsound",
    "readline",
    "distutils",
    "encodings",
    "sre_compile",
    "sre_constants",
    "sre_parse",
    "__main__",
    "__future__",
    "__hello__",
    "__phello__",
}


def _stdlib_modules() -> list[str]:
    """Public standard-library modules and the public submodules of its packages, sorted."""
    import pkgutil

    names = set()
    for name in sorted(getattr(sys, "stdlib_module_names", ())):
        if name.startswith("_") or name in _SKIP_MODULES:
            continue
        names.add(name)
        module = _quiet_import(name)
        if module is not None and hasattr(module, "__path__"):
            for info in pkgutil.iter_modules(module.__path__):
                if not info.name.startswith("_") and "test" not in info.name:
                    names.add(f"{name}.{info.name}")
    return sorted(names)


def _quiet_import(name: str):
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - a module that cannot load here is skipped
            return None


def _own_doc(obj) -> str | None:
    """The object's own docstring, cleaned of indentation (not one inherited from a base class)."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) and doc.strip() else None


def _docstrings(module_name: str):
    """(source, text) per document: a module's docstring with those of its functions, then
    each public class's docstring with those of its methods (one topic per document)."""
    module = _quiet_import(module_name)
    if module is None:
        return
    module_docs, class_docs = [_own_doc(module)], []
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
            continue
        if inspect.isroutine(obj):
            module_docs.append(_own_doc(obj))
        elif inspect.isclass(obj):
            docs = [_own_doc(obj)]
            for attr, member in sorted(vars(obj).items()):
                if not attr.startswith("_") and (inspect.isroutine(member) or isinstance(member, property)):
                    docs.append(_own_doc(getattr(member, "__func__", member)))
            class_docs.append((f"doc:{module_name}.{name}", docs))
    for source, docs in [(f"doc:{module_name}", module_docs), *class_docs]:
        text = "\n\n".join(d for d in docs if d)
        if text:
            yield source, text


def build_pydocs_corpus(include_docstrings: bool = True) -> list[Document]:
    """Build the corpus from this Python: every pydoc topic, then stdlib docstrings, each sentence once."""
    from pydoc_data.topics import topics

    documents, seen = [], set()
    sources = [(f"topic:{name}", topics[name]) for name in sorted(topics)]
    if include_docstrings:
        sources += [item for module in _stdlib_modules() for item in _docstrings(module)]
    for source, text in sources:
        document = document_from_text(source, text)
        if document is None:
            continue
        # Each sentence once in the whole corpus (``dump`` and ``dumps`` share paragraphs), so a
        # held-out sentence is never also a training sentence.
        sentences = tuple(s for s in dict.fromkeys(document.sentences) if s not in seen)
        seen.update(sentences)
        if sentences:
            documents.append(Document(source, sentences))
    return documents


# ---------------------------------------------------------------------------------------------
# Reading and writing the shipped file
# ---------------------------------------------------------------------------------------------


def write_corpus(documents: list[Document], path: str | Path = CORPUS_FILE) -> Path:
    """Write documents as gzip text (mtime 0, so the same corpus gives the same bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blocks = ["\n".join([f"# {d.source}", *d.sentences]) for d in documents]
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(("\n\n".join(blocks) + "\n").encode("utf-8"))
    return path


def read_corpus(path: str | Path = CORPUS_FILE) -> list[Document]:
    """Read a corpus written by :func:`write_corpus` (``.gz`` or plain text)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"corpus file {path} does not exist: rebuild it with `python -m course_utils.text.corpus` "
            "or pass the path of a file written by course_utils.text.corpus.write_corpus."
        )
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        text = f.read()
    documents = []
    for number, block in enumerate(text.strip().split("\n\n"), start=1):
        lines = block.splitlines()
        if not lines or not lines[0].startswith("# "):
            raise ValueError(f"{path}: block {number} must start with a '# <source>' line, got {lines[:1]}")
        documents.append(Document(lines[0][2:], tuple(lines[1:])))
    return documents


def load_pydocs(path: str | Path | None = None, rebuild: bool = False) -> list[Document]:
    """The shipped Python-docs corpus (or, with ``rebuild=True``, one built from this Python)."""
    if rebuild:
        return build_pydocs_corpus()
    return read_corpus(CORPUS_FILE if path is None else path)


def wikitext_documents(lines) -> list[Document]:
    """Split WikiText lines into articles (a `` = Title = `` line starts one) and sentences."""
    documents, title, sentences = [], None, []
    for line in lines:
        line = line.strip()
        heading = re.fullmatch(r"(=(?: ?=)*)\s+(.*?)\s+\1", line)  # " = Title = ", " = = Section = = "
        if heading and heading.group(1) == "=":
            if title and sentences:
                documents.append(Document(f"wiki:{title}", tuple(sentences)))
            title, sentences = heading.group(2), []
        elif line and not heading:
            # WikiText writes "1 @,@ 000" and " @-@ ": undo its escapes.
            line = re.sub(r" @(.)@ ", r"\1", line)
            sentences += [s for s in split_sentences(line)]
    if title and sentences:
        documents.append(Document(f"wiki:{title}", tuple(sentences)))
    return documents


def load_wikitext(config_name: str = "wikitext-2-raw-v1") -> list[Document]:
    """WikiText through ``datasets`` (needs the network): train and validation splits as articles."""
    import logging

    from datasets import load_dataset

    # The hub client logs every failed request; the caller prints one line if it all fails.
    loggers = [logging.getLogger(name) for name in ("datasets", "huggingface_hub", "urllib3")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        data = load_dataset("Salesforce/wikitext", config_name)
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    return wikitext_documents(list(data["train"]["text"]) + list(data["validation"]["text"]))


def load_corpus(name: str = "pydocs", path: str | Path | None = None) -> list[Document]:
    """Documents of the corpus ``name``: ``"pydocs"`` (offline, shipped) or ``"wikitext"`` (online).

    WikiText is tried only when asked for; on any failure (no network, no ``datasets``) the
    offline corpus is used instead, with a one-line message.
    """
    if name not in CORPUS_NAMES:
        raise ValueError(f"corpus must be one of {CORPUS_NAMES}, got {name!r}")
    if name == "wikitext":
        try:
            documents = load_wikitext()
            if documents:
                return documents
            raise ValueError("no articles found")
        except Exception as err:  # noqa: BLE001 - any failure means: use the offline corpus
            print(
                f"WikiText is not available ({type(err).__name__}: {str(err)[:80]}); "
                "using the offline Python-docs corpus instead."
            )
    return load_pydocs(path)


def is_heldout(document: Document, heldout_percent: int = 10) -> bool:
    """Deterministic held-out membership: a hash of the document's source, not a random draw."""
    return zlib.crc32(document.source.encode("utf-8")) % 100 < heldout_percent


def split_documents(documents: list[Document], heldout_percent: int = 10) -> tuple[list[Document], list[Document]]:
    """(train, held-out) by document, the same split on every machine and every run."""
    if not 0 < heldout_percent < 100:
        raise ValueError(f"heldout_percent must be between 1 and 99, got {heldout_percent}")
    train = [d for d in documents if not is_heldout(d, heldout_percent)]
    heldout = [d for d in documents if is_heldout(d, heldout_percent)]
    return train, heldout


def corpus_stats(documents: list[Document]) -> dict[str, int]:
    """Counts that describe a corpus: documents, sentences, words, characters."""
    sentences = [s for d in documents for s in d.sentences]
    return {
        "documents": len(documents),
        "sentences": len(sentences),
        "words": sum(len(s.split()) for s in sentences),
        "characters": sum(len(s) for s in sentences),
    }


if __name__ == "__main__":
    docs = build_pydocs_corpus()
    out = write_corpus(docs, sys.argv[1] if len(sys.argv) > 1 else CORPUS_FILE)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {corpus_stats(docs)}")
