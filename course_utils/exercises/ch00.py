"""Chapter 00 exercises: a repeatable random draw, and two widgets wired together."""
from __future__ import annotations

import torch

from . import exercise


# ----------------------------------------------------------------------------- 00.reproducible_sample

def _reproducible_sample_reference(seed: int) -> torch.Tensor:
    from course_utils import config
    config.set_seed(seed)
    return torch.rand(3)


def _reproducible_sample_wrong():
    from course_utils import config

    def seeded_once_with_zero(seed):
        config.set_seed(0)
        return torch.rand(3)

    return [lambda seed: torch.rand(3), seeded_once_with_zero]


@exercise(
    "00.reproducible_sample", "A repeatable random draw",
    "Write sample(seed) that seeds everything with config.set_seed(seed) and then returns torch.rand(3). "
    "Calling it twice with the same seed must give the same numbers; different seeds, different numbers.",
    reference=_reproducible_sample_reference, wrong=_reproducible_sample_wrong)
def check_reproducible_sample(fn) -> None:
    from course_utils import config
    first, again = fn(7), fn(7)
    assert isinstance(first, torch.Tensor) and first.shape == (3,), "return torch.rand(3): a tensor of shape (3,)"
    assert torch.equal(first, again), "sample(7) gave different numbers twice: seed right before drawing"
    assert not torch.equal(fn(7), fn(8)), "sample(7) and sample(8) are equal: use the seed you are given"
    config.set_seed(7)
    assert torch.equal(first, torch.rand(3)), "sample(7) should equal config.set_seed(7) followed by torch.rand(3)"


# ----------------------------------------------------------------------------- 00.linked_widgets

def _linked_widgets_reference():
    import ipywidgets as widgets
    slider = widgets.IntSlider(value=4, min=1, max=12, description="heads")
    label = widgets.Label(value=f"heads = {slider.value}")

    def update(change):
        label.value = f"heads = {change['new']}"

    slider.observe(update, names="value")
    return slider, label


def _linked_widgets_wrong():
    import ipywidgets as widgets

    def not_linked():
        slider = widgets.IntSlider(value=4, min=1, max=12, description="heads")
        return slider, widgets.Label(value="heads = 4")

    def wrong_range():
        slider = widgets.IntSlider(value=4, min=0, max=10, description="heads")
        label = widgets.Label(value="heads = 4")
        slider.observe(lambda c: setattr(label, "value", f"heads = {c['new']}"), names="value")
        return slider, label

    return [not_linked, wrong_range]


@exercise(
    "00.linked_widgets", "Two widgets wired together",
    "Write make_widgets() returning (slider, label): an ipywidgets.IntSlider from 1 to 12 starting at 4, "
    "described 'heads', and an ipywidgets.Label reading 'heads = 4' that changes to 'heads = N' "
    "whenever the slider moves to N (use slider.observe(callback, names='value')).",
    reference=_linked_widgets_reference, wrong=_linked_widgets_wrong)
def check_linked_widgets(fn) -> None:
    import ipywidgets as widgets
    made = fn()
    assert isinstance(made, tuple) and len(made) == 2, "return a pair (slider, label)"
    slider, label = made
    assert isinstance(slider, widgets.IntSlider), f"the first item should be an IntSlider, got {type(slider).__name__}"
    assert isinstance(label, widgets.Label), f"the second item should be a Label, got {type(label).__name__}"
    assert (slider.min, slider.max, slider.value) == (1, 12, 4), (
        f"the slider runs {slider.min}..{slider.max} starting at {slider.value}; it should run 1..12 starting at 4")
    assert label.value == "heads = 4", f"the label reads {label.value!r} at first; it should read 'heads = 4'"
    slider.value = 9
    assert label.value == "heads = 9", (
        f"after moving the slider to 9 the label reads {label.value!r}: connect them with slider.observe")
