"""Chapter 00 exercises: seeds, modes and widgets, by debugging and predicting.

Every check compares with an independent computation (the generator re-seeded by hand, a real
ipywidgets slider); each typical mistake has its own message, and the tests prove it.
"""

from __future__ import annotations

import torch

from . import Mistake, choice, exercise, given_function, numeric

# ----------------------------------------------------------------------------- 00.reproducible_sample

_SAMPLE_GIVEN = """
def sample(seed):
    numbers = torch.rand(3)
    config.set_seed(seed)
    return numbers
"""


def _sample_namespace() -> dict:
    from course_utils import config

    return {"torch": torch, "config": config}


def _reproducible_sample_reference(seed: int) -> torch.Tensor:
    from course_utils import config

    config.set_seed(seed)
    return torch.rand(3)


def _reproducible_sample_mistakes():
    from course_utils import config

    def never_seeded(seed):
        return torch.rand(3)

    def seeded_with_zero(seed):
        config.set_seed(0)
        return torch.rand(3)

    def python_random(seed):
        import random

        random.seed(seed)
        return [random.random() for _ in range(3)]

    return [
        Mistake(
            given_function(_SAMPLE_GIVEN, "sample", "00.reproducible_sample", _sample_namespace()),
            "you draw before you seed",
        ),
        Mistake(never_seeded, "nothing seeds the generator"),
        Mistake(seeded_with_zero, "use the seed you are given"),
        Mistake(python_random, "return torch.rand(3)"),
    ]


@exercise(
    "00.reproducible_sample",
    "Debug: a draw that does not repeat",
    "sample(seed) below should return the same three random numbers every time it is called with the same "
    "seed, and different numbers for a different seed. It does not. Run it twice with seed 7, find out why, "
    "and fix it.",
    reference=_reproducible_sample_reference,
    mistakes=_reproducible_sample_mistakes,
    kind="debug",
    given=_SAMPLE_GIVEN,
    section="Fast and full mode (Seeds)",
    minutes=4,
)
def check_reproducible_sample(fn) -> None:
    from course_utils import config

    torch.manual_seed(12345)  # whatever state the generator was left in
    first, again = fn(7), fn(7)
    assert isinstance(first, torch.Tensor) and first.shape == (3,), "return torch.rand(3): a tensor of shape (3,)"
    config.set_seed(7)
    seeded = torch.rand(3)
    if not torch.equal(first, again):
        assert not torch.equal(again, seeded), (
            "the second call gives the seeded numbers, the first does not: you draw before you seed, so each "
            "call returns numbers from whatever state the generator was left in. Seed first, then draw"
        )
        raise AssertionError(
            "sample(7) gave different numbers twice: nothing seeds the generator before the "
            "draw; call config.set_seed(seed) first"
        )
    assert not torch.equal(fn(7), fn(8)), "sample(7) and sample(8) are equal: use the seed you are given"
    assert torch.equal(first, seeded), "sample(7) should equal config.set_seed(7) followed by torch.rand(3)"


# ----------------------------------------------------------------------------- 00.linked_widgets

_WIDGETS_GIVEN = """
def make_widgets():
    slider = widgets.IntSlider(value=4, min=1, max=12, description="heads")
    label = widgets.Label(value=f"heads = {slider.value}")

    def update(change):
        label.value = f"heads = {change['old']}"

    return slider, label
"""


def _widgets_namespace() -> dict:
    import ipywidgets as widgets

    return {"widgets": widgets}


def _linked_widgets_reference():
    import ipywidgets as widgets

    slider = widgets.IntSlider(value=4, min=1, max=12, description="heads")
    label = widgets.Label(value=f"heads = {slider.value}")

    def update(change):
        label.value = f"heads = {change['new']}"

    slider.observe(update, names="value")
    return slider, label


def _linked_widgets_mistakes():
    import ipywidgets as widgets

    def observed_old_value():
        slider = widgets.IntSlider(value=4, min=1, max=12, description="heads")
        label = widgets.Label(value="heads = 4")
        slider.observe(lambda change: setattr(label, "value", f"heads = {change['old']}"), names="value")
        return slider, label

    def wrong_range():
        slider = widgets.IntSlider(value=4, min=0, max=10, description="heads")
        label = widgets.Label(value="heads = 4")
        slider.observe(lambda change: setattr(label, "value", f"heads = {change['new']}"), names="value")
        return slider, label

    return [
        Mistake(
            given_function(_WIDGETS_GIVEN, "make_widgets", "00.linked_widgets", _widgets_namespace()),
            "nothing calls update",
        ),
        Mistake(observed_old_value, "change['old'] is the value before the move"),
        Mistake(wrong_range, "it should run 1..12"),
    ]


@exercise(
    "00.linked_widgets",
    "Debug: a label that does not follow its slider",
    "make_widgets() below should return (slider, label): an IntSlider from 1 to 12 starting at 4, and a Label "
    "reading 'heads = N' for the slider's current value N, updated whenever the slider moves. Move the slider "
    "(or set slider.value = 9 in code): the label does not follow. Fix it (there are two bugs).",
    reference=_linked_widgets_reference,
    mistakes=_linked_widgets_mistakes,
    kind="debug",
    given=_WIDGETS_GIVEN,
    section="How widgets work",
    minutes=5,
)
def check_linked_widgets(fn) -> None:
    import ipywidgets as widgets

    made = fn()
    assert isinstance(made, tuple) and len(made) == 2, "return a pair (slider, label)"
    slider, label = made
    assert isinstance(slider, widgets.IntSlider), f"the first item should be an IntSlider, got {type(slider).__name__}"
    assert isinstance(label, widgets.Label), f"the second item should be a Label, got {type(label).__name__}"
    assert (slider.min, slider.max, slider.value) == (1, 12, 4), (
        f"the slider runs {slider.min}..{slider.max} starting at {slider.value}; it should run 1..12 starting at 4"
    )
    assert label.value == "heads = 4", f"the label reads {label.value!r} at first; it should read 'heads = 4'"
    slider.value = 9
    slider.value = 11
    assert label.value != "heads = 4", (
        "after moving the slider to 9, then 11, the label still reads 'heads = 4': nothing calls update; "
        "register it with slider.observe(update, names='value')"
    )
    assert label.value != "heads = 9", (
        "after moving the slider to 9, then 11, the label reads 'heads = 9': change['old'] is the value before "
        "the move, change['new'] the value after it"
    )
    assert label.value == "heads = 11", f"after moving the slider to 9, then 11, the label reads {label.value!r}"


# ----------------------------------------------------------------------------- 00.seed_draws

choice(
    "00.seed_draws",
    "Two draws after one seed",
    "You run: config.set_seed(0); a = torch.rand(3); b = torch.rand(3). Which is true?",
    options={
        "a": "a and b are equal: the same seed gives the same numbers.",
        "b": "a and b differ, but running the three statements again gives the same a and the same b.",
        "c": "a and b differ, and running the three statements again gives a new a and a new b.",
        "d": "a and b are equal on a GPU and differ on a CPU.",
    },
    correct="b",
    why="The seed sets where the generator starts; every draw moves it on, so b continues the sequence that a "
    "began. Re-seeding puts it back at the start: the same a, then the same b.",
    why_not={
        "a": "the seed fixes the start of the sequence, not every draw: the second draw continues from where the "
        "first left off, so b is the next three numbers, not a again.",
        "c": "that would make seeds useless: re-seeding with 0 restarts the same sequence, so a and b repeat.",
        "d": "a CPU and a GPU have their own generators, but on either one a draw advances it: a and b differ on both.",
    },
    section="Fast and full mode (Seeds)",
    minutes=2,
)


# ----------------------------------------------------------------------------- 00.pick_on_gpu


def _pick_on_gpu_reference() -> float:
    # config.pick: the fast value whenever the mode is fast; gpu only for the full mode on CUDA
    return 32


numeric(
    "00.pick_on_gpu",
    "Predict: which size does a fast run on a GPU get?",
    "A chapter runs with fast=True on a machine with a CUDA GPU. Predict what "
    "config.pick(fast=32, full=256, gpu=512) returns there (answer with the number).",
    reference=_pick_on_gpu_reference,
    tolerance=0,
    mistakes=[
        Mistake(512, "the gpu value is used only in the full mode: with fast=True every machine gets the fast value"),
        Mistake(256, "the full value is for the full mode: fast=True picks the fast value"),
    ],
    hint="the mode decides first; the device matters only after that",
    section="Fast and full mode",
    minutes=2,
    explanation="Fast mode means tiny sizes everywhere, so the automatic tests take the same path on any machine; "
    "gpu= refines only the full mode.",
)


# ----------------------------------------------------------------------------- 00.observe_count


def _observe_count_reference() -> int:
    # 4 -> 4: no change; 4 -> 6: a change; 6 -> 6: none; 30 is clamped to max=12: 6 -> 12 is a change
    return 2


numeric(
    "00.observe_count",
    "Predict: how often does the callback run?",
    "slider = widgets.IntSlider(value=4, min=1, max=12); slider.observe(callback, names='value'). Then: "
    "slider.value = 4; slider.value = 6; slider.value = 6; slider.value = 30. How many times does callback run?",
    reference=_observe_count_reference,
    tolerance=0,
    mistakes=[
        Mistake(
            4, "observe runs only when the value changes: setting 4 when it is 4, or 6 when it is 6, calls nothing"
        ),
        Mistake(3, "setting the value a widget already has is not a change (4 -> 4, 6 -> 6)"),
        Mistake(1, "30 is clamped to max=12, and 12 differs from 6: that is a change too"),
    ],
    hint="a callback observing 'value' runs on a change of value, after the slider has clamped it to its range",
    section="How widgets work",
    minutes=3,
)
