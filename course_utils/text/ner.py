"""Named-entity recognition with BERT: CoNLL files, sub-word labels, the data sets, predictions.

Chapter 04 teaches these pieces inline and imports them from here afterwards:

* **CoNLL files**: :func:`read_conll` / :func:`write_conll`. One token per line with 2 to 4
  columns (token first, NER tag last, as CoNLL-2003's ``word POS chunk NER``), a blank line
  between sentences, ``-DOCSTART-`` lines between documents. Columns are separated by ASCII
  spaces or tabs; any other whitespace in a line (a no-break space, U+2028, ...) is an error,
  since the reader cannot tell whether it separates columns or belongs to the token.
  :func:`write_conll` writes only what :func:`read_conll` reads back unchanged. The tags must
  be BIO (:mod:`course_utils.text.bio_tags`: valid tags, repairing entities that start with ``I-``,
  entity spans, the tag set).
* **Sub-words**: a word split into several WordPiece tokens keeps one label.
  :func:`align_labels` gives it to the first sub-token (the others get -100, ignored by the
  loss) or to every sub-token; :func:`encode` and :func:`collate` make model batches;
  :func:`word_predictions` maps token predictions back to words.
* **Inference**: :func:`predict_tags` tags pre-split sentences; :func:`predict_entities` finds
  entities in raw text, with character offsets. The model and its tokenizer come from a BERT
  directory through :mod:`course_utils.text.ner_models`.
* **Data**: :func:`load_ner_data` reads CoNLL files, CoNLL-2003 (online, on request) or the
  offline generated set of :mod:`course_utils.text.ner_data`.
"""

from __future__ import annotations

import numbers
import os
import tempfile
import unicodedata
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import torch

from course_utils.text import ner_data
from course_utils.text.bio_tags import BioTagError, bio_problems, entity_spans, is_bio_tag, repair_bio
from course_utils.text.ner_models import max_positions
from course_utils.paths import DATA_DIR

IGNORE_INDEX = -100  # the label of positions the loss skips (torch's cross_entropy default)
OFFLINE_DIR = DATA_DIR / "ner"

Sentence = tuple[list[str], list[str]]


class ConllFormatError(ValueError):
    """A CoNLL file that cannot be read: names the file, the line and what was expected."""


# ---------------------------------------------------------------- CoNLL files

_COLUMN_SEPARATORS = " \t"
_BOM = "\ufeff"
_DOCSTART = "-DOCSTART-"


def read_conll(path: str | Path, bio: str = "repair") -> list[Sentence]:
    """Read a CoNLL file into a list of (tokens, tags).

    Each line is ``token [POS] [chunk] TAG`` (2 to 4 columns, spaces or tabs; the same number of
    columns on every line); a blank line (or one of spaces and tabs only) ends a sentence;
    ``-DOCSTART-`` lines are skipped. A UTF-8 byte-order mark at the start is dropped; lines
    end at ``\n``, ``\r\n`` or ``\r``; any other whitespace character in a line (U+00A0
    no-break space, U+2028, form feed, ...) raises :class:`ConllFormatError` naming it.
    ``bio`` says what to do with entities that start with ``I-`` (an error in BIO, the normal
    case in the older IOB1 scheme): ``"repair"`` makes them ``B-`` (with a warning),
    ``"keep"`` leaves them (with a warning) and ``"error"`` raises :class:`BioTagError`.
    """
    if bio not in ("repair", "keep", "error"):
        raise ValueError(f"bio must be 'repair', 'keep' or 'error', got {bio!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"CoNLL file {path} does not exist: check the path "
            "(train_file / dev_file / test_file), or leave it None for the offline data."
        )
    if path.is_dir():
        raise ConllFormatError(f"{path} is a directory; give the path of a CoNLL file (one token per line).")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # -sig: a leading byte-order mark is not part of the first token
    except UnicodeDecodeError as err:
        raise ConllFormatError(
            f"{path} is not UTF-8 text ({err.reason} at byte {err.start}): is it a CoNLL file? Re-save it as UTF-8."
        ) from None

    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    tag_lines: list[int] = []
    line_of_tag: list[list[int]] = []  # line numbers, to report BIO problems where they are
    n_columns, first_line = None, 0

    def end_sentence():
        nonlocal tokens, tags, tag_lines
        if tokens:
            sentences.append((tokens, tags))
            line_of_tag.append(tag_lines)
        tokens, tags, tag_lines = [], [], []

    # lines end at \n, \r\n or \r only (str.splitlines would also split at U+2028, \x0c, \x85, ...)
    for number, line in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), start=1):
        odd = next((c for c in line if c.isspace() and c not in _COLUMN_SEPARATORS or c == _BOM), None)
        if odd == _BOM:
            raise ConllFormatError(
                f"{path}, line {number}: a byte-order mark {_char_name(odd)} inside the file "
                "(files joined together?); remove it."
            )
        if odd is not None:
            raise ConllFormatError(
                f"{path}, line {number}: {_char_name(odd)} in {line.strip()!r}; columns are separated by ASCII "
                "spaces or tabs, so the reader cannot tell whether it separates columns or belongs to the token. "
                "Replace it with a space (or '_' inside a token), e.g. text.replace('\\u00a0', ' ')."
            )
        columns = [c for c in line.replace("\t", " ").split(" ") if c]
        if not columns:
            end_sentence()
            continue
        if columns[0] == _DOCSTART:
            end_sentence()
            continue
        if not 2 <= len(columns) <= 4:
            raise ConllFormatError(
                f"{path}, line {number}: expected 2 to 4 columns separated by spaces or tabs "
                f"(token [POS] [chunk] NER-tag), found {len(columns)}: {line.strip()!r}. "
                + (
                    "A token with no tag? Every token needs its tag, e.g. 'Paris B-LOC'."
                    if len(columns) == 1
                    else "A token that contains a space? Join it (e.g. 'New_York') or split it into lines."
                )
            )
        if n_columns is None:
            n_columns, first_line = len(columns), number
        elif len(columns) != n_columns:
            raise ConllFormatError(
                f"{path}, line {number}: expected {n_columns} columns like line {first_line}, "
                f"found {len(columns)}: {line.strip()!r}. Every line of a CoNLL file has the same columns."
            )
        tag = columns[-1]
        if not is_bio_tag(tag):
            raise BioTagError(
                f"{path}, line {number}: tag {tag!r} is not a BIO tag; expected O, B-TYPE or I-TYPE "
                "(e.g. B-PER, I-LOC) in the last column. Convert other schemes (IOBES, bare types) to BIO first."
            )
        tokens.append(columns[0])
        tags.append(tag)
        tag_lines.append(number)
    end_sentence()

    if not sentences:
        raise ConllFormatError(
            f"{path} holds no sentences (it is empty, or only blank and -DOCSTART- lines): "
            "a CoNLL file has one 'token tag' per line and a blank line between sentences."
        )

    bad = [(s, i) for s, (_, t) in enumerate(sentences) for i in bio_problems(t)]
    if bad:
        s, i = bad[0]
        previous = sentences[s][1][i - 1] if i else "the sentence start"
        where = f"first at line {line_of_tag[s][i]}: {sentences[s][1][i]} after {previous}"
        if bio == "error":
            raise BioTagError(
                f"{path}: {len(bad)} entities start with I- instead of B- ({where}). "
                "Fix the file, or read it with bio='repair' to turn them into B-."
            )
        if bio == "repair":
            sentences = [(tok, repair_bio(t)) for tok, t in sentences]
            warnings.warn(
                f"{path}: {len(bad)} entities started with I- instead of B- ({where}); "
                "repaired to B- (bio='keep' leaves them, bio='error' refuses the file).",
                stacklevel=2,
            )
        else:
            warnings.warn(
                f"{path}: {len(bad)} entities start with I- instead of B- ({where}); kept as they are.", stacklevel=2
            )
    return sentences


def _char_name(char: str) -> str:
    """``U+00A0 (NO-BREAK SPACE)``: a character named so that an invisible one can be found."""
    return f"U+{ord(char):04X} ({unicodedata.name(char, 'a control character')})"


def _check_token(number: int, position: int, token, tag) -> None:
    """Refuse what read_conll would read back differently, naming the sentence and position."""
    where = f"sentence {number}, token {position}"
    for what, value in (("token", token), ("tag", tag)):
        if not isinstance(value, str):
            raise TypeError(f"{where}: {value!r} is not a string; every {what} must be a str.")
    if not token or any(c.isspace() for c in token):
        raise ValueError(
            f"{where}: token {token!r} is empty or contains whitespace, which would break the columns of a CoNLL file."
        )
    if token == _DOCSTART:
        raise ValueError(
            f"{where}: {token!r} would be read back as a document boundary, not a token; "
            "leave document boundaries out of the sentences."
        )
    if _BOM in token:
        raise ValueError(
            f"{where}: token {token!r} contains {_char_name(_BOM)}, which readers take for a "
            "byte-order mark; remove it."
        )
    try:
        token.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"{where}: token {token!r} cannot be written as UTF-8 ({err.reason}: a lone surrogate, "
            "from text decoded with errors='surrogateescape'?); fix the text first."
        ) from None
    if not is_bio_tag(tag):
        raise BioTagError(f"{where}: tag {tag!r} is not O, B-TYPE or I-TYPE (no spaces or line breaks inside).")


def write_conll(sentences: Iterable[Sentence], path: str | Path) -> Path:
    """Write (tokens, tags) pairs as a two-column CoNLL file, a blank line after each sentence.

    Everything is checked before the file is touched, and the text goes to a temporary file in
    the same folder that then replaces ``path`` in one step: an error never leaves a half-written
    or emptied file. What it accepts, :func:`read_conll` reads back exactly (with ``bio="keep"``
    when a sentence starts an entity with ``I-``; the default ``"repair"`` makes that ``B-``).
    """
    path = Path(path)
    lines = []
    for number, sentence in enumerate(sentences):
        try:
            tokens, tags = sentence
        except (TypeError, ValueError):
            raise ValueError(
                f"sentence {number} must be a pair (tokens, tags), got {type(sentence).__name__}"
            ) from None
        if (
            isinstance(tokens, str)
            or isinstance(tags, str)
            or not all(isinstance(x, (list, tuple)) for x in (tokens, tags))
        ):
            raise ValueError(
                f"sentence {number}: tokens and tags must be lists of strings, got "
                f"{type(tokens).__name__} and {type(tags).__name__}."
            )
        if len(tokens) != len(tags):
            raise ValueError(f"sentence {number} has {len(tokens)} tokens but {len(tags)} tags: one tag per token.")
        if not tokens:
            raise ValueError(f"sentence {number} is empty: CoNLL has no way to write an empty sentence.")
        for position, (token, tag) in enumerate(zip(tokens, tags)):
            _check_token(number, position, token, tag)
            lines.append(f"{token} {tag}")
        lines.append("")
    if not lines:
        raise ValueError(f"no sentences to write to {path}: read_conll refuses a CoNLL file without a sentence.")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as f:
            f.write("\n".join(lines) + "\n")
        # mkstemp makes the file private (0600); keep the old file's permissions, or the usual 0644
        os.chmod(temporary, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(temporary, path)  # atomic: readers see the old file or the new one, never a part
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------- data sets


def write_offline_data(
    directory: str | Path = OFFLINE_DIR, seed: int = 0, sizes: dict[str, int] | None = None
) -> dict[str, Path]:
    """Generate the offline splits (:func:`course_utils.text.ner_data.generate`) and write them as CoNLL."""
    data = ner_data.generate(seed, sizes)
    return {split: write_conll(sentences, Path(directory) / f"{split}.conll") for split, sentences in data.items()}


def offline_data(seed: int = 0) -> dict[str, list[Sentence]]:
    """The offline splits: read from ``data/ner/`` for seed 0 (the shipped files), generated otherwise."""
    if seed == 0 and all((OFFLINE_DIR / f"{s}.conll").is_file() for s in ner_data.SPLITS):
        return {s: read_conll(OFFLINE_DIR / f"{s}.conll") for s in ner_data.SPLITS}
    return ner_data.generate(seed)


def load_conll2003() -> dict[str, list[Sentence]] | None:
    """CoNLL-2003 through ``datasets`` (needs the network), or None with a one-line message."""
    try:
        import datasets

        for name in ("eriktks/conll2003", "conll2003"):
            try:
                raw = datasets.load_dataset(name)
                break
            except Exception:  # noqa: BLE001 - try the next name, then fall back
                continue
        else:
            raise RuntimeError("no copy of CoNLL-2003 could be loaded")
        names = raw["train"].features["ner_tags"].feature.names
        convert = {"train": "train", "validation": "dev", "test": "test"}
        return {
            ours: [(row["tokens"], [names[t] for t in row["ner_tags"]]) for row in raw[theirs] if row["tokens"]]
            for theirs, ours in convert.items()
        }
    except Exception as err:  # noqa: BLE001 - the offline data always works
        print(f"CoNLL-2003 is not available ({type(err).__name__}: {str(err)[:80]}); using the offline data instead.")
        return None


def load_ner_data(
    train_file=None, dev_file=None, test_file=None, use_conll2003: bool = False, seed: int = 0
) -> tuple[dict[str, list[Sentence]], str]:
    """The splits to train and evaluate on, and a line that says where they came from.

    Files given win; then CoNLL-2003 when ``use_conll2003`` (falling back to offline data);
    otherwise the offline generated set. Splits not given come from the same default source.
    """
    data, source = None, "offline generated data (names in dev/test never seen in train)"
    if use_conll2003:
        data = load_conll2003()
        if data is not None:
            source = "CoNLL-2003 (datasets)"
    if data is None:
        data = offline_data(seed)
    files = {"train": train_file, "dev": dev_file, "test": test_file}
    given = {split: Path(f) for split, f in files.items() if f is not None}
    for split, path in given.items():
        data[split] = read_conll(path)
    if given:
        source = ", ".join(f"{s} = {p}" for s, p in given.items()) + f"; the rest: {source}"
        if "train" in given:  # the offline test_seen and test_new_templates mean nothing for a learner's own data
            for split in ("test_seen", ner_data.HELD_OUT_SPLIT):
                data.pop(split, None)
    return data, source


# ---------------------------------------------------------------- sub-word alignment


def align_labels(
    word_ids: Sequence[int | None],
    word_tags: Sequence[str],
    label2id: dict[str, int],
    label_all_subtokens: bool = False,
) -> list[int]:
    """Word-level tags -> one label id per token.

    ``word_ids`` is the tokenizer's map from each token to its word (None for [CLS], [SEP] and
    padding). Special tokens get -100. The first sub-token of a word gets the word's tag; the
    others get -100 (``label_all_subtokens=False``), or the tag too, with ``B-X`` turned into
    ``I-X`` so that one word never holds two entity starts (``label_all_subtokens=True``).
    """
    labels = []
    previous = None

    def label_of(tag: str) -> int:
        if tag not in label2id:
            raise ValueError(
                f"tag {tag!r} is not in the label set {list(label2id)}: build the labels from every "
                "split, label_list(train, dev, test)."
            )
        return label2id[tag]

    for word in word_ids:
        if word is not None and not 0 <= word < len(word_tags):
            raise ValueError(
                f"the tokens refer to word {word} but there are {len(word_tags)} tags: give one tag per word."
            )
        if word is None:
            labels.append(IGNORE_INDEX)
        elif word != previous:
            labels.append(label_of(word_tags[word]))
        elif label_all_subtokens:
            tag = word_tags[word]
            labels.append(label_of("I-" + tag[2:] if tag.startswith("B-") else tag))
        else:
            labels.append(IGNORE_INDEX)
        previous = word
    return labels


def encode(
    tokenizer,
    sentences: Sequence[Sentence],
    label2id: dict[str, int],
    max_length: int,
    label_all_subtokens: bool = False,
) -> list[dict]:
    """Tokenize pre-split sentences and align their labels; too long ones are truncated with a warning.

    Each item: input_ids, attention_mask, token_type_ids, labels (lists) and word_ids.
    """
    for number, (tokens, tags) in enumerate(sentences):
        if len(tokens) != len(tags):
            raise ValueError(f"sentence {number} has {len(tokens)} tokens but {len(tags)} tags: one tag per token.")
    unknown = sorted({t for _, tags in sentences for t in tags} - set(label2id))
    if unknown:
        raise ValueError(
            f"tags {unknown} are not in the label set {list(label2id)}: build the labels "
            "from every split, label_list(train, dev, test)."
        )
    if label_all_subtokens:  # a later sub-token of a B-X word is labelled I-X, which must exist too
        inside = sorted({"I-" + t[2:] for _, tags in sentences for t in tags if t.startswith("B-")} - set(label2id))
        if inside:
            raise ValueError(
                f"tags {inside} are not in the label set {list(label2id)} but label_all_subtokens=True "
                "gives them to the later sub-tokens of B- words: use label_list(...), which holds "
                "B- and I- of every type."
            )
    features, truncated = [], []
    for number, (tokens, tags) in enumerate(sentences):
        enc = tokenizer(list(tokens), is_split_into_words=True, truncation=True, max_length=max_length)
        word_ids = enc.word_ids()
        kept = max((w for w in word_ids if w is not None), default=-1) + 1
        # truncated: the fast tokenizer keeps what it cut off. (Comparing `kept` with the number of words
        # would also count a last word that yields no token at all, such as '' or a zero-width space.)
        if enc.encodings and enc.encodings[0].overflowing:
            truncated.append((number, kept, len(tokens)))
        features.append(
            {
                "input_ids": enc["input_ids"],
                "attention_mask": enc["attention_mask"],
                "token_type_ids": enc.get("token_type_ids", [0] * len(enc["input_ids"])),
                "labels": align_labels(word_ids, tags, label2id, label_all_subtokens),
                "word_ids": word_ids,
            }
        )
    if truncated:
        number, kept, total = truncated[0]
        warnings.warn(
            f"{len(truncated)} sentence(s) are longer than the model's {max_length} positions and were "
            f"truncated (e.g. sentence {number}: {kept} of {total} words kept); the words cut off "
            "count as 'O' in predictions. Split long sentences to keep them whole.",
            stacklevel=2,
        )
    return features


def collate(features: Sequence[dict], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad a list of :func:`encode` items to the longest one: tensors for the model (labels padded with -100)."""
    if not features:
        raise ValueError("no features to collate: pass a non-empty list of encode(...) items.")
    length = max(len(f["input_ids"]) for f in features)

    def pad(key, value):
        return torch.tensor([f[key] + [value] * (length - len(f[key])) for f in features], dtype=torch.long)

    return {
        "input_ids": pad("input_ids", pad_id),
        "attention_mask": pad("attention_mask", 0),
        "token_type_ids": pad("token_type_ids", 0),
        "labels": pad("labels", IGNORE_INDEX),
    }


def word_predictions(
    word_ids: Sequence[int | None], token_label_ids: Sequence[int], id2label: dict, n_words: int
) -> list[str]:
    """Token predictions -> one tag per word, read at each word's first sub-token.

    Words cut off by truncation get ``O``.
    """
    tags = ["O"] * n_words
    previous = None
    for word, label in zip(word_ids, token_label_ids):
        if word is not None and word != previous:
            tags[word] = id2label[int(label)]
        previous = word
    return tags


def _check_prediction_inputs(model, tokenizer, max_length: int | None) -> int:
    """The tokenizer must be the model's; ``max_length`` (None: the model's limit) must fit the model."""
    from course_utils.text.bert import check_tokenizer_matches

    check_tokenizer_matches(model, tokenizer)  # another model's tokenizer gives confident nonsense
    if max_length is None:
        return max_positions(model, tokenizer)
    positions = int(model.config.max_position_embeddings)
    if isinstance(max_length, bool) or not isinstance(max_length, numbers.Integral) or not 2 <= max_length <= positions:
        raise ValueError(
            f"max_length={max_length!r} must be an integer between 2 and {positions} (the model's "
            "positions, [CLS] and [SEP] included), or None for the model's limit."
        )
    return int(max_length)


@torch.no_grad()
def predict_tags(
    model, tokenizer, sentences: Sequence[Sentence], batch_size: int = 64, max_length: int | None = None
) -> list[list[str]]:
    """Word-level BIO predictions for pre-split sentences (for seqeval)."""
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    label2id = {v: k for k, v in id2label.items()}
    max_length = _check_prediction_inputs(model, tokenizer, max_length)
    dummy = [(tokens, ["O"] * len(tokens)) for tokens, _ in sentences]  # labels are not needed here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation was reported when the data was encoded
        features = encode(tokenizer, dummy, label2id, max_length)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    predictions = []
    for start in range(0, len(features), batch_size):
        chunk = features[start : start + batch_size]
        batch = collate(chunk, tokenizer.pad_token_id or 0)
        logits = model(**{k: v.to(device) for k, v in batch.items() if k != "labels"}).logits
        best = logits.argmax(-1).cpu()
        for i, f in enumerate(chunk):
            n_words = len(sentences[start + i][0])
            predictions.append(word_predictions(f["word_ids"], best[i].tolist(), id2label, n_words))
    model.train(was_training)
    return predictions


@torch.no_grad()
def predict_entities(model, tokenizer, text: str, max_length: int | None = None) -> list[dict]:
    """The entities in raw ``text``: dicts with type, text, start, end (character offsets) and score.

    ``text[start:end] == text`` of the entity. The tokenizer splits the text into words (on
    spaces and punctuation) and sub-words; each word takes the label predicted at its first
    sub-token; consecutive words B-X I-X ... form one entity; its score is the mean probability
    of its words' labels. Text longer than the model's positions is cut, with a warning.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    max_length = _check_prediction_inputs(model, tokenizer, max_length)
    full_length = len(tokenizer(text, verbose=False)["input_ids"])  # verbose=False: we warn ourselves, below
    enc = tokenizer(text, return_offsets_mapping=True, truncation=True, max_length=max_length, return_tensors="pt")
    offsets = enc.pop("offset_mapping")[0].tolist()
    word_ids = enc.word_ids(0)
    if full_length > max_length:
        last = (
            max(end for (start, end), w in zip(offsets, word_ids) if w is not None)
            if any(w is not None for w in word_ids)
            else 0
        )
        warnings.warn(
            f"the text has {full_length} tokens but the model takes {max_length}: it was truncated and "
            f"entities after character {last} are not predicted. Split the text into sentences.",
            stacklevel=2,
        )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits = model(**{k: v.to(device) for k, v in enc.items()}).logits[0]
    model.train(was_training)
    probs = logits.softmax(-1).cpu()
    words = []  # (start_char, end_char, tag, prob) per word
    previous = None
    for i, word in enumerate(word_ids):
        if word is None:
            continue
        start, end = offsets[i]
        if word != previous:
            label = int(probs[i].argmax())
            words.append([start, end, id2label[label], float(probs[i, label])])
        else:
            words[-1][1] = end  # a later sub-token extends the word
        previous = word
    entities = []
    for kind, first, last in entity_spans([w[2] for w in words]):
        start, end = words[first][0], words[last - 1][1]
        score = sum(w[3] for w in words[first:last]) / (last - first)
        entities.append({"type": kind, "text": text[start:end], "start": start, "end": end, "score": round(score, 4)})
    return entities
