"""The WordPiece tokenizer of chapter 03: BERT's special tokens, pairs, splits, save and reload.

The WordPiece trainer is not bit-for-bit deterministic, so no test pins the id of an ordinary
token: the checks compare the tokenizer with an independent greedy longest-match reference
over its own vocabulary, and with its reloaded copy.
"""

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from course_utils.text import corpus, tokenization
from course_utils.text.tokenization import SPECIAL_TOKENS


@pytest.fixture(scope="module")
def sentences():
    train, _ = corpus.split_documents(corpus.load_corpus())
    return [s for d in train for s in d.sentences]


@pytest.fixture(scope="module")
def tokenizer(sentences):
    return tokenization.train_tokenizer(sentences, vocab_size=1500, model_max_length=128)


def greedy_wordpiece(word: str, vocab: dict) -> list[str]:
    """Reference WordPiece: longest prefix in the vocabulary, then '##'-pieces; [UNK] if stuck."""
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
            end -= 1
        if end == start:
            return ["[UNK]"]
        pieces.append(piece)
        start = end
    return pieces


def test_special_tokens_come_first_in_bert_order(tokenizer):
    assert tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [0, 1, 2, 3, 4]
    assert (
        tokenizer.pad_token_id,
        tokenizer.unk_token_id,
        tokenizer.cls_token_id,
        tokenizer.sep_token_id,
        tokenizer.mask_token_id,
    ) == (0, 1, 2, 3, 4)
    assert len(tokenizer) == 1500


def test_words_split_like_greedy_longest_match(tokenizer, sentences):
    vocab = tokenizer.get_vocab()
    words = {w.strip(".,;:()\"'").lower() for s in sentences[:300] for w in s.split()}
    words = sorted(w for w in words if w.isalpha() and w.isascii())
    assert len(words) > 300
    for word in words:
        assert tokenizer.tokenize(word) == greedy_wordpiece(word, vocab), word
    # Rare words really do split; frequent ones stay whole.
    assert any(len(tokenizer.tokenize(w)) > 1 for w in words)
    assert tokenizer.tokenize("the") == ["the"]


def test_lowercases_and_splits_punctuation(tokenizer):
    assert tokenizer.tokenize("The LIST, sorted.") == tokenizer.tokenize("the list , sorted .")
    assert tokenizer.tokenize("sorted.")[-1] == "."


def test_pair_is_cls_a_sep_b_sep_with_segment_ids(tokenizer):
    a, b = "A list is a sequence.", "It can be sorted in place."
    ids_a = tokenizer(a, add_special_tokens=False)["input_ids"]
    ids_b = tokenizer(b, add_special_tokens=False)["input_ids"]
    encoded = tokenizer(a, b)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert encoded["input_ids"] == [cls, *ids_a, sep, *ids_b, sep]
    assert encoded["token_type_ids"] == [0] * (len(ids_a) + 2) + [1] * (len(ids_b) + 1)
    assert tokenizer(a)["input_ids"] == [cls, *ids_a, sep]


def test_mask_written_in_text_is_one_token(tokenizer):
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("the [MASK] statement")["input_ids"])
    assert tokens == ["[CLS]", "the", "[MASK]", *tokenizer.tokenize("statement"), "[SEP]"]


def test_decode_round_trips_words_in_the_vocabulary(tokenizer):
    text = "the value of the list is returned."
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "the value of the list is returned."


def test_saved_tokenizer_reloads_with_autotokenizer(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    for reloaded in (AutoTokenizer.from_pretrained(str(tmp_path)), tokenization.load_tokenizer(tmp_path)):
        assert isinstance(reloaded, PreTrainedTokenizerBase)
        assert reloaded.get_vocab() == tokenizer.get_vocab()
        pair = ("Return the number of items.", "A [MASK] is raised otherwise.")
        assert reloaded(*pair)["input_ids"] == tokenizer(*pair)["input_ids"]
        assert reloaded(*pair)["token_type_ids"] == tokenizer(*pair)["token_type_ids"]
        assert reloaded.mask_token_id == tokenizer.mask_token_id


def test_subword_splits_are_the_tokenize_pieces(tokenizer):
    rows = tokenization.subword_splits(tokenizer, ["iteration", "the"])
    assert rows == [("iteration", tokenizer.tokenize("iteration")), ("the", ["the"])]
    assert "iteration  ->  " in tokenization.format_splits(tokenizer, ["iteration", "the"])


def test_bad_input_errors_say_the_fix(tmp_path):
    with pytest.raises(ValueError, match="vocab_size must be an integer of at least"):
        tokenization.train_tokenizer(["some words here"], vocab_size=10)
    with pytest.raises(ValueError, match="no sentences to train the tokenizer on"):
        tokenization.train_tokenizer([], vocab_size=200)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tokenization.load_tokenizer(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="holds no tokenizer"):
        tokenization.load_tokenizer(tmp_path)
