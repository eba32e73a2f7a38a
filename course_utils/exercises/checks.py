"""How a check judges an answer: :func:`expect_same` calls a function answer and a reference on
the same inputs and names the typical mistake the answer matches; :func:`numeric` registers a
number to predict, :func:`choice` a choice among stated hypotheses (every wrong option explained).
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Callable, Iterable
from typing import Any

from .registry import _CURRENT, Mistake, exercise
from .rules import static_violation


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
