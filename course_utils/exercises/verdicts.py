"""What the learner calls in a notebook: :func:`show` (the task), :func:`page` (the chapter's
exercises), :func:`check` (a one-line verdict, from :func:`verdict`), :func:`solution` and
:func:`reference_answer`. A check never raises on a wrong answer (see :mod:`course_utils.exercises`):
placeholders are "not tried yet", the learner's own errors are reported with their line.
"""

from __future__ import annotations

import os
import sys
import textwrap
import traceback
import types
from typing import Any

from .registry import _CURRENT, _REGISTRY, _load_all, get, keys
from .rules import RuleBroken, Watch, answer_code, static_violation, where

NOT_TRIED = "not tried yet: replace the placeholder with your answer and run the cell again."


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
