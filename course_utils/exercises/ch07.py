"""Chapter 07 exercises: BLEU's reference streams, one cached cross-attention step, the object F1
of the scene check, the size of an encoder-decoder's cache, exposure bias, BLEU's blind spot.

Every check compares with a reference written here from the definitions (sacrebleu for BLEU, a
softmax written out for attention, counting for F1), on several inputs with edge cases.
"""

from __future__ import annotations

import math

import torch

from . import Mistake, choice, exercise, expect_same, forbid, given_function, numeric

# ----------------------------------------------------------------------------- debug: BLEU's reference streams

_BLEU_CASES = (
    (
        ["a red square is in the centre.", "the blue circle is in the top left."],
        [
            ["a red square is in the centre.", "the red square is in the centre."],
            ["a blue circle is in the top left.", "there is a blue circle in the top left."],
        ],
    ),
    (
        [
            "there is a green circle in the bottom right.",
            "a gray square is in the middle left.",
            "the yellow circle is in the top centre.",
        ],
        [
            [
                "a green circle is in the bottom right.",
                "in the bottom right there is a green circle.",
                "the green circle is in the bottom right.",
            ],
            [
                "a gray square is in the middle left.",
                "there is a gray square in the middle left.",
                "the gray square is in the middle left.",
            ],
            [
                "a yellow square is in the top centre.",
                "the yellow square is in the top centre.",
                "there is a yellow square in the top centre.",
            ],
        ],
    ),
    (
        ["an orange square is in the centre."],
        [["an orange square is in the centre.", "the orange square is in the centre."]],
    ),
)


def _bleu_reference(hypotheses, references_per_image):
    import sacrebleu

    n_refs = len(references_per_image[0])
    streams = [[references_per_image[i][k] for i in range(len(hypotheses))] for k in range(n_refs)]
    return sacrebleu.corpus_bleu(list(hypotheses), streams).score


_BLEU_GIVEN = """
def corpus_bleu_per_image(hypotheses, references_per_image):
    return sacrebleu.corpus_bleu(hypotheses, references_per_image).score
"""


def _bleu_mistakes():
    import sacrebleu

    given = given_function(_BLEU_GIVEN, "corpus_bleu_per_image", "07.bleu_streams", {"sacrebleu": sacrebleu})
    return [
        Mistake(
            given,
            "you passed each image's references as one stream; sacrebleu reads one stream per reference "
            "POSITION: [[ref 0 of every image], [ref 1 of every image], ...]",
        ),
        Mistake(
            lambda h, r: sacrebleu.corpus_bleu(h, [[refs[0] for refs in r]]).score,
            "you kept only the first reference of each image: pass every reference position as its own stream",
        ),
        Mistake(
            lambda h, r: sum(sacrebleu.sentence_bleu(x, refs).score for x, refs in zip(h, r)) / len(h),
            "corpus BLEU is not the mean of sentence BLEUs: it pools the n-gram counts and lengths of the whole "
            "corpus first; call corpus_bleu once",
        ),
        Mistake(lambda h, r: __import__("course_utils.vision.captions", fromlist=["bleu"]).bleu(h, r), "captions.bleu"),
    ]


@exercise(
    "07.bleu_streams",
    "Passing references to sacrebleu",
    "This function should give corpus BLEU-4 for hypotheses[i] against its references "
    "references_per_image[i] (every image has the same number of them), but its score is wrong. "
    "Fix it, without calling captions.bleu.",
    reference=_bleu_reference,
    mistakes=_bleu_mistakes,
    kind="debug",
    given=_BLEU_GIVEN,
    rules=[
        forbid("course_utils.vision.captions.bleu", says="captions.bleu does it for you: build the streams yourself")
    ],
    section="8. Greedy versus beam search",
    minutes=6,
)
def check_bleu_streams(fn) -> None:
    for hyps, refs in _BLEU_CASES:
        expect_same(fn, _bleu_reference, hyps, refs, what=f"corpus_bleu_per_image on {len(hyps)} image(s)", atol=1e-6)


# ----------------------------------------------------------------------------- modify: one cached cross-attention step


def _cross_step_reference(query, keys, values, memory_mask):
    """From the definition: scores q.k / sqrt(d), -inf at padding patches, softmax over patches."""
    d = query.shape[-1]
    scores = torch.einsum("bhqd,bhkd->bhqk", query, keys) / math.sqrt(d)
    scores = scores.masked_fill(~memory_mask[:, None, None, :], float("-inf"))
    weights = torch.exp(scores - scores.max(-1, keepdim=True).values)
    weights = weights / weights.sum(-1, keepdim=True)
    return torch.einsum("bhqk,bhkd->bhqd", weights, values)


def _cross_step_mistakes():
    def attend(q, k, v, keep, scale=True, dim=-1, invert=False):
        s = q @ k.transpose(-2, -1) / (math.sqrt(q.shape[-1]) if scale else 1.0)
        if keep is not None:
            s = s.masked_fill((keep if invert else ~keep)[:, None, None, :], float("-inf"))
        return torch.softmax(s, dim=dim) @ v

    return [
        Mistake(
            lambda q, k, v, m: attend(q, k, v, m, scale=False),
            "the scores are not divided by sqrt(d_head): divide q.k by the square root of the last dimension",
        ),
        Mistake(
            lambda q, k, v, m: attend(q, k, v, None),
            "the memory mask is ignored: padding patches (False in memory_mask) must get weight 0",
        ),
        Mistake(
            lambda q, k, v, m: attend(q, k, v, m, invert=True),
            "the mask is inverted: True in memory_mask marks a REAL patch (may attend), as in the course",
        ),
        Mistake(
            lambda q, k, v, m: attend(q, k, v, m, dim=-2),
            "the softmax runs over the wrong axis: each query's weights over the patches (the last axis) sum to 1",
        ),
        Mistake(
            lambda q, k, v, m: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m[:, None, None, :]),
            "scaled_dot_product_attention",
        ),
    ]


@exercise(
    "07.cross_attention_step",
    "One decoding step of cross-attention over cached image keys",
    "At each generation step the captioner's cross-attention has one new query per head, and the image's "
    "keys and values are already in the cache. Write cross_attention_step(query, keys, values, memory_mask): "
    "query (B, H, 1, d), keys and values (B, H, N, d), memory_mask (B, N) bool with True at real patches; "
    "return the attention output (B, H, 1, d). Write the softmax attention yourself (chapter 01), "
    "without torch's or the course's scaled_dot_product_attention.",
    reference=_cross_step_reference,
    mistakes=_cross_step_mistakes,
    kind="modify",
    rules=[
        forbid(
            "torch.nn.functional.scaled_dot_product_attention",
            "course_utils.layers.attention.scaled_dot_product_attention",
            says="write the attention with matmul, softmax and the mask yourself",
        )
    ],
    section="6. Generating, with a cache that holds the image",
    minutes=10,
)
def check_cross_attention_step(fn) -> None:
    g = torch.Generator().manual_seed(7)
    for batch, heads, n, d in ((2, 4, 25, 8), (1, 1, 6, 16), (3, 2, 5, 4)):
        q = torch.randn(batch, heads, 1, d, generator=g) * 2
        k = torch.randn(batch, heads, n, d, generator=g) * 2
        v = torch.randn(batch, heads, n, d, generator=g)
        keep = torch.ones(batch, n, dtype=torch.bool)
        keep[0, n // 2 :] = False  # an image with half its patches padding
        expect_same(
            fn,
            _cross_step_reference,
            q,
            k,
            v,
            keep,
            what=f"cross_attention_step on B={batch}, H={heads}, N={n}",
            atol=1e-5,
        )
    one = torch.zeros(1, 5, dtype=torch.bool)
    one[0, 3] = True  # a single real patch takes all the weight
    q, k, v = (
        torch.randn(1, 2, 1, 4, generator=g),
        torch.randn(1, 2, 5, 4, generator=g),
        torch.randn(1, 2, 5, 4, generator=g),
    )
    expect_same(fn, _cross_step_reference, q, k, v, one, what="a memory with one real patch")


# ----------------------------------------------------------------------------- debug: object F1 of one caption


def _object_f1_reference(said, truth):
    truth = set(truth)
    matched, correct = set(), 0
    for fact in said:
        if fact in truth and fact not in matched:
            matched.add(fact)
            correct += 1
    if not said or not truth or not correct:
        return 0.0
    precision, recall = correct / len(said), correct / len(truth)
    return 2 * precision * recall / (precision + recall)


_OBJECT_F1_GIVEN = """
def object_f1(said, truth):
    correct = sum(fact in truth for fact in said)
    p, r = correct / len(said), correct / len(truth)
    return 2 * p * r / (p + r)
"""


def _object_f1_mistakes():
    def counted(said, truth, dedupe=True, by=None, mean=False):
        truth = set(truth)
        correct = len(set(said) & truth) if dedupe else sum(f in truth for f in said)
        if not said or not truth or not correct:
            return 0.0
        p = correct / len(said)
        r = correct / (len(truth) if by is None else len(said))
        return (p + r) / 2 if mean else 2 * p * r / (p + r)

    return [
        Mistake(
            given_function(_OBJECT_F1_GIVEN, "object_f1", "07.object_f1"),
            "a fact said twice was counted as correct twice: each true object can be matched once; "
            "the second mention is a duplicate (a false positive)",
        ),
        Mistake(
            lambda s, t: counted(s, t, by="said"),
            "recall divides by the number of TRUE objects (what should have been said), not by what was said",
        ),
        Mistake(
            lambda s, t: counted(s, t, mean=True),
            "F1 is the harmonic mean 2PR / (P + R), not the arithmetic mean (P + R) / 2",
        ),
    ]


@exercise(
    "07.object_f1",
    "The object F1 of one caption",
    "object_f1(said, truth) should return the F1 of one caption: `said` is the list of (colour, shape, region) "
    "facts the caption states, in order, possibly with repeats; `truth` the set of the scene's facts. A "
    "stated fact is correct if it is true and that true fact was not matched already. The version given "
    "is wrong: fix it, and return 0.0 when nothing correct was said (no division by zero).",
    reference=_object_f1_reference,
    mistakes=_object_f1_mistakes,
    kind="debug",
    given=_OBJECT_F1_GIVEN,
    section="1. Captions from the scene",
    minutes=6,
)
def check_object_f1(fn) -> None:
    red = ("red", "circle", "top left")
    green = ("green", "square", "centre")
    blue = ("blue", "square", "bottom right")
    truth = {red, green, blue}
    cases = [
        ([red, green, blue], truth),  # perfect
        ([red, red, green], truth),  # a duplicate
        ([red, ("green", "circle", "centre")], truth),  # a wrong binding
        ([red, green, blue, red, red], truth),  # many repeats
        ([], truth),  # nothing said
        ([("gray", "circle", "centre")], truth),  # nothing right
        ([red], {red}),
    ]
    for said, t in cases:
        expect_same(fn, _object_f1_reference, said, t, what=f"object_f1({said}, truth)")


# ----------------------------------------------------------------------------- predict: the size of the cache

numeric(
    "07.cache_entries",
    "How many numbers the captioner's cache holds",
    "A captioner has 3 decoder blocks, d_model = 64 and 4 heads; its memory has 25 patches. It greedily "
    "writes a caption of 40 positions for ONE image, with the KV cache. At the end, how many numbers does "
    "the cache hold in all (self-attention keys and values of every position, cross-attention keys and "
    "values of every patch, in every block)?",
    reference=lambda: 3 * (2 * 40 * 64 + 2 * 25 * 64),
    tolerance=0.5,
    mistakes=lambda: [
        Mistake(
            3 * 2 * 40 * 64,
            "that is the self-attention part only: the image's keys and values (25 patches "
            "per block) are in the cache too",
        ),
        Mistake(3 * (40 * 64 + 25 * 64), "keys only: every cached key has its value beside it"),
        Mistake(2 * 40 * 64 + 2 * 25 * 64, "that is one block; each of the 3 blocks has its own cache"),
        Mistake(
            4 * 3 * (2 * 40 * 64 + 2 * 25 * 64), "the heads split d_model = 64 into 4 x 16; they do not multiply it"
        ),
        Mistake(
            3 * (2 * 40 * 64 + 40 * 2 * 25 * 64),
            "the image keys and values are computed once and kept, not stored again at every step",
        ),
    ],
    hint="per block: 2 x positions x d_model for the words, 2 x patches x d_model for the image",
    section="6. Generating, with a cache that holds the image",
    minutes=4,
)

# ----------------------------------------------------------------------------- conceptual

choice(
    "07.exposure_bias",
    "Right words under teacher forcing, wrong captions free running",
    "A captioner predicts the next word right 99.5% of the time on test captions under teacher forcing. "
    "Its captions are 50 words long, and only about 75% of its free-running captions are right. Which "
    "explanation holds?",
    options={
        "a": "It overfits: 99.5% is measured on training captions.",
        "b": "A caption needs all 50 words right (0.995^50 is about 78%), and free running, the model reads its "
        "own earlier words: after a mistake it is in a state it never saw in training (exposure bias).",
        "c": "Dropout is still active during generation.",
        "d": "Greedy search picks the wrong words; beam search would bring it to 99.5%.",
    },
    correct="b",
    why="Per-word accuracy compounds over the caption's length, and teacher forcing never shows the model a "
    "prefix with its own mistakes, so one error can cause more (section 7 measures both sides).",
    why_not={
        "a": "the 99.5% is on test captions, as the task says; overfitting would show as a gap between training "
        "and test, not between teacher forcing and free running on the same test images.",
        "c": "generate warns when a model is in training mode, and the chapter calls model.eval(); without "
        "dropout the gap stays (section 7).",
        "d": "beam search finds more probable captions, not a different model: section 8 finds greedy and beam "
        "close, and neither can exceed what being fed the truth gives.",
    },
    section="7. Teacher forcing versus free running",
    minutes=4,
)

choice(
    "07.bleu_blind_spot",
    "BLEU against the scene check",
    "The reference is 'a red circle is in the top left. a blue square is in the centre.', which is right. "
    "Hypothesis A: 'a blue circle is in the top left. a red square is in the centre.' Hypothesis B: "
    "'there is a red circle in the top left. there is a blue square in the centre.' Which is true of "
    "sacrebleu's BLEU-4 against that one reference, and of the object F1 of the scene check?",
    options={
        "a": "A scores higher on both.",
        "b": "A scores higher on BLEU, B higher on F1.",
        "c": "B scores higher on both.",
        "d": "They tie on BLEU (the same words), B wins on F1.",
    },
    correct="b",
    why="A shares long n-grams with the reference ('circle is in the top left .'), about 76 BLEU, yet both its "
    "objects have the wrong shape: F1 0. B is right (F1 1) but its phrasing shares fewer 4-grams: about 45.",
    why_not={
        "a": "A's F1 is 0: the red object is a circle in the top left, and A says red is a square in the centre.",
        "c": "B's phrasing 'there is a ... in the' shares fewer n-grams with the reference than A's does, so its "
        "BLEU is lower (about 45 against 76).",
        "d": "BLEU counts n-grams, not words: A and B use different words ('there', no 'is in') and different "
        "n-grams; A's match the reference's far better.",
    },
    section="8. What BLEU misses",
    minutes=4,
)
