"""Where the package keeps its own version of a library function, because teaching it is the point,
it agrees with the library: the learning-rate schedules with transformers' schedules, MLM masking
with DataCollatorForLanguageModeling (statistics over many draws), NER padding with
DataCollatorForTokenClassification, entity prediction with pipeline("token-classification",
aggregation_strategy="first"), entity spans with seqeval, and the entity-type confusion with
scikit-learn's confusion_matrix over seqeval's entities. Every expected number comes from the
library; where the two differ on purpose the test states the difference exactly."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from course_utils.text import bio_tags, ner, pretraining
from course_utils.layers import toy_tasks
from course_utils import training
from course_utils.vision import vqa_training

transformers = pytest.importorskip("transformers")
seqeval_labeling = pytest.importorskip("seqeval.metrics.sequence_labeling")

from transformers import (  # noqa: E402
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
    get_wsd_schedule,
)

# ------------------------------------------------------------------ learning-rate schedules

PEAK = 1e-3
LENGTHS = [(1, 1), (0, 10), (3, 10), (10, 10), (6, 100), (50, 600), (288, 4800)]  # (warm-up, total)


def learning_rates(make_scheduler, steps: int) -> list[float]:
    """The learning rate of the first ``steps`` optimizer steps under a scheduler (a LambdaLR, as both the
    package's and transformers' are), read from the scheduler's own multiplier."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=PEAK)
    scheduler = make_scheduler(optimizer)
    assert isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(PEAK * scheduler.lr_lambdas[0](0))  # step 0 as set
    return [PEAK * scheduler.lr_lambdas[0](step) for step in range(steps)]


@pytest.mark.parametrize("warmup, total", LENGTHS)
def test_linear_warmup_schedule_equals_transformers(warmup, total):
    """The schedule chapters 03-04 teach (BERT's) is transformers' get_linear_schedule_with_warmup."""
    ours = learning_rates(lambda opt: training.linear_warmup_schedule(opt, warmup, total), total)
    library = learning_rates(lambda opt: get_linear_schedule_with_warmup(opt, warmup, total), total)
    assert ours == pytest.approx(library, rel=1e-12, abs=1e-15)
    plain = [PEAK * training.warmup_factor(s, warmup, total) for s in range(total)]  # what the chapter plots
    assert plain == pytest.approx(library, rel=1e-12, abs=1e-15)


def one_step_ahead_during_warmup(ours: list[float], library: list[float], warmup: int) -> None:
    """``ours`` is the library's schedule one step ahead while warming up (its first step already
    moves at peak/warm-up instead of 0) and the library's exactly afterwards. ``library`` holds one
    step more than ``ours``, so that the shifted warm-up has its last value."""
    assert len(library) == len(ours) + 1
    assert ours[:warmup] == pytest.approx(library[1 : warmup + 1], rel=1e-12, abs=1e-15), "warm-up"
    assert ours[warmup:] == pytest.approx(library[warmup : len(ours)], rel=1e-12, abs=1e-15), "after the warm-up"


@pytest.mark.parametrize("warmup, total", [w_t for w_t in LENGTHS if w_t[0] > 0])
def test_toy_tasks_cosine_is_transformers_cosine_one_step_ahead(warmup, total):
    """Chapter 02's toy training: warm-up then cosine to 0 = get_cosine_schedule_with_warmup, except
    that its first step already uses peak/warmup (the library's first step has learning rate 0)."""
    rates = [PEAK * toy_tasks._warmup_cosine(s, warmup, total) for s in range(total)]
    library = learning_rates(lambda opt: get_cosine_schedule_with_warmup(opt, warmup, total), total + 1)
    one_step_ahead_during_warmup(rates, library, warmup)
    assert library[0] == 0.0 and rates[0] == pytest.approx(PEAK / warmup)


@pytest.mark.parametrize("steps", [20, 100, 1000, 4001, 20000])
def test_multimodal_schedule_is_transformers_wsd_one_step_ahead(steps):
    """Chapter 05's schedule (warm up 5%, hold, cosine to 0 over the last 30%) = get_wsd_schedule with the
    same three phases, except for the same one-step-ahead warm-up."""
    warm = max(1, int(0.05 * steps))
    decay_start = int(0.7 * steps)
    rates = [PEAK * vqa_training.lr_factor(s, steps) for s in range(steps)]
    library = learning_rates(
        lambda opt: get_wsd_schedule(
            opt,
            num_warmup_steps=warm,
            num_stable_steps=decay_start - warm,
            num_decay_steps=steps - decay_start,
            warmup_type="linear",
            decay_type="cosine",
            min_lr_ratio=0.0,
        ),
        steps + 1,
    )
    one_step_ahead_during_warmup(rates, library, warm)


@pytest.mark.parametrize("steps", [20, 100, 3000])
def test_captioning_schedule_is_transformers_cosine_with_a_floor_one_step_ahead(steps):
    """Chapter 07's schedule (warm-up, cosine down to 10% of the peak) = get_cosine_with_min_lr_schedule_with_warmup
    with min_lr_rate=0.1, except for the same one-step-ahead warm-up."""
    captioning = pytest.importorskip("course_utils.vision.captioning")
    from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

    warm = max(1, int(steps * 0.05))
    rates = [PEAK * captioning.warmup_factor(s, steps, 0.05) for s in range(steps)]
    library = learning_rates(
        lambda opt: get_cosine_with_min_lr_schedule_with_warmup(opt, warm, steps, min_lr_rate=0.1), steps + 1
    )
    one_step_ahead_during_warmup(rates, library, warm)


# ------------------------------------------------------------------ MLM masking

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = 995
DRAWS = 60  # batches of 64 x 128 positions, about 400k maskable positions per implementation
SIGMAS = 5.0  # a fixed seed makes the test repeatable; 5 standard errors make a failure mean something


@pytest.fixture(scope="module")
def word_tokenizer(tmp_path_factory):
    from transformers import BertTokenizer, BertTokenizerFast

    tokens = SPECIALS + [f"w{i}" for i in range(WORDS)]
    try:
        tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(tokens)})  # transformers 5
    except TypeError:  # transformers 4 reads a vocabulary file
        path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
        path.write_text("\n".join(tokens) + "\n")
        tokenizer = BertTokenizerFast(vocab_file=str(path))
    assert len(tokenizer) == len(tokens) and tokenizer.mask_token_id == SPECIALS.index("[MASK]")
    return tokenizer


def mlm_batch(tokenizer, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] words [SEP] words [SEP] [PAD]...: (input_ids, special mask), rows of different lengths."""
    rows, length = 64, 128
    ids = torch.randint(len(SPECIALS), len(tokenizer), (rows, length), generator=generator)
    lengths = torch.randint(length // 2, length + 1, (rows,), generator=generator)
    for r, n in enumerate(lengths.tolist()):
        ids[r, 0] = tokenizer.cls_token_id
        ids[r, n // 2] = ids[r, n - 1] = tokenizer.sep_token_id
        ids[r, n:] = tokenizer.pad_token_id
    special = torch.isin(ids, torch.tensor(tokenizer.all_special_ids))
    return ids, special


def masking_counts(mask_fn, tokenizer, seed: int, mlm_probability: float) -> dict[str, float]:
    """Counts over DRAWS batches: maskable positions, chosen ones and what became of them."""
    generator = torch.Generator().manual_seed(seed)
    counts = dict.fromkeys(["maskable", "chosen", "mask", "random", "kept", "random_special"], 0)
    for _ in range(DRAWS):
        ids, special = mlm_batch(tokenizer, generator)
        masked, labels = mask_fn(ids.clone(), special, mlm_probability)
        chosen = labels != -100
        assert not chosen[special].any(), "a special token or padding was chosen"
        assert torch.equal(masked[~chosen], ids[~chosen]), "a position that was not chosen changed"
        assert torch.equal(labels[chosen], ids[chosen]), "a label is not the original token"
        counts["maskable"] += int((~special).sum())
        counts["chosen"] += int(chosen.sum())
        became = masked[chosen]
        original = ids[chosen]
        is_mask = became == tokenizer.mask_token_id
        counts["mask"] += int(is_mask.sum())
        counts["kept"] += int((became == original).sum())
        replaced = (became != original) & ~is_mask
        counts["random"] += int(replaced.sum())
        counts["random_special"] += int(torch.isin(became[replaced], torch.tensor(tokenizer.all_special_ids)).sum())
    return counts


def ours(tokenizer):
    vocab = torch.arange(len(tokenizer))
    candidates = vocab[~torch.isin(vocab, torch.tensor(tokenizer.all_special_ids))]  # as pretraining.Collator
    generator = torch.Generator().manual_seed(1)

    def mask(ids, special, p):
        return pretraining.mask_tokens(ids, special, tokenizer.mask_token_id, candidates, p, generator=generator)

    return mask


def library(tokenizer):
    from transformers import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.15, return_tensors="pt")
    torch.manual_seed(2)  # the collator draws from torch's global generator when it has none of its own

    def mask(ids, special, p):
        collator.mlm_probability = p
        return collator.torch_mask_tokens(ids, special_tokens_mask=special.long())

    return mask


def within(observed: int, n: int, p: float, what: str) -> None:
    share = observed / n
    bound = SIGMAS * math.sqrt(p * (1 - p) / n)
    assert abs(share - p) <= bound, f"{what}: {share:.5f} vs {p:.5f} expected (n={n}, bound ±{bound:.5f})"


@pytest.mark.parametrize("mlm_probability", [0.15, 0.4])
def test_mask_tokens_has_the_statistics_of_transformers_collator(word_tokenizer, mlm_probability):
    """Share chosen, then 80% [MASK] / 10% random / 10% kept, for ours and for the library, each against
    the rule (with the chance that a random token is the original, or [MASK] for the library, whose random
    tokens come from the whole vocabulary) and against each other."""
    vocab, candidates = len(word_tokenizer), len(word_tokenizer) - len(SPECIALS)
    results = {
        name: masking_counts(make(word_tokenizer), word_tokenizer, seed, mlm_probability)
        for name, make, seed in [("ours", ours, 10), ("transformers", library, 11)]
    }
    expected = {  # share of the chosen positions: (mask, random, kept)
        "ours": (0.8, 0.1 * (1 - 1 / candidates), 0.1 + 0.1 / candidates),
        "transformers": (0.8 + 0.1 / vocab, 0.1 * (1 - 2 / vocab), 0.1 + 0.1 / vocab),
    }
    for name, c in results.items():
        within(c["chosen"], c["maskable"], mlm_probability, f"{name}: share of maskable tokens chosen")
        for key, p in zip(("mask", "random", "kept"), expected[name]):
            within(c[key], c["chosen"], p, f"{name}: share of chosen tokens that became {key}")
    a, b = results["ours"], results["transformers"]
    pooled = (a["chosen"] + b["chosen"]) / (a["maskable"] + b["maskable"])
    gap = abs(a["chosen"] / a["maskable"] - b["chosen"] / b["maskable"])
    assert gap <= SIGMAS * math.sqrt(pooled * (1 - pooled) * (1 / a["maskable"] + 1 / b["maskable"]))
    # the one difference, on purpose: our random replacements are real words, never [CLS], [PAD], ...
    assert a["random_special"] == 0
    within(b["random_special"], b["random"], len(SPECIALS) / vocab, "transformers: random tokens that are special")


def test_mask_tokens_random_replacements_are_uniform_over_the_words(word_tokenizer):
    generator = torch.Generator().manual_seed(3)
    mask = ours(word_tokenizer)
    seen = torch.zeros(len(word_tokenizer), dtype=torch.long)
    for _ in range(DRAWS):
        ids, special = mlm_batch(word_tokenizer, generator)
        masked, labels = mask(ids.clone(), special, 0.4)
        replaced = (labels != -100) & (masked != ids) & (masked != word_tokenizer.mask_token_id)
        seen += torch.bincount(masked[replaced], minlength=len(word_tokenizer))
    counts = seen[len(SPECIALS) :].double()
    assert seen[: len(SPECIALS)].sum() == 0
    expected = counts.sum() / WORDS
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    df = WORDS - 1
    assert abs(chi2 - df) <= SIGMAS * math.sqrt(2 * df), f"chi-square {chi2:.0f} for {df} degrees of freedom"


# ------------------------------------------------------------------ NER: padding, spans, prediction, confusion


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from course_utils.text.bert import minilm_path

    return AutoTokenizer.from_pretrained(minilm_path())


SENTENCES = [
    (["Maria", "Lopez", "flew", "to", "Lyon", "."], ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]),
    (["Siemens"], ["B-ORG"]),
    (
        ["The", "Anglo-Saxon", "chronicle", "was", "read", "at", "Westminster", "Abbey", "yesterday", "."],
        ["O", "B-MISC", "O", "O", "O", "O", "B-LOC", "I-LOC", "O", "O"],
    ),
    (["Über", "café", "owners", "met", "O'Neill", "in", "Zürich"], ["O", "O", "O", "O", "B-PER", "O", "B-LOC"]),
]


def test_ner_collate_equals_data_collator_for_token_classification(minilm_tokenizer):
    from transformers import DataCollatorForTokenClassification

    labels = bio_tags.label_list(SENTENCES)
    label2id = {tag: i for i, tag in enumerate(labels)}
    for label_all in (False, True):
        features = ner.encode(minilm_tokenizer, SENTENCES, label2id, max_length=32, label_all_subtokens=label_all)
        ours_batch = ner.collate(features, minilm_tokenizer.pad_token_id)
        plain = [{k: v for k, v in f.items() if k != "word_ids"} for f in features]
        theirs = DataCollatorForTokenClassification(minilm_tokenizer, return_tensors="pt")(plain)
        assert set(ours_batch) == set(theirs)
        for key in ours_batch:
            assert torch.equal(ours_batch[key], theirs[key].long()), key
        for order in ([1], [3, 0], [2, 1, 0, 3]):  # another longest row, a batch of one
            part = [features[i] for i in order]
            theirs = DataCollatorForTokenClassification(minilm_tokenizer, return_tensors="pt")(
                [{k: v for k, v in f.items() if k != "word_ids"} for f in part]
            )
            mine = ner.collate(part, minilm_tokenizer.pad_token_id)
            assert all(torch.equal(mine[k], theirs[k].long()) for k in mine), order


BIO = st.lists(st.sampled_from(["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC-X", "I-MISC-X"]), max_size=30)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(BIO)
def test_entity_spans_equal_seqeval(tags):
    """seqeval's get_entities gives (type, start, end inclusive); ours end exclusive, same entities."""
    theirs = [(kind, start, end + 1) for kind, start, end in seqeval_labeling.get_entities(list(tags))]
    assert bio_tags.entity_spans(tags) == theirs


@settings(max_examples=80, deadline=None, derandomize=True)
@given(st.lists(st.tuples(BIO, st.randoms(use_true_random=False)), min_size=1, max_size=8))
def test_type_confusion_equals_a_count_over_seqeval_entities(pairs):
    """Each gold entity is counted once in its row, each prediction once in its column, and the diagonal
    holds exactly the entities seqeval counts as correct (same type, same span)."""
    from sklearn.metrics import confusion_matrix

    gold, pred = [], []
    for tags, rng in pairs:
        gold.append(list(tags))
        pred.append(
            [
                rng.choice(["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC-X"]) if rng.random() < 0.4 else t
                for t in tags
            ]
        )
    names, counts = bio_tags.type_confusion(gold, pred)
    # the reference: seqeval's entities, paired by span, counted by scikit-learn
    y_true, y_pred = [], []
    for g, p in zip(gold, pred):
        g_spans = {(s, e): k for k, s, e in seqeval_labeling.get_entities(g)}
        p_spans = {(s, e): k for k, s, e in seqeval_labeling.get_entities(p)}
        for span in g_spans.keys() | p_spans.keys():
            y_true.append(g_spans.get(span, "none"))
            y_pred.append(p_spans.get(span, "none"))
    expected_names = sorted({*y_true, *y_pred} - {"none"}) + ["none"]
    assert names == expected_names
    if y_true:
        assert counts == confusion_matrix(y_true, y_pred, labels=names).tolist()
    else:
        assert counts == [[0]]
    exact = sum(
        len(set(seqeval_labeling.get_entities(g)) & set(seqeval_labeling.get_entities(p))) for g, p in zip(gold, pred)
    )
    assert sum(counts[i][i] for i in range(len(names) - 1)) == exact


@pytest.fixture(scope="module")
def tiny_token_classifier(minilm_tokenizer):
    """A small random BERT token classifier with MiniLM's vocabulary: its guesses are varied, which is
    what a comparison of two ways of reading them needs."""
    from transformers import BertConfig, BertForTokenClassification

    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    config = BertConfig(
        vocab_size=len(minilm_tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=len(tags),
        id2label=dict(enumerate(tags)),
        label2id={t: i for i, t in enumerate(tags)},
    )
    torch.manual_seed(0)
    model = BertForTokenClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(20)  # confident, varied labels rather than near-uniform ones
    return model


TEXTS = [
    "Maria Lopez flew from Lyon to New York City on Tuesday.",
    "The Anglo-Saxon chronicle, kept at Westminster Abbey, mentions O'Neill twice.",
    "Über café owners in Zürich met Siemens AG's board; 3.5 million people watched.",
    "unbelievably antidisestablishmentarianism",
    "a",
    "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_predict_entities_equals_the_token_classification_pipeline(tiny_token_classifier, minilm_tokenizer, text):
    from transformers import pipeline

    reader = pipeline(
        "token-classification",
        model=tiny_token_classifier,
        tokenizer=minilm_tokenizer,
        aggregation_strategy="first",
        device="cpu",
    )
    theirs = reader(text) if text else []
    mine = ner.predict_entities(tiny_token_classifier, minilm_tokenizer, text)
    assert [(e["type"], e["start"], e["end"]) for e in mine] == [
        (e["entity_group"], e["start"], e["end"]) for e in theirs
    ]
    assert [e["score"] for e in mine] == pytest.approx([float(e["score"]) for e in theirs], abs=1e-4)
    assert all(e["text"] == text[e["start"] : e["end"]] for e in mine)


def test_the_tiny_classifier_finds_several_entity_types(tiny_token_classifier, minilm_tokenizer):
    found = [e for text in TEXTS for e in ner.predict_entities(tiny_token_classifier, minilm_tokenizer, text)]
    assert len(found) >= 5 and len({e["type"] for e in found}) >= 2, found
