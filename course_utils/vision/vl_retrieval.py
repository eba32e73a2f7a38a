"""Zero-shot queries with a CLIP-style embedding (chapter 05): type a description, get the images.

The image and text embedders of :class:`course_utils.vision.contrastive.ContrastiveModel` are trained on
**partial captions**: each names one to three objects of its image, in the words of a scene
description ("red circle top left. blue square middle centre."). Twelve (colour, shape, region)
combinations, :data:`HELD_OUT`, never occur in a training caption (:func:`caption_batch` skips
them), while each of their words and every pair of their attributes do. A query for a held-out
combination ("red circle top left.") is then *zero-shot*: its wording never occurred as a training
caption, and the model must compose it from what it learned about each word.

A partial caption matches many images (about one in eighteen has a red circle top left), so the
loss is the symmetric InfoNCE of CLIP with every matching pair of the batch as a positive
(:func:`multi_positive_loss`; with one match per row it is CLIP's loss), and retrieval is scored
with every matching image counted relevant: :func:`retrieval_scores` (precision@k and recall@k,
with their chance levels), :func:`zero_shot_report` (held-out against seen combinations).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from course_utils.vision import multimodal as mm
from course_utils.vision import contrastive
from course_utils.vision import shapes
from course_utils import training
from course_utils.vision.vl_models import N_REGIONS, VOCAB, _check_training, decode, object_words, regions

N_SHAPES = len(shapes.SHAPES)
# (colour, shape, region) left out of every training caption: for each colour one square and one
# circle, in regions c and c + 4 (mod 9), so every colour-shape, colour-region and shape-region
# pair still occurs in training
HELD_OUT = tuple((c, s, (c + 4 * s) % N_REGIONS) for c in range(shapes.N_OBJECTS) for s in range(N_SHAPES))
ALL_TRIPLES = tuple((c, s, r) for c in range(shapes.N_OBJECTS) for s in range(N_SHAPES) for r in range(N_REGIONS))


def combination_code(colour, shape, region):
    """One integer per (colour, shape, region): 108 in all."""
    return (colour * N_SHAPES + shape) * N_REGIONS + region


HELD_OUT_CODES = torch.tensor([combination_code(*t) for t in HELD_OUT])


def query_text(colour: int, shape: int, region: int) -> str:
    """The query for one object, in scene-description words: ``query_text(0, 1, 0)`` -> red circle top left."""
    return decode(object_words(torch.tensor(colour), torch.tensor(shape), torch.tensor(region)))


def scene_codes(data: shapes.SortOfClevr) -> torch.Tensor:
    """(N, 6): the (colour, shape, region) code of each image's object of colour k."""
    return combination_code(torch.arange(shapes.N_OBJECTS), data.shapes, regions(data))


def caption_batch(
    data: shapes.SortOfClevr, rows: torch.Tensor, g: torch.Generator, max_objects: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Partial captions for the images ``rows``: each names 1..``max_objects`` of its objects
    (how many, and which, drawn at random), never a :data:`HELD_OUT` combination.

    Returns (ids (B, 5 * max_objects), padded with 0; codes (B, max_objects), -1 where no object).
    """
    if isinstance(max_objects, bool) or not isinstance(max_objects, int) or not 1 <= max_objects <= shapes.N_OBJECTS:
        raise ValueError(f"max_objects must be an integer in 1..{shapes.N_OBJECTS}, got {max_objects!r}")
    codes = scene_codes(data)[rows]  # (B, 6)
    allowed = ~torch.isin(codes, HELD_OUT_CODES)
    b = codes.shape[0]
    want = torch.randint(1, max_objects + 1, (b,), generator=g)
    score = torch.where(allowed, torch.rand(b, shapes.N_OBJECTS, generator=g), torch.tensor(-1.0))
    picked = score.topk(max_objects, dim=1).indices  # objects by random score
    keep = (torch.arange(max_objects) < want[:, None]) & (torch.gather(score, 1, picked) >= 0)
    if not bool(keep.any(1).all()):
        raise ValueError("an image has only held-out objects, so no caption can name it; drop it from training")
    at = torch.arange(b)[:, None]
    words = object_words(picked, data.shapes[rows][at, picked], regions(data)[rows][at, picked])  # (B, k, 5)
    words = words * keep[..., None]
    chosen = torch.where(keep, codes[at, picked], torch.tensor(-1))
    # real phrases first, padding last (a text must not start with padding for the readers' sake)
    order = torch.argsort((~keep).long(), dim=1, stable=True)
    return words[at, order].flatten(1), chosen[at, order]


def match_matrix(image_codes: torch.Tensor, caption_codes: torch.Tensor) -> torch.Tensor:
    """(B images, B captions) bool: caption j is true of image i (every object it names is in the scene)."""
    colour = caption_codes.clamp(min=0) // (N_SHAPES * N_REGIONS)  # (B, k)
    in_scene = image_codes[:, colour] == caption_codes[None]  # (B, B, k)
    return (in_scene | (caption_codes[None] < 0)).all(-1)


def multi_positive_loss(
    image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, temperature, match: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE where image i and text j are a positive pair whenever ``match[i, j]``:
    each image's target is spread evenly over its matching texts, and each text's over its
    matching images. With ``match`` the identity it is CLIP's loss (:func:`contrastive.contrastive_loss`)."""
    b = image_embeddings.shape[0]
    if text_embeddings.shape != image_embeddings.shape or match.shape != (b, b):
        raise ValueError(
            f"image {tuple(image_embeddings.shape)} and text {tuple(text_embeddings.shape)} embeddings "
            f"must be (batch, d) and match (batch, batch), got {tuple(match.shape)}"
        )
    if not bool(match.diagonal().all()):
        raise ValueError("match must be True on its diagonal: every text is true of its own image")
    value = float(temperature.detach()) if isinstance(temperature, torch.Tensor) else float(temperature)
    if not 0.0 < value < math.inf:
        raise ValueError(f"temperature must be a positive, finite number, got {value}")
    logits = image_embeddings @ text_embeddings.T / temperature
    target = match.to(logits.dtype)
    return (
        F.cross_entropy(logits, target / target.sum(1, keepdim=True))
        + F.cross_entropy(logits.T, target.T / target.T.sum(1, keepdim=True))
    ) / 2


def train_zero_shot(
    model: contrastive.ContrastiveModel,
    elements: torch.Tensor,
    data: shapes.SortOfClevr,
    steps: int,
    batch_size: int = 128,
    lr: float = 2e-3,
    max_objects: int = 3,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Random batches of (image, fresh partial caption), AdamW in the course's one loop
    (:func:`course_utils.training.train`, without gradient clipping); returns {"losses", "seconds", "parameters"}."""
    _check_training(elements, data, steps, batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    codes = scene_codes(data)

    def random_captions():
        while True:
            rows = torch.randperm(len(data), generator=g)[:batch_size]
            ids, caption_codes = caption_batch(data, rows, g, max_objects)
            yield rows, ids, match_matrix(codes[rows], caption_codes)

    def loss_of(model: contrastive.ContrastiveModel, batch) -> torch.Tensor:
        rows, ids, match = batch
        return multi_positive_loss(model.image(elements[rows]), model.text(ids), model.temperature, match)

    history = training.train(
        model,
        random_captions(),
        loss_of,
        opt,
        steps=steps,
        max_grad_norm=None,
        progress=progress,
        desc="zero-shot embedding",
    )
    model.eval()
    return {"losses": history.values("loss"), "seconds": history.seconds, "parameters": mm.count_parameters(model)}


def retrieval_scores(similarity: torch.Tensor, relevant: torch.Tensor, k: int) -> dict:
    """Per query (row): ``precision``, the share of its k most similar images that are relevant, and
    ``recall``, the share of its relevant images found among those k (queries without a relevant
    image are left out). ``chance_precision`` (|relevant| / N) and ``chance_recall`` (k / N) are what a
    random ranking scores on average. Every value is a (Q,) tensor."""
    if similarity.dim() != 2 or relevant.shape != similarity.shape or relevant.dtype != torch.bool:
        raise ValueError(
            f"similarity (queries, images) and relevant (same shape, bool) needed, got "
            f"{tuple(similarity.shape)} and {tuple(relevant.shape)} {relevant.dtype}"
        )
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= similarity.shape[1]:
        raise ValueError(f"k must be an integer in 1..{similarity.shape[1]} (the number of images), got {k!r}")
    has = relevant.any(1)
    similarity, relevant = similarity[has], relevant[has]
    hits = torch.gather(relevant, 1, similarity.topk(k, dim=1).indices).sum(1).float()
    n_relevant = relevant.sum(1).float()
    n = similarity.shape[1]
    return {
        "precision": hits / k,
        "recall": hits / n_relevant,
        "chance_precision": n_relevant / n,
        "chance_recall": torch.full_like(hits, k / n),
    }


@torch.no_grad()
def query_similarity(model: contrastive.ContrastiveModel, elements: torch.Tensor, texts: list) -> torch.Tensor:
    """(len(texts), N images) cosine similarities of typed queries (scene-description words) with images."""
    model.eval()
    return model.text(contrastive.tokenize_scenes(texts)) @ model.image(elements).T


def search(model: contrastive.ContrastiveModel, elements: torch.Tensor, text: str, k: int = 8) -> torch.Tensor:
    """The k images most similar to one typed description, best first."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"type one description as a string, e.g. 'red circle top left.', got {text!r}")
    return query_similarity(model, elements, [text])[0].topk(min(k, elements.shape[0])).indices


def zero_shot_report(
    model: contrastive.ContrastiveModel, elements: torch.Tensor, data: shapes.SortOfClevr, k: int = 10
) -> dict:
    """Precision@k and recall@k over one-object queries, split into the :data:`HELD_OUT`
    combinations (never a training caption) and the seen ones, with the chance levels.
    ``{"held out": {...}, "seen": {...}}``, each {"queries", "precision", "recall",
    "chance precision", "chance recall"} (means over the queries with a relevant image)."""
    _check_training(elements, data, 1, 1)
    similarity = query_similarity(model, elements, [query_text(*t) for t in ALL_TRIPLES])
    codes = scene_codes(data)
    relevant = torch.stack([(codes == combination_code(*t)).any(1) for t in ALL_TRIPLES])  # (108, N)
    held = torch.tensor([t in HELD_OUT for t in ALL_TRIPLES])
    report = {}
    for name, rows in (("held out", held), ("seen", ~held)):
        s = retrieval_scores(similarity[rows], relevant[rows], k)
        report[name] = {
            "queries": len(s["precision"]),
            "precision": s["precision"].mean().item(),
            "recall": s["recall"].mean().item(),
            "chance precision": s["chance_precision"].mean().item(),
            "chance recall": s["chance_recall"].mean().item(),
        }
    return report


__all__ = [
    "HELD_OUT",
    "ALL_TRIPLES",
    "VOCAB",
    "combination_code",
    "query_text",
    "scene_codes",
    "caption_batch",
    "match_matrix",
    "multi_positive_loss",
    "train_zero_shot",
    "retrieval_scores",
    "query_similarity",
    "search",
    "zero_shot_report",
]
