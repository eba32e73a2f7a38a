"""course_utils.layers.viz and attention_widgets: the plots draw what they are given, the widgets
respond, bad input is named."""

import base64

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import ipywidgets as widgets  # noqa: E402

from course_utils.layers import attention, attention_widgets, viz  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _weights(n_q=3, n_k=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n_q, n_k, generator=generator), dim=-1)


# ----------------------------------------------------------------------------- plot_attention


def test_plot_attention_draws_the_matrix_with_labels():
    w = _weights()
    ax = viz.plot_attention(w, query_labels=["a", "b", "c"], key_labels=["w", "x", "y", "z"], title="t")
    assert isinstance(ax, matplotlib.axes.Axes)
    image = ax.get_images()[0]
    np.testing.assert_allclose(image.get_array(), w.numpy(), rtol=1e-6)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["w", "x", "y", "z"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert ax.get_xlabel() == "key" and ax.get_ylabel() == "query" and ax.get_title() == "t"
    # small matrices are annotated with their values, rounded to 2 decimals
    assert sorted(t.get_text() for t in ax.texts) == sorted(f"{x:.2f}" for x in w.flatten().tolist())
    assert len(ax.figure.axes) == 2  # the heatmap and its colorbar


def test_plot_attention_accepts_numpy_and_draws_into_a_given_axes():
    fig, (left, right) = plt.subplots(1, 2)
    w = _weights(5, 6).numpy()
    ax = viz.plot_attention(w, ax=right, colorbar=False, annotate=False)
    assert ax is right and not left.get_images() and not ax.texts
    np.testing.assert_allclose(ax.get_images()[0].get_array(), w)


def test_plot_attention_highlights_the_query_row():
    ax = viz.plot_attention(_weights(), highlight_query=1)
    frames = [p for p in ax.patches if isinstance(p, matplotlib.patches.Rectangle)]
    assert len(frames) == 1
    assert frames[0].get_xy() == (-0.5, 0.5) and frames[0].get_height() == 1 and frames[0].get_width() == 4
    assert ax.get_yticklabels()[1].get_color() == "red"


def test_plot_attention_colour_range_defaults_and_overrides():
    w = _weights()
    assert viz.plot_attention(w).get_images()[0].get_clim() == pytest.approx((0.0, float(w.max())))
    assert viz.plot_attention(w, vmin=0, vmax=1).get_images()[0].get_clim() == (0, 1)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.rand(2, 3, 4), "weights must be 2-D (L_q, L_k), got shape (2, 3, 4). For one head"),
        (torch.rand(5), "weights must be 2-D (L_q, L_k), got shape (5,)"),
        (torch.rand(0, 3), "nothing to plot"),
    ],
)
def test_plot_attention_rejects_wrong_shapes(bad, message):
    with pytest.raises(ValueError) as err:
        viz.plot_attention(bad)
    assert message in str(err.value)


def test_plot_attention_rejects_mismatched_labels_and_rows():
    with pytest.raises(ValueError, match=r"key_labels has 3 labels but the matrix has 4 columns"):
        viz.plot_attention(_weights(), key_labels=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"highlight_query must be a row index in 0..2, got 3"):
        viz.plot_attention(_weights(), highlight_query=3)


# ----------------------------------------------------------------------------- plot_mask


def test_plot_mask_shows_true_as_filled():
    mask = attention.causal_mask(4)
    ax = viz.plot_mask(mask, title="causal")
    np.testing.assert_array_equal(ax.get_images()[0].get_array(), mask.numpy().astype(float))
    assert ax.get_title() == "causal"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["True: may attend", "False: masked"]


def test_plot_mask_drops_broadcast_axes_of_a_padding_mask():
    mask = attention.padding_mask([3, 1], max_len=4)  # (2, 1, 1, 4)
    ax = viz.plot_mask(mask[1])
    np.testing.assert_array_equal(ax.get_images()[0].get_array(), [[1.0, 0.0, 0.0, 0.0]])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["every query"]


def test_plot_mask_rejects_non_boolean_and_batched_masks():
    with pytest.raises(TypeError, match=r"plot_mask expects a boolean mask \(True = may attend\).*m.bool\(\)"):
        viz.plot_mask(torch.ones(3, 3))
    with pytest.raises(ValueError, match=r"pick one example \(and head\), e.g. mask\[0, 0\]"):
        viz.plot_mask(attention.padding_mask([3, 1], max_len=4) & attention.causal_mask(4))


# ----------------------------------------------------------------------------- plot_curves


def test_plot_curves_draws_each_curve_with_its_values():
    ax = viz.plot_curves({"train": [3.0, 2.0, 1.5], "dev": ([0, 2], [2.5, 1.8])}, ylabel="loss", title="c")
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_array_equal(lines["train"].get_xdata(), [0, 1, 2])
    np.testing.assert_array_equal(lines["train"].get_ydata(), [3.0, 2.0, 1.5])
    np.testing.assert_array_equal(lines["dev"].get_xdata(), [0, 2])
    assert ax.get_ylabel() == "loss" and ax.get_xlabel() == "step"


def test_plot_curves_smooths_with_a_trailing_mean():
    values = [1.0, 3.0, 5.0, 7.0, 9.0]
    ax = viz.plot_curves({"loss": values}, smooth=2)
    smoothed = [line for line in ax.get_lines() if line.get_label() == "loss (mean of 2)"][0]
    np.testing.assert_allclose(smoothed.get_ydata(), [1.0, 2.0, 4.0, 6.0, 8.0])


@pytest.mark.parametrize(
    "curves, kwargs, message",
    [
        ({}, {}, "curves must be a non-empty dict"),
        ({"loss": [[1, 2], [3, 4]]}, {}, "curve 'loss' must be a non-empty 1-D sequence"),
        ({"dev": ([0, 1, 2], [1.0, 2.0])}, {}, "curve 'dev' has 3 x values but 2 y values"),
        ({"loss": [1.0, 2.0]}, {"smooth": 0}, "smooth must be a whole number of points >= 1"),
    ],
)
def test_plot_curves_rejects_bad_input(curves, kwargs, message):
    with pytest.raises(ValueError) as err:
        viz.plot_curves(curves, **kwargs)
    assert message in str(err.value)


# ----------------------------------------------------------------------------- attention_viewer


def _png(output_widget):
    (shown,) = output_widget.outputs
    return base64.b64decode(shown["data"]["image/png"])


def test_attention_viewer_shows_the_selected_layer_head_and_query():
    attentions = [torch.softmax(torch.randn(3, 5, 5), dim=-1) for _ in range(2)]
    tokens = ["[CLS]", "the", "cat", "sat", "[SEP]"]
    box = attention_widgets.attention_viewer(attentions, tokens, title="toy")
    viewer = box.viewer
    assert isinstance(box, widgets.VBox)
    assert _png(viewer.output).startswith(b"\x89PNG") and _png(viewer.output) == viewer.last_png
    np.testing.assert_allclose(viewer.weights(), attentions[0][0].numpy())
    first = viewer.last_png
    viewer.layer.value, viewer.head.value = 1, 2
    np.testing.assert_allclose(viewer.weights(), attentions[1][2].numpy())
    assert viewer.last_png != first
    viewer.head.value = -1  # the average of the heads
    np.testing.assert_allclose(viewer.weights(), attentions[1].mean(dim=0).numpy(), rtol=1e-6)
    before = viewer.last_png
    viewer.query.value = 3
    assert viewer.last_png != before
    assert [label for label, _ in viewer.query.options][3] == "3: sat"
    assert len(viewer.head.options) == 4  # average + 3 heads
    assert plt.get_fignums() == []  # draws without pyplot: no figure left open


def test_attention_viewer_takes_transformers_style_outputs_and_callables():
    attentions = tuple(torch.softmax(torch.randn(1, 2, 3, 4), dim=-1) for _ in range(3))  # batch of one
    box = attention_widgets.attention_viewer(lambda: attentions, tokens=list("abcd"), query_tokens=list("xyz"))
    assert len(box.viewer.layers) == 3 and box.viewer.layers[0].shape == (2, 3, 4)
    assert [label for label, _ in box.viewer.query.options] == ["0: x", "1: y", "2: z"]


@pytest.mark.parametrize(
    "attentions, tokens, message",
    [
        ([torch.rand(2, 2, 3, 3)], list("abc"), "each layer must be (heads, L_q, L_k) for ONE example"),
        (
            [torch.rand(2, 3, 3), torch.rand(2, 4, 4)],
            list("abc"),
            "every layer must cover the same query and key tokens",
        ),
        ([torch.rand(2, 3, 3)], list("ab"), "tokens has 2 labels but the matrix has 3 keys"),
        ([], list("abc"), "attentions is empty"),
    ],
)
def test_attention_viewer_rejects_bad_input(attentions, tokens, message):
    with pytest.raises(ValueError) as err:
        attention_widgets.attention_viewer(attentions, tokens)
    assert message in str(err.value)


# ----------------------------------------------------------------------------- attention_explorer


def test_attention_explorer_computes_with_the_package_attention():
    box = attention_widgets.attention_explorer(temperature=0.5, length=5, d_k=8, mask_type="causal", seed=3)
    explorer = box.explorer
    weights, mask, tokens = explorer.compute()
    q, k = attention_widgets.explorer_inputs(5, 8, 3)
    want = torch.softmax((q @ k.T / (8**0.5 * 0.5)).masked_fill(~torch.ones(5, 5).tril().bool(), float("-inf")), -1)
    torch.testing.assert_close(weights, want)
    assert torch.equal(mask, attention.causal_mask(5)) and len(tokens) == 5
    assert "course-attention-explorer" in explorer.output._dom_classes
    assert _png(explorer.output).startswith(b"\x89PNG")


def test_attention_explorer_redraws_when_a_control_moves():
    explorer = attention_widgets.attention_explorer().explorer
    seen = {explorer.last_png}
    for control, value in (
        (explorer.temperature, 3.0),
        (explorer.mask_type, "both"),
        (explorer.length, 9),
        (explorer.scaled, False),
        (explorer.d_k, 256),
        (explorer.seed, 5),
    ):
        control.value = value
        assert explorer.last_png not in seen, f"no new picture after changing {control.description}"
        seen.add(explorer.last_png)
    weights, mask, tokens = explorer.compute()
    assert tokens[-3:] == ["[PAD]"] * 3  # length 9: the last third is padding
    assert (weights[~mask] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(9))


def test_attention_explorer_temperature_sharpens_and_flattens():
    explorer = attention_widgets.attention_explorer(length=8).explorer
    explorer.temperature.value = 0.1
    sharp = explorer.compute()[0].max(dim=-1).values.mean()
    explorer.temperature.value = 10.0
    flat = explorer.compute()[0]
    assert sharp > 0.9
    torch.testing.assert_close(flat, torch.full((8, 8), 1 / 8), atol=0.05, rtol=0)


def test_attention_explorer_rejects_unknown_mask_type():
    with pytest.raises(
        ValueError, match=r"mask_type must be one of \('none', 'padding', 'causal', 'both'\), got 'future'"
    ):
        attention_widgets.attention_explorer(mask_type="future")


def test_attention_explorer_masked_cells_show_only_the_cross():
    explorer = attention_widgets.attention_explorer(length=6, mask_type="causal").explorer
    texts = [t.get_text() for t in explorer._heat_ax.texts]
    weights, mask, _ = explorer.compute()
    numbers, crosses = texts[:36], texts[36:]
    assert crosses == ["×"] * int((~mask).sum())  # one grey cross per masked cell
    for value, ok, text in zip(weights.flatten().tolist(), mask.flatten().tolist(), numbers):
        assert text == (f"{value:.2f}" if ok else ""), "a masked cell must not print a weight under its ×"


def test_attention_explorer_title_says_whether_scores_are_scaled_and_that_vectors_are_random():
    explorer = attention_widgets.attention_explorer(d_k=64).explorer
    assert "softmax(q·k / (√d_k·T))" in explorer._heat_ax.get_title() and "NOT" not in explorer._heat_ax.get_title()
    explorer.scaled.value = False
    title = explorer._heat_ax.get_title()
    assert "NOT divided by √d_k" in title and "d_k=64" in title
    assert "random q, k" in title and "only label positions" in title
