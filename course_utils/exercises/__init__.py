"""Exercises with checks: each chapter's exercises live in ``exercises/chNN.py``.

In a notebook::

    from course_utils import exercises
    exercises.page("03")                      # the page: exercises, kinds, minutes, sections drawn on
    exercises.show("03.mlm_loss")             # the task (and its rules, its options)
    exercises.check("03.mlm_loss", my_fn)     # prints ✅/❌ with a diagnosis, returns True/False
    exercises.solution("03.mlm_loss")         # reveals the reference solution and why

A check never raises on a wrong answer, so a half-done page still runs top to bottom: an
answer left as ``None``, ``...`` or a function whose body is only ``...``/``pass`` prints
"not tried yet"; a wrong one prints what is wrong. What the learner's own code raises is
reported as theirs with the line it came from (an ``assert`` of theirs included, never shown as
the checker's hint). ``SystemExit`` raised by an answer (``sys.exit()``, ``exit()``) is
reported like an error. ``KeyboardInterrupt`` is NOT caught: pressing stop must stop the cell
as it always does (the rule watch is removed on the way out).

Writing exercises (in ``chNN.py``; ``kind`` is one of retype / predict / modify / debug /
conceptual; ``section`` names the chapter's section the exercise draws on; ``minutes`` is the
time it should take; ``page`` sums them; the tests require at least five exercises a chapter,
two of them predict or conceptual, at most half retype):

1. A broken function to fix (``kind="debug"``; ``given`` is its source, printed by ``show`` and
   pasted into the notebook cell the learner edits; the tests check the notebook holds it
   verbatim and that the given code itself is rejected, so list it as a mistake)::

       from . import Mistake, exercise, expect_same, forbid, given_function

       GIVEN = '''
       def mlm_loss(logits, labels):
           log_probs = logits.log_softmax(dim=1)
           ...
       '''

       def _mlm_loss_mistakes():            # typical mistakes, each with the message that diagnoses it
           return [Mistake(given_function(GIVEN, "mlm_loss", "03.mlm_loss"), "over the vocabulary"),
                   Mistake(lambda lg, lb: ..., "only labels != -100 count"),
                   Mistake(lambda lg, lb: F.cross_entropy(...), "rule broken")]    # a rule broken

       @exercise("03.mlm_loss", "Debug: the MLM loss", "Fix mlm_loss(...) so that ...", kind="debug",
                 given=GIVEN, reference=_mlm_loss_reference, mistakes=_mlm_loss_mistakes,
                 rules=[forbid("torch.nn.functional.cross_entropy", says="write the loss without F.cross_entropy")],
                 section="7. The model and its two losses", minutes=8)
       def check_mlm_loss(fn):
           expect_same(fn, _independent_reference, cases=_cases(), what="mlm_loss(logits, labels)")

   ``given_function(source, name, key, namespace=None)`` compiles the given code (namespace:
   torch, F, nn, math by default) so its lines can be quoted. ``expect_same(answer, reference,
   *args)`` or ``expect_same(..., cases=[args1, args2, ...])`` calls both on copies of the
   inputs (several cases: random ones from a fixed seed, and edge cases) and compares (tensors:
   shape and values within ``atol``; numbers; sequences; dicts; sets). When they differ, it
   runs this exercise's mistakes on the same cases: a mistake that gives what the answer gives
   on every case names the misconception (its message is the verdict); otherwise the verdict
   shows the first case that differs, what the answer gave, what was expected, and ``hint``. A
   checker may also ``assert cond, "message"`` itself (checks of properties, statistics).
   ``kind="modify"`` (change a model so a property holds) and ``kind="retype"`` are written the
   same way, without ``given`` or with the code to change.

2. A number to predict before running (``kind="predict"``)::

       numeric("03.initial_loss", "Predict: ...", "Predict ...", reference=_initial_loss, tolerance=0.1,
               mistakes=[Mistake(10.33, "that is L_MLM alone: ..."), Mistake(15.9, "bits: ...")],
               hint="what names the misconception when no listed mistake matches", section="...", minutes=3)

   ``reference()`` computes the value from first principles (a test should confirm it by
   running the real thing); a mistake matches when the answer is within the tolerance of its
   value (``relative=True``: tolerance is a fraction of the value).

3. A choice among stated hypotheses (``kind="conceptual"``)::

       choice("05.why_count", "...", "Why does ...?", options={"a": "...", "b": "...", "c": "..."},
              correct="b", why="what makes (b) right", why_not={"a": "...", "c": "..."}, section=..., minutes=3)

   Every wrong option needs its explanation; each becomes a tested mistake. The answer is the
   letter; "B", "(b)" and " b " are accepted.

Rules: ``rules=[forbid("torch.softmax", "torch.Tensor.softmax", says="...")]``. A target is a
dotted name: a function, a class (instantiating it or a subclass), a tensor method, a module
(anything in it, e.g. "seqeval"); a name under ``__main__.`` (the learner's notebook) is
skipped where it does not exist.
Rules are checked on the answer's bytecode before it runs and by a profile hook while the check
runs (:mod:`course_utils.exercises.rules`); the verdict names the rule and the learner's line.
"""

from __future__ import annotations

import contextvars
import copy
import importlib
import inspect
import math
import os
import sys
import textwrap
import traceback
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .rules import Rule, RuleBroken, Watch, answer_code, forbid, static_violation, where

__all__ = [
    "KINDS",
    "given_function",
    "Exercise",
    "Mistake",
    "Rule",
    "RuleBroken",
    "check",
    "choice",
    "exercise",
    "expect_same",
    "forbid",
    "get",
    "keys",
    "numeric",
    "page",
    "reference_answer",
    "show",
    "solution",
    "verdict",
]

_REGISTRY: dict[str, Exercise] = {}
_CHAPTER_MODULES = ("ch00", "ch01", "ch02", "ch03", "ch04", "ch05", "ch06", "ch07", "ch08", "ch09")
KINDS = ("retype", "predict", "modify", "debug", "conceptual")
NOT_TRIED = "not tried yet: replace the placeholder with your answer and run the cell again."
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


# ----------------------------------------------------------------------------- comparing with a reference


def _short(value: Any) -> str:
    try:
        import torch

        if isinstance(value, torch.Tensor):
            if value.dim() == 0:
                return f"tensor({value.item():.6g})"
            if value.numel() <= 12:
                return (
                    f"tensor({[round(v, 4) if isinstance(v, float) else v for v in value.flatten().tolist()]}"
                    f"{', shape ' + str(tuple(value.shape)) if value.dim() > 1 else ''})"
                )
            return f"a tensor of shape {tuple(value.shape)}"
    except ImportError:
        pass
    if isinstance(value, float):
        return f"{value:.6g}"
    text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."


def same(got: Any, want: Any, atol: float = 1e-5, rtol: float = 0.0, equal_nan: bool = False) -> bool:
    """Equal up to ``atol``/``rtol`` for numbers and tensors, exactly for everything else."""
    import torch

    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(want.shape):
            return False
        if want.dtype == torch.bool or not (want.is_floating_point() or got.is_floating_point()):
            return bool(torch.equal(got.to(want.dtype), want))
        return bool(torch.allclose(got.double(), want.double(), atol=atol, rtol=rtol, equal_nan=equal_nan))
    if isinstance(want, bool):
        return isinstance(got, bool) and got == want
    if want is None or isinstance(want, str):
        return got == want
    if isinstance(want, (int, float)):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            return False
        if math.isnan(want) or math.isnan(got):
            return equal_nan and math.isnan(want) and math.isnan(got)
        return abs(got - want) <= atol + rtol * abs(want)
    if isinstance(want, (list, tuple)):
        try:
            got = list(got)
        except TypeError:
            return False
        return len(got) == len(want) and all(same(g, w, atol, rtol, equal_nan) for g, w in zip(got, want))
    if isinstance(want, dict):
        return (
            isinstance(got, dict)
            and got.keys() == want.keys()
            and all(same(got[k], want[k], atol, rtol, equal_nan) for k in want)
        )
    return got == want


def expect_same(
    answer: Callable,
    reference: Callable,
    *args,
    what: str | None = None,
    hint: str = "",
    atol: float = 1e-5,
    rtol: float = 0.0,
    cases: Iterable[tuple] | None = None,
    **kwargs,
) -> Any:
    """Call ``answer`` and ``reference`` on (copies of) the same inputs; AssertionError when they differ.

    ``cases`` (a list of argument tuples) runs them on every case instead of on ``args`` (if the
    answer crashes on a case after being wrong on an earlier one, the cases before the crash are
    used). The message names the typical mistake the answer matches (one of this exercise's
    mistakes that gives what the answer gives on every case), or else shows the first case where
    they differ, what the answer gave, what was expected, and ``hint``. Returns the answer's
    result(s).
    """
    cases = [tuple(c) for c in cases] if cases is not None else [args]
    got, want = [], []
    for case in cases:
        try:
            result = answer(*copy.deepcopy(case), **copy.deepcopy(kwargs))
        except Exception:
            if any(not same(g, w, atol, rtol) for g, w in zip(got, want)):
                break  # already wrong on an earlier case: diagnose that, on the cases it ran
            raise  # the first problem is this crash: the learner's error, with its line
        got.append(result)
        want.append(reference(*copy.deepcopy(case), **copy.deepcopy(kwargs)))
    cases = cases[: len(got)]
    wrong = [i for i, (g, w) in enumerate(zip(got, want)) if not same(g, w, atol, rtol)]
    if not wrong:
        return got if len(got) > 1 else got[0]
    exercise_ = _CURRENT.get()
    for mistake in exercise_.mistakes() if exercise_ else []:
        if not mistake.says or not callable(mistake.answer):
            continue
        if exercise_.rules and static_violation(mistake.answer, exercise_.rules):
            continue  # a rule-breaking mistake diagnoses the rule, which is checked before
        try:
            with _quiet():
                theirs = [mistake.answer(*copy.deepcopy(c), **copy.deepcopy(kwargs)) for c in cases]
        except Exception:  # noqa: BLE001, S112 - a mistake that crashes here is simply not this answer
            continue
        if all(same(g, t, atol, rtol, equal_nan=True) for g, t in zip(got, theirs)):
            raise AssertionError(mistake.says)
    i = wrong[0]
    what = what or f"{getattr(answer, '__name__', 'your function')}(...)"
    raise AssertionError(f"{what} gives {_short(got[i])}, expected {_short(want[i])}" + (f": {hint}" if hint else ""))


class _quiet:
    """Runs a mistake without the rule watch seeing it as the learner's code."""

    def __enter__(self):
        self.previous = sys.getprofile()
        sys.setprofile(None)

    def __exit__(self, *exc):
        sys.setprofile(self.previous)
        return False


# ----------------------------------------------------------------------------- numbers and choices


def _as_number(answer: Any) -> float:
    try:
        import torch

        if isinstance(answer, torch.Tensor) and answer.numel() == 1:
            answer = answer.item()
    except ImportError:
        pass
    if isinstance(answer, bool) or not isinstance(answer, (int, float)) and not hasattr(answer, "__float__"):
        raise AssertionError(f"give a number (an int or a float), got {type(answer).__name__} {_short(answer)}")
    return float(answer)


def numeric(
    key: str,
    title: str,
    task: str,
    *,
    reference: Callable[[], float],
    tolerance: float,
    mistakes: Callable[[], list] | list = (),
    hint: str = "",
    kind: str = "predict",
    section: str = "",
    minutes: int = 3,
    explanation: str = "",
    relative: bool = False,
) -> None:
    """Register a number to predict: right within ``tolerance`` (a fraction of the value if ``relative``)."""

    def close(a: float, b: float) -> bool:
        return abs(a - b) <= (tolerance * abs(b) if relative else tolerance)

    def check_number(answer) -> None:
        value, want = _as_number(answer), float(reference())
        if close(value, want):
            return
        for mistake in _CURRENT.get().mistakes():
            if isinstance(mistake.answer, (int, float)) and close(value, float(mistake.answer)):
                raise AssertionError(mistake.says)
        side = "too high" if value > want else "too low"
        raise AssertionError(f"{value:g} is {side}" + (f": {hint}" if hint else ""))

    exercise(
        key,
        title,
        task,
        reference,
        answer_is_function=False,
        mistakes=mistakes,
        kind=kind,
        section=section,
        minutes=minutes,
        explanation=explanation,
    )(check_number)


def choice(
    key: str,
    title: str,
    task: str,
    *,
    options: dict[str, str],
    correct: str,
    why: str,
    why_not: dict[str, str],
    kind: str = "conceptual",
    section: str = "",
    minutes: int = 3,
) -> None:
    """Register a choice among stated hypotheses; the answer is the option's letter ("b")."""
    letters = set(options)
    if correct not in letters or set(why_not) != letters - {correct}:
        raise ValueError(
            f"exercise {key!r}: correct must be one of {sorted(letters)} and why_not must explain "
            f"every other option, missing {sorted(letters - {correct} - set(why_not))}"
        )

    def reference() -> str:
        return correct

    def check_choice(answer) -> None:
        if not isinstance(answer, str):
            raise AssertionError(f"answer with the letter of one option, one of {', '.join(sorted(letters))}")
        letter = answer.strip().strip("()").strip().lower()
        if letter not in letters:
            raise AssertionError(f"{answer!r} is not an option: answer one of {', '.join(sorted(letters))}")
        if letter != correct:
            raise AssertionError(f"({letter}) is not it. {why_not[letter]}")

    exercise(
        key,
        title,
        task,
        reference,
        answer_is_function=False,
        kind=kind,
        section=section,
        minutes=minutes,
        mistakes=lambda: [Mistake(k, why_not[k]) for k in sorted(why_not)],
        explanation=why,
        options=options,
        solution_text=f"answer = {correct!r}\n# ({correct}) {options[correct]}\n"
        f"# the options were:\n" + "\n".join(f"#   ({k}) {v}" for k, v in sorted(options.items())) + "\n",
    )(check_choice)


# ----------------------------------------------------------------------------- registry


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


# ----------------------------------------------------------------------------- what the learner calls


def show(key: str) -> None:
    """Print the task, its kind and time, the rules it enforces, and its options."""
    ex = get(key)
    about = f"{ex.kind}, about {ex.minutes} min" + (f", draws on {ex.section}" if ex.section else "")
    print(f"Exercise {ex.key}: {ex.title}\n[{about}]\n{textwrap.fill(ex.task, 96)}")
    for letter, option in sorted(ex.options.items()):
        print(textwrap.fill(f"({letter}) {option}", 96, initial_indent="  ", subsequent_indent="      "))
    if ex.options:
        print(f'Answer with a letter, e.g. answer = "{min(ex.options)}".')
    if ex.given:
        print("The code you start from (it is also in the cell below):\n" + textwrap.indent(ex.given, "    "))
    for rule in ex.rules:
        print(textwrap.fill(f"Rule (checked): {rule.says}.", 96))


def _section_order(section: str) -> tuple:
    number = section.split(".", 1)[0]
    return (0, int(number), section) if number.isdigit() else (1, 0, section)


def page(chapter: str) -> None:
    """Print the chapter's exercise page header: how many, how long, which sections they draw on."""
    _load_all()
    chosen = [ex for k, ex in _REGISTRY.items() if k.startswith(f"{chapter}.")]  # in the order they are written
    if not chosen:
        raise KeyError(
            f"chapter {chapter!r} has no exercises; chapters with exercises: "
            f"{', '.join(sorted({k[:2] for k in keys()}))}"
        )
    minutes = sum(ex.minutes for ex in chosen)
    sections = sorted(dict.fromkeys(ex.section for ex in chosen if ex.section), key=_section_order)
    print(f"Chapter {chapter}: {len(chosen)} exercises, about {minutes} minutes in all.")
    if sections:
        print("They draw on: " + "; ".join(sections) + ".")
    width = max(len(ex.key) for ex in chosen)
    for ex in chosen:
        print(f"  {ex.key:<{width}}  {ex.kind:<10}  ~{ex.minutes:>2} min  {ex.title}")


def _is_placeholder(answer: Any) -> bool:
    if answer is None or answer is Ellipsis:
        return True
    if isinstance(answer, types.FunctionType):  # def f(...): ...   (or pass, or only a docstring)
        import dis

        ops = {ins.opname for ins in dis.get_instructions(answer.__code__)}
        return ops <= {"RESUME", "NOP", "LOAD_CONST", "RETURN_VALUE", "RETURN_CONST", "CACHE"} and not any(
            isinstance(c, types.CodeType) for c in answer.__code__.co_consts
        )
    return False


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LIBRARY_DIRS = tuple({os.path.abspath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})


def _learner_frames(err: BaseException, learner_codes: set, checker_codes: set) -> list:
    """The traceback's frames that ran the learner's code (innermost last)."""
    frames = []
    for frame, lineno in traceback.walk_tb(err.__traceback__):
        code = frame.f_code
        if code in learner_codes:
            frames.append((code, lineno))
            continue
        if code in checker_codes:
            continue
        path = os.path.abspath(code.co_filename) if not code.co_filename.startswith("<") else code.co_filename
        library = path.startswith((*_LIBRARY_DIRS, _PACKAGE_DIR, "<frozen"))
        if not library:
            frames.append((code, lineno))
    return frames


def _describe_error(err: BaseException, learner_codes: set, checker_codes: set) -> tuple[bool, str]:
    """(learner's?, message) for an exception that escaped the check."""
    text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    frames = _learner_frames(err, learner_codes, checker_codes)
    if frames:
        code, lineno = frames[-1]
        return True, f"your answer raised {text} (at {where(code, lineno)})"
    return False, text


def verdict(key: str, answer: Any) -> tuple[bool, str]:
    """(passed, message) without printing; what the tests use. Never raises but KeyboardInterrupt."""
    ex = get(key)
    if _is_placeholder(answer):
        return False, NOT_TRIED
    if ex.rules:
        broken = static_violation(answer, ex.rules)
        if broken:
            return False, f"not yet: {broken}"
    learner_codes = answer_code(answer)
    checker_codes = answer_code(ex.checker) | answer_code(ex.reference)
    token = _CURRENT.set(ex)
    watch = Watch(ex.rules, answer)
    explained = not ex.answer_is_function and ex.explanation  # a number or a choice: say why it is right
    outcome: tuple[bool, str] = (True, "correct!" + (f" {ex.explanation}" if explained else ""))
    try:
        if isinstance(answer, types.FunctionType):  # watched only while the learner's function runs
            ex.checker(watch.guard(answer))
        else:  # a class or an object: watched for the whole check
            with watch:
                ex.checker(answer)
    except RuleBroken as err:  # a rule the checker enforces itself
        outcome = (False, f"not yet: rule broken: {err}")
    except AssertionError as err:
        theirs, message = _describe_error(err, learner_codes, checker_codes)
        outcome = (False, message if theirs else f"not yet: {err}")
    except SystemExit as err:  # sys.exit()/exit() in the answer: reported, the kernel keeps running
        outcome = (
            False,
            (
                f"your answer raised SystemExit (code {err.code!r}): it tried to end the program; "
                "a function returns its result instead"
            ),
        )
    except Exception as err:  # the learner's code crashed, or the check could not use what it returned
        theirs, message = _describe_error(err, learner_codes, checker_codes)
        outcome = (
            False,
            message
            if theirs
            else f"not yet: the check could not use your answer ({message}): see the task for what to give",
        )
    finally:
        _CURRENT.reset(token)
    if watch.violation:
        return False, f"not yet: {watch.violation}"
    return outcome


def check(key: str, answer: Any) -> bool:
    """Check a learner's answer; prints a one-line verdict and returns True when it is right."""
    passed, message = verdict(key, answer)
    print(("✅ " if passed else "❌ ") + f"{key}: {message}")
    return passed


def solution(key: str) -> None:
    """Show the reference solution (and why it is right): a learner reveals it when stuck."""
    ex = get(key)
    try:
        from IPython.display import Markdown, display

        display(
            Markdown(
                f"**Solution to {ex.key}**\n\n```python\n{ex.solution_source()}```"
                + (f"\n\n{ex.explanation}" if ex.explanation else "")
            )
        )
    except ImportError:
        print(ex.solution_text())


def reference_answer(key: str) -> Any:
    """The answer the reference solution gives: a function, or the value it returns."""
    ex = get(key)
    return ex.reference if ex.answer_is_function else ex.reference()
