"""Chapter 06's generation widget: type a prompt, move the decoding knobs, watch the text change.

:func:`generation_explorer` (or :class:`GenerationExplorer`) shows

* the continuation the chosen decoding gives (greedy, sampling with temperature / top-k / top-p,
  or beam search with a beam width), computed with :func:`course_utils.text.generation.generate`;
* the next-token distribution after the prompt, the top candidates as bars (for sampling:
  after the temperature; the candidates top-k and top-p cut away are grey);
* the attention weights of the generated text, for the layer and head chosen (causal: each
  token looks only left).

Like the course's other widgets it draws on a plain matplotlib ``Figure`` saved as one PNG in an
``ipywidgets.Output`` (fast, no pyplot state), and it renders once without a browser (nbval).
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import torch

from course_utils.text import generation
from course_utils.layers.attention_widgets import _figure_png, _png_output
from course_utils.layers.viz import plot_attention

MODES = ("greedy", "sample", "beam")


def _encode(tokenizer, text: str) -> list[int]:
    if hasattr(tokenizer, "encode") and not hasattr(tokenizer, "save_pretrained"):  # a `tokenizers.Tokenizer`
        return list(tokenizer.encode(text).ids)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(list(ids))


def token_labels(tokenizer, ids: list[int], width: int = 10) -> list[str]:
    """One short readable label per token (its own decoded text, spaces shown as '·')."""
    labels = []
    for i in ids:
        text = _decode(tokenizer, [i]).replace(" ", "·").replace("\n", "⏎")
        text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)  # no invisible labels
        labels.append(text[:width] if text else f"<{i}>")
    return labels


class GenerationExplorer:
    """The widget's state and drawing; ``.widget`` is what a notebook shows.

    ``compute()`` returns what is drawn (a dict: ids, text, candidates, probabilities, kept,
    attention); the controls call ``render()``. ``last_png`` and ``last_text`` hold what is shown.
    """

    def __init__(
        self,
        model,
        tokenizer,
        prompt: str = "",
        eos_token_id: int | None = None,
        max_new_tokens: int = 20,
        mode: str = "greedy",
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        num_beams: int = 3,
        seed: int = 0,
        top_n: int = 12,
    ):
        import ipywidgets as widgets

        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.model, self.tokenizer, self.eos_token_id, self.top_n = model.eval(), tokenizer, eos_token_id, top_n
        n_layers = len(model.blocks)
        n_heads = model.config.n_head
        self.prompt = widgets.Text(
            value=prompt, description="prompt", continuous_update=False, layout=widgets.Layout(width="520px")
        )
        self.mode = widgets.ToggleButtons(options=list(MODES), value=mode, description="decoding")
        self.temperature = widgets.FloatSlider(
            value=temperature, min=0.1, max=2.0, step=0.05, description="temperature", continuous_update=False
        )
        self.top_k = widgets.IntSlider(value=top_k, min=0, max=50, description="top-k (0=off)", continuous_update=False)
        self.top_p = widgets.FloatSlider(
            value=top_p, min=0.05, max=1.0, step=0.05, description="top-p", continuous_update=False
        )
        self.num_beams = widgets.IntSlider(
            value=num_beams, min=1, max=8, description="beam width", continuous_update=False
        )
        self.max_new_tokens = widgets.IntSlider(
            value=max_new_tokens, min=1, max=60, description="new tokens", continuous_update=False
        )
        self.seed = widgets.IntText(value=seed, description="seed", layout=widgets.Layout(width="160px"))
        self.layer = widgets.Dropdown(
            options=[(f"layer {i}", i) for i in range(n_layers)],
            value=n_layers - 1,
            description="layer",
            layout=widgets.Layout(width="170px"),
        )
        self.head = widgets.Dropdown(
            options=[("average", -1)] + [(f"head {h}", h) for h in range(n_heads)],
            value=-1,
            description="head",
            layout=widgets.Layout(width="170px"),
        )
        self.text = widgets.HTML()
        self.output = widgets.Output()
        self.output.add_class("course-generation-explorer")
        controls = (
            self.prompt,
            self.mode,
            self.temperature,
            self.top_k,
            self.top_p,
            self.num_beams,
            self.max_new_tokens,
            self.seed,
            self.layer,
            self.head,
        )
        for control in controls:
            control.observe(lambda _change: self.render(), names="value")
        self.widget = widgets.VBox(
            [
                self.prompt,
                self.mode,
                widgets.HBox([self.temperature, self.top_k, self.top_p]),
                widgets.HBox([self.num_beams, self.max_new_tokens, self.seed]),
                self.text,
                widgets.HBox([self.layer, self.head]),
                self.output,
            ]
        )
        self.last_png, self.last_text = b"", ""
        self.render()

    # --- what is computed
    def prompt_ids(self) -> list[int]:
        ids = _encode(self.tokenizer, self.prompt.value)
        if not ids:  # an empty prompt starts from the end-of-text token, as GPT-2 does
            if self.eos_token_id is None:
                raise ValueError("the prompt is empty and no eos_token_id was given to start from: type a prompt")
            ids = [self.eos_token_id]
        room = self.model.max_positions - self.max_new_tokens.value
        return ids[-room:]  # keep the end of a long prompt so the continuation fits the positions

    def settings(self) -> dict[str, Any]:
        """The keyword arguments of generate() the controls stand for."""
        kwargs: dict[str, Any] = {"eos_token_id": self.eos_token_id}
        if self.mode.value == "sample":
            kwargs.update(
                do_sample=True,
                temperature=float(self.temperature.value),
                top_k=int(self.top_k.value) or None,
                top_p=float(self.top_p.value),
                generator=torch.Generator().manual_seed(int(self.seed.value)),
            )
        elif self.mode.value == "beam":
            kwargs.update(num_beams=int(self.num_beams.value))
        return kwargs

    def compute(self) -> dict[str, Any]:
        prompt = self.prompt_ids()
        ids = torch.tensor([prompt])
        out = generation.generate(self.model, ids, int(self.max_new_tokens.value), **self.settings())[0].tolist()
        with torch.no_grad():
            logits = self.model(ids).logits[0, -1].float()
            result = self.model(torch.tensor([out]), output_attentions=True)
        probs = torch.softmax(logits, -1)
        kept = torch.ones_like(probs, dtype=torch.bool)
        if self.mode.value == "sample":
            filtered = generation.filter_logits(
                logits, float(self.temperature.value), int(self.top_k.value) or None, float(self.top_p.value)
            )
            probs = torch.softmax(logits / float(self.temperature.value), -1)
            kept = torch.isfinite(filtered)
        order = torch.argsort(probs, descending=True)[: self.top_n]
        layer = result.attentions[self.layer.value][0]  # (heads, L, L)
        attention = layer.mean(0) if self.head.value == -1 else layer[self.head.value]
        return {
            "prompt_ids": prompt,
            "ids": out,
            "new_ids": out[len(prompt) :],
            "text": _decode(self.tokenizer, out[len(prompt) :]),
            "candidates": order.tolist(),
            "probabilities": probs[order].tolist(),
            "kept": kept[order].tolist(),
            "attention": attention.numpy(),
        }

    # --- what is drawn
    def _build(self) -> None:
        from matplotlib.figure import Figure

        self._fig = Figure(figsize=(11.0, 4.4))
        grid = self._fig.add_gridspec(1, 2, width_ratios=[1.0, 1.6])
        self._bar_ax, self._heat_ax = self._fig.add_subplot(grid[0]), self._fig.add_subplot(grid[1])

    def render(self) -> None:
        if getattr(self, "_fig", None) is None:
            self._build()
        try:
            found = self.compute()
        except ValueError as err:  # e.g. an empty prompt with no start token: say so instead of a traceback
            self.text.value = f"<b>{html.escape(str(err))}</b>"
            return
        self.found = found
        labels = token_labels(self.tokenizer, found["candidates"])
        bar_ax, heat_ax = self._bar_ax, self._heat_ax
        bar_ax.clear()
        heat_ax.clear()
        colors = ["#4c72b0" if k else "#c8c8c8" for k in found["kept"]]
        y = np.arange(len(labels))
        bar_ax.barh(y, found["probabilities"], color=colors)
        bar_ax.set_yticks(y)
        bar_ax.set_yticklabels(labels, fontsize=8)
        bar_ax.invert_yaxis()
        bar_ax.set_xlabel("probability of the next token")
        cut = "" if all(found["kept"]) else " (grey: cut by top-k / top-p)"
        bar_ax.set_title(f"after the prompt{cut}", fontsize=9)
        tokens = token_labels(self.tokenizer, found["ids"], width=8)
        head = "average of heads" if self.head.value == -1 else f"head {self.head.value}"
        plot_attention(
            found["attention"],
            tokens,
            tokens,
            ax=heat_ax,
            annotate=False,
            colorbar=False,
            title=f"attention, layer {self.layer.value}, {head}",
        )
        heat_ax.tick_params(labelsize=6)
        start = len(found["prompt_ids"]) - 0.5
        heat_ax.axhline(start, color="red", linewidth=0.8)
        heat_ax.axvline(start, color="red", linewidth=0.8)
        self._fig.tight_layout()
        prompt_text = _decode(self.tokenizer, found["prompt_ids"])
        self.last_text = found["text"]
        self.text.value = (
            f"<div style='font-family:monospace'>{html.escape(prompt_text)}"
            f"<b style='color:#b03060'>{html.escape(found['text'])}</b></div>"
        )
        self.last_png = _figure_png(self._fig)
        self.output.outputs = (
            _png_output(self.last_png, f"next-token distribution and attention ({self.mode.value})"),
        )

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def generation_explorer(model, tokenizer, prompt: str = "", eos_token_id: int | None = None, **settings):
    """The generation widget for a course GPT and its tokenizer; returns the ``ipywidgets.VBox``
    (its ``.explorer`` attribute is the :class:`GenerationExplorer` behind it)."""
    explorer = GenerationExplorer(model, tokenizer, prompt, eos_token_id=eos_token_id, **settings)
    explorer.widget.explorer = explorer
    return explorer.widget
