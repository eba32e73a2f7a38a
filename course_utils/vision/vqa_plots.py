"""Figures and the attention widget of chapter 05 (split out of :mod:`course_utils.vision.multimodal`)."""

from __future__ import annotations

import math

import numpy as np
import torch

from course_utils.vision import shapes
from course_utils.vision.multimodal import CrossAttentionFusion, VQAModel
from course_utils.vision.patch_cnn import CELL, EMPTY, GRID, PATCH_CLASSES, CachedPatches


def _image_hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).cpu().numpy()


def show_dense_predictions(images: torch.Tensor, pred: torch.Tensor, n: int = 4):
    """What the pretrained CNN sees: the patch grid, and for every patch it finds an object in, a
    marker where it places the centre (a circle or a square, per its shape guess), drawn in black."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.8))
    half = (CELL - 1) / 2
    for i, ax in enumerate(np.atleast_1d(axes)):
        ax.imshow(_image_hwc(images[i]))
        for c in range(1, GRID):
            ax.axhline(c * CELL - 0.5, color="0.75", lw=0.5), ax.axvline(c * CELL - 0.5, color="0.75", lw=0.5)
        holds = pred[i, :, :PATCH_CLASSES].argmax(-1)
        found = (holds != EMPTY).nonzero().flatten().tolist()
        for cell in found:
            x = (cell % GRID) * CELL + half + float(pred[i, cell, PATCH_CLASSES + 1]) * half
            y = (cell // GRID) * CELL + half + float(pred[i, cell, PATCH_CLASSES + 2]) * half
            marker = "o" if pred[i, cell, PATCH_CLASSES] > 0 else "s"
            ax.plot(x, y, marker, markersize=14, markerfacecolor="none", markeredgecolor="black", markeredgewidth=1.2)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(f"{len(found)} objects found", fontsize=8)
    fig.tight_layout()
    return fig


def plot_attention_on_image(ax, image: torch.Tensor, weights: torch.Tensor, title: str = "", vmax: float | None = None):
    """The image with a (25,) attention vector over the 5x5 patches drawn as patch **outlines**: the
    heavier the weight, the darker and thicker the square around the patch. The image's colours stay
    as they are (the questions ask about them); patches with no weight get no outline.
    Returns the colour mapping (a ScalarMappable) for a colour bar."""
    from matplotlib import cm, colors
    from matplotlib.patches import Rectangle

    ax.imshow(_image_hwc(image))
    heat = weights.detach().reshape(-1).cpu().float()
    if heat.numel() != GRID * GRID:
        raise ValueError(f"weights must hold one value per patch of the {GRID}x{GRID} grid, got {heat.numel()}")
    vmax = vmax or max(float(heat.max()), 1e-6)
    mapping = cm.ScalarMappable(norm=colors.Normalize(0, vmax), cmap="Greys")
    for patch, w in enumerate(heat.tolist()):
        if w <= 0:
            continue
        x, y = (patch % GRID) * CELL - 0.5, (patch // GRID) * CELL - 0.5
        # black with opacity w / vmax: on the white background this is the Greys colour of w, and over
        # an object it darkens a thin line instead of painting the patch
        ax.add_patch(
            Rectangle(
                (x + 1, y + 1),
                CELL - 2,
                CELL - 2,
                fill=False,
                edgecolor=(0, 0, 0, min(1.0, w / vmax)),
                linewidth=0.5 + 2.5 * w / vmax,
            )
        )
    ax.set_xlim(-0.5, shapes.IMAGE_SIZE - 0.5)
    ax.set_ylim(shapes.IMAGE_SIZE - 0.5, -0.5)
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    return mapping


@torch.no_grad()
def attention_maps(model: VQAModel, elements: torch.Tensor, question_vectors: torch.Tensor, texts=None):
    """(logits, [per layer (B, N) attention averaged over heads and question tokens]) of a
    cross-attention model."""
    fusion = model.fusion
    if not isinstance(fusion, CrossAttentionFusion):
        raise TypeError(f"attention maps need a CrossAttentionFusion model, got {type(fusion).__name__}")
    model.eval()
    fusion.keep_attention = True
    try:
        logits = model(elements, question_vectors, texts)
        maps = [w.mean(dim=(1, 2)) for w in fusion.last_attention]
    finally:
        fusion.keep_attention = False
    return logits, maps


def attention_figure(model: VQAModel, data: shapes.SortOfClevr, patches: CachedPatches, image: int, question: int):
    """One image, one question: the attention of every cross-attention layer over the patches, drawn
    as outlines on a 0-1 scale with a colour bar (patches the model did not get have none), with the
    true answer and the model's."""
    from matplotlib.figure import Figure

    texts = [data.question_text[image][question]] if getattr(model.question_encoder, "needs_text", False) else None
    device = next(model.parameters()).device
    logits, maps = attention_maps(
        model, patches.vectors[image : image + 1].to(device), data.questions[image, question][None].to(device), texts
    )
    maps = [patches.weights_on_grid(w, torch.tensor([image])) for w in maps]
    predicted = shapes.ANSWERS[int(logits.argmax())]
    truth = data.answer_text(image, question)
    fig = Figure(figsize=(2.6 * (len(maps) + 1) + 0.8, 3.2), layout="constrained")
    axes = fig.subplots(1, len(maps) + 1)
    axes[0].imshow(_image_hwc(data.images[image]))
    axes[0].set_xticks([]), axes[0].set_yticks([])
    axes[0].set_title(f"image {image}", fontsize=8)
    for layer, (ax, w) in enumerate(zip(axes[1:], maps), start=1):
        mapping = plot_attention_on_image(ax, data.images[image], w[0], f"layer {layer} attention", vmax=1.0)
    fig.colorbar(mapping, ax=list(axes[1:]), fraction=0.05, shrink=0.9, label="attention weight (outline)")
    verdict = "right" if predicted == truth else "WRONG"
    fig.suptitle(f"{data.question_text[image][question]}\nanswer: {truth}   model: {predicted} ({verdict})", fontsize=9)
    return fig


def attention_widget(model: VQAModel, data: shapes.SortOfClevr, patches: CachedPatches):
    """Pick an image and one of its questions; see where each cross-attention layer looks."""
    import io

    import ipywidgets as widgets

    image = widgets.IntSlider(value=0, min=0, max=len(data) - 1, description="image")
    question = widgets.Dropdown(description="question", layout=widgets.Layout(width="560px"))
    picture = widgets.Image(format="png")

    def questions_of(i):
        return [(f"{j:2d}. {data.question_text[i][j]}", j) for j in range(data.answers.shape[1])]

    def draw(*_):
        if question.value is None:
            return
        fig = attention_figure(model, data, patches, image.value, question.value)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90)
        picture.value = buffer.getvalue()

    def new_image(change):
        question.unobserve(draw, "value")
        question.options = questions_of(image.value)
        question.value = 10  # the first relational question
        question.observe(draw, "value")
        draw()

    question.options = questions_of(0)
    question.value = 10
    image.observe(new_image, "value")
    question.observe(draw, "value")
    draw()
    image.add_class("course-image-picker")
    box = widgets.VBox([widgets.HBox([image, question]), picture])
    box.add_class("course-attention-on-image")
    box.image, box.question, box.picture = image, question, picture  # for tests and for tinkering
    return box


def show_questions(data: shapes.SortOfClevr, cases: list, predictions: dict, per_row: int = 4):
    """Images with a question each: the true answer and every method's prediction.
    ``cases``: (image, question) pairs; ``predictions``: {method: (N, 20) answer indices}."""
    import matplotlib.pyplot as plt

    rows = math.ceil(len(cases) / per_row)
    fig, axes = plt.subplots(
        rows, per_row, figsize=(3.2 * per_row, (3.3 + 0.3 * (len(predictions) + 1)) * rows), squeeze=False
    )
    for ax in axes.flat:
        ax.set_visible(False)
    for ax, (i, j) in zip(axes.flat, cases):
        ax.set_visible(True)
        ax.imshow(_image_hwc(data.images[i]))
        ax.set_xticks([]), ax.set_yticks([])
        lines = [f"answer: {data.answer_text(i, j)}"]
        lines += [
            f"{m}: {shapes.ANSWERS[int(p[i, j])]}" + ("" if p[i, j] == data.answers[i, j] else "  (wrong)")
            for m, p in predictions.items()
        ]
        ax.set_title(f"image {i}: " + shapes._short(data.question_text[i][j]), fontsize=8)
        ax.set_xlabel("\n".join(lines), fontsize=7, loc="left")
    fig.tight_layout()
    return fig
