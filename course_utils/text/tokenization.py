"""A WordPiece tokenizer trained from scratch with the ``tokenizers`` library, BERT style.

The pipeline a BERT tokenizer runs, piece by piece:

1. **normalizer** (``BertNormalizer``): clean control characters, lowercase, strip accents;
2. **pre-tokenizer** (``BertPreTokenizer``): split on whitespace and punctuation into words;
3. **model** (``WordPiece``): split each word greedily into the longest pieces in the
   vocabulary, the later ones marked ``##`` (``tokenization`` -> ``token ##ization``);
4. **post-processor**: add ``[CLS] A [SEP]`` (or ``[CLS] A [SEP] B [SEP]`` for a pair, with
   segment ids 0 for ``[CLS] A [SEP]`` and 1 for ``B [SEP]``).

:func:`train_tokenizer` trains it on sentences and wraps it as a transformers
``BertTokenizerFast``, which ``save_pretrained`` writes and ``AutoTokenizer.from_pretrained``
reads back. The WordPiece trainer is not bit-for-bit deterministic across runs: never rely
on the id of a token in a freshly trained vocabulary, only on the special tokens' ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4, in this order


def train_wordpiece(
    sentences: Iterable[str],
    vocab_size: int = 4000,
    min_frequency: int = 2,
    lowercase: bool = True,
    limit_alphabet: int = 200,
):
    """Train a ``tokenizers.Tokenizer`` with BERT's normalizer, pre-tokenizer and post-processor."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    if not isinstance(vocab_size, int) or vocab_size < len(SPECIAL_TOKENS) + 100:
        raise ValueError(
            f"vocab_size must be an integer of at least {len(SPECIAL_TOKENS) + 100} "
            f"(special tokens plus an alphabet), got {vocab_size!r}"
        )
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        limit_alphabet=limit_alphabet,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    count = 0

    def counted(items):
        nonlocal count
        for item in items:
            count += 1
            yield item

    tokenizer.train_from_iterator(counted(sentences), trainer=trainer)
    if count == 0:
        raise ValueError("no sentences to train the tokenizer on: pass a non-empty list of strings")
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",  # ":1" = segment (token type) id 1
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tokenizer


def wrap(tokenizer, model_max_length: int = 512, lowercase: bool = True):
    """A transformers ``BertTokenizerFast`` around a trained ``tokenizers.Tokenizer``."""
    from transformers import BertTokenizerFast

    return BertTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=model_max_length,
        do_lower_case=lowercase,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def train_tokenizer(
    sentences: Iterable[str],
    vocab_size: int = 4000,
    model_max_length: int = 512,
    min_frequency: int = 2,
    lowercase: bool = True,
):
    """Train a WordPiece vocabulary on ``sentences`` and return it as a ``BertTokenizerFast``."""
    raw = train_wordpiece(sentences, vocab_size=vocab_size, min_frequency=min_frequency, lowercase=lowercase)
    return wrap(raw, model_max_length=model_max_length, lowercase=lowercase)


def load_tokenizer(directory: str | Path):
    """``AutoTokenizer.from_pretrained(directory)``, with a clear error when there is no tokenizer."""
    from transformers import AutoTokenizer

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"tokenizer directory {directory} does not exist: save one with tokenizer.save_pretrained(directory) first."
        )
    if not any((directory / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
        raise FileNotFoundError(
            f"{directory} holds no tokenizer (no tokenizer.json or vocab.txt): "
            "save one with tokenizer.save_pretrained(directory)."
        )
    return AutoTokenizer.from_pretrained(str(directory))


def subword_splits(tokenizer, words: Iterable[str]) -> list[tuple[str, list[str]]]:
    """How each word splits into word pieces: ``[("tokenization", ["token", "##ization"]), ...]``."""
    return [(word, tokenizer.tokenize(word)) for word in words]


def format_splits(tokenizer, words: Iterable[str]) -> str:
    """A small table of words and their pieces, for printing."""
    rows = subword_splits(tokenizer, words)
    width = max(len(word) for word, _ in rows)
    return "\n".join(f"{word:<{width}}  ->  {' '.join(pieces)}" for word, pieces in rows)
