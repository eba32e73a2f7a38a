"""Pictures for chapter 07: where the captioner looks while it writes.

* :func:`caption_with_attention`: caption one image greedily and return its words and, for every
  generated word, the cross-attention over the 25 patches that produced it;
* :func:`attention_on_image`: the image with the patches outlined, the line width and opacity
  following the attention (outlines, not tints, so the colours the caption names stay true);
* :func:`caption_widget`: pick an image, watch the caption being written word by word, and see
  where each word looked.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass

import numpy as np
import torch

from course_utils.vision import captions as C
from course_utils.vision import shapes
from course_utils.vision.patch_cnn import CELL, GRID


@dataclass
class CaptionTrace:
    """One image's generated caption: ``words`` (EOS as "[EOS]" at the end when reached) and
    ``attention`` (n_words, n_layers, 25): per word, each layer's cross-attention averaged over heads."""

    words: list
    attention: torch.Tensor

    @property
    def caption(self) -> str:
        return C.join_words([w for w in self.words if w != "[EOS]"])


@torch.no_grad()
def caption_with_attention(model, features: torch.Tensor, tokenizer, max_new_tokens: int | None = None) -> CaptionTrace:
    """Greedy caption of one image (features (25, d) or (1, 25, d)) with the attention behind each word.

    Generation runs with the KV cache; a teacher-forced pass over the generated words then reads
    the attention (causal, so position t sees exactly what step t saw)."""
    from course_utils.text.generation import generate

    feats = features if features.dim() == 3 else features[None]
    if feats.shape[0] != 1:
        raise ValueError(f"caption_with_attention takes one image, got {feats.shape[0]}")
    model.eval()
    max_new_tokens = max_new_tokens or model.max_positions - 1
    ids = generate(
        model.bind(feats),
        torch.full((1, 1), tokenizer.BOS),
        max_new_tokens,
        eos_token_id=tokenizer.EOS,
        pad_token_id=tokenizer.PAD,
    )[0]
    if tokenizer.EOS in ids[1:].tolist():
        ids = ids[: 1 + ids[1:].tolist().index(tokenizer.EOS) + 1]
    _, _, attentions = model(ids[None, :-1], memory=model.encode(feats), output_attentions=True)
    per_word = torch.stack([a[0].mean(0) for a in attentions], dim=1)  # (n_words, layers, 25)
    return CaptionTrace(tokenizer.tokens(ids[1:]), per_word)


def attention_on_image(ax, image: torch.Tensor, weights: torch.Tensor, title: str = "") -> None:
    """Draw ``image`` and outline each of the 25 patches with a width and opacity that follow its weight."""
    from matplotlib.patches import Rectangle

    ax.imshow(image.permute(1, 2, 0).cpu().numpy())
    w = weights.detach().float().cpu().reshape(GRID * GRID)
    top = float(w.max()) if float(w.max()) > 0 else 1.0
    for p in range(GRID * GRID):
        share = float(w[p]) / top
        if share < 0.05:
            continue
        row, col = divmod(p, GRID)
        ax.add_patch(
            Rectangle(
                (col * CELL - 0.5, row * CELL - 0.5),
                CELL,
                CELL,
                fill=False,
                edgecolor="black",
                linewidth=0.5 + 3.5 * share,
                alpha=0.25 + 0.75 * share,
            )
        )
        if share > 0.3:
            ax.text(col * CELL + 1, row * CELL + 4, f"{float(w[p]):.2f}", fontsize=6, color="black")
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def caption_html(words: list, current: int) -> str:
    """The caption up to word ``current``, that word in bold, the rest not yet written."""
    shown = [html.escape(w) for w in words[: current + 1]]
    if shown:
        shown[-1] = f"<b style='text-decoration: underline'>{shown[-1]}</b>"
    return "<div style='font-family: monospace; font-size: 13px; max-width: 640px'>" + " ".join(shown) + "</div>"


def trace_figure(image: torch.Tensor, trace: CaptionTrace, word: int):
    """The attention behind word ``word`` in every layer, one panel per layer."""
    from matplotlib.figure import Figure

    n_layers = trace.attention.shape[1]
    fig = Figure(figsize=(2.7 * n_layers, 3.0))
    axes = np.atleast_1d(fig.subplots(1, n_layers))
    for layer, ax in enumerate(axes):
        attention_on_image(
            ax, image, trace.attention[word, layer], f"layer {layer + 1} while writing '{trace.words[word]}'"
        )
    fig.tight_layout()
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def caption_widget(model, data: shapes.SortOfClevr, features: torch.Tensor, tokenizer):
    """An image slider (the caption is generated when you pick an image), a word slider (which
    generated word to explain), the caption so far, the scene check of the whole caption, and
    the cross-attention of every layer for that word outlined on the image."""
    import ipywidgets as widgets

    image = widgets.IntSlider(value=0, min=0, max=len(data) - 1, description="image")
    word = widgets.IntSlider(value=0, min=0, max=0, description="word", continuous_update=True)
    text = widgets.HTML()
    verdict = widgets.HTML()
    picture = widgets.Image(format="png")
    state = {}

    def draw(*_):
        trace = state["trace"]
        k = min(word.value, len(trace.words) - 1)
        text.value = caption_html(trace.words, k)
        picture.value = _png(trace_figure(data.images[image.value], trace, k))

    def new_image(*_):
        trace = caption_with_attention(model, features[image.value], tokenizer)
        state["trace"] = trace
        check = C.check_caption(trace.caption, C.scene_of(data, image.value))
        verdict.value = (
            f"<span style='font-size: 12px'>scene check: {check.correct}/{check.n_true} objects right, "
            f"{'described exactly' if check.exact else 'NOT exact'}; duplicates {check.duplicates}, "
            f"wrong bindings {check.wrong_bindings}, wrong regions {check.wrong_regions}</span>"
        )
        word.unobserve(draw, "value")
        word.max = len(trace.words) - 1
        word.value = 0
        word.observe(draw, "value")
        draw()

    image.observe(new_image, "value")
    word.observe(draw, "value")
    new_image()
    image.add_class("course-caption-image")
    word.add_class("course-caption-word")
    box = widgets.VBox([widgets.HBox([image, word]), text, verdict, picture])
    box.add_class("course-caption-attention")
    box.image, box.word, box.text, box.verdict, box.picture = image, word, text, verdict, picture
    box.state = state
    return box
