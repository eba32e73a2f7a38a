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

The framework's modules: :mod:`~course_utils.exercises.registry` (what an exercise is, registering
and finding one), :mod:`~course_utils.exercises.checks` (``expect_same``, ``numeric``, ``choice``),
:mod:`~course_utils.exercises.verdicts` (what the learner calls), :mod:`~course_utils.exercises.rules`
(forbidden calls); this package's namespace is their public interface, which the notebooks and the
chapters' modules use (``exercises.check(...)``, ``from . import Mistake, exercise``).
"""

from .checks import choice, expect_same, numeric
from .registry import KINDS, Exercise, Mistake, exercise, get, given_function, keys
from .rules import Rule, RuleBroken, forbid
from .verdicts import check, page, reference_answer, show, solution, verdict

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
