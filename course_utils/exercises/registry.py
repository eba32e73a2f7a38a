"""The exercise registry: what an exercise is (:class:`Exercise`, with its typical mistakes, each a
:class:`Mistake`), the :func:`exercise` decorator that registers one under its key,
:func:`given_function` for a debug exercise's broken code, and the lookup (:func:`get`,
:func:`keys`), which first imports every chapter's ``chNN`` module so that all their exercises
are registered, in the order they are written.
"""

from __future__ import annotations

import contextvars
import importlib
import inspect
import math
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .rules import Rule, forbid

_REGISTRY: dict[str, Exercise] = {}
_PACKAGE = __name__.rpartition(".")[0]  # course_utils.exercises, where the chapters' modules live
_CHAPTER_MODULES = ("ch00", "ch01", "ch02", "ch03", "ch04", "ch05", "ch06", "ch07", "ch08", "ch09")
KINDS = ("retype", "predict", "modify", "debug", "conceptual")
# the exercise being checked: expect_same and numeric read its mistakes
_CURRENT: contextvars.ContextVar[Exercise | None] = contextvars.ContextVar("exercise", default=None)


@dataclass(frozen=True)
class Mistake:
    """A typical wrong answer and the message that diagnoses it (the verdict must contain ``says``)."""

    answer: Any
    says: str

    def __post_init__(self):
        if not isinstance(self.says, str) or len(self.says.strip()) < 3:
            raise ValueError(f"a Mistake needs its diagnosing message (says=...), got {self.says!r}")


@dataclass
class Exercise:
    key: str  # "01.causal_mask"
    title: str
    task: str  # what to do, in a sentence or three
    checker: Callable[[Any], None]  # raises AssertionError with a hint when wrong
    reference: Callable[..., Any]  # the solution: a function, or a function returning the answer
    answer_is_function: bool = True  # False: the answer is reference()'s return value
    wrong: Callable[[], list] | None = None  # typical mistakes (Mistake, or bare answers in old modules)
    kind: str = "retype"
    rules: tuple[Rule, ...] = ()
    section: str = ""  # the chapter section it draws on
    minutes: int = 5
    explanation: str = ""  # shown with the solution (and after a right choice)
    options: dict[str, str] = field(default_factory=dict)  # multiple choice: letter -> hypothesis
    solution_text_override: str | None = None
    given: str = ""  # code the learner starts from (a broken function to debug)

    def mistakes(self) -> list[Mistake]:
        """The typical mistakes; bare wrong answers (older modules) get an empty message."""
        listed = self.wrong() if callable(self.wrong) else list(self.wrong or [])
        return [m if isinstance(m, Mistake) else _Bare(m) for m in listed]

    def solution_source(self) -> str:
        if self.solution_text_override is not None:
            return self.solution_text_override
        try:
            return textwrap.dedent(inspect.getsource(self.reference))
        except (OSError, TypeError):
            return f"# (source not available)\n{self.reference!r}\n"

    def solution_text(self) -> str:
        text = self.solution_source()
        return text + (f"\n{self.explanation}\n" if self.explanation else "")


class _Bare(Mistake):
    def __init__(self, answer):
        object.__setattr__(self, "answer", answer)
        object.__setattr__(self, "says", "")


def _as_list_factory(items) -> Callable[[], list] | None:
    if items is None or callable(items):
        return items
    items = list(items)
    return lambda: items


def given_function(source: str, name: str, key: str, namespace: dict | None = None) -> Callable:
    """Compile a debug exercise's given code and return the function ``name`` it defines.

    The namespace has ``torch``, ``F`` (torch.nn.functional), ``nn`` and ``math`` unless one is
    given; the source is registered with :mod:`linecache`, so a verdict can quote its lines.
    """
    import linecache

    source = textwrap.dedent(source).strip("\n") + "\n"
    filename = f"<given {key}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    if namespace is None:
        import torch
        import torch.nn.functional as F
        from torch import nn

        namespace = {"torch": torch, "F": F, "nn": nn, "math": math}
    namespace = dict(namespace, __name__=f"given_{key.replace('.', '_')}")
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - our own source, shown to the learner
    return namespace[name]


def exercise(
    key: str,
    title: str,
    task: str,
    reference: Callable,
    answer_is_function: bool = True,
    wrong: Callable[[], list] | None = None,
    *,
    mistakes: Callable[[], list] | list | None = None,
    kind: str = "retype",
    rules: Iterable[Rule | str] = (),
    section: str = "",
    minutes: int = 5,
    explanation: str = "",
    options: dict[str, str] | None = None,
    solution_text: str | None = None,
    given: str = "",
):
    """Decorator for a checker: registers the exercise under ``key`` (see the module docstring).

    ``mistakes`` (or the older name ``wrong``) is a list of :class:`Mistake`, or a function returning
    one (so heavy imports wait until they are needed); the test suite proves every one is rejected
    with its message. ``rules`` are :func:`forbid` rules or dotted names.
    """
    if kind not in KINDS:
        raise ValueError(f"exercise {key!r}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if mistakes is not None and wrong is not None:
        raise ValueError(f"exercise {key!r}: give mistakes=..., not both mistakes and wrong")
    rules = tuple(r if isinstance(r, Rule) else forbid(r) for r in rules)

    def register(checker: Callable[[Any], None]) -> Callable[[Any], None]:
        if key in _REGISTRY:
            raise ValueError(f"exercise {key!r} is registered twice")
        _REGISTRY[key] = Exercise(
            key,
            title,
            task,
            checker,
            reference,
            answer_is_function,
            _as_list_factory(mistakes if mistakes is not None else wrong),
            kind,
            rules,
            section,
            int(minutes),
            explanation,
            dict(options or {}),
            solution_text,
            textwrap.dedent(given).strip("\n"),
        )
        return checker

    return register


# ----------------------------------------------------------------------------- lookup


def _load_all() -> None:
    for name in _CHAPTER_MODULES:
        try:
            importlib.import_module(f"{_PACKAGE}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{_PACKAGE}.{name}":
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
