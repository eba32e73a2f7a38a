"""Chapter 05 exercises: predict what the data and the models imply, debug a relational answer,
FiLM's broadcasting and retrieval recall, and explain why FiLM fails on relations.

Every check compares with an independent computation (the scene's own answers, explicit
loops, a rank count), and names the misconception behind each typical mistake; the tests
prove each one is rejected with its message.
"""

from __future__ import annotations

import math

import torch

from . import Mistake, choice, exercise, expect_same, given_function, numeric

# ----------------------------------------------------------------------------- 05.closest_shape

CLOSEST_GIVEN = """
def closest_shape(centers, shapes_, color):
    distances = (centers - centers[color]).abs().sum(-1)
    nearest = int(distances.argmin())
    return ["square", "circle"][int(shapes_[nearest])]
"""


def _closest_shape_reference(centers: torch.Tensor, shapes_: torch.Tensor, color: int) -> str:
    d = ((centers.float() - centers[color].float()) ** 2).sum(-1)  # squared Euclidean: same order as Euclidean
    d[color] = float("inf")  # the object itself is not "closest to" itself
    return ["square", "circle"][int(shapes_[int(d.argmin())])]


def _closest_shape_mistakes():
    def manhattan(centers, shapes_, color):
        d = (centers.float() - centers[color].float()).abs().sum(-1)
        d[color] = float("inf")
        return ["square", "circle"][int(shapes_[int(d.argmin())])]

    def furthest(centers, shapes_, color):
        d = ((centers.float() - centers[color].float()) ** 2).sum(-1)
        return ["square", "circle"][int(shapes_[int(d.argmax())])]

    def x_only(centers, shapes_, color):
        d = (centers[:, 0].float() - centers[color, 0].float()).abs()
        d[color] = float("inf")
        return ["square", "circle"][int(shapes_[int(d.argmin())])]

    return [
        Mistake(
            given_function(CLOSEST_GIVEN, "closest_shape", "05.closest_shape"),
            "you always answer the shape of object `color` itself: its distance to itself is 0, the smallest; "
            "leave it out (set its distance to infinity)",
        ),
        Mistake(
            manhattan,
            "your distance is Manhattan, |dx| + |dy|, which ranks some pairs differently from the "
            "straight-line (Euclidean) distance the questions use: compare dx² + dy²",
        ),
        Mistake(furthest, "that is the furthest object (argmax): the closest has the smallest distance"),
        Mistake(x_only, "you compare x only: an object straight above or below is close too; use both coordinates"),
    ]


def _closest_cases() -> list[tuple]:
    from course_utils.vision import shapes as sortofclevr

    data = sortofclevr.generate(60, seed=11)
    closest = sortofclevr.SUBTYPES.index("closest")
    cases = []
    for i in range(len(data)):
        for j in range(20):
            if int(data.subtypes[i, j]) == closest:
                color = int(data.colors[i, j])
                # the reference must agree with the scene's own answer, computed by the data generator
                assert _closest_shape_reference(data.centers[i], data.shapes[i], color) == data.answer_text(i, j)
                cases.append((data.centers[i].clone(), data.shapes[i].clone(), color))
    return cases


@exercise(
    "05.closest_shape",
    "Debug: answer a relational question from the scene",
    "closest_shape(centers, shapes_, color) should answer 'What is the shape of the object closest to the <color> "
    "object?': centers is a (6, 2) tensor of (x, y) object centres, shapes_ a (6,) tensor (0 = square, "
    "1 = circle), color the index of one object; the distance is the straight-line one between centres. The "
    "given version answers wrongly; try it on a few scenes of section 1 (train_data.centers[i], "
    "train_data.shapes[i]), find both bugs, fix them.",
    reference=_closest_shape_reference,
    mistakes=_closest_shape_mistakes,
    kind="debug",
    given=CLOSEST_GIVEN,
    section="1. Sort-of-CLEVR",
    minutes=6,
)
def check_closest_shape(fn) -> None:
    expect_same(
        fn,
        _closest_shape_reference,
        cases=_closest_cases(),
        what="closest_shape(centers, shapes_, color)",
        hint="the shape of the nearest OTHER object, by straight-line distance",
    )


# ----------------------------------------------------------------------------- 05.count_rule


def _count_rule_reference() -> float:
    # with 8 objects the answer is K = 1 + Binomial(7, 1/2) (c itself plus the others of its shape); the rule
    # says max(circles, squares), which equals K exactly when K >= 4 (c's shape is the majority, or a 4-4 tie)
    p_wrong = sum(math.comb(7, m) for m in (0, 1, 2)) / 2**7  # K = 1, 2 or 3
    return 100 * (1 - p_wrong)


numeric(
    "05.count_rule",
    "Predict: a count rule that never looks at c, on bigger scenes",
    "Section 1's majority-shape rule answers a count question ('How many objects have the same shape as the "
    "c object?') without finding c: it answers max(circles, squares), the size of the larger shape group. "
    "Section 1 computes how often that is right on our scenes of 6 objects. Suppose the generator drew 8 "
    "objects per image instead, each a circle or a square with probability 1/2, independently. On what "
    "percentage of count questions would the rule be right? Work it out before running anything (within 0.5).",
    reference=_count_rule_reference,
    tolerance=0.5,
    mistakes=[
        Mistake(81.25, "that is the 6-object scene of section 1; redo the count with 8 objects (7 besides c)"),
        Mistake(
            50.0,
            "you left out the ties: with 4 circles and 4 squares both groups have 4, and so does "
            "c's; the rule is right then too",
        ),
        Mistake(
            100 * 163 / 256,
            "c is one of the eight and its shape is given: the chance is over the other seven, 1 + Binomial(7, 1/2)",
        ),
        Mistake(100 * 35 / 128, "that is the tie case alone; c's shape can also be the strict majority"),
        Mistake(99 / 128, "as a percentage: about 77.3, not 0.773"),
    ],
    hint="the answer is 1 + (how many of the other seven share c's shape); when does the larger group have that size?",
    section="1. Sort-of-CLEVR",
    minutes=5,
    explanation="Right exactly when c's group has 4 or more objects: P(Binomial(7, 1/2) >= 3) = 1 - (1 + 7 + 21)/128 "
    "= 99/128 = 77.3%. A model can score that on count without ever finding c; with more objects the "
    "floor falls, but slowly.",
)


# ----------------------------------------------------------------------------- 05.pair_cost


def _pair_cost_reference() -> float:
    n, d, d_q, hidden = 25, 34, 128, 128
    naive = n * n * (2 * d + d_q) * hidden  # one (2d + d_q) -> hidden product per pair
    split = (2 * n * d + d_q) * hidden  # W_i o_i and W_j o_j per element, W_q q once
    return naive / split


numeric(
    "05.pair_cost",
    "Predict: what the broadcast-add saves",
    "Section 4's relation network on all 25 patches: elements of d = 34 numbers, a question vector of "
    "d_q = 128, g's first layer maps 2d + d_q to hidden = 128. Counting only multiplications in the matrix "
    "products of that layer, for one image: how many times fewer does the broadcast-add version do than "
    "concatenate-then-multiply? (Within 2%.)",
    reference=_pair_cost_reference,
    tolerance=0.02,
    relative=True,
    mistakes=[
        Mistake(
            625.0,
            "that counts the pairs only: the broadcast-add still multiplies each of the 2N "
            "element blocks and the question once",
        ),
        Mistake(25.0, "you left out the question's block: it is 128 of the 196 numbers of every naive row"),
        Mistake(12.5, "N^2 / 2N compares pair counts, not multiplications: weigh each product by its size"),
    ],
    hint="naive: N^2 products of (2d + d_q) x hidden; split: 2N products of d x hidden and one of d_q x hidden",
    section="4. Six fusions (the relation network, inline)",
    minutes=4,
)


# ----------------------------------------------------------------------------- 05.film

FILM_GIVEN = '''
def film(features, gamma, beta):
    """features (B, N, h); gamma, beta (B, h): one scale and one shift per feature, per question."""
    return gamma[:, :, None] * features + beta[:, :, None]
'''


def _film_reference(features: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    return gamma[:, None, :] * features + beta[:, None, :]  # (B, 1, h): the same for every element


def _film_by_loops(features: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    b, n, _ = features.shape
    return torch.stack([torch.stack([gamma[i] * features[i, e] + beta[i] for e in range(n)]) for i in range(b)])


def _film_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(2)
    cases = []
    for b, n, h in [(2, 4, 4), (3, 5, 4), (3, 3, 4), (1, 1, 6), (2, 6, 1)]:  # N == h first: the silent case
        cases.append(
            (torch.randn(b, n, h, generator=g), torch.randn(b, h, generator=g), torch.randn(b, h, generator=g))
        )
    return cases


def _film_mistakes():
    return [
        Mistake(
            given_function(FILM_GIVEN, "film", "05.film"),
            "gamma[:, :, None] is (B, h, 1): it lines γ's features up with the ELEMENTS axis (silently wrong "
            "when N == h, an error otherwise); γ needs its element axis in the middle: gamma[:, None, :]",
        ),
        Mistake(lambda x, gamma, beta: gamma[:, None, :] * x, "no shift: FiLM adds β after scaling"),
        Mistake(
            lambda x, gamma, beta: beta[:, None, :] * x + gamma[:, None, :], "γ and β are swapped: γ scales, β shifts"
        ),
        Mistake(
            lambda x, gamma, beta: x * gamma.mean(-1)[:, None, None] + beta.mean(-1)[:, None, None],
            "one number per question is not FiLM: each FEATURE gets its own scale and shift",
        ),
    ]


@exercise(
    "05.film",
    "Debug: FiLM's broadcasting",
    "film(features, gamma, beta) should apply FiLM as section 4 describes: features (B, N, h) are the N elements "
    "of each image, gamma and beta (B, h) come from each question, and every element of an image gets the same "
    "per-feature scale and shift: out[b, n, f] = gamma[b, f] * features[b, n, f] + beta[b, f]. The given version "
    "crashes for most shapes, and for some it runs and is wrong. Find the shapes where it runs, see why, fix it.",
    reference=_film_reference,
    mistakes=_film_mistakes,
    kind="debug",
    given=FILM_GIVEN,
    section="4. Six fusions",
    minutes=5,
)
def check_film(fn) -> None:
    expect_same(
        fn,
        _film_by_loops,
        cases=_film_cases(),
        what="film(features, gamma, beta)",
        hint="out[b, n, f] = gamma[b, f] * features[b, n, f] + beta[b, f]",
    )


# ----------------------------------------------------------------------------- 05.collapsed_loss


def _collapsed_loss_reference() -> float:
    # every similarity is the same, so every logit is too: each softmax row is uniform over 64, the
    # right pair gets 1/64 in both directions, and the mean of the two is ln 64 (whatever the temperature)
    return math.log(64)


numeric(
    "05.collapsed_loss",
    "Predict: the loss of a collapsed encoder",
    "An image and a text encoder have collapsed: every embedding they produce is the same unit vector. "
    "For a batch of B = 64 pairs and temperature 0.07, what is the symmetric InfoNCE loss of section 11? "
    "(Within 0.01.)",
    reference=_collapsed_loss_reference,
    tolerance=0.01,
    mistakes=[
        Mistake(
            0.0,
            "every pair scores the same, right or wrong: the softmax over 64 equal logits gives the "
            "right one only 1/64",
        ),
        Mistake(
            1 / 0.07, "the temperature divides every logit alike: equal logits stay equal, the softmax stays uniform"
        ),
        Mistake(6.0, "that is log2 64: the cross-entropy uses the natural logarithm"),
        Mistake(2 * math.log(64), "the two directions are averaged, not added"),
    ],
    hint="equal logits make a uniform softmax; what is -log of the right pair's probability?",
    section="11. A shared embedding space (CLIP-like)",
    minutes=3,
    explanation="All 64 logits of a row are equal, so the right text gets probability 1/64 in each direction: "
    "L = ln 64 ≈ 4.16 for any temperature. A loss stuck at ln B is the sign of a collapsed encoder.",
)


# ----------------------------------------------------------------------------- 05.recall_at_k

RECALL_GIVEN = '''
def recall_at_k(similarity, k):
    """similarity[i, j]: image i against text j; the right text of image i is text i."""
    top = similarity.topk(k, dim=0).indices
    return (top == torch.arange(similarity.shape[0])[None, :]).any(0).float().mean().item()
'''


def _recall_at_k_reference(similarity: torch.Tensor, k: int) -> float:
    top = similarity.topk(k, dim=1).indices  # the k best texts of each image
    return (top == torch.arange(similarity.shape[0])[:, None]).any(1).float().mean().item()


def _recall_by_rank(similarity: torch.Tensor, k: int) -> float:
    n = similarity.shape[0]
    hits = 0
    for i in range(n):
        better = sum(1 for j in range(n) if similarity[i, j] > similarity[i, i])  # texts ranked above the right one
        hits += better < k
    return hits / n


def _recall_cases() -> list[tuple]:
    example = torch.tensor(
        [[0.9, 0.5, 0.1, 0.0], [0.8, 0.7, 0.1, 0.0], [0.1, 0.9, 0.2, 0.8], [0.2, 0.1, 0.3, 0.6]]
    )  # the right text ranks 1st, 2nd, 3rd and 1st
    g = torch.Generator().manual_seed(8)
    random_6 = torch.randn(6, 6, generator=g) + 1.5 * torch.eye(6)
    return [(example, 1), (example, 2), (example, 3), (example, 4), (random_6, 1), (random_6, 2), (random_6, 6)]


def _recall_mistakes():
    def top_1(s, k):
        return (s.argmax(1) == torch.arange(s.shape[0])).float().mean().item()

    def least_similar(s, k):
        top = s.topk(k, dim=1, largest=False).indices
        return (top == torch.arange(s.shape[0])[:, None]).any(1).float().mean().item()

    def hits_over_slots(s, k):
        top = s.topk(k, dim=1).indices
        return (top == torch.arange(s.shape[0])[:, None]).float().mean().item()

    return [
        Mistake(
            given_function(RECALL_GIVEN, "recall_at_k", "05.recall_at_k"),
            "topk over dim=0 ranks the IMAGES for each text (a column): that is text-to-image recall. "
            "Image i's candidates are the texts of row i: dim=1",
        ),
        Mistake(top_1, "k is ignored: that is recall@1"),
        Mistake(least_similar, "largest=False picks the LEAST similar texts"),
        Mistake(
            hits_over_slots,
            "the mean over all k slots divides by k as well: recall asks, per image, whether "
            "the right text is anywhere in its top k",
        ),
    ]


@exercise(
    "05.recall_at_k",
    "Debug: retrieval recall@k",
    "recall_at_k(similarity, k) should return image-to-text recall@k (section 11): similarity[i, j] compares "
    "image i with text j, the right text of image i is text i, and the result is the share of images whose "
    "right text is among the k texts most similar to that image. The given version returns a plausible "
    "number, just not that one. Try it on a small matrix that is not symmetric and fix it.",
    reference=_recall_at_k_reference,
    mistakes=_recall_mistakes,
    kind="debug",
    given=RECALL_GIVEN,
    section="11. A shared embedding space (CLIP-like)",
    minutes=5,
)
def check_recall_at_k(fn) -> None:
    expect_same(
        lambda s, k: float(fn(s, k)),
        _recall_by_rank,
        cases=_recall_cases(),
        atol=1e-6,
        what="recall_at_k(similarity, k)",
        hint="for each image (a row), is its right text among its k best?",
    )


# ----------------------------------------------------------------------------- 05.film_closest

choice(
    "05.film_closest",
    "Why is FiLM perfect on 'what shape is c' but not on 'closest to c'?",
    "In section 8's table FiLM answers the non-relational questions almost perfectly, but on 'closest' and "
    "'furthest' it does no better than the concatenation MLP. Which explanation fits how FiLM is built?",
    options={
        "a": "The question's γ and β cannot say which colour c is.",
        "b": "Each element is modulated on its own and only then pooled (mean and max): no element's vector ever "
        "depends on another element, and two pooled vectors cannot hold the distances from c to every other "
        "object.",
        "c": "FiLM has too few parameters to learn geometry.",
        "d": "FiLM needs the question as BERT tokens, not as the bit vector.",
    },
    correct="b",
    why="Relations need elements to meet: the relation network scores every pair, attention lets the question look "
    "at all elements and then again. FiLM's elements meet only in the pooled mean and max.",
    why_not={
        "a": "they can, and do: that is exactly why FiLM is perfect on the non-relational questions, which need "
        "only the object of colour c.",
        "c": "no parameter setting lets one element see another before the pooling; more parameters change what "
        "each element reports, not whether elements meet.",
        "d": "the table's FiLM uses the bit vector and is perfect on non-relational questions; the question "
        "encoder tells FiLM what to look for, it does not make elements interact.",
    },
    section="8. The table: the test questions, scored once",
    minutes=3,
)
