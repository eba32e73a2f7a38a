"""Static plots of attention, masks and training curves (each returns a matplotlib ``Axes`` and
draws into ``ax`` when given one).

* :func:`plot_attention` -- a (L_q, L_k) weight matrix as a heatmap, keys on x, queries on y.
* :func:`plot_mask` -- a boolean mask (True = may attend) as a two-colour grid.
* :func:`plot_curves` -- loss / accuracy curves, optionally smoothed.

The interactive viewers built on :func:`plot_attention` are in
:mod:`course_utils.layers.attention_widgets`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

# ----------------------------------------------------------------------------- helpers


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """A float or bool numpy array from a torch tensor, numpy array or nested list."""
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu()
            return x.numpy() if x.dtype == torch.bool else x.float().numpy()
    except ImportError:  # pragma: no cover - torch is a course requirement
        pass
    try:
        arr = np.asarray(x)
    except Exception as err:  # ragged lists and the like
        raise TypeError(f"{name} must be a torch tensor, a numpy array or a nested list of numbers: {err}") from None
    if arr.dtype == object:
        raise TypeError(f"{name} must be numeric (a tensor or array of numbers), got an array of Python objects")
    return arr


def _labels(labels: Sequence[Any] | None, size: int, name: str, axis: str) -> list[str] | None:
    if labels is None:
        return None
    labels = [str(t) for t in labels]
    if len(labels) != size:
        raise ValueError(
            f"{name} has {len(labels)} labels but the matrix has {size} {axis}; give one label per {axis[:-1]}."
        )
    return labels


def _rotation(labels: list[str] | None) -> int:
    """Upright x tick labels when they are short, vertical when they would collide."""
    return 90 if labels and max(len(t) for t in labels) > 2 else 0


def _new_axes(n_rows: int, n_cols: int, extra_width: float = 1.0):
    import matplotlib.pyplot as plt

    width = min(9.0, 1.6 + 0.42 * n_cols + extra_width)
    height = min(7.0, 1.2 + 0.38 * n_rows)
    _, ax = plt.subplots(figsize=(max(3.0, width), max(2.2, height)))
    return ax


# ----------------------------------------------------------------------------- static plots


def plot_attention(
    weights,
    query_labels: Sequence[Any] | None = None,
    key_labels: Sequence[Any] | None = None,
    ax=None,
    title: str | None = None,
    highlight_query: int | None = None,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    annotate: bool | None = None,
    colorbar: bool = True,
):
    """Heatmap of attention weights: row i is what query i attends to, keys along x.

    weights: (L_q, L_k) torch tensor or numpy array (for one head of a (batch, heads, L_q, L_k)
    tensor pass ``w[0, head]``). ``highlight_query`` frames one query's row. ``annotate`` writes
    each weight into its cell (default: when the matrix has at most 64 cells). Colours run from
    ``vmin`` (default 0, or the minimum if negative) to ``vmax`` (default the maximum).
    Returns the matplotlib Axes.
    """
    w = _to_numpy(weights, "weights")
    if w.ndim != 2:
        hint = " For one head of a (batch, heads, L_q, L_k) tensor pass weights[0, head]." if w.ndim > 2 else ""
        raise ValueError(f"weights must be 2-D (L_q, L_k), got shape {tuple(w.shape)}.{hint}")
    if w.shape[0] == 0 or w.shape[1] == 0:
        raise ValueError(f"weights has shape {tuple(w.shape)}: there is nothing to plot")
    w = w.astype(float)
    n_q, n_k = w.shape
    q_labels = _labels(query_labels, n_q, "query_labels", "rows")
    k_labels = _labels(key_labels, n_k, "key_labels", "columns")
    if highlight_query is not None:
        if not isinstance(highlight_query, (int, np.integer)) or not -n_q <= highlight_query < n_q:
            raise ValueError(f"highlight_query must be a row index in 0..{n_q - 1}, got {highlight_query!r}")
        highlight_query = int(highlight_query) % n_q
    finite = w[np.isfinite(w)]
    if vmin is None:
        vmin = min(0.0, float(finite.min())) if finite.size else 0.0
    if vmax is None:
        vmax = float(finite.max()) if finite.size else 1.0
        vmax = vmax if vmax > vmin else vmin + 1e-9
    if ax is None:
        ax = _new_axes(n_q, n_k)
    image = ax.imshow(w, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    ax.set_xticks(range(n_k))
    ax.set_yticks(range(n_q))
    ax.set_xticklabels(k_labels if k_labels is not None else range(n_k), rotation=_rotation(k_labels))
    ax.set_yticklabels(q_labels if q_labels is not None else range(n_q))
    if annotate is None:
        annotate = n_q * n_k <= 64
    if annotate:
        middle = (vmin + vmax) / 2
        for i in range(n_q):
            for j in range(n_k):
                ax.text(
                    j,
                    i,
                    f"{w[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="black" if w[i, j] > middle else "white",
                )
    if highlight_query is not None:
        from matplotlib.patches import Rectangle

        ax.add_patch(Rectangle((-0.5, highlight_query - 0.5), n_k, 1, fill=False, edgecolor="red", linewidth=2.2))
        ax.get_yticklabels()[highlight_query].set_color("red")
        ax.get_yticklabels()[highlight_query].set_fontweight("bold")
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    if title:
        ax.set_title(title)
    return ax


def _mask_2d(mask) -> np.ndarray:
    m = _to_numpy(mask, "mask")
    if m.dtype != bool:
        raise TypeError(
            f"mask has dtype {m.dtype}; plot_mask expects a boolean mask (True = may attend). "
            "For a 0/1 tensor m pass m.bool() (torch) or m.astype(bool) (numpy)."
        )
    while m.ndim > 2 and m.shape[0] == 1:  # e.g. padding_mask(...)[0] is (1, 1, L_k)
        m = m[0]
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2:
        raise ValueError(
            f"mask must be 2-D (L_q, L_k) after dropping leading size-1 axes, got shape {tuple(m.shape)}; "
            "pick one example (and head), e.g. mask[0, 0]."
        )
    return m


def plot_mask(
    mask,
    query_labels: Sequence[Any] | None = None,
    key_labels: Sequence[Any] | None = None,
    ax=None,
    title: str | None = None,
):
    """A boolean attention mask as a grid: filled = may attend (True), blank = masked out (False).

    mask: (L_q, L_k), or a broadcastable mask with leading size-1 axes such as
    ``padding_mask(lengths)[b]`` of shape (1, 1, L_k) (shown as a single row). Returns the Axes.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    m = _mask_2d(mask)
    n_q, n_k = m.shape
    if n_q == 1 and query_labels is None:  # a mask that broadcasts over the queries
        query_labels = ["every query"]
    q_labels = _labels(query_labels, n_q, "query_labels", "rows")
    k_labels = _labels(key_labels, n_k, "key_labels", "columns")
    if ax is None:
        ax = _new_axes(n_q, n_k, extra_width=0.0)
    ax.imshow(
        m.astype(float),
        cmap=ListedColormap(["#f3f3f3", "#2a6fb0"]),
        vmin=0,
        vmax=1,
        aspect="auto",
        interpolation="nearest",
    )
    ax.set_xticks(np.arange(-0.5, n_k, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, n_q, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    ax.set_xticks(range(n_k))
    ax.set_yticks(range(n_q))
    ax.set_xticklabels(k_labels if k_labels is not None else range(n_k), rotation=_rotation(k_labels))
    ax.set_yticklabels(q_labels if q_labels is not None else range(n_q))
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    ax.legend(
        handles=[
            Patch(color="#2a6fb0", label="True: may attend"),
            Patch(facecolor="#f3f3f3", edgecolor="#999999", label="False: masked"),
        ],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        frameon=False,
    )
    if title:
        ax.set_title(title)
    return ax


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` points (same length as the input)."""
    cumsum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    start = np.maximum(idx - window, 0)
    return (cumsum[idx] - cumsum[start]) / (idx - start)


def plot_curves(
    curves: Mapping[str, Any],
    xlabel: str = "step",
    ylabel: str | None = None,
    ax=None,
    title: str | None = None,
    smooth: int = 1,
    logy: bool = False,
):
    """Line plot of named curves, e.g. ``{"train loss": losses, "dev loss": dev_losses}``.

    Each value is a sequence of numbers (x = 0, 1, 2, ...) or a pair ``(xs, ys)`` (e.g. dev
    loss measured every 100 steps). ``smooth`` > 1 draws the trailing moving average over that
    many points, with the raw curve faint behind it. Returns the Axes.
    """
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("curves must be a non-empty dict mapping a name to its values, e.g. {'train loss': losses}")
    if not isinstance(smooth, (int, np.integer)) or smooth < 1:
        raise ValueError(f"smooth must be a whole number of points >= 1 (1 = no smoothing), got {smooth!r}")
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(5.5, 3.2))
    for name, values in curves.items():
        if isinstance(values, tuple) and len(values) == 2 and np.ndim(values[0]) == 1 and np.ndim(values[1]) == 1:
            xs, ys = _to_numpy(values[0], f"x values of {name!r}"), _to_numpy(values[1], f"curve {name!r}")
        else:
            ys = _to_numpy(values, f"curve {name!r}")
            xs = np.arange(len(ys)) if ys.ndim == 1 else None
        if ys.ndim != 1 or len(ys) == 0:
            raise ValueError(f"curve {name!r} must be a non-empty 1-D sequence of numbers, got shape {tuple(ys.shape)}")
        if len(xs) != len(ys):
            raise ValueError(f"curve {name!r} has {len(xs)} x values but {len(ys)} y values")
        ys = ys.astype(float)
        if smooth > 1 and len(ys) > smooth:
            (line,) = ax.plot(xs, ys, alpha=0.25, linewidth=1)
            ax.plot(xs, _moving_average(ys, int(smooth)), color=line.get_color(), label=f"{name} (mean of {smooth})")
        else:
            ax.plot(xs, ys, label=name, marker="o" if len(ys) <= 20 else None, markersize=3)
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax
