"""Interactive attention viewers (ipywidgets; they also build and render once without a browser,
e.g. under nbval).

* :func:`attention_viewer` -- browse real attention weights by layer, head and query token.
* :func:`attention_explorer` -- chapter 01's toy: temperature, length, scaling and masks, live.

The widgets draw on a plain ``matplotlib.figure.Figure`` (no pyplot), save it as a PNG and
put that one image into an ``ipywidgets.Output``: redrawing is fast, no figure is left
open, and the image is easy to find in the page (``.course-attention-explorer img``).
The heatmaps are :func:`course_utils.layers.viz.plot_attention`.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any, Sequence

import numpy as np

from course_utils.layers.viz import _labels, _to_numpy, plot_attention

# ----------------------------------------------------------------------------- rendering


def _figure_png(fig, dpi: int = 90) -> bytes:
    """PNG bytes of a pyplot-free Figure (rendered with Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)  # laid out once with tight_layout; a "tight" bbox would draw twice
    return buf.getvalue()


def _png_output(png: bytes, description: str) -> dict:
    """One display_data output, as an ipywidgets.Output holds it."""
    return {
        "output_type": "display_data",
        "metadata": {},
        "data": {"image/png": base64.b64encode(png).decode("ascii"), "text/plain": description},
    }


def _entropy_bits(weights: np.ndarray) -> np.ndarray:
    """Entropy of each row of a weight matrix, in bits (0 for an all-zero row)."""
    w = np.clip(weights, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(w > 0, -w * np.log2(np.where(w > 0, w, 1.0)), 0.0)
    return terms.sum(axis=-1)


# ----------------------------------------------------------------------------- widgets


def _widgets():
    try:
        import ipywidgets
    except ImportError as err:  # pragma: no cover - ipywidgets is a course requirement
        raise ImportError("the interactive viewers need ipywidgets: pip install ipywidgets") from err
    return ipywidgets


def _layers_of(attentions) -> list[np.ndarray]:
    """A list over layers of (heads, L_q, L_k) float arrays, checked."""
    if isinstance(attentions, (list, tuple)):
        layers = list(attentions)
    else:
        arr = _to_numpy(attentions, "attentions")
        if arr.ndim == 3:  # one layer given as (heads, L_q, L_k)
            layers = [arr]
        elif arr.ndim == 4:  # (layers, heads, L_q, L_k)
            layers = list(arr)
        else:
            raise ValueError(
                f"attentions must be a list over layers of (heads, L_q, L_k) tensors, "
                f"got one array of shape {tuple(arr.shape)}"
            )
    if not layers:
        raise ValueError("attentions is empty: give at least one layer of (heads, L_q, L_k) weights")
    out = []
    for i, layer in enumerate(layers):
        a = _to_numpy(layer, f"attentions[{i}]").astype(float)
        if a.ndim == 4 and a.shape[0] == 1:  # transformers' (batch=1, heads, L_q, L_k)
            a = a[0]
        if a.ndim == 2:  # a single head
            a = a[None]
        if a.ndim != 3:
            raise ValueError(
                f"attentions[{i}] has shape {tuple(a.shape)}; each layer must be (heads, L_q, L_k) for ONE "
                "example. From a batch of transformers outputs take [a[0] for a in outputs.attentions]."
            )
        if out and a.shape[1:] != out[0].shape[1:]:
            raise ValueError(
                f"attentions[{i}] has shape {tuple(a.shape)} but attentions[0] has "
                f"{tuple(out[0].shape)}: every layer must cover the same query and key tokens"
            )
        out.append(a)
    return out


class AttentionViewer:
    """Layer / head / query browser over real attention weights; ``.widget`` is what is shown.

    Built by :func:`attention_viewer`. ``render()`` redraws; ``last_png`` holds the current image.
    """

    def __init__(
        self, attentions, tokens: Sequence[Any], query_tokens: Sequence[Any] | None = None, title: str | None = None
    ):
        widgets = _widgets()
        if callable(attentions):
            attentions = attentions()
        self.layers = _layers_of(attentions)
        n_heads, n_q, n_k = self.layers[0].shape
        if any(a.shape[0] != n_heads for a in self.layers):
            raise ValueError("every layer must have the same number of heads")
        self.key_tokens = _labels(tokens, n_k, "tokens", "keys")
        self.query_tokens = _labels(
            query_tokens if query_tokens is not None else tokens, n_q, "query_tokens", "queries"
        )
        if self.key_tokens is None:
            raise ValueError("tokens must be given: one label per key position")
        self.title = title
        self.layer = widgets.Dropdown(
            options=[(f"layer {i}", i) for i in range(len(self.layers))],
            value=0,
            description="layer",
            layout=widgets.Layout(width="170px"),
        )
        self.head = widgets.Dropdown(
            options=[("average of heads", -1)] + [(f"head {h}", h) for h in range(n_heads)],
            value=0 if n_heads > 1 else -1,
            description="head",
            layout=widgets.Layout(width="220px"),
        )
        self.query = widgets.Dropdown(
            options=[(f"{i}: {t}", i) for i, t in enumerate(self.query_tokens)],
            value=0,
            description="query",
            layout=widgets.Layout(width="230px"),
        )
        self.output = widgets.Output()
        self.output.add_class("course-attention-viewer")
        for control in (self.layer, self.head, self.query):
            control.observe(lambda _change: self.render(), names="value")
        self.widget = widgets.VBox([widgets.HBox([self.layer, self.head, self.query]), self.output])
        self.last_png = b""
        self.render()

    def weights(self) -> np.ndarray:
        """The (L_q, L_k) weights currently shown."""
        layer = self.layers[self.layer.value]
        return layer.mean(axis=0) if self.head.value == -1 else layer[self.head.value]

    def _build(self) -> None:
        """Make the figure once; render() then only updates its artists (one draw per change)."""
        from matplotlib.figure import Figure

        n_q, n_k = self.layers[0].shape[1:]
        fig = Figure(figsize=(min(11.0, 4.0 + 0.32 * n_k + 2.8), min(6.0, 2.0 + 0.26 * max(n_q, n_k))))
        grid = fig.add_gridspec(1, 2, width_ratios=[max(n_k, 4), 3.5 + 0.05 * n_k])
        heat_ax, bar_ax = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
        plot_attention(
            np.zeros((n_q, n_k)),
            self.query_tokens,
            self.key_tokens,
            ax=heat_ax,
            highlight_query=0,
            title=" ",
            annotate=False,
            vmax=1.0,
        )
        positions = np.arange(n_k)
        self._bars = bar_ax.barh(positions, np.zeros(n_k), color="#4c72b0")
        bar_ax.set_yticks(positions)
        bar_ax.set_yticklabels(self.key_tokens, fontsize=8)
        bar_ax.invert_yaxis()
        bar_ax.set_xlabel("weight")
        bar_ax.set_title(" ", fontsize=10)
        if self.title:
            fig.suptitle(self.title)
        fig.tight_layout()
        self._fig, self._heat_ax, self._bar_ax = fig, heat_ax, bar_ax
        self._image = heat_ax.get_images()[0]
        self._frame = heat_ax.patches[-1]

    def render(self) -> None:
        if getattr(self, "_fig", None) is None:
            self._build()
        w, q = self.weights(), self.query.value
        head = "average of heads" if self.head.value == -1 else f"head {self.head.value}"
        self._image.set_data(w)
        self._image.set_clim(0.0, max(float(w.max()), 1e-9))
        self._heat_ax.set_title(f"layer {self.layer.value}, {head}")
        self._frame.set_y(q - 0.5)
        for i, label in enumerate(self._heat_ax.get_yticklabels()):
            label.set_color("red" if i == q else "black")
            label.set_fontweight("bold" if i == q else "normal")
        best = int(np.argmax(w[q]))
        for j, bar in enumerate(self._bars):
            bar.set_width(w[q, j])
            bar.set_color("#d62728" if j == best else "#4c72b0")
        self._bar_ax.set_xlim(0, max(1e-9, float(w[q].max())) * 1.15)
        self._bar_ax.set_title(f"query {q}: {self.query_tokens[q]!r}", fontsize=10)
        self.last_png = _figure_png(self._fig)
        self.output.outputs = (_png_output(self.last_png, f"attention, layer {self.layer.value}, {head}, query {q}"),)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def attention_viewer(
    attentions, tokens: Sequence[Any], query_tokens: Sequence[Any] | None = None, title: str | None = None
):
    """Browse attention weights of ONE example by layer, head (or their average) and query token.

    attentions: a list over layers of (num_heads, L_q, L_k) tensors (a transformers
    ``outputs.attentions`` tuple with batch size 1 works too), or a callable returning it.
    tokens: the L_k key tokens; query_tokens: the L_q query tokens (default: ``tokens``).
    Returns the widget (an ``ipywidgets.VBox``); its ``.viewer`` attribute is the
    :class:`AttentionViewer` behind it.
    """
    viewer = AttentionViewer(attentions, tokens, query_tokens, title)
    viewer.widget.viewer = viewer
    return viewer.widget


# Labels for the explorer's positions (chapter 01's running sentence); the vectors are random.
_SENTENCE = "the animal didn't cross the street because it was too tired".split()
MASK_TYPES = ("none", "padding", "causal", "both")


def explorer_inputs(length: int, d_k: int, seed: int):
    """Random queries and keys, (length, d_k) each, with entries from N(0, 1): the explorer's data."""
    import torch

    generator = torch.Generator().manual_seed(int(seed))
    q = torch.randn(length, d_k, generator=generator)
    k = torch.randn(length, d_k, generator=generator)
    return q, k


def explorer_mask(mask_type: str, length: int, n_padding: int):
    """The explorer's boolean (length, length) mask, True = may attend; None for ``"none"``."""
    from course_utils.layers import attention

    if mask_type not in MASK_TYPES:
        raise ValueError(f"mask_type must be one of {MASK_TYPES}, got {mask_type!r}")
    if mask_type == "none":
        return None
    keys_ok = attention.padding_mask([length - n_padding], max_len=length)[0, 0]  # (1, length)
    causal = attention.causal_mask(length)
    return {"padding": keys_ok.expand(length, length), "causal": causal, "both": causal & keys_ok}[mask_type]


class AttentionExplorer:
    """Chapter 01's live attention toy; ``.widget`` is what is shown. Built by :func:`attention_explorer`."""

    def __init__(
        self,
        temperature: float = 1.0,
        length: int = 6,
        d_k: int = 16,
        scaled: bool = True,
        mask_type: str = "none",
        seed: int = 0,
    ):
        widgets = _widgets()
        if mask_type not in MASK_TYPES:
            raise ValueError(f"mask_type must be one of {MASK_TYPES}, got {mask_type!r}")
        style = {"description_width": "90px"}
        wide = widgets.Layout(width="330px")
        self.temperature = widgets.FloatLogSlider(
            value=temperature,
            base=10,
            min=-1,
            max=1,
            step=0.05,
            description="temperature",
            readout_format=".2f",
            continuous_update=False,
            style=style,
            layout=wide,
        )
        self.temperature.add_class("course-temperature")
        self.length = widgets.IntSlider(
            value=length, min=2, max=12, description="length", continuous_update=False, style=style, layout=wide
        )
        self.d_k = widgets.Dropdown(
            options=[2, 4, 8, 16, 64, 256, 1024],
            value=d_k,
            description="d_k",
            style=style,
            layout=widgets.Layout(width="200px"),
        )
        self.scaled = widgets.Checkbox(
            value=scaled, description="divide by √d_k", indent=False, layout=widgets.Layout(width="140px")
        )
        self.mask_type = widgets.ToggleButtons(
            options=list(MASK_TYPES),
            value=mask_type,
            description="mask",
            style={"description_width": "90px", "button_width": "80px"},
        )
        self.seed = widgets.IntText(value=seed, description="seed", style=style, layout=widgets.Layout(width="200px"))
        self.summary = widgets.HTML()
        self.output = widgets.Output()
        self.output.add_class("course-attention-explorer")
        controls = (self.temperature, self.length, self.d_k, self.scaled, self.mask_type, self.seed)
        for control in controls:
            control.observe(lambda _change: self.render(), names="value")
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.temperature, self.d_k, self.scaled]),
                widgets.HBox([self.length, self.seed]),
                self.mask_type,
                self.output,
                self.summary,
            ]
        )
        self.last_png = b""
        self.render()

    def compute(self):
        """(weights (L, L), mask or None, token labels) for the current settings."""
        from course_utils.layers.attention import scaled_dot_product_attention

        length, d_k = self.length.value, self.d_k.value
        q, k = explorer_inputs(length, d_k, self.seed.value)
        n_padding = max(1, length // 3)
        mask = explorer_mask(self.mask_type.value, length, n_padding)
        # temperature T divides the scores: softmax(q k^T / (sqrt(d_k) T))
        scale = (1.0 / math.sqrt(d_k) if self.scaled.value else 1.0) / self.temperature.value
        _, weights = scaled_dot_product_attention(q[None], k[None], k[None], mask=mask, scale=scale)
        tokens = [_SENTENCE[i % len(_SENTENCE)] for i in range(length)]
        if self.mask_type.value in ("padding", "both"):
            tokens = tokens[: length - n_padding] + ["[PAD]"] * n_padding
        return weights[0], mask, tokens

    def _build(self, tokens: list[str], allowed: np.ndarray) -> None:
        """Make the figure for one length and mask; render() then only updates its artists."""
        from matplotlib.figure import Figure

        n = len(tokens)
        fig = Figure(figsize=(8.2, 3.6))
        grid = fig.add_gridspec(1, 2, width_ratios=[1.35, 1])
        heat_ax, bar_ax = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
        plot_attention(np.zeros((n, n)), tokens, tokens, ax=heat_ax, vmin=0.0, vmax=1.0, annotate=n <= 7, title=" ")
        self._cell_texts = list(heat_ax.texts)  # one per cell, row by row (empty when not annotated)
        self._allowed = allowed
        for i, j in zip(*np.nonzero(~allowed)):  # mark masked cells so they read as "not allowed", not "weight 0"
            heat_ax.text(j, i, "×", ha="center", va="center", color="#bbbbbb", fontsize=9)
        rows = np.arange(n)
        uniform = np.log2(np.maximum(allowed.sum(axis=-1), 1))
        self._bars = bar_ax.barh(rows, np.zeros(n), color="#4c72b0")
        bar_ax.scatter(uniform, rows, marker="|", s=200, color="#d62728", zorder=3)
        bar_ax.set_yticks(rows)
        bar_ax.set_yticklabels(tokens, fontsize=8)
        bar_ax.invert_yaxis()
        bar_ax.set_xlim(0, max(1.0, float(uniform.max())) * 1.08)
        bar_ax.set_xlabel("bits  (red |: uniform over the allowed keys)", fontsize=9)
        bar_ax.set_title("entropy of each row", fontsize=10)
        fig.tight_layout()
        self._fig, self._heat_ax, self._image = fig, heat_ax, heat_ax.get_images()[0]

    def render(self) -> None:
        weights, mask, tokens = self.compute()
        w = weights.numpy()
        allowed = np.ones_like(w, dtype=bool) if mask is None else mask.numpy()
        layout = (self.length.value, self.mask_type.value)
        if getattr(self, "_layout", None) != layout:
            self._build(tokens, allowed)
            self._layout = layout
        entropy = _entropy_bits(w)
        uniform = np.log2(np.maximum(allowed.sum(axis=-1), 1))
        self._image.set_data(w)
        for text, value, ok in zip(self._cell_texts, w.flatten(), self._allowed.flatten()):
            text.set_text(f"{value:.2f}" if ok else "")  # a masked cell shows only its grey ×
            text.set_color("black" if value > 0.5 else "white")
        for bar, bits in zip(self._bars, entropy):
            bar.set_width(bits)
        formula = "softmax(q·k / (√d_k·T))" if self.scaled.value else "softmax(q·k / T), NOT divided by √d_k"
        self._heat_ax.set_title(
            f"{formula}  T={self.temperature.value:.2f}, d_k={self.d_k.value}, mask={self.mask_type.value}\n"
            "random q, k ~ N(0, 1); the words only label positions",
            fontsize=9,
        )
        self.last_png = _figure_png(self._fig)
        self.output.outputs = (_png_output(self.last_png, "attention explorer heatmap"),)
        real_rows = allowed.any(axis=-1)
        self.summary.value = (
            f"<span style='font-family:monospace'>mean max weight per row: {w.max(axis=-1)[real_rows].mean():.3f}"
            f" &nbsp; mean entropy: {entropy[real_rows].mean():.2f} bits"
            f" (uniform would be {uniform[real_rows].mean():.2f})</span>"
        )

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def attention_explorer(
    temperature: float = 1.0,
    length: int = 6,
    d_k: int = 16,
    scaled: bool = True,
    mask_type: str = "none",
    seed: int = 0,
):
    """Chapter 01's live toy: sliders for temperature, length, d_k (with or without the
    1/sqrt(d_k) scaling), a mask choice (none / padding / causal / both) and the seed.

    Queries and keys are random N(0, 1) vectors (the words on the axes only label the positions);
    the heatmap shows ``softmax(q k^T / (sqrt(d_k) * temperature))`` (without the sqrt(d_k) when
    ``scaled`` is False; the title says which), masked cells marked with a grey ×, computed by
    :func:`course_utils.layers.attention.scaled_dot_product_attention`, next to the entropy of every
    row. Returns the widget (an ``ipywidgets.VBox``); ``.explorer`` is the
    :class:`AttentionExplorer` behind it.
    """
    explorer = AttentionExplorer(temperature, length, d_k, scaled, mask_type, seed)
    explorer.widget.explorer = explorer
    return explorer.widget
