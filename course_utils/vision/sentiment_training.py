"""Training and scoring chapter 09's sentiment models (:mod:`course_utils.vision.sentiment`).

* **Modality dropout** (:func:`drop_modalities`): in training, a share of the posts lose their
  text (it becomes empty) or their image (it becomes :func:`~course_utils.vision.sentiment_data.blank_image`).
* :func:`train_model`: AdamW with warm-up and cosine decay in the course's one training loop.
* :func:`evaluate`: accuracy and macro-F1 (:func:`macro_f1`) overall and per slice of the posts;
  ``texts`` / ``images`` replace the posts' own for the missing-modality ablation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from course_utils import training
from course_utils.vision import sentiment_data as sd
from course_utils.vision.sentiment import SentimentModel


# ============================================================================ modality dropout


def drop_modalities(texts: list, images: torch.Tensor, p: float, generator: torch.Generator):
    """Each post independently: with probability p/2 its text becomes "" (empty), with p/2 its image
    becomes the blank grey picture, otherwise it is kept (never both dropped). Returns
    (texts, images, dropped_text (B,) bool, dropped_image (B,) bool)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"modality dropout p is a probability in [0, 1], got {p!r}")
    u = torch.rand(len(texts), generator=generator)
    drop_text, drop_image = u < p / 2, (u >= p / 2) & (u < p)
    texts = ["" if d else t for t, d in zip(texts, drop_text.tolist())]
    images = torch.where(drop_image[:, None, None, None], sd.blank_image()[None], images)
    return texts, images, drop_text, drop_image


# ============================================================================ training and metrics


def train_model(
    model: SentimentModel,
    posts: sd.Posts,
    steps: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    modality_dropout: float = 0.0,
    seed: int = 0,
    progress: bool = True,
) -> list:
    """AdamW with a linear warm-up (5%) and cosine decay, in the course's one loop
    (:func:`course_utils.training.train`, no gradient clipping); returns the loss per step."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )

    def random_posts():  # the rows, then (with modality dropout) which posts lose a modality: one generator
        while True:
            rows = torch.randint(len(posts), (batch_size,), generator=g)
            texts, images = [posts.texts[i] for i in rows.tolist()], posts.images[rows]
            if modality_dropout:
                texts, images, _, _ = drop_modalities(texts, images, modality_dropout, g)
            yield texts, images, posts.labels[rows]

    def loss_of(model: SentimentModel, batch) -> torch.Tensor:
        texts, images, labels = batch
        return F.cross_entropy(model(texts, images), labels)

    history = training.train(
        model,
        random_posts(),
        loss_of,
        opt,
        sched,
        steps=steps,
        max_grad_norm=None,
        progress=progress,
        desc=f"{model.config['fusion']}",
    )
    model.eval()
    return history.values("loss")


@torch.no_grad()
def predict_proba(model, texts: list, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """(N, 2) probabilities, in eval mode, in batches."""
    model.eval()
    return torch.cat(
        [
            model.probabilities(texts[i : i + batch_size], images[i : i + batch_size])
            for i in range(0, len(texts), batch_size)
        ]
    )


def macro_f1(pred: np.ndarray, gold: np.ndarray, classes=(0, 1)) -> float:
    """Mean over classes of F1 = 2 TP / (2 TP + FP + FN); a class absent from both counts 0 (as scikit-learn)."""
    scores = []
    for c in classes:
        tp = np.sum((pred == c) & (gold == c))
        fp, fn = np.sum((pred == c) & (gold != c)), np.sum((pred != c) & (gold == c))
        scores.append(2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 0.0)
    return float(np.mean(scores))


def evaluate(model, posts: sd.Posts, texts: list | None = None, images: torch.Tensor | None = None) -> dict:
    """Accuracy and macro-F1 overall and per slice: {"all": (acc, f1), slice: (acc, f1)}.
    ``texts`` / ``images`` replace the posts' own (for the missing-modality ablation)."""
    probs = predict_proba(model, posts.texts if texts is None else texts, posts.images if images is None else images)
    pred, gold = probs.argmax(-1).numpy(), posts.labels.numpy()
    out = {"all": (float((pred == gold).mean()), macro_f1(pred, gold))}
    for s in sd.SLICES:
        m = posts.slice_mask(s)
        out[s] = (float((pred[m] == gold[m]).mean()), macro_f1(pred[m], gold[m]))
    return out
