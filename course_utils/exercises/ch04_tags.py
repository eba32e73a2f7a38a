"""Chapter 04 exercises on tags, the first on the chapter's page: predict how many labels
alignment ignores and what seqeval scores for a boundary error, debug reading BIO spans and the
entity F1, and say why a word's later pieces get I- tags.
:mod:`course_utils.exercises.ch04`, which holds the fine-tuning exercises, imports this module
first, so these are registered before its own, in the chapter's order.

Every check compares with an independent reference (seqeval for entities and F1, the
tokenizer's word ids), and names the misconception behind each typical mistake; the tests prove
each one is rejected with its message.
"""

from __future__ import annotations

import random
import warnings

from . import Mistake, choice, exercise, expect_same, forbid, given_function, numeric

# ----------------------------------------------------------------------------- 04.ignored_positions

_WORD_IDS = [None, 0, 1, 1, 1, 1, 2, 3, 4, None]  # [CLS] Arnold Schw ##arz ##en ##egger flew to Lyon [SEP]


def _ignored_positions_reference() -> int:
    specials = sum(w is None for w in _WORD_IDS)  # [CLS], [SEP]
    later_pieces = sum(1 for i, w in enumerate(_WORD_IDS) if w is not None and i > 0 and _WORD_IDS[i - 1] == w)
    return specials + later_pieces  # 2 + 3


numeric(
    "04.ignored_positions",
    "Predict: how many labels are -100?",
    "'Arnold Schwarzenegger flew to Lyon' is tokenized as [CLS] Arnold Schw ##arz ##en ##egger flew to Lyon [SEP], "
    "so word_ids() = [None, 0, 1, 1, 1, 1, 2, 3, 4, None]. With the first-sub-token alignment of section 3 "
    "(align_labels, label_all_subtokens=False), how many of the 10 labels are -100?",
    reference=_ignored_positions_reference,
    tolerance=0,
    mistakes=[
        Mistake(
            2,
            "that is label_all_subtokens=True: with the first sub-token only, the later pieces ##arz "
            "##en ##egger get -100 too",
        ),
        Mistake(3, "[CLS] and [SEP] get -100 too, besides the later pieces"),
        Mistake(4, "Schwarzenegger has four pieces, so three later pieces"),
        Mistake(0, "-100 marks every token the loss must ignore: special tokens and later pieces"),
    ],
    hint="which tokens carry a word's label, and which are left out of the loss?",
    section="3. Sub-words: giving a word's label to its pieces",
    minutes=2,
)


# ----------------------------------------------------------------------------- 04.boundary_f1


def _boundary_f1_reference() -> float:
    # gold: LOC(0-3) and PER(4); predicted: LOC(0-2) and PER(4). One of two predictions is right
    # (precision 1/2), one of two gold entities is found (recall 1/2): F1 = 1/2
    precision, recall = 1 / 2, 1 / 2
    return 2 * precision * recall / (precision + recall)


numeric(
    "04.boundary_f1",
    "Predict: the price of one boundary",
    "Gold tags of 'New York City welcomed Maria': B-LOC I-LOC I-LOC O B-PER. The model predicts "
    "B-LOC I-LOC O O B-PER: every type right, one word too short on the city. What entity F1 does seqeval "
    "give this one sentence? (Within 0.01.)",
    reference=_boundary_f1_reference,
    tolerance=0.01,
    mistakes=[
        Mistake(0.8, "that is token accuracy (4 of 5 tags right): seqeval counts entities"),
        Mistake(1.0, "an entity counts only with exactly the same words: 'New York' is not 'New York City'"),
        Mistake(2 / 3, "a wrong boundary is a miss AND a false alarm: the short 'New York' also lowers precision"),
    ],
    hint="list the gold entities and the predicted ones as (type, first word, last word), then count",
    section="6. Evaluation with seqeval",
    minutes=3,
)


# ----------------------------------------------------------------------------- 04.bio_spans

SPANS_GIVEN = """
def spans(tags):
    found, kind, start = [], None, 0
    for i, tag in enumerate(tags):
        if tag.startswith("B-"):
            if kind is not None:
                found.append((kind, start, i))
            kind, start = tag[2:], i
        elif tag == "O" and kind is not None:
            found.append((kind, start, i))
            kind = None
    return found
"""


def _bio_spans_reference(tags):
    spans, kind, start = [], None, 0
    for i, tag in enumerate(list(tags) + ["O"]):  # a final O closes the last entity
        prefix, new_kind = (tag[0], tag[2:]) if tag != "O" else ("O", None)
        if kind is not None and (prefix in ("O", "B") or new_kind != kind):
            spans.append((kind, start, i))
            kind = None
        if prefix in ("B", "I") and kind is None:
            kind, start = new_kind, i
    return spans


def _bio_spans_by_seqeval(tags):
    from seqeval.metrics.sequence_labeling import get_entities

    return [(kind, first, last + 1) for kind, first, last in get_entities(list(tags))]  # seqeval: end inclusive


def _bio_spans_mistakes():
    def inclusive_end(tags):
        return [(k, a, b - 1) for k, a, b in _bio_spans_reference(tags)]

    def only_b_starts(tags):
        spans, kind, start = [], None, 0
        for i, tag in enumerate(list(tags) + ["O"]):
            if kind is not None and not (tag.startswith("I-") and tag[2:] == kind):
                spans.append((kind, start, i))
                kind = None
            if tag.startswith("B-"):
                kind, start = tag[2:], i
        return spans

    def ignores_type_change(tags):
        spans, kind, start = [], None, 0
        for i, tag in enumerate(list(tags) + ["O"]):
            if kind is not None and tag[0] in "OB":
                spans.append((kind, start, i))
                kind = None
            if tag[0] in "BI" and kind is None:
                kind, start = tag[2:], i
        return spans

    def b_does_not_split(tags):
        spans, kind, start = [], None, 0
        for i, tag in enumerate(list(tags) + ["O"]):
            new_kind = tag[2:] if tag != "O" else None
            if kind is not None and new_kind != kind:
                spans.append((kind, start, i))
                kind = None
            if new_kind is not None and kind is None:
                kind, start = new_kind, i
        return spans

    def last_entity_open(tags):
        return [s for s in _bio_spans_reference(tags) if s[2] < len(tags)]

    return [
        Mistake(
            given_function(SPANS_GIVEN, "spans", "04.bio_spans"),
            "still the given reading: an entity that starts with I-, a change of type and an entity at the end "
            "of the sentence are misread",
        ),
        Mistake(inclusive_end, "the end is exclusive: ('PER', 0, 2) covers words 0 and 1"),
        Mistake(
            only_b_starts,
            "an I-X that does not continue an X entity starts one (seqeval's reading): ['O', "
            "'I-LOC'] holds ('LOC', 1, 2)",
        ),
        Mistake(ignores_type_change, "an entity ends where the type changes: ['B-PER', 'I-LOC'] is two entities"),
        Mistake(b_does_not_split, "B-X right after an X entity starts a new one: ['B-PER', 'B-PER'] is two people"),
        Mistake(
            last_entity_open,
            "the last entity of the sentence is never closed: an entity running to the end "
            "must be added after the loop",
        ),
        Mistake(_bio_spans_by_seqeval, "rule broken"),
        Mistake(
            lambda tags: __import__("course_utils.text.ner", fromlist=["entity_spans"]).entity_spans(tags),
            "rule broken",
        ),
    ]


def _bio_spans_cases() -> list[tuple]:
    rng = random.Random(4)
    pool = ["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG"]
    fixed = [
        [],
        ["O"],
        ["B-PER", "B-PER"],
        ["I-LOC", "I-LOC", "O"],
        ["B-PER", "I-LOC"],
        ["B-ORG", "I-ORG", "I-ORG"],
        ["O", "B-MISC"],
        ["I-PER"],
        ["B-LOC", "I-LOC", "O", "I-LOC"],
    ]
    return [(tags,) for tags in fixed + [[rng.choice(pool) for _ in range(rng.randint(1, 9))] for _ in range(300)]]


_NO_SEQEVAL = forbid(
    "seqeval",
    "course_utils.text.bio_tags.entity_spans",
    "__main__.entity_spans",
    says="read the tags yourself: seqeval (get_entities, f1_score...) and the chapter's "
    "entity_spans are not allowed here",
)


@exercise(
    "04.bio_spans",
    "Debug: entities from BIO tags",
    "spans(tags) should return the entities of a list of BIO tags as (type, start, end) tuples, end exclusive, "
    "reading the tags as seqeval does (section 1): an entity starts at B-X, or at an I-X that does not continue "
    "an X entity; it ends at O, at the next start, where the type changes, or at the end of the sentence. "
    "Example: spans(['B-PER', 'I-PER', 'O', 'I-LOC']) == [('PER', 0, 2), ('LOC', 3, 4)]. The given code "
    "gets several cases wrong: find them (try it on short tag lists) and fix it.",
    reference=_bio_spans_reference,
    mistakes=_bio_spans_mistakes,
    kind="debug",
    given=SPANS_GIVEN,
    rules=[_NO_SEQEVAL],
    section="1. The CoNLL format and BIO tags",
    minutes=10,
)
def check_bio_spans(fn) -> None:
    expect_same(
        lambda tags: [tuple(s) for s in fn(tags)],
        _bio_spans_by_seqeval,
        cases=_bio_spans_cases(),
        what="spans(...)",
        hint="compare with seqeval's reading, described in the task",
    )


# ----------------------------------------------------------------------------- 04.entity_f1

F1_GIVEN = """
def entity_f1_score(gold, pred):
    scores = []
    for gold_tags, pred_tags in zip(gold, pred):
        g, p = set(entity_spans(gold_tags)), set(entity_spans(pred_tags))
        correct = len(g & p)
        precision = correct / len(p) if p else 0.0
        recall = correct / len(g) if g else 0.0
        scores.append(0.0 if correct == 0 else 2 * precision * recall / (precision + recall))
    return sum(scores) / len(scores)
"""


def _f1_namespace() -> dict:
    from course_utils.text.bio_tags import entity_spans

    return {"entity_spans": entity_spans}


def _entity_f1_reference(gold, pred):
    from course_utils.text.bio_tags import entity_spans

    g = {(i, *s) for i, tags in enumerate(gold) for s in entity_spans(tags)}  # every entity of the corpus
    p = {(i, *s) for i, tags in enumerate(pred) for s in entity_spans(tags)}
    correct = len(g & p)
    if correct == 0:
        return 0.0
    precision, recall = correct / len(p), correct / len(g)
    return 2 * precision * recall / (precision + recall)


def _entity_f1_by_seqeval(gold, pred):
    from seqeval.metrics import f1_score
    from seqeval.metrics.v1 import UndefinedMetricWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return float(f1_score(gold, pred))


_GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "O", "B-MISC"], ["O", "O"], ["B-LOC", "O", "B-PER"]]
_PREDICTIONS = [
    [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "O", "B-MISC"], ["O", "O"], ["B-LOC", "O", "B-PER"]],
    [["B-PER", "O", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "O", "O"], ["O", "B-PER"], ["B-ORG", "O", "B-PER"]],
    [["O"] * 4, ["O"] * 5, ["O"] * 2, ["O"] * 3],
    [["B-PER", "I-PER", "O", "B-PER"], ["O", "B-LOC", "I-LOC", "O", "B-MISC"], ["O", "O"], ["B-LOC", "O", "O"]],
    [["B-PER", "I-PER", "O", "B-LOC"], ["O", "O", "O", "O", "O"], ["O", "O"], ["O", "O", "O"]],
]


def _entity_f1_cases() -> list[tuple]:
    cases = [(_GOLD, pred) for pred in _PREDICTIONS]
    cases.append(([["O", "O"]], [["O", "O"]]))  # no entity anywhere: F1 = 0
    cases.append(([["B-PER", "I-PER", "I-PER"]], [["B-PER", "I-PER", "O"]]))  # one wrong boundary
    cases.append(([["B-PER", "O"], ["O", "O"]], [["O", "O"], ["B-PER", "O"]]))  # right words, wrong sentence
    return cases


def _entity_f1_mistakes():
    from course_utils.text.bio_tags import entity_spans

    def token_accuracy(gold, pred):
        pairs = [(a, b) for g, p in zip(gold, pred) for a, b in zip(g, p)]
        return sum(a == b for a, b in pairs) / len(pairs)

    def non_o_token_f1(gold, pred):
        g = {(i, j, t) for i, tags in enumerate(gold) for j, t in enumerate(tags) if t != "O"}
        p = {(i, j, t) for i, tags in enumerate(pred) for j, t in enumerate(tags) if t != "O"}
        c = len(g & p)
        return 0.0 if c == 0 else 2 * c / (len(g) + len(p))

    def ignores_type(gold, pred):
        g = {(i, a, b) for i, tags in enumerate(gold) for _, a, b in entity_spans(tags)}
        p = {(i, a, b) for i, tags in enumerate(pred) for _, a, b in entity_spans(tags)}
        c = len(g & p)
        return 0.0 if c == 0 else 2 * c / (len(g) + len(p))

    def sentence_blind(gold, pred):  # entities of different sentences at the same positions are confused
        g = {s for tags in gold for s in entity_spans(tags)}
        p = {s for tags in pred for s in entity_spans(tags)}
        c = len(g & p)
        return 0.0 if c == 0 else 2 * c / (len(g) + len(p))

    return [
        Mistake(
            given_function(F1_GIVEN, "entity_f1_score", "04.entity_f1", _f1_namespace()),
            "averages one F1 per sentence: seqeval counts correct, predicted and gold entities over all "
            "sentences, then computes P, R and F1 once",
        ),
        Mistake(token_accuracy, "that is token accuracy: F1 counts entities (type and exact words), not tags"),
        Mistake(
            non_o_token_f1,
            "counts tagged words, not entities: an entity is right only if all its words and its type are",
        ),
        Mistake(ignores_type, "an entity with the wrong type is not correct: compare (type, start, end)"),
        Mistake(
            sentence_blind,
            "an entity belongs to its sentence: compare (sentence, type, start, end), or the "
            "same words of two sentences are confused",
        ),
        Mistake(_entity_f1_by_seqeval, "rule broken"),
    ]


@exercise(
    "04.entity_f1",
    "Debug: entity-level F1 over a corpus",
    "entity_f1_score(gold, pred) takes lists of tag sequences (one per sentence) and should return the F1 that "
    "seqeval.metrics.f1_score gives (section 6): an entity is correct only if its type, first and last word "
    "match; precision = correct / predicted entities and recall = correct / gold entities, counted over the "
    "whole corpus; F1 is 0 when nothing is correct. The given code returns plausible numbers that are not "
    "seqeval's. Find out why and fix it (entity_spans, from course_utils.text.ner, is allowed).",
    reference=_entity_f1_reference,
    mistakes=_entity_f1_mistakes,
    kind="debug",
    given=F1_GIVEN,
    rules=[forbid("seqeval", says="count the entities yourself: seqeval is not allowed here")],
    section="6. Evaluation with seqeval",
    minutes=8,
)
def check_entity_f1(fn) -> None:
    expect_same(
        lambda g, p: float(fn(g, p)),
        _entity_f1_by_seqeval,
        cases=_entity_f1_cases(),
        atol=1e-9,
        what="entity_f1_score(gold, pred)",
        hint="count correct, predicted and gold entities over all sentences, then divide once",
    )


# ----------------------------------------------------------------------------- 04.all_subtokens

choice(
    "04.all_subtokens",
    "Why does a word's second piece get I-, not B-?",
    "With label_all_subtokens=True (section 3), a B-PER word split into three pieces gets the labels "
    "B-PER, I-PER, I-PER, not B-PER, B-PER, B-PER. Why?",
    options={
        "a": "Read as a tag sequence, B-PER B-PER B-PER is three one-piece people: one word would become three "
        "entities (and the predictions, read the same way, three false alarms).",
        "b": "The tokenizer refuses two B- tags in a row.",
        "c": "So that the word's first piece weighs more in the loss than the others.",
        "d": "Because I- tags are more frequent in the data, so the model learns them faster.",
    },
    correct="a",
    why="B- always opens a new entity; the pieces of one word belong to one entity, so only the first may open it.",
    why_not={
        "b": "the tokenizer knows nothing about tags: it splits text; the labels are ours.",
        "c": "every labelled piece counts the same in the cross-entropy, whatever its tag; the choice of tag "
        "does not weight anything.",
        "d": "frequency has nothing to do with it: B-PER B-PER B-PER would be wrong even if B- were common, "
        "because it reads as three entities.",
    },
    section="3. Sub-words: giving a word's label to its pieces",
    minutes=2,
)
