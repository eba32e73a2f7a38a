"""One post through chapter 09's sentiment model (:mod:`course_utils.vision.sentiment`):
:func:`predict_sentiment` gives the label, its probability and what drove it (by ablation: the
image blanked, the text emptied); :func:`explain` adds the cross-attention over the image's
patches; :func:`sentiment_widget` lets the learner type a sentence and pick a picture.
"""

from __future__ import annotations

import numpy as np
import torch

from course_utils.vision import sentiment_data as sd
from course_utils.vision.sentiment import CELL, GRID, SentimentModel, tokenize


# ============================================================================ one post


def check_image(image) -> torch.Tensor:
    """One post's image: (3, 48, 48) uint8 (a (48, 48, 3) array is accepted and transposed)."""
    size = sd.IMAGE_SIZE
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(image)
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a (3, {size}, {size}) uint8 tensor or array, got {type(image).__name__}")
    if image.dim() == 3 and tuple(image.shape) == (size, size, 3):
        image = image.permute(2, 0, 1)
    if image.dim() != 3 or tuple(image.shape) != (3, size, size):
        raise ValueError(
            f"image has shape {tuple(image.shape)}; predict_sentiment expects one (3, {size}, {size}) "
            f"picture (resize it to {size}x{size}; for a batch call the model)."
        )
    if image.dtype != torch.uint8:
        raise TypeError(
            f"image has dtype {image.dtype}; pass uint8 pixels 0..255, e.g. (x * 255).round()"
            ".to(torch.uint8) for floats in [0, 1]."
        )
    return image


@torch.no_grad()
def predict_sentiment(model: SentimentModel, text: str, image) -> dict:
    """One post -> {"label", "probability" (of that label), "positive" (P(positive)), "driver"
    ("text", "image" or "both", by ablation: how far P(positive) moves when the image is blanked
    or the text emptied), "without_image", "without_text", "attention" ((16,) weights over the
    4x4 patches, averaged over heads and tokens of the last block; None unless cross-attention)}."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(
            "the text is empty: write a sentence (in Chinese or English); the answer's "
            "'without_text' field shows what the image alone says"
        )
    image = check_image(image)
    tokenize(model.tokenizer, [text], model.config["max_len"], allow_empty=False)
    model.eval()
    texts = [text, text, ""]
    images = torch.stack([image, sd.blank_image(), image])
    p = model.probabilities(texts, images)[:, 1]
    attention = None
    if model.config["fusion"] == "cross":
        model.probabilities([text], image[None])
        w = model.blocks[-1].last_attention[0]  # (heads, T, 16)
        attention = w.mean(0).mean(0)
    full, no_image, no_text = (float(x) for x in p)
    moved_by_image, moved_by_text = abs(full - no_image), abs(full - no_text)
    if moved_by_image > 2 * moved_by_text:
        driver = "image"
    elif moved_by_text > 2 * moved_by_image:
        driver = "text"
    else:
        driver = "both"
    label = int(full >= 0.5)
    return {
        "label": sd.LABELS[label],
        "probability": full if label else 1 - full,
        "positive": full,
        "driver": driver,
        "without_image": no_image,
        "without_text": no_text,
        "attention": attention,
    }


# ============================================================================ the widget


def explain(model: SentimentModel, text: str, image) -> tuple[str, object]:
    """The widget's callback: (a one-line summary, a matplotlib figure of the image with the
    cross-attention over its 4x4 patches, or None). Bad input gives its one-line message instead
    of raising, so the widget keeps working while the learner types."""
    import matplotlib.pyplot as plt

    try:
        answer = predict_sentiment(model, text, image)
    except (ValueError, TypeError) as err:
        return f"⚠️ {err}", None
    summary = (
        f"{answer['label']} ({answer['probability']:.0%}) — driven by the {answer['driver']}"
        f" | P(positive): with both {answer['positive']:.2f}, blank image {answer['without_image']:.2f},"
        f" empty text {answer['without_text']:.2f}"
    )
    fig, ax = plt.subplots(figsize=(3, 3))
    ax.imshow(check_image(image).permute(1, 2, 0).numpy())
    if answer["attention"] is not None:
        grid = answer["attention"].reshape(GRID, GRID).numpy()
        ax.imshow(np.kron(grid, np.ones((CELL, CELL))), cmap="magma", alpha=0.55, vmin=0, vmax=grid.max())
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title("text tokens' attention over the patches" if answer["attention"] is not None else "image", fontsize=8)
    plt.close(fig)
    return summary, fig


def sentiment_widget(model: SentimentModel, posts: sd.Posts, n_images: int = 12):
    """Type a sentence (Chinese or English), pick one of the first ``n_images`` pictures, see the
    prediction, what drove it, and the cross-attention over the picture."""
    import ipywidgets as W
    from IPython.display import display

    text = W.Text(value="太好了，又下雨了", description="text", layout=W.Layout(width="420px"))
    labels = [
        (
            f"#{i}: {posts.image_kinds[i]} {posts.weather[i] or ('smile' if posts.image_valence[i] == 1 else 'frown' if posts.image_valence[i] == 0 else '')}".strip(),
            i,
        )
        for i in range(min(n_images, len(posts)))
    ]
    pick = W.Dropdown(options=labels, description="image")
    line, out = W.HTML(), W.Output()

    def draw(*_):
        summary, fig = explain(model, text.value, posts.images[pick.value])
        line.value = summary
        with out:
            out.clear_output(wait=True)
            if fig is not None:
                display(fig)

    text.observe(draw, names="value")
    pick.observe(draw, names="value")
    draw()
    return W.VBox([W.HBox([text, pick]), line, out])
