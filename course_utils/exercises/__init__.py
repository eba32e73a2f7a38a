"""Exercises with checks: each chapter's exercises live in ``exercises/chNN.py``.

In a notebook::

    from course_utils import exercises
    exercises.show("01.causal_mask")          # the task
    exercises.check("01.causal_mask", my_fn)  # prints a verdict, returns True/False
    exercises.solution("01.causal_mask")      # reveals the reference solution

A check never raises on a wrong answer (so a half-done exercise doesn't stop
"run all"); it prints what is wrong and returns False. An answer left as
``None`` or ``...`` counts as "not tried yet".
"""
from __future__ import annotations

import importlib
import inspect
import textwrap
from dataclasses import dataclass
from typing import Any, Callable

_REGISTRY: dict[str, "Exercise"] = {}
_CHAPTER_MODULES = ("ch00", "ch01", "ch02", "ch03", "ch04", "ch05")


@dataclass
class Exercise:
    key: str                            # "01.causal_mask"
    title: str
    task: str                           # what to do, in a sentence or three
    checker: Callable[[Any], None]      # raises AssertionError with a hint when wrong
    reference: Callable[..., Any]       # the solution: a function, or a function returning the answer
    answer_is_function: bool = True     # False: the answer is reference()'s return value
    wrong: Callable[[], list] | None = None  # typical mistakes; the tests prove each one fails

    def solution_source(self) -> str:
        return textwrap.dedent(inspect.getsource(self.reference))


def exercise(key: str, title: str, task: str, reference: Callable, answer_is_function: bool = True,
             wrong: Callable[[], list] | None = None):
    """Decorator for a checker: registers the exercise under ``key``.

    ``wrong`` returns a list of typical wrong answers (same form as the right one);
    the test suite checks that the checker rejects every one of them.
    """
    def register(checker: Callable[[Any], None]) -> Callable[[Any], None]:
        if key in _REGISTRY:
            raise ValueError(f"exercise {key!r} is registered twice")
        _REGISTRY[key] = Exercise(key, title, task, checker, reference, answer_is_function, wrong)
        return checker
    return register


def _load_all() -> None:
    for name in _CHAPTER_MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise


def get(key: str) -> Exercise:
    _load_all()
    if key not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise KeyError(f"no exercise {key!r}; known exercises: {known}")
    return _REGISTRY[key]


def keys(chapter: str | None = None) -> list[str]:
    """Every exercise key, or those of one chapter (``"01"``)."""
    _load_all()
    return sorted(k for k in _REGISTRY if chapter is None or k.startswith(f"{chapter}."))


def show(key: str) -> None:
    ex = get(key)
    print(f"Exercise {ex.key}: {ex.title}\n{textwrap.fill(ex.task, 88)}")


def verdict(key: str, answer: Any) -> tuple[bool, str]:
    """(passed, message) without printing; what the tests use."""
    ex = get(key)
    if answer is None or answer is Ellipsis:
        return False, "not tried yet: replace the placeholder with your answer and run the cell again."
    try:
        ex.checker(answer)
    except AssertionError as err:
        return False, f"not yet: {err}"
    except Exception as err:  # the learner's code crashed: show why, not a traceback
        return False, f"your answer raised {type(err).__name__}: {err}"
    return True, "correct!"


def check(key: str, answer: Any) -> bool:
    """Check a learner's answer; prints a one-line verdict and returns True when it is right."""
    passed, message = verdict(key, answer)
    print(("✅ " if passed else "❌ ") + f"{key}: {message}")
    return passed


def solution(key: str) -> None:
    """Show the reference solution's source (a learner reveals it when stuck)."""
    ex = get(key)
    try:
        from IPython.display import Markdown, display
        display(Markdown(f"**Solution to {ex.key}**\n\n```python\n{ex.solution_source()}```"))
    except ImportError:
        print(ex.solution_source())


def reference_answer(key: str) -> Any:
    """The answer the reference solution gives: a function, or the value it returns."""
    ex = get(key)
    return ex.reference if ex.answer_is_function else ex.reference()
