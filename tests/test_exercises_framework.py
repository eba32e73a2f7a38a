"""The exercise machinery itself: rules caught statically and at run time, errors reported as
the learner's with their line, numbers and choices, mistakes diagnosed, placeholders, the page.

Each test registers throw-away exercises under chapter "99" and removes them afterwards.
"""

from __future__ import annotations

import keyword
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from course_utils import exercises
from course_utils.exercises import Mistake, expect_same, forbid, registry, verdicts
from course_utils.exercises.rules import Watch, static_violation


@pytest.fixture
def scratch():
    """Register exercises under 99.*; they are removed after the test."""
    before = set(registry._REGISTRY)
    yield
    for key in set(registry._REGISTRY) - before:
        registry._REGISTRY.pop(key)


def _loss_reference(logits, labels):
    keep = labels != -100
    return -logits[keep].log_softmax(-1).gather(1, labels[keep][:, None]).mean()


def _no_log_softmax(logits, labels):
    keep = labels != -100
    return -logits[keep].gather(1, labels[keep][:, None]).mean()


NO_CE = forbid(
    "torch.nn.functional.cross_entropy",
    "torch.nn.CrossEntropyLoss",
    says="write the loss from log_softmax, without F.cross_entropy",
)


def _register_loss(**extra):
    calls = []

    @exercises.exercise(
        "99.loss",
        "loss",
        "Write loss(logits, labels).",
        reference=_loss_reference,
        kind="modify",
        rules=[NO_CE],
        section="1. test",
        mistakes=lambda: [Mistake(_no_log_softmax, "no log-softmax")],
        **extra,
    )
    def check(fn):
        g = torch.Generator().manual_seed(0)
        logits, labels = torch.randn(2, 5, 7, generator=g), torch.full((2, 5), -100)
        labels[0, 1], labels[1, 4] = 3, 6
        calls.append(F.cross_entropy(logits.reshape(-1, 7), labels.reshape(-1)))  # the checker may use it
        expect_same(fn, _loss_reference, logits, labels, what="loss(logits, labels)", hint="average the labelled ones")

    return calls


def _flat_ce(logits, labels):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


# ----------------------------------------------------------------------------- rules, statically


def test_reference_passes_although_the_checker_uses_the_forbidden_call(scratch):
    calls = _register_loss()
    assert exercises.verdict("99.loss", _loss_reference) == (True, "correct!")
    assert calls, "the checker ran its own F.cross_entropy"
    assert sys.getprofile() is None


def test_forbidden_call_is_named_with_the_line(scratch):
    _register_loss()
    passed, message = exercises.verdict("99.loss", _flat_ce)
    assert not passed
    assert message.startswith(
        "not yet: rule broken: write the loss from log_softmax, without F.cross_entropy "
        "(your code uses torch.nn.functional.cross_entropy at line 2 of _flat_ce: "
        "`return F.cross_entropy("
    ), message


def test_aliases_lambdas_helpers_classes_and_exec_are_caught_statically(scratch):
    namespace = {}
    exec(
        "import torch.nn.functional as nnf\n"
        "from torch.nn.functional import cross_entropy as ce\n"
        "import torch\n"
        "def helper(x, y):\n    return ce(x, y)\n"
        "def via_helper(lg, lb):\n    return helper(lg.flatten(0, 1), lb.flatten())\n"
        "def module_alias(lg, lb):\n    return nnf.cross_entropy(lg.flatten(0, 1), lb.flatten())\n"
        "pair = [lambda lg, lb: lg.sum(), lambda lg, lb: ce(lg.flatten(0, 1), lb.flatten())]\n"
        "class Loss:\n    def __call__(self, lg, lb):\n        return torch.nn.CrossEntropyLoss()(lg.flatten(0, 1), lb.flatten())\n",
        namespace,
    )
    for name, answer in [
        ("via_helper", namespace["via_helper"]),
        ("module_alias", namespace["module_alias"]),
        ("second lambda", namespace["pair"][1]),
        ("class", namespace["Loss"]),
        ("instance", namespace["Loss"]()),
    ]:
        found = static_violation(answer, [NO_CE])
        assert found and found.startswith("rule broken: write the loss"), f"{name}: {found}"
    assert static_violation(namespace["pair"][0], [NO_CE]) is None, (
        "the harmless lambda on the same line is not flagged"
    )


@settings(max_examples=25, deadline=None)
@given(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).filter(lambda s: not keyword.iskeyword(s)))
def test_any_alias_of_a_forbidden_function_is_caught(alias):
    namespace = {}
    exec(
        f"from torch.nn.functional import cross_entropy as {alias}\ndef answer(lg, lb):\n    return {alias}(lg, lb)\n",
        namespace,
    )
    assert "torch.nn.functional.cross_entropy" in static_violation(namespace["answer"], [NO_CE])


def test_tensor_methods_modules_and_classes_are_caught_statically():
    no_softmax = forbid("torch.softmax", "torch.Tensor.softmax", says="no softmax")
    assert "torch.Tensor.softmax" in static_violation(lambda x: x.softmax(-1), [no_softmax])
    assert "torch.softmax" in static_violation(lambda x: torch.softmax(x, -1), [no_softmax])
    assert static_violation(lambda x: x.exp() / x.exp().sum(), [no_softmax]) is None
    from seqeval.metrics import f1_score

    assert "seqeval.metrics" in static_violation(lambda g, p: f1_score(g, p), [forbid("seqeval", says="no seqeval")])

    def imports_inside(tags):
        from seqeval.metrics.sequence_labeling import get_entities

        return get_entities(tags)

    assert "seqeval" in static_violation(imports_inside, [forbid("seqeval", says="no seqeval")])
    from transformers import BertModel

    class MyBert(BertModel):
        pass

    no_bert = forbid("transformers.BertModel", says="count, do not build")
    assert "BertModel" in static_violation(lambda c: BertModel(c), [no_bert])
    assert "MyBert" in static_violation(lambda c: MyBert(c), [no_bert]), "a subclass is the class too"


def test_a_rule_naming_something_that_does_not_exist_is_refused():
    with pytest.raises(ValueError, match="rule target 'torch.no_such_function' does not exist"):
        static_violation(lambda x: x, [forbid("torch.no_such_function")])


# ----------------------------------------------------------------------------- rules, at run time


def test_calls_no_reading_can_see_are_caught_at_run_time(scratch):
    _register_loss()

    def built_name(lg, lb):
        return getattr(F, "cross_" + "entropy")(lg.flatten(0, 1), lb.flatten())

    namespace = {}
    exec(
        "def no_source(lg, lb):\n    import importlib\n"
        "    return importlib.import_module('torch.nn.functional').cross_entropy(lg.flatten(0, 1), lb.flatten())\n",
        namespace,
    )
    for answer in (built_name, namespace["no_source"]):
        passed, message = exercises.verdict("99.loss", answer)
        assert (
            not passed
            and "rule broken: write the loss" in message
            and "calls torch.nn.functional.cross_entropy" in message
        )
        assert sys.getprofile() is None


def test_a_forbidden_class_is_caught_when_instantiated_indirectly():
    from transformers import BertConfig, BertForMaskedLM

    def answer(config):
        return sum(p.numel() for p in BertForMaskedLM(config).parameters())  # builds a BertModel inside

    config = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    with Watch([forbid("transformers.BertModel", says="count")], answer) as watch:
        answer(config)
    assert watch.violation and "calls transformers.models.bert.modeling_bert.BertModel" in watch.violation
    assert "line 2 of answer" in watch.violation


def test_the_watch_restores_the_previous_profile_function_and_chains_it():
    seen = []

    def previous(frame, event, arg):
        seen.append(event)

    def answer(x):
        raise KeyboardInterrupt

    sys.setprofile(previous)
    try:
        with pytest.raises(KeyboardInterrupt):
            with Watch([forbid("torch.softmax")], answer):
                answer(1)
        assert sys.getprofile() is previous and seen, "the previous profiler kept running and is back"
    finally:
        sys.setprofile(None)


# ----------------------------------------------------------------------------- the learner's own errors


def _register_plain(checker=None):
    def reference(x):
        return 2 * x

    def check(fn):
        assert fn(3) == 6, "double it"

    exercises.exercise(
        "99.plain",
        "plain",
        "Double x.",
        reference=reference,
        kind="modify",
        section="s",
        mistakes=[Mistake(lambda x: x + 2, "double it")],
    )(checker or check)


def test_learners_own_assert_is_theirs_not_the_checkers_hint(scratch):
    _register_plain()

    def answer(x):
        assert x > 10, "my precondition"
        return 2 * x

    passed, message = exercises.verdict("99.plain", answer)
    assert not passed
    # (pytest's assertion rewriting adds the compared values to the message; a notebook shows only the text)
    assert message.startswith("your answer raised AssertionError: my precondition")
    assert message.endswith('(at line 2 of answer: `assert x > 10, "my precondition"`)')
    assert exercises.verdict("99.plain", lambda x: x + 2)[1].startswith("not yet: double it")


def test_error_deep_in_a_library_points_at_the_learners_line(scratch):
    _register_plain()

    def answer(x):
        weights = torch.ones(2, 3)
        return weights @ torch.ones(2)  # shape mismatch inside torch

    passed, message = exercises.verdict("99.plain", answer)
    assert not passed and message.startswith("your answer raised RuntimeError: ")
    assert message.endswith("(at line 3 of answer: `return weights @ torch.ones(2)  # shape mismatch inside torch`)")


def test_system_exit_is_reported_and_keyboard_interrupt_still_interrupts(scratch):
    _register_plain()

    def exits(x):
        sys.exit(3)

    passed, message = exercises.verdict("99.plain", exits)
    assert not passed and message.startswith("your answer raised SystemExit (code 3)")

    def interrupted(x):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        exercises.verdict("99.plain", interrupted)
    assert sys.getprofile() is None and registry._CURRENT.get() is None


def test_a_returned_value_the_check_cannot_use_is_said_so(scratch):
    def check(fn):
        assert fn(3).shape == (), "return a tensor"

    _register_plain(check)
    passed, message = exercises.verdict("99.plain", lambda x: [x])
    assert not passed and message.startswith("not yet: the check could not use your answer (AttributeError")


@pytest.mark.parametrize("source", ["def f(x):\n    ...\n", "def f(x):\n    pass\n", "def f(x):\n    '''todo'''\n"])
def test_a_stub_function_is_not_tried(scratch, source):
    _register_plain()
    namespace = {}
    exec(source, namespace)
    assert exercises.verdict("99.plain", namespace["f"]) == (False, verdicts.NOT_TRIED)


# ----------------------------------------------------------------------------- comparing, diagnosing


def test_expect_same_names_the_mistake_or_shows_got_and_expected(scratch):
    _register_loss()
    assert exercises.verdict("99.loss", _no_log_softmax) == (False, "not yet: no log-softmax")
    passed, message = exercises.verdict("99.loss", lambda lg, lb: _loss_reference(lg, lb) + 1)
    assert not passed and message.startswith("not yet: loss(logits, labels) gives tensor(")
    assert message.endswith(": average the labelled ones")


def test_a_rule_breaking_mistake_does_not_diagnose_an_honest_answer(scratch):
    @exercises.exercise(
        "99.twice",
        "t",
        "Return 2x without torch.mul.",
        reference=lambda x: 2 * x,
        kind="modify",
        section="s",
        rules=[forbid("torch.mul", says="no torch.mul")],
        mistakes=[Mistake(lambda x: torch.mul(x, 3), "torch.mul"), Mistake(lambda x: 3 * x, "thrice")],
    )
    def check(fn):
        expect_same(fn, lambda x: 2 * x, torch.arange(3.0))

    assert exercises.verdict("99.twice", lambda x: 3 * x) == (False, "not yet: thrice")
    assert "rule broken: no torch.mul" in exercises.verdict("99.twice", lambda x: torch.mul(x, 3))[1]


def test_inputs_are_copied_so_an_in_place_answer_cannot_spoil_the_reference(scratch):
    _register_plain()

    @exercises.exercise(
        "99.inplace",
        "t",
        "Return x + 1.",
        reference=lambda x: x + 1,
        kind="modify",
        section="s",
        mistakes=[Mistake(lambda x: x, "add one")],
    )
    def check(fn):
        expect_same(fn, lambda x: x + 1, torch.zeros(3))

    assert exercises.verdict("99.inplace", lambda x: x.add_(1))[0]


# ----------------------------------------------------------------------------- numbers and choices


def test_numeric_answers(scratch):
    exercises.numeric(
        "99.ln",
        "ln V",
        "Predict the initial loss for V = 1000.",
        reference=lambda: 6.907755,
        tolerance=0.05,
        section="s",
        hint="a uniform guess over V tokens",
        mistakes=[Mistake(1000.0, "that is V itself"), Mistake(9.965784, "natural log, not log2")],
    )
    assert exercises.verdict("99.ln", 6.9) == (True, "correct!")
    assert exercises.verdict("99.ln", torch.tensor(6.93))[0]
    assert exercises.verdict("99.ln", 1000) == (False, "not yet: that is V itself")
    assert exercises.verdict("99.ln", 9.97) == (False, "not yet: natural log, not log2")
    assert exercises.verdict("99.ln", 2.0) == (False, "not yet: 2 is too low: a uniform guess over V tokens")
    assert exercises.verdict("99.ln", "6.9")[1].startswith("not yet: give a number")
    assert exercises.verdict("99.ln", True)[1].startswith("not yet: give a number")


def test_choice_answers_explain_every_wrong_option(scratch, capsys):
    exercises.choice(
        "99.why",
        "why",
        "Why?",
        options={"a": "luck", "b": "the count is global", "c": "overfitting"},
        correct="b",
        why="a whole-image rule answers it",
        why_not={"a": "it repeats", "c": "test = train"},
        section="s",
    )
    assert exercises.verdict("99.why", "B") == (True, "correct! a whole-image rule answers it")
    assert exercises.verdict("99.why", "(b)")[0]
    assert exercises.verdict("99.why", "a") == (False, "not yet: (a) is not it. it repeats")
    assert exercises.verdict("99.why", "d")[1] == "not yet: 'd' is not an option: answer one of a, b, c"
    assert exercises.verdict("99.why", 2)[1].startswith("not yet: answer with the letter")
    exercises.show("99.why")
    out = capsys.readouterr().out
    assert "(a) luck" in out and "(c) overfitting" in out and "[conceptual, about 3 min, draws on s]" in out
    assert "answer = 'b'" in exercises.get("99.why").solution_text()


def test_registration_refuses_what_would_make_a_weak_exercise(scratch):
    with pytest.raises(ValueError, match="kind must be one of"):
        exercises.exercise("99.k", "t", "t", reference=lambda: 1, kind="copy")
    with pytest.raises(ValueError, match=r"why_not must explain every other option, missing \['c'\]"):
        exercises.choice(
            "99.c", "t", "t", options={"a": "x", "b": "y", "c": "z"}, correct="a", why="", why_not={"b": "no"}
        )
    with pytest.raises(ValueError, match="needs its diagnosing message"):
        Mistake(lambda: 1, "")
    exercises.exercise("99.dup", "t", "task", reference=lambda: None)(lambda answer: None)
    with pytest.raises(ValueError, match="exercise '99.dup' is registered twice"):
        exercises.exercise("99.dup", "t", "task", reference=lambda: None)(lambda answer: None)


def test_page_lists_kinds_minutes_and_sections(scratch, capsys):
    _register_plain()
    exercises.numeric(
        "99.n",
        "a number",
        "Predict.",
        reference=lambda: 1.0,
        tolerance=0.1,
        section="2. numbers",
        minutes=4,
        mistakes=[Mistake(2.0, "double")],
    )
    exercises.page("99")
    out = capsys.readouterr().out
    assert out.startswith("Chapter 99: 2 exercises, about 9 minutes in all.\nThey draw on: 2. numbers; s.")
    assert "99.n" in out and "predict" in out and "99.plain" in out and "modify" in out
    with pytest.raises(KeyError, match="chapter '98' has no exercises"):
        exercises.page("98")
