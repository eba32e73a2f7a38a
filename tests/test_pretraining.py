"""NSP pairs and MLM masking (proved statistically, with binomial tolerances), batching,
evaluation against a reference computation, and the chapter's inline code."""

import math
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
import transformers

from course_utils.text import bert, pretraining, pretraining_run
from course_utils.text.pretraining import IGNORE_INDEX, IS_NEXT, NOT_NEXT, Collator

CLS, SEP, PAD, MASK, UNK = 2, 3, 0, 4, 1
SPECIALS = torch.tensor([PAD, UNK, CLS, SEP, MASK])


def within_binomial(successes: int, trials: int, p: float, sigmas: float = 5.0) -> bool:
    """Is successes/trials within `sigmas` standard deviations of p? (fails by chance < 1e-6)"""
    return abs(successes - trials * p) <= sigmas * math.sqrt(trials * p * (1 - p))


class FakeTokenizer:
    """The few attributes the collator reads, with BERT's special ids 0..4 and a vocabulary of 50."""

    pad_token_id, unk_token_id, cls_token_id, sep_token_id, mask_token_id = PAD, UNK, CLS, SEP, MASK
    all_special_ids = [PAD, UNK, CLS, SEP, MASK]

    def __len__(self):
        return 50


def synthetic_documents(n_docs=40, seed=0):
    """Document d uses only token ids in [1000 d, 1000 d + 1000): a pair's origin is readable."""
    rng = random.Random(seed)
    docs = []
    for d in range(n_docs):
        next_id = 1000 * (d + 1)
        sentences = []
        for _ in range(rng.randint(1, 12)):
            length = rng.randint(3, 25)
            sentences.append(list(range(next_id, next_id + length)))
            next_id += length
        docs.append(sentences)
    return docs


# --------------------------------------------------------------------------------------------- masking


def masking_sample(n=200_000, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 50, (n,), generator=generator)
    special = torch.rand(n, generator=generator) < 0.1
    ids[special] = CLS
    candidates = torch.arange(5, 50)
    masked, labels = pretraining.mask_tokens(ids, special, MASK, candidates, 0.15, generator)
    return ids, special, masked, labels


def test_fifteen_percent_of_ordinary_tokens_become_targets():
    ids, special, masked, labels = masking_sample()
    chosen = labels != IGNORE_INDEX
    assert not chosen[special].any(), "a special token was chosen"
    assert within_binomial(int(chosen.sum()), int((~special).sum()), 0.15)
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(masked[~chosen], ids[~chosen])


def test_chosen_tokens_are_80_mask_10_random_10_unchanged():
    ids, special, masked, labels = masking_sample()
    chosen = labels != IGNORE_INDEX
    n = int(chosen.sum())
    to_mask = int((masked[chosen] == MASK).sum())
    unchanged = int((masked[chosen] == ids[chosen]).sum())
    random_other = n - to_mask - unchanged
    # A random replacement equals the original with probability 1/45: it then counts as unchanged.
    p_same = 0.1 / 45
    assert within_binomial(to_mask, n, 0.8)
    assert within_binomial(unchanged, n, 0.1 + p_same)
    assert within_binomial(random_other, n, 0.1 - p_same)
    replaced = masked[chosen][(masked[chosen] != MASK) & (masked[chosen] != ids[chosen])]
    assert not torch.isin(replaced, SPECIALS).any(), "a random replacement was a special token"


def test_random_replacements_are_uniform_over_candidates():
    ids, special, masked, labels = masking_sample()
    chosen = labels != IGNORE_INDEX
    replaced = masked[chosen][(masked[chosen] != MASK) & (masked[chosen] != ids[chosen])]
    counts = torch.bincount(replaced - 5, minlength=45).double()
    expected = counts.sum() / 45
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 100  # 44 degrees of freedom: P(chi2 > 100) < 1e-5


def test_masking_rejects_bad_arguments():
    ids = torch.tensor([[2, 7, 3]])
    with pytest.raises(ValueError, match="same shape"):
        pretraining.mask_tokens(ids, torch.zeros(1, 2, dtype=torch.bool), MASK, torch.arange(5, 9))
    with pytest.raises(ValueError, match="mlm_probability must be between 0 and 1"):
        pretraining.mask_tokens(ids, torch.zeros_like(ids, dtype=torch.bool), MASK, torch.arange(5, 9), 1.5)


# --------------------------------------------------------------------------------------------- whole words


def reference_words(special: list[bool], continuation: list[bool]) -> list[list[int]]:
    """Words as Google's create_pretraining_data.py groups them: a piece and the ## pieces after it
    (here a ## piece right after a special token starts its own word). Plain Python, one row."""
    words = []
    for i, (is_special, is_continuation) in enumerate(zip(special, continuation)):
        if is_special:
            continue
        if is_continuation and i > 0 and not special[i - 1] and words:
            words[-1].append(i)
        else:
            words.append([i])
    return words


def whole_word_sample(rows=400, length=60, p=0.15, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 50, (rows, length), generator=generator)
    special = torch.rand(rows, length, generator=generator) < 0.05
    special[:, 0] = special[:, -1] = True
    ids[special] = SEP
    continuation = torch.rand(rows, length, generator=generator) < 0.4  # words of 1.67 pieces on average
    candidates = torch.arange(5, 50)
    masked, labels = pretraining.mask_tokens(
        ids, special, MASK, candidates, p, torch.Generator().manual_seed(seed + 1), continuation_mask=continuation
    )
    words = [reference_words(special[r].tolist(), continuation[r].tolist()) for r in range(rows)]
    return ids, special, masked, labels, words


def test_whole_word_masking_masks_every_piece_of_a_chosen_word_together():
    ids, special, masked, labels, words = whole_word_sample()
    assert (labels[special] == IGNORE_INDEX).all() and torch.equal(masked[special], ids[special])
    n_words = n_pieces = 0
    for r, row_words in enumerate(words):
        for word in row_words:
            chosen = [labels[r, i].item() != IGNORE_INDEX for i in word]
            assert all(chosen) or not any(chosen), f"row {r}: word {word} is partly chosen"
            at_mask = [masked[r, i].item() == MASK for i in word]
            assert all(at_mask) or not any(at_mask), f"row {r}: word {word} is partly [MASK]"
            n_words += 1
            n_pieces += len(word) > 1
    assert n_pieces > 1000, "the sample has too few multi-piece words to test anything"
    assert torch.equal(labels[labels != IGNORE_INDEX], ids[labels != IGNORE_INDEX])


def test_whole_word_masking_chooses_15_percent_of_words_and_tokens_and_80_10_10_per_word():
    ids, special, masked, labels, words = whole_word_sample(rows=1500)
    chosen_words = [(r, w) for r, row_words in enumerate(words) for w in row_words if labels[r, w[0]] != IGNORE_INDEX]
    all_words = [w for row_words in words for w in row_words]
    assert within_binomial(len(chosen_words), len(all_words), 0.15)
    # Tokens: a sum of word lengths, each word in with probability 0.15 (variance 0.15 * 0.85 * sum of len^2).
    n_tokens = sum(len(w) for w in all_words)
    chosen_tokens = int((labels != IGNORE_INDEX).sum())
    assert chosen_tokens == sum(len(w) for _, w in chosen_words)
    assert abs(chosen_tokens - 0.15 * n_tokens) <= 5 * math.sqrt(0.15 * 0.85 * sum(len(w) ** 2 for w in all_words))
    kinds = Counter()
    for r, w in chosen_words:
        new, old = masked[r, w], ids[r, w]
        kinds["mask" if (new == MASK).all() else "kept" if torch.equal(new, old) else "random"] += 1
    n = len(chosen_words)
    assert within_binomial(kinds["mask"], n, 0.8)
    # A word replaced by random pieces looks kept when every piece draws its own token: (1/45)^pieces.
    p_kept = [0.1 + 0.1 * (1 / 45) ** len(w) for _, w in chosen_words]
    assert abs(kinds["kept"] - sum(p_kept)) <= 5 * math.sqrt(sum(q * (1 - q) for q in p_kept))
    assert within_binomial(kinds["random"] + kinds["kept"], n, 0.2)


def test_whole_word_masking_without_continuations_is_token_masking():
    ids = torch.randint(5, 50, (32, 40), generator=torch.Generator().manual_seed(0))
    special = torch.rand(32, 40, generator=torch.Generator().manual_seed(1)) < 0.1
    candidates = torch.arange(5, 50)
    tokens = pretraining.mask_tokens(ids, special, MASK, candidates, 0.15, torch.Generator().manual_seed(2))
    words = pretraining.mask_tokens(
        ids,
        special,
        MASK,
        candidates,
        0.15,
        torch.Generator().manual_seed(2),
        continuation_mask=torch.zeros_like(special),
    )
    assert all(torch.equal(a, b) for a, b in zip(tokens, words))


def test_word_start_index_follows_the_pieces():
    special = torch.tensor([[1, 0, 0, 0, 1, 0, 0, 1, 1]], dtype=torch.bool)
    continuation = torch.tensor([[0, 0, 1, 1, 0, 1, 1, 0, 1]], dtype=torch.bool)  # a ## piece right after [SEP]
    assert pretraining.word_start_index(special, continuation).tolist() == [[0, 1, 1, 1, 4, 5, 5, 7, 8]]
    assert reference_words(special[0].tolist(), continuation[0].tolist()) == [[1, 2, 3], [5, 6]]


def test_whole_word_masking_refuses_a_mask_of_the_wrong_shape():
    ids = torch.tensor([[2, 7, 3]])
    with pytest.raises(ValueError, match="continuation_mask"):
        pretraining.mask_tokens(
            ids,
            torch.zeros_like(ids, dtype=torch.bool),
            MASK,
            torch.arange(5, 9),
            continuation_mask=torch.zeros(1, 2, dtype=torch.bool),
        )


@pytest.fixture(scope="module")
def minilm_tokenizer():
    return transformers.AutoTokenizer.from_pretrained(str(bert.minilm_path()))


WORDS = (
    "the man jumped up put his basket on philammon head tokenization unhashable asynchronous iterator "
    "module returns value list sequence mutable immutable dictionary comprehension generator"
).split()


def word_sentences(n, seed):
    """Lower-case words joined by single spaces, no punctuation: a 'word' is the same for the ## rule
    and for transformers' rule (a token that starts where the previous one ended continues its word)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 20))) for _ in range(n)]


def test_collator_whole_word_keeps_words_of_a_real_tokenizer_together(minilm_tokenizer):
    tokenizer = minilm_tokenizer
    examples = [
        {"input_ids": ids, "token_type_ids": [0] * len(ids)} for ids in tokenizer(word_sentences(300, 0))["input_ids"]
    ]
    collator = Collator(tokenizer, seed=0, whole_word=True)
    assert all(tokenizer.convert_ids_to_tokens(int(i)).startswith("##") for i in collator.continuation_ids[:50])
    batch = collator(examples)
    checked = 0
    for r, e in enumerate(examples):
        tokens = tokenizer.convert_ids_to_tokens(e["input_ids"])
        special = [t in tokenizer.all_special_tokens for t in tokens]
        for word in reference_words(special, [t.startswith("##") for t in tokens]):
            chosen = {batch["labels"][r, i].item() != IGNORE_INDEX for i in word}
            assert len(chosen) == 1, f"{[tokens[i] for i in word]} partly chosen"
            checked += len(word) > 1
    assert checked > 500
    with pytest.raises(ValueError, match="no '##' continuation pieces|has none"):
        Collator(FakeWordTokenizer(), whole_word=True)


class FakeWordTokenizer(FakeTokenizer):
    def get_vocab(self):
        return {f"w{i}": i for i in range(50)}


def test_whole_word_masking_agrees_with_transformers_collator(minilm_tokenizer):
    """transformers 5 has no DataCollatorForWholeWordMask any more: whole-word masking is
    DataCollatorForLanguageModeling(whole_word_mask=True). It groups pieces into words by their character
    offsets and always writes [MASK] (it turns the 10% random / 10% kept off, with a warning), so what can be
    compared is the choice: on text where both rules see the same words, its choices are whole words by our
    grouping, and the share of words, of tokens and of continuation pieces it chooses agrees with ours."""
    import warnings

    from transformers import DataCollatorForLanguageModeling

    if "whole_word_mask" not in getattr(DataCollatorForLanguageModeling, "__dataclass_fields__", {}):
        pytest.skip(
            f"transformers {transformers.__version__} has no DataCollatorForLanguageModeling(whole_word_mask=)"
            " (before 5.0 it was DataCollatorForWholeWordMask, a fixed-budget variant): compared on 5.x"
        )
    tokenizer = minilm_tokenizer
    # Padded up front: the library's collator cannot pad offset mappings itself. Pads are special tokens.
    encoded = tokenizer(
        word_sentences(3000, 1), padding=True, return_offsets_mapping=True, return_special_tokens_mask=True
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Random token replacement is not supported with whole word masking"
        library = DataCollatorForLanguageModeling(tokenizer, whole_word_mask=True, mlm_probability=0.15, seed=3)
    ours = Collator(tokenizer, seed=4, whole_word=True)
    counts = {}
    for name in ("transformers", "ours"):
        words = chosen_words = tokens = chosen_tokens = chosen_pieces = 0
        for start in range(0, 3000, 250):
            rows = range(start, start + 250)
            if name == "transformers":
                batch = library([{k: encoded[k][i] for k in encoded} for i in rows])
            else:
                batch = ours(
                    [
                        {
                            "input_ids": [
                                t for t, a in zip(encoded["input_ids"][i], encoded["attention_mask"][i]) if a
                            ],
                            "token_type_ids": [0] * sum(encoded["attention_mask"][i]),
                        }
                        for i in rows
                    ]
                )
            for r, i in enumerate(rows):
                pieces = tokenizer.convert_ids_to_tokens(encoded["input_ids"][i])
                special = [bool(m) for m in encoded["special_tokens_mask"][i]]
                for word in reference_words(special, [t.startswith("##") for t in pieces]):
                    chosen = {batch["labels"][r, j].item() != IGNORE_INDEX for j in word}
                    assert len(chosen) == 1, f"{name}: {[pieces[j] for j in word]} partly chosen"
                    words += 1
                    tokens += len(word)
                    if chosen.pop():
                        chosen_words += 1
                        chosen_tokens += len(word)
                        chosen_pieces += len(word) - 1
        counts[name] = (words, chosen_words, tokens, chosen_tokens, chosen_pieces)
    for name, (words, chosen_words, tokens, chosen_tokens, chosen_pieces) in counts.items():
        assert within_binomial(chosen_words, words, 0.15), name
        assert abs(chosen_tokens / tokens - 0.15) < 0.01, name
    (w1, c1, t1, k1, p1), (w2, c2, t2, k2, p2) = counts.values()
    assert w1 == w2 and t1 == t2  # the same words seen by both
    pooled = (c1 + c2) / (w1 + w2)
    assert abs(c1 / w1 - c2 / w2) <= 5 * math.sqrt(pooled * (1 - pooled) * 2 / w1)
    assert abs(p1 / k1 - p2 / k2) < 0.03, "the chosen words differ in length between the two"


# --------------------------------------------------------------------------------------------- batches


def test_collator_pads_and_never_masks_special_tokens_or_padding():
    rng = random.Random(0)
    examples = []
    for _ in range(400):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        examples.append(
            {
                "input_ids": [CLS]
                + [rng.randint(5, 49) for _ in range(a)]
                + [SEP]
                + [rng.randint(5, 49) for _ in range(b)]
                + [SEP],
                "token_type_ids": [0] * (a + 2) + [1] * (b + 1),
                "next_sentence_label": rng.randint(0, 1),
            }
        )
    batch = Collator(FakeTokenizer(), seed=0)(examples)
    length = max(len(e["input_ids"]) for e in examples)
    assert batch["input_ids"].shape == (400, length)
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (length - n)
        assert batch["token_type_ids"][row].tolist() == e["token_type_ids"] + [0] * (length - n)
        assert batch["input_ids"][row, n:].eq(PAD).all()
        original = torch.tensor(e["input_ids"])
        labels = batch["labels"][row]
        assert labels[n:].eq(IGNORE_INDEX).all(), "padding was masked"
        is_special = torch.isin(original, SPECIALS)
        assert labels[:n][is_special].eq(IGNORE_INDEX).all(), "[CLS] or [SEP] was masked"
        assert torch.equal(batch["input_ids"][row, :n][is_special], original[is_special])
        chosen = labels[:n] != IGNORE_INDEX
        assert torch.equal(labels[:n][chosen], original[chosen])
    assert batch["next_sentence_label"].tolist() == [e["next_sentence_label"] for e in examples]
    ordinary = int((~torch.isin(batch["input_ids"], SPECIALS) | (batch["labels"] != IGNORE_INDEX)).sum())
    assert within_binomial(int((batch["labels"] != IGNORE_INDEX).sum()), ordinary, 0.15)


def test_collator_masks_afresh_each_call_but_repeats_for_a_seed():
    examples = [{"input_ids": [CLS, *range(5, 45), SEP], "token_type_ids": [0] * 42}] * 8
    first, second = Collator(FakeTokenizer(), seed=3), Collator(FakeTokenizer(), seed=3)
    a1, a2 = first(examples), first(examples)
    b1 = second(examples)
    assert torch.equal(a1["labels"], b1["labels"]) and torch.equal(a1["input_ids"], b1["input_ids"])
    assert not torch.equal(a1["labels"], a2["labels"])  # dynamic masking
    assert "next_sentence_label" not in a1


def test_collator_refuses_an_empty_batch():
    with pytest.raises(ValueError, match="cannot collate an empty list"):
        Collator(FakeTokenizer())([])


# --------------------------------------------------------------------------------------------- NSP


def split_pair(example):
    ids = example["input_ids"]
    assert ids[0] == CLS and ids[-1] == SEP and ids.count(SEP) == 2
    first_sep = ids.index(SEP)
    a, b = ids[1:first_sep], ids[first_sep + 1 : -1]
    assert example["token_type_ids"] == [0] * (len(a) + 2) + [1] * (len(b) + 1)
    return a, b


def test_nsp_pairs_are_half_real_half_random_and_well_formed():
    docs = synthetic_documents(200)
    examples = [e for seed in range(3) for e in pretraining.make_nsp_examples(docs, 48, CLS, SEP, seed=seed)]
    labels = [e["next_sentence_label"] for e in examples]
    assert set(labels) == {IS_NEXT, NOT_NEXT}
    assert within_binomial(labels.count(IS_NEXT), len(labels), 0.5)
    for e in examples:
        a, b = split_pair(e)
        assert len(e["input_ids"]) <= 48 and a and b
        doc_a = {t // 1000 for t in a}
        doc_b = {t // 1000 for t in b}
        assert len(doc_a) == 1 and len(doc_b) == 1, "a segment mixes documents"
        if e["next_sentence_label"] == IS_NEXT:
            assert doc_a == doc_b and b[0] == a[-1] + 1, "B does not continue A"
        else:
            assert doc_a != doc_b, "a random B came from A's own document"


def test_nsp_pairs_are_deterministic_for_a_seed():
    docs = synthetic_documents(30)
    assert pretraining.make_nsp_examples(docs, 32, CLS, SEP, seed=1) == pretraining.make_nsp_examples(
        docs, 32, CLS, SEP, seed=1
    )
    assert pretraining.make_nsp_examples(docs, 32, CLS, SEP, seed=1) != pretraining.make_nsp_examples(
        docs, 32, CLS, SEP, seed=2
    )


def test_truncation_keeps_the_junction_between_a_and_b():
    a, b = pretraining.truncate_pair(list(range(10)), list(range(100, 104)), 8)
    assert (a, b) == ([6, 7, 8, 9], [100, 101, 102, 103])
    a, b = pretraining.truncate_pair([1, 2], list(range(100, 110)), 5)
    assert (a, b) == ([1, 2], [100, 101, 102])


def test_nsp_bad_input_is_refused():
    with pytest.raises(ValueError, match="max_len must be at least 8"):
        pretraining.make_nsp_examples(synthetic_documents(5), 4, CLS, SEP)
    with pytest.raises(ValueError, match="at least two non-empty documents"):
        pretraining.make_nsp_examples([[[1000, 1001], [1002]]], 32, CLS, SEP)


# --------------------------------------------------------------------------------------------- model and evaluation


@pytest.fixture(scope="module")
def tiny_models():
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    hf = transformers.BertForPreTraining(config).eval()
    own = bert.BertForPreTraining.from_hf(hf).eval()
    return hf, own


def random_batch(seed=0, n=16):
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        a = [rng.randint(5, 49) for _ in range(rng.randint(2, 12))]
        b = [rng.randint(5, 49) for _ in range(rng.randint(2, 12))]
        examples.append(
            {
                "input_ids": [CLS, *a, SEP, *b, SEP],
                "token_type_ids": [0] * (len(a) + 2) + [1] * (len(b) + 1),
                "next_sentence_label": rng.randint(0, 1),
            }
        )
    return Collator(FakeTokenizer(), mlm_probability=0.3, seed=seed)(examples)


def test_own_model_with_masked_only_gives_transformers_losses(tiny_models):
    hf, own = tiny_models
    batch = random_batch()
    mine = pretraining_run.pretraining_outputs(own, batch, masked_only=True)
    reference = hf(
        **{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids", "labels", "next_sentence_label")}
    )
    # transformers' loss is the mean MLM cross-entropy over labelled positions plus the NSP one.
    assert torch.allclose(mine.loss, reference.loss, atol=1e-5)
    labelled = batch["labels"] != IGNORE_INDEX
    assert torch.allclose(mine.mlm_logits, reference.prediction_logits[labelled], atol=1e-5)
    via_hf = pretraining_run.pretraining_outputs(hf, batch)
    assert torch.allclose(via_hf.mlm_loss, mine.mlm_loss, atol=1e-5)
    assert torch.allclose(via_hf.nsp_loss, mine.nsp_loss, atol=1e-5)


def test_evaluation_matches_a_direct_computation(tiny_models):
    hf, own = tiny_models
    batches = [random_batch(seed) for seed in range(3)]
    baseline_id = 7
    unigram = torch.log_softmax(torch.randn(50, generator=torch.Generator().manual_seed(5)), dim=0)
    metrics = pretraining_run.evaluate_pretraining(own, batches, MASK, baseline_id, unigram=unigram)
    hits = hits5 = base = n = nsp = pairs = 0
    nll = unigram_nll = 0.0
    with torch.no_grad():
        for batch in batches:
            out = hf(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
            for row, col in (batch["input_ids"] == MASK).nonzero().tolist():
                target = int(batch["labels"][row, col])
                logits = out.prediction_logits[row, col]
                n += 1
                hits += int(logits.argmax()) == target
                hits5 += target in logits.topk(5).indices.tolist()
                base += target == baseline_id
                nll += torch.nn.functional.cross_entropy(logits[None], torch.tensor([target])).item()
                unigram_nll -= unigram[target].item()
            nsp += int((out.seq_relationship_logits.argmax(-1) == batch["next_sentence_label"]).sum())
            pairs += len(batch["next_sentence_label"])
    assert metrics["mask_positions"] == n
    assert metrics["mask_accuracy"] == pytest.approx(hits / n)
    assert metrics["mask_top5"] == pytest.approx(hits5 / n)
    assert metrics["baseline_accuracy"] == pytest.approx(base / n)
    assert metrics["nsp_accuracy"] == pytest.approx(nsp / pairs)
    assert metrics["mask_perplexity"] == pytest.approx(math.exp(nll / n), rel=1e-5)
    assert metrics["unigram_perplexity"] == pytest.approx(math.exp(unigram_nll / n), rel=1e-5)
    assert "unigram_perplexity" not in pretraining_run.evaluate_pretraining(own, batches, MASK, baseline_id)


def test_unigram_log_probs_are_add_one_smoothed_frequencies_without_special_tokens():
    docs = [[[CLS, 9, 9, 8], [9, SEP]], [[8, 6]]]
    log_probs = pretraining_run.unigram_log_probs(docs, vocab_size=10, special_ids=[PAD, UNK, CLS, SEP, MASK])
    counts = {5: 0, 6: 1, 7: 0, 8: 2, 9: 3}  # by hand; the five special ids get nothing
    total = sum(c + 1 for c in counts.values())
    for token, c in counts.items():
        assert log_probs[token].item() == pytest.approx(math.log((c + 1) / total), rel=1e-6)
    assert torch.isinf(log_probs[[PAD, UNK, CLS, SEP, MASK]]).all()
    assert log_probs.exp().sum().item() == pytest.approx(1.0, rel=1e-6)


def test_most_frequent_token_skips_special_tokens():
    docs = [[[CLS, 9, 9, 8], [9, SEP]], [[8, CLS, CLS, CLS]]]
    assert pretraining_run.most_frequent_token(docs, [CLS, SEP]) == 9
    with pytest.raises(ValueError, match="training documents are empty"):
        pretraining_run.most_frequent_token([[[CLS]]], [CLS])


def test_encode_documents_keeps_sentence_boundaries():
    from course_utils.text.corpus import Document

    class Splitter:
        def __call__(self, sentences, add_special_tokens=False, verbose=False):
            return {"input_ids": [[len(w) for w in s.split()] for s in sentences]}

    docs = [Document("a", ("one two", "three")), Document("b", ("four five six",))]
    assert pretraining.encode_documents(docs, Splitter()) == [[[3, 3], [5]], [[4, 4, 3]]]


# --------------------------------------------------------------------------------------------- notebook

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "03_bert_pretraining.ipynb"


@pytest.mark.skipif(not NOTEBOOK.exists(), reason="notebook 03 not written yet")
def test_notebook_inline_masking_and_pairs_equal_the_package():
    from notebook_code import inline_namespace

    ns = inline_namespace("03_bert_pretraining.ipynb")
    ids = torch.randint(5, 50, (64, 40), generator=torch.Generator().manual_seed(0))
    special = torch.rand(64, 40, generator=torch.Generator().manual_seed(1)) < 0.1
    candidates = torch.arange(5, 50)
    mine = ns["mask_tokens"](ids, special, MASK, candidates, 0.15, torch.Generator().manual_seed(2))
    package = pretraining.mask_tokens(ids, special, MASK, candidates, 0.15, torch.Generator().manual_seed(2))
    assert all(torch.equal(x, y) for x, y in zip(mine, package))
    docs = synthetic_documents(50)
    assert ns["make_nsp_examples"](docs, 40, CLS, SEP, seed=4) == pretraining.make_nsp_examples(
        docs, 40, CLS, SEP, seed=4
    )
