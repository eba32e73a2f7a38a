"""Every registered exercise, whichever chapters exist when the tests are collected:
the reference answer passes, each recorded typical mistake fails, a placeholder is
"not tried", and an answer that crashes gives a message instead of an exception."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from course_utils import exercises

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KEYS = exercises.keys()
WRONG = [(key, i, answer) for key in KEYS if exercises.get(key).wrong
         for i, answer in enumerate(exercises.get(key).wrong())]
CHAPTERS_WITH_NOTEBOOK = sorted({p.name[:2] for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")})
MIN_EXERCISES = {"00": 1}  # the setup chapter may have fewer than the usual four


def test_some_exercises_are_registered():
    assert KEYS, "no exercise is registered: course_utils/exercises/chNN.py modules define them"


@pytest.mark.parametrize("key", KEYS)
def test_key_names_its_chapter(key):
    chapter, _, name = key.partition(".")
    assert re.fullmatch(r"\d\d", chapter) and re.fullmatch(r"[a-z0-9_]+", name), (
        f"exercise key {key!r} should look like 'NN.snake_case_name'")
    assert exercises.keys(chapter).count(key) == 1


@pytest.mark.parametrize("key", KEYS)
def test_reference_answer_passes(key):
    passed, message = exercises.verdict(key, exercises.reference_answer(key))
    assert passed, f"{key}: the reference solution fails its own check: {message}"


@pytest.mark.parametrize("key", KEYS)
def test_typical_mistakes_are_recorded(key):
    ex = exercises.get(key)
    assert ex.wrong is not None and len(ex.wrong()) >= 1, (
        f"{key}: give @exercise(..., wrong=...) at least one typical wrong answer, so the test proves "
        "the check can tell right from wrong")


@pytest.mark.parametrize("key,index,answer", WRONG, ids=[f"{k}-wrong{i}" for k, i, _ in WRONG])
def test_wrong_answer_fails_with_a_hint(key, index, answer):
    passed, message = exercises.verdict(key, answer)
    assert not passed, f"{key}: wrong answer #{index} passes the check"
    assert message.startswith(("not yet: ", "your answer raised ")) and len(message) > len("not yet: ") + 5, (
        f"{key}: wrong answer #{index} gives no hint: {message!r}")


@pytest.mark.parametrize("placeholder", [None, ...], ids=["None", "Ellipsis"])
@pytest.mark.parametrize("key", KEYS)
def test_placeholder_is_not_tried(key, placeholder):
    passed, message = exercises.verdict(key, placeholder)
    assert not passed and message.startswith("not tried yet")


@pytest.mark.parametrize("key", KEYS)
def test_crashing_answer_gives_a_message(key):
    if exercises.get(key).answer_is_function:
        def crashing(*args, **kwargs):
            raise RuntimeError("boom from the learner's code")
        passed, message = exercises.verdict(key, crashing)
        assert not passed
        assert message == "your answer raised RuntimeError: boom from the learner's code"
    else:  # a value answer of the wrong kind: the check may fail or crash, never raise
        passed, message = exercises.verdict(key, object())
        assert not passed and message.startswith(("not yet: ", "your answer raised "))


@pytest.mark.parametrize("key", KEYS)
def test_show_check_and_solution_print(key, capsys):
    exercises.show(key)
    assert f"Exercise {key}: {exercises.get(key).title}" in capsys.readouterr().out
    assert exercises.check(key, exercises.reference_answer(key)) is True
    assert capsys.readouterr().out.startswith(f"✅ {key}: correct!")
    assert exercises.check(key, None) is False
    assert capsys.readouterr().out.startswith(f"❌ {key}: not tried yet")
    assert "def " in exercises.get(key).solution_source()


@pytest.mark.parametrize("chapter", CHAPTERS_WITH_NOTEBOOK)
def test_chapter_with_notebook_has_enough_exercises(chapter):
    want = MIN_EXERCISES.get(chapter, 4)
    have = exercises.keys(chapter)
    assert len(have) >= want, f"chapter {chapter} has {len(have)} exercises ({have}); it needs at least {want}"


def test_unknown_key_lists_known_ones():
    with pytest.raises(KeyError, match=r"no exercise '99.nothing'; known exercises: .*" + re.escape(KEYS[0])):
        exercises.get("99.nothing")


def test_registering_a_key_twice_is_refused():
    key = "99.test_only_duplicate"
    register = exercises.exercise(key, "t", "task", reference=lambda: None)
    try:
        register(lambda answer: None)
        with pytest.raises(ValueError, match="exercise '99.test_only_duplicate' is registered twice"):
            exercises.exercise(key, "t", "task", reference=lambda: None)(lambda answer: None)
    finally:
        exercises._REGISTRY.pop(key, None)
