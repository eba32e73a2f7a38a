"""Task rules ("do not call F.cross_entropy"), enforced on a learner's answer twice over.

*Statically*, before the answer runs: the answer's bytecode (every function, lambda,
comprehension and method in it, and the helper functions of the learner's own namespace it
refers to) is walked for names and attribute chains, which are resolved to the objects they
name. Working on bytecode rather than source means a lambda written among others on one line,
an alias (``import torch.nn.functional as nnf``; ``from seqeval.metrics import f1_score as f``)
and a function whose source ``inspect`` cannot get (defined by ``exec``) are all handled.

*At run time*, while the check runs: a profile hook (``sys.setprofile``) sees every call,
Python or C, and flags a forbidden one when one of the answer's own frames is on the stack.
That catches what no reading of the code can: ``getattr(F, "cross_" + "entropy")``, a
forbidden function reached through a wrapper (``nn.CrossEntropyLoss`` calls
``F.cross_entropy``), a name bound before the check began. Patching the forbidden attributes
instead would miss every alias bound before the patch; the hook needs no patching, so there is
nothing to restore but the previous profile function, which is restored in a ``finally``. The
checker's own calls (its reference computations) are never flagged: no answer frame is on
the stack when they run.
"""

from __future__ import annotations

import dis
import functools
import importlib
import inspect
import linecache
import sys
import types
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    """A task's rule: none of ``targets`` may be used by the answer.

    A target is a dotted name: a module (``"seqeval"``: anything in it), a function
    (``"torch.nn.functional.cross_entropy"``, ``"torch.softmax"``), a class (``"transformers.BertModel"``:
    instantiating it or a subclass), or a tensor method (``"torch.Tensor.softmax"``: ``x.softmax(...)``).
    ``says`` is the rule in the task's words; the verdict quotes it.
    """

    targets: tuple[str, ...]
    says: str

    def __post_init__(self):
        if isinstance(self.targets, str):
            object.__setattr__(self, "targets", (self.targets,))
        if not self.targets or not all(isinstance(t, str) and t for t in self.targets):
            raise ValueError(f"Rule targets must be dotted names like 'torch.softmax', got {self.targets!r}")


def forbid(*targets: str, says: str | None = None) -> Rule:
    """``forbid("torch.softmax", "torch.Tensor.softmax", says="write the softmax with exp and sum")``."""
    return Rule(tuple(targets), says or f"do not use {', '.join(targets)}")


class RuleBroken(Exception):
    """The answer used what its task forbids; the message names the rule and where."""


# ----------------------------------------------------------------------------- resolving targets


@dataclass(frozen=True)
class _Target:
    name: str
    obj: Any
    kind: str  # "module", "class", "function", "builtin", "method"


def _resolve(dotted: str) -> _Target | None:
    """The object a dotted name names, or None when its package is not installed."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        parent = None
        try:
            for attr in parts[cut:]:
                parent, obj = obj, getattr(obj, attr)
        except AttributeError as err:
            if dotted.startswith("__main__."):  # a function of the learner's notebook, if it is defined
                return None
            raise ValueError(f"rule target {dotted!r} does not exist: {err}") from None
        break
    else:
        return None
    if obj is None and dotted.startswith("__main__."):
        return None
    if isinstance(obj, types.ModuleType):
        return _Target(dotted, obj, "module")
    if isinstance(obj, type):
        return _Target(dotted, obj, "class")
    if isinstance(parent, type):
        return _Target(dotted, obj, "method")
    if inspect.isfunction(inspect.unwrap(obj)):
        return _Target(dotted, inspect.unwrap(obj), "function")
    return _Target(dotted, obj, "builtin")


def _module_name(obj: Any) -> str:
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    try:
        name = getattr(obj, "__module__", None)
    except Exception:  # noqa: BLE001 - an object whose attribute lookup fails belongs to no module we know
        return ""
    return name if isinstance(name, str) else ""  # some C functions carry a module object there


def _in_module(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


def _matches(target: _Target, obj: Any, attr_name: str | None = None) -> bool:
    """Whether ``obj`` (reached under ``attr_name``) is, or belongs to, the forbidden target."""
    if target.kind == "module":
        return _in_module(_module_name(obj), target.obj.__name__)
    if target.kind == "class":
        return isinstance(obj, type) and issubclass(obj, target.obj)
    if target.kind == "method":
        return obj is target.obj or (attr_name is not None and attr_name == target.obj.__name__ and obj is _UNKNOWN)
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        obj = inspect.unwrap(getattr(obj, "__func__", obj))
    return obj is target.obj


# ----------------------------------------------------------------------------- the static check

_UNKNOWN = object()  # the value of a local variable: not known before the answer runs
_CHAIN_START = {"LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF", "LOAD_CLASSDEREF", "LOAD_FAST", "LOAD_CLOSURE"}
_CHAIN_ATTR = {"LOAD_ATTR", "LOAD_METHOD"}


def answer_functions(answer: Any) -> list[types.FunctionType]:
    """The Python functions an answer consists of: itself, or a class's methods, or a module's functions."""
    if isinstance(answer, (types.FunctionType, types.MethodType)):
        return [getattr(answer, "__func__", answer)]
    if isinstance(answer, functools_partial_type()):
        return answer_functions(answer.func)
    if isinstance(answer, type):
        found = []
        for klass in answer.__mro__:
            if klass is object or _module_name(klass).startswith(("torch", "transformers")):
                continue
            for value in vars(klass).values():
                value = getattr(value, "__func__", value)  # staticmethod, classmethod
                if isinstance(value, property):
                    found += [f for f in (value.fget, value.fset) if f is not None]
                elif isinstance(value, types.FunctionType):
                    found.append(value)
        return found
    if callable(answer) and not isinstance(answer, (types.BuiltinFunctionType, types.MethodWrapperType)):
        return answer_functions(type(answer))  # an instance of the learner's class (an nn.Module, say)
    return []


def functools_partial_type():
    import functools

    return functools.partial


def code_objects(code: types.CodeType) -> Iterable[types.CodeType]:
    """A code object and every code object nested in it (lambdas, comprehensions, inner functions)."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from code_objects(const)


def answer_code(answer: Any) -> set[types.CodeType]:
    """Every code object of the answer: what the run-time check counts as the learner's frames."""
    return {c for fn in answer_functions(answer) for c in code_objects(fn.__code__)}


def _line_of(code: types.CodeType, instruction: dis.Instruction) -> int | None:
    positions = getattr(instruction, "positions", None)
    if positions is not None and positions.lineno is not None:
        return positions.lineno
    return None


def where(code: types.CodeType, lineno: int | None) -> str:
    """'line 3 of mlm_loss: `return F.cross_entropy(x, y)`' (the line's text when it can be found)."""
    name = code.co_name if code.co_name not in ("<lambda>",) else "your lambda"
    if lineno is None:
        return f"in {name}"
    text = linecache.getline(code.co_filename, lineno).strip()
    shown = f"line {lineno - code.co_firstlineno + 1} of {name}" if code.co_name != "<module>" else f"line {lineno}"
    return f"{shown}: `{text}`" if text else shown


def static_violation(answer: Any, rules: Iterable[Rule]) -> str | None:
    """The first rule the answer's code visibly breaks, as a message; None when none is."""
    targets = [(rule, t) for rule in rules for t in (_resolve(name) for name in rule.targets) if t is not None]
    if not targets:
        return None
    bare = answer.func if isinstance(answer, functools_partial_type()) else answer
    broken = _first_match(targets, bare, getattr(bare, "__name__", None))
    if broken:  # the forbidden function itself given as the answer
        return f"rule broken: {broken[0].says} (your answer is {broken[1].name} itself)"
    seen: set[types.CodeType] = set()
    todo = [(fn, fn.__code__) for fn in answer_functions(answer)]
    while todo:
        fn, top = todo.pop()
        for code in code_objects(top):
            if code in seen:
                continue
            seen.add(code)
            found = _scan(fn, code, targets, todo)
            if found:
                return found
    return None


def _scan(fn: types.FunctionType, code: types.CodeType, targets, todo) -> str | None:
    globals_ = fn.__globals__
    builtins_ = globals_.get("__builtins__", {})
    builtins_ = vars(builtins_) if isinstance(builtins_, types.ModuleType) else builtins_
    closure = {}
    if code is fn.__code__ and fn.__closure__:
        for name, cell in zip(code.co_freevars, fn.__closure__):
            try:
                closure[name] = cell.cell_contents
            except ValueError:
                pass
    current, imported, lineno = None, None, None
    for ins in dis.get_instructions(code):
        lineno = _line_of(code, ins) or lineno
        name, value = ins.argval, None
        if ins.opname in _CHAIN_START:
            if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
                value = globals_.get(name, builtins_.get(name, _UNKNOWN))
            elif ins.opname in ("LOAD_DEREF", "LOAD_CLASSDEREF", "LOAD_CLOSURE"):
                value = closure.get(name, _UNKNOWN)
            else:
                value = _UNKNOWN
            current = value
        elif ins.opname in _CHAIN_ATTR and current is not None:
            # attributes are looked up on modules and classes only: on other objects a lookup may run code
            safe = isinstance(current, (types.ModuleType, type))
            value = getattr(current, name, _UNKNOWN) if safe else _UNKNOWN
            broken = _first_match(targets, _UNKNOWN if value is _UNKNOWN else value, name)
            if broken:
                return _message(broken, code, lineno, value)
            current = value
            continue
        elif ins.opname == "IMPORT_NAME":
            imported = name
            value = sys.modules.get(name, _UNKNOWN)
            broken = next(((r, t) for r, t in targets if t.kind == "module" and _in_module(name, t.obj.__name__)), None)
            if broken:
                return _message(broken, code, lineno, value)
            current = None
            continue
        elif ins.opname == "IMPORT_FROM" and imported:
            module = sys.modules.get(imported)
            value = getattr(module, name, _UNKNOWN) if module is not None else _UNKNOWN
            if value is _UNKNOWN:
                try:
                    value = importlib.import_module(f"{imported}.{name}")
                except ImportError:
                    value = _UNKNOWN
        else:
            current = None
            continue
        if value is not _UNKNOWN:
            broken = _first_match(targets, value, name)
            if broken:
                return _message(broken, code, lineno, value)
            for helper in _own_helpers(value, globals_):  # the learner's own helpers, read too
                todo.append((helper, helper.__code__))
    return None


def _own_helpers(value: Any, globals_: dict) -> list[types.FunctionType]:
    """Functions (or a class's methods) defined in the same namespace as the answer."""
    if isinstance(value, types.FunctionType) and value.__globals__ is globals_:
        return [value]
    if isinstance(value, type) and value.__module__ == globals_.get("__name__"):
        return [f for f in answer_functions(value) if f.__globals__ is globals_]
    return []


def _first_match(targets, value, attr_name):
    for rule, target in targets:
        if _matches(target, value, attr_name):
            return rule, target
    return None


def _message(broken, code, lineno, value: Any) -> str:
    rule, target = broken
    used = target.name
    if target.kind in ("module", "class"):  # name the very thing used: seqeval.metrics.f1_score
        qualname = getattr(value, "__qualname__", None)
        used = f"{_module_name(value)}.{qualname}" if qualname else _module_name(value) or used
    return f"rule broken: {rule.says} (your code uses {used} at {where(code, lineno)})"


# ----------------------------------------------------------------------------- the run-time check


class Watch:
    """A context manager that records the first forbidden call made from the answer's frames.

    ``with Watch(rules, answer) as watch: check(answer)`` then ``watch.violation`` is a message or
    None. The previous profile function is restored on leaving, whatever happened inside.
    """

    def __init__(self, rules: Iterable[Rule], answer: Any):
        self.targets = [(rule, t) for rule in rules for t in (_resolve(n) for n in rule.targets) if t is not None]
        self.learner = answer_code(answer)
        self.violation: str | None = None
        self._codes = {}
        self._builtins = {}
        self._methods = {}
        self._classes = []
        self._modules = []
        for rule, t in self.targets:
            if t.kind == "function":
                self._codes[t.obj.__code__] = (rule, t)
            elif t.kind == "class":
                self._classes.append((rule, t))
            elif t.kind == "module":
                self._modules.append((rule, t))
            elif t.kind == "method":
                if isinstance(inspect.unwrap(t.obj), types.FunctionType):
                    self._codes[inspect.unwrap(t.obj).__code__] = (rule, t)
                else:
                    self._methods.setdefault(t.obj.__name__, []).append((rule, t))
            else:
                self._builtins[id(t.obj)] = (rule, t)
        self._previous = None

    def __enter__(self) -> Watch:
        self._previous = sys.getprofile()
        if self.targets and self.learner:
            sys.setprofile(self._hook)
        return self

    def __exit__(self, *exc) -> bool:
        sys.setprofile(self._previous)
        return False

    def guard(self, fn: types.FunctionType) -> Any:
        """``fn`` watched only while it runs: the checker's own work (imports, references) runs unprofiled."""
        if not (self.targets and self.learner):
            return fn

        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            previous = sys.getprofile()
            if previous is self._hook:  # already watched (a recursive or nested call)
                return fn(*args, **kwargs)
            self._previous = previous
            sys.setprofile(self._hook)
            try:
                return fn(*args, **kwargs)
            finally:
                sys.setprofile(previous)

        return guarded

    def _hook(self, frame, event, arg) -> None:
        if self._previous is not None:
            self._previous(frame, event, arg)
        if self.violation is not None or event not in ("call", "c_call"):
            return
        try:
            self._inspect(frame, event, arg)
        except Exception:  # noqa: BLE001, S110 - a profile hook that raised would break the code it watches
            pass

    def _inspect(self, frame, event, arg) -> None:
        hit, used = None, None
        if event == "call":
            code = frame.f_code
            hit = self._codes.get(code)
            if hit is None and self._classes and code.co_name == "__init__":
                instance = frame.f_locals.get("self")
                hit = next(((r, t) for r, t in self._classes if isinstance(instance, t.obj)), None)
                if hit is not None:  # name the class built: torch.nn.Embedding, say
                    used = f"{type(instance).__module__}.{type(instance).__qualname__}"
            if hit is None and self._modules:
                module = frame.f_globals.get("__name__", "")
                hit = next(((r, t) for r, t in self._modules if _in_module(module, t.obj.__name__)), None)
            caller = frame.f_back
        elif event == "c_call":
            hit = self._builtins.get(id(arg))
            if hit is None and getattr(arg, "__name__", None) in self._methods:
                owner = getattr(arg, "__self__", None)
                hit = next(
                    ((r, t) for r, t in self._methods[arg.__name__] if isinstance(owner, t.obj.__objclass__)), None
                )
            if hit is None and self._modules:
                module = _module_name(arg)
                hit = next(((r, t) for r, t in self._modules if _in_module(module, t.obj.__name__)), None)
            caller = frame
        else:
            return
        if hit is None:
            return
        learner_frame = self._learner_frame(caller)
        if learner_frame is not None:
            rule, target = hit
            self.violation = (
                f"rule broken: {rule.says} (your code calls {used or target.name}, "
                f"from {where(learner_frame.f_code, learner_frame.f_lineno)})"
            )

    def _learner_frame(self, frame):
        while frame is not None:
            if frame.f_code in self.learner:
                return frame
            frame = frame.f_back
        return None
