"""Chapter 05 exercises: a relational answer, the relation network's pair trick, FiLM,
the contrastive (InfoNCE) loss and retrieval recall.

Each check compares the learner's answer with an independent computation on inputs chosen so
that the usual mistakes give a different result.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import exercise


def _close(got, want, what: str, atol: float = 1e-5) -> None:
    assert isinstance(got, torch.Tensor), f"{what} should be a torch.Tensor, got {type(got).__name__}"
    assert got.shape == want.shape, f"{what} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    diff = (got.float() - want.float()).abs().max().item()
    assert diff <= atol, f"{what} is off by up to {diff:.3g} from the expected values"


# ----------------------------------------------------------------------------- 05.closest_shape

def _closest_shape_reference(centers: torch.Tensor, shapes: torch.Tensor, color: int) -> str:
    d = ((centers.float() - centers[color].float()) ** 2).sum(-1)
    d[color] = float("inf")                     # the object itself is not "closest to" itself
    return ["square", "circle"][int(shapes[int(d.argmin())])]


def _closest_shape_wrong():
    def itself_included(centers, shapes, color):
        d = ((centers.float() - centers[color].float()) ** 2).sum(-1)
        return ["square", "circle"][int(shapes[int(d.argmin())])]

    def furthest(centers, shapes, color):
        d = ((centers.float() - centers[color].float()) ** 2).sum(-1)
        return ["square", "circle"][int(shapes[int(d.argmax())])]

    def x_only(centers, shapes, color):
        d = (centers[:, 0].float() - centers[color, 0].float()).abs()
        d[color] = float("inf")
        return ["square", "circle"][int(shapes[int(d.argmin())])]

    return [itself_included, furthest, x_only]


@exercise(
    "05.closest_shape", "Answer a relational question from the scene",
    "Write closest_shape(centers, shapes, color): centers is a (6, 2) tensor of (x, y) object centres, "
    "shapes a (6,) tensor (0 = square, 1 = circle), color the index of one object. Return 'square' or "
    "'circle': the shape of the object closest to object `color` (Euclidean distance between centres, "
    "the object itself excluded).",
    reference=_closest_shape_reference, wrong=_closest_shape_wrong)
def check_closest_shape(fn) -> None:
    from .. import shapes as sortofclevr

    data = sortofclevr.generate(40, seed=11)
    closest = sortofclevr.SUBTYPES.index("closest")
    tried = 0
    for i in range(len(data)):
        for j in range(20):
            if int(data.subtypes[i, j]) != closest:
                continue
            color = int(data.colors[i, j])
            got = fn(data.centers[i].clone(), data.shapes[i].clone(), color)
            want = data.answer_text(i, j)
            assert got == want, (f"image {i}, object of colour {sortofclevr.COLORS[color]}: you answer {got!r}, "
                                 f"the scene says {want!r}. Exclude the object itself, and use both x and y.")
            tried += 1
    assert tried > 20, "internal: too few closest questions were checked"


# ----------------------------------------------------------------------------- 05.pair_first_layer

def _pair_first_layer_reference(elements: torch.Tensor, question: torch.Tensor, weight: torch.Tensor,
                                bias: torch.Tensor) -> torch.Tensor:
    d = elements.shape[-1]
    w_i, w_j, w_q = weight[:, :d], weight[:, d:2 * d], weight[:, 2 * d:]
    left = elements @ w_i.T                      # (B, N, h): the part of o_i
    right = elements @ w_j.T                     # (B, N, h): the part of o_j
    q = question @ w_q.T + bias                  # (B, h)
    return left[:, :, None, :] + right[:, None, :, :] + q[:, None, None, :]


def _pair_first_layer_wrong():
    def swapped(elements, question, weight, bias):
        d = elements.shape[-1]
        left, right = elements @ weight[:, :d].T, elements @ weight[:, d:2 * d].T
        q = question @ weight[:, 2 * d:].T + bias
        return left[:, None, :, :] + right[:, :, None, :] + q[:, None, None, :]   # i and j exchanged

    def no_bias(elements, question, weight, bias):
        return _pair_first_layer_reference(elements, question, weight, torch.zeros_like(bias))

    def one_weight(elements, question, weight, bias):
        d = elements.shape[-1]
        part = elements @ weight[:, :d].T
        q = question @ weight[:, 2 * d:].T + bias
        return part[:, :, None, :] + part[:, None, :, :] + q[:, None, None, :]

    return [swapped, no_bias, one_weight]


@exercise(
    "05.pair_first_layer", "The relation network's first layer, without building the pairs",
    "Write pair_first_layer(elements, question, weight, bias): elements (B, N, d), question (B, q), "
    "weight (h, 2d + q) and bias (h,) of a Linear applied to [o_i; o_j; q]. Return the (B, N, N, h) tensor "
    "whose [b, i, j] entry equals weight @ cat(o_i, o_j, q) + bias, by splitting the weight into three "
    "blocks and broadcast-adding (never build the (B, N, N, 2d + q) concatenation).",
    reference=_pair_first_layer_reference, wrong=_pair_first_layer_wrong)
def check_pair_first_layer(fn) -> None:
    g = torch.Generator().manual_seed(5)
    b, n, d, q, h = 2, 4, 3, 2, 5
    elements, question = torch.randn(b, n, d, generator=g), torch.randn(b, q, generator=g)
    weight, bias = torch.randn(h, 2 * d + q, generator=g), torch.randn(h, generator=g)
    got = fn(elements, question, weight, bias)
    pairs = torch.cat([elements[:, :, None, :].expand(b, n, n, d), elements[:, None, :, :].expand(b, n, n, d),
                       question[:, None, None, :].expand(b, n, n, q)], dim=-1)
    want = F.linear(pairs, weight, bias)
    _close(got, want, "pair_first_layer(...)", atol=1e-4)


# ----------------------------------------------------------------------------- 05.film

def _film_reference(features: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    return gamma[:, None, :] * features + beta[:, None, :]


def _film_wrong():
    return [
        lambda x, gamma, beta: x * gamma.mean(-1)[:, None, None] + beta.mean(-1)[:, None, None],  # one number
        lambda x, gamma, beta: x + gamma[:, None, :] + beta[:, None, :],                           # shift only
        lambda x, gamma, beta: beta[:, None, :] * x + gamma[:, None, :],                           # swapped
    ]


@exercise(
    "05.film", "FiLM: the question scales and shifts every feature",
    "Write film(features, gamma, beta): features (B, N, h) of N image elements, gamma and beta (B, h) "
    "computed from each question. Return gamma * features + beta, with the same gamma and beta for "
    "every element of an image (one per feature, per question).",
    reference=_film_reference, wrong=_film_wrong)
def check_film(fn) -> None:
    g = torch.Generator().manual_seed(2)
    x, gamma, beta = torch.randn(3, 5, 4, generator=g), torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    got = fn(x, gamma, beta)
    want = torch.stack([torch.stack([gamma[b] * x[b, n] + beta[b] for n in range(5)]) for b in range(3)])
    _close(got, want, "film(features, gamma, beta)")


# ----------------------------------------------------------------------------- 05.info_nce

def _info_nce_reference(image: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = image @ text.T / temperature
    targets = torch.arange(image.shape[0])
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def _info_nce_wrong():
    def one_way(image, text, t):
        return F.cross_entropy(image @ text.T / t, torch.arange(image.shape[0]))

    def times_temperature(image, text, t):
        logits = image @ text.T * t
        y = torch.arange(image.shape[0])
        return (F.cross_entropy(logits, y) + F.cross_entropy(logits.T, y)) / 2

    def first_is_right(image, text, t):
        logits = image @ text.T / t
        y = torch.zeros(image.shape[0], dtype=torch.long)
        return (F.cross_entropy(logits, y) + F.cross_entropy(logits.T, y)) / 2

    return [one_way, times_temperature, first_is_right]


@exercise(
    "05.info_nce", "The symmetric contrastive (InfoNCE) loss",
    "Write info_nce(image, text, temperature): image and text are (B, d) unit vectors, row i of each "
    "belonging together. With logits = image @ text.T / temperature, return the mean of the "
    "cross-entropy that picks the right text for each image and the one that picks the right image "
    "for each text (a scalar tensor).",
    reference=_info_nce_reference, wrong=_info_nce_wrong)
def check_info_nce(fn) -> None:
    g = torch.Generator().manual_seed(3)
    image = F.normalize(torch.randn(5, 4, generator=g), dim=-1)
    text = F.normalize(image + 0.8 * torch.randn(5, 4, generator=g), dim=-1)
    t = 0.2
    sims = (image @ text.T / t).tolist()
    by_hand = 0.0
    for i in range(5):
        by_hand += -sims[i][i] + math.log(sum(math.exp(s) for s in sims[i]))            # image -> texts
        by_hand += -sims[i][i] + math.log(sum(math.exp(sims[k][i]) for k in range(5)))  # text -> images
    got = fn(image, text, t)
    _close(torch.as_tensor(got).reshape(()), torch.tensor(by_hand / 10), "info_nce(image, text, 0.2)", atol=1e-4)


# ----------------------------------------------------------------------------- 05.recall_at_k

def _recall_at_k_reference(similarity: torch.Tensor, k: int) -> float:
    top = similarity.topk(k, dim=1).indices
    return (top == torch.arange(similarity.shape[0])[:, None]).any(1).float().mean().item()


def _recall_at_k_wrong():
    return [
        lambda s, k: (s.argmax(1) == torch.arange(s.shape[0])).float().mean().item(),            # always k = 1
        lambda s, k: (s.topk(k, dim=0).indices == torch.arange(s.shape[0])[None]).any(0).float().mean().item(),  # columns
        lambda s, k: (s.topk(k, dim=1, largest=False).indices == torch.arange(s.shape[0])[:, None]).any(1).float().mean().item(),
    ]


@exercise(
    "05.recall_at_k", "Retrieval recall@k",
    "Write recall_at_k(similarity, k): similarity is an (N, N) matrix of image i vs text j, the right text "
    "of image i being text i. Return (as a float) the share of images whose right text is among the k "
    "texts most similar to it.",
    reference=_recall_at_k_reference, wrong=_recall_at_k_wrong)
def check_recall_at_k(fn) -> None:
    sim = torch.tensor([[0.9, 0.5, 0.1, 0.0],
                        [0.8, 0.7, 0.1, 0.0],
                        [0.1, 0.9, 0.2, 0.8],
                        [0.2, 0.1, 0.3, 0.6]])
    # right text ranks: image 0 first, image 1 second, image 2 third, image 3 first
    for k, want in ((1, 0.5), (2, 0.75), (3, 1.0)):
        got = fn(sim, k)
        assert abs(float(got) - want) < 1e-6, (f"recall_at_k(similarity, {k}) = {float(got):.3f}, expected {want}: "
                                               "look along each image's ROW for its right text (the diagonal)")
