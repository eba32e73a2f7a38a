"""Every registered exercise, whichever chapters exist when the tests are collected: the
reference answer passes, each typical mistake fails with its own diagnosing message, a
placeholder is "not tried", an answer that crashes gives a message naming the learner's line,
and every chapter has enough exercises that test understanding rather than retyping."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from course_utils import exercises

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KEYS = exercises.keys()
MISTAKES = [(key, i, m) for key in KEYS for i, m in enumerate(exercises.get(key).mistakes())]
CHAPTERS = sorted({key[:2] for key in KEYS})
CHAPTERS_WITH_NOTEBOOK = sorted({p.name[:2] for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")})
MIN_EXERCISES, MIN_UNDERSTANDING = 5, 2  # per chapter; "understanding": predict or conceptual


def test_some_exercises_are_registered():
    assert KEYS, "no exercise is registered: course_utils/exercises/chNN.py modules define them"


@pytest.mark.parametrize("key", KEYS)
def test_key_names_its_chapter(key):
    chapter, _, name = key.partition(".")
    assert re.fullmatch(r"\d\d", chapter) and re.fullmatch(r"[a-z0-9_]+", name), (
        f"exercise key {key!r} should look like 'NN.snake_case_name'"
    )
    assert exercises.keys(chapter).count(key) == 1


@pytest.mark.parametrize("key", KEYS)
def test_metadata_is_complete(key):
    ex = exercises.get(key)
    assert ex.kind in exercises.KINDS
    assert ex.section.strip(), f"{key}: say which section of the chapter it draws on (section=...)"
    assert 1 <= ex.minutes <= 30, f"{key}: minutes={ex.minutes} is not a plausible time for one exercise"


DEBUG_KEYS = [key for key in KEYS if exercises.get(key).kind == "debug"]


@pytest.mark.parametrize("key", DEBUG_KEYS)
def test_debug_exercise_gives_its_broken_code_and_lists_it_as_a_mistake(key):
    ex = exercises.get(key)
    assert ex.given.strip(), f"{key}: a debug exercise shows the code to fix: @exercise(..., given=SOURCE)"
    listed = [
        m for m in ex.mistakes() if getattr(getattr(m.answer, "__code__", None), "co_filename", "") == f"<given {key}>"
    ]
    assert listed, (
        f"{key}: list the given code itself as a mistake, "
        f"Mistake(given_function(SOURCE, name, {key!r}), 'what is wrong with it')"
    )


@pytest.mark.parametrize("key", KEYS)
def test_reference_answer_passes(key):
    passed, message = exercises.verdict(key, exercises.reference_answer(key))
    assert passed, f"{key}: the reference solution fails its own check: {message}"


@pytest.mark.parametrize("key", KEYS)
def test_typical_mistakes_are_recorded_with_messages(key):
    mistakes = exercises.get(key).mistakes()
    assert mistakes, f"{key}: list at least one typical mistake (mistakes=[Mistake(answer, says), ...])"
    bare = [i for i, m in enumerate(mistakes) if not m.says]
    assert not bare, f"{key}: mistakes {bare} have no diagnosing message: give each one as Mistake(answer, says)"


@pytest.mark.parametrize("key,index,mistake", MISTAKES, ids=[f"{k}-mistake{i}" for k, i, _ in MISTAKES])
def test_each_mistake_is_rejected_with_its_message(key, index, mistake):
    passed, message = exercises.verdict(key, mistake.answer)
    assert not passed, f"{key}: typical mistake #{index} passes the check"
    assert message.startswith(("not yet: ", "your answer raised ")), f"{key}: mistake #{index}: {message!r}"
    if mistake.says:
        assert mistake.says in message, (
            f"{key}: mistake #{index} should be diagnosed as {mistake.says!r}, the verdict says {message!r}"
        )


@pytest.mark.parametrize("placeholder", [None, ...], ids=["None", "Ellipsis"])
@pytest.mark.parametrize("key", KEYS)
def test_placeholder_is_not_tried(key, placeholder):
    passed, message = exercises.verdict(key, placeholder)
    assert not passed and message.startswith("not tried yet")


@pytest.mark.parametrize("key", KEYS)
def test_crashing_answer_is_reported_as_the_learners_with_its_line(key):
    if exercises.get(key).answer_is_function:

        def crashing(*args, **kwargs):
            raise RuntimeError("boom from the learner's code")

        passed, message = exercises.verdict(key, crashing)
        assert not passed
        assert message.startswith(
            "your answer raised RuntimeError: boom from the learner's code (at line 2 of crashing: `raise RuntimeError"
        ), message
    else:  # a value answer of the wrong kind: the check fails with a message, never raises
        passed, message = exercises.verdict(key, object())
        assert not passed and message.startswith("not yet: ")


@pytest.mark.parametrize("key", KEYS)
def test_show_check_and_solution_print(key, capsys):
    ex = exercises.get(key)
    exercises.show(key)
    shown = capsys.readouterr().out
    assert f"Exercise {key}: {ex.title}" in shown and f"[{ex.kind}, about {ex.minutes} min" in shown
    for rule in ex.rules:
        assert rule.says in shown.replace("\n", " "), f"{key}: show() does not state the rule {rule.says!r}"
    assert exercises.check(key, exercises.reference_answer(key)) is True
    assert capsys.readouterr().out.startswith(f"✅ {key}: correct!")
    assert exercises.check(key, None) is False
    assert capsys.readouterr().out.startswith(f"❌ {key}: not tried yet")
    assert len(ex.solution_text().strip()) > 10


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_has_enough_exercises_that_test_understanding(chapter):
    chosen = [exercises.get(k) for k in exercises.keys(chapter)]
    kinds = {ex.key: ex.kind for ex in chosen}
    assert len(chosen) >= MIN_EXERCISES, f"chapter {chapter} has {len(chosen)} exercises; it needs {MIN_EXERCISES}"
    understanding = [k for k, kind in kinds.items() if kind in ("predict", "conceptual")]
    assert len(understanding) >= MIN_UNDERSTANDING, (
        f"chapter {chapter}: {len(understanding)} predict/conceptual exercises, at least {MIN_UNDERSTANDING} "
        f"needed: {kinds}"
    )
    retype = [k for k, kind in kinds.items() if kind == "retype"]
    assert 2 * len(retype) <= len(chosen), f"chapter {chapter}: more than half are retyping: {kinds}"


@pytest.mark.parametrize("chapter", CHAPTERS_WITH_NOTEBOOK)
def test_notebook_shows_its_page_and_every_exercise(chapter):
    (notebook,) = NOTEBOOKS.glob(f"{chapter}_*.ipynb")
    source = "\n".join("".join(c["source"]) for c in json.loads(notebook.read_text())["cells"])
    assert chapter in CHAPTERS, (
        f"{notebook.name} has a notebook but course_utils/exercises/ch{chapter}.py has no exercises"
    )
    assert f'exercises.page("{chapter}")' in source, f'{notebook.name}: call exercises.page("{chapter}")'
    missing = [k for k in exercises.keys(chapter) if f'"{k}"' not in source]
    assert not missing, f"{notebook.name} does not show these exercises: {missing}"
    not_pasted = [k for k in exercises.keys(chapter) if exercises.get(k).given not in source]
    assert not not_pasted, f"{notebook.name}: paste the given code of {not_pasted} verbatim into its cell"


def test_page_says_time_and_sections(capsys):
    for chapter in CHAPTERS:
        chosen = [exercises.get(k) for k in exercises.keys(chapter)]
        exercises.page(chapter)
        out = capsys.readouterr().out
        assert f"about {sum(ex.minutes for ex in chosen)} minutes" in out
        assert all(ex.section in out and ex.key in out for ex in chosen)


def test_unknown_key_lists_known_ones():
    with pytest.raises(KeyError, match=r"no exercise '99.nothing'; known exercises: .*" + re.escape(KEYS[0])):
        exercises.get("99.nothing")


# ----------------------------------------------------------------------------- predictions, confirmed by running
# A predict/conceptual exercise's reference is computed from first principles; these run the real thing.


def _answer(key):
    return exercises.reference_answer(key)


def test_00_predictions_match_what_the_code_does():
    import ipywidgets as widgets
    import torch

    from course_utils import config

    saved = config._current
    try:
        config._current = config.CourseConfig(mode="fast", seed=0, device=torch.device("cuda"), threads=1)
        assert config.pick(fast=32, full=256, gpu=512) == _answer("00.pick_on_gpu")
    finally:
        config._current = saved
    slider, calls = widgets.IntSlider(value=4, min=1, max=12), []
    slider.observe(calls.append, names="value")
    for value in (4, 6, 6, 30):
        slider.value = value
    assert len(calls) == _answer("00.observe_count")
    config.set_seed(0)
    a, b = torch.rand(3), torch.rand(3)
    config.set_seed(0)
    a2, b2 = torch.rand(3), torch.rand(3)
    assert not torch.equal(a, b) and torch.equal(a, a2) and torch.equal(b, b2)
    assert _answer("00.seed_draws") == "b"


def test_03_predictions_match_what_the_code_does():
    import torch
    import transformers

    from course_utils.text import bert, pretraining
    from course_utils import training

    torch.manual_seed(0)
    vocab = 30_522
    config = transformers.BertConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    model = transformers.BertForPreTraining(config).eval()
    ids = torch.randint(5, vocab, (8, 32))
    labels = torch.full_like(ids, -100)
    labels[:, ::6] = ids[:, ::6]
    with torch.no_grad():
        loss = model(input_ids=ids, labels=labels, next_sentence_label=torch.randint(0, 2, (8,))).loss.item()
    assert abs(loss - _answer("03.initial_loss")) < 0.1, loss

    tokens = torch.randint(5, 2000, (200_000,))
    masked, labels = pretraining.mask_tokens(
        tokens,
        torch.zeros_like(tokens, dtype=torch.bool),
        4,
        torch.arange(5, 2000),
        0.15,
        torch.Generator().manual_seed(0),
    )
    in_plain_sight = ((masked == tokens) & (labels != -100)).sum().item()
    assert abs(in_plain_sight - _answer("03.target_share")) < 0.1 * _answer("03.target_share"), in_plain_sight

    for make in (
        lambda o: training.linear_warmup_schedule(o, 60, 1000),
        lambda o: transformers.get_linear_schedule_with_warmup(o, 60, 1000),
    ):
        optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1e-3)
        scheduler = make(optimizer)
        for _ in range(530):
            optimizer.step()
            scheduler.step()
        assert abs(optimizer.param_groups[0]["lr"] - _answer("03.warmup_lr")) < 1e-12

    small = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    ours = bert.BertForPreTraining(small).eval()
    ids = torch.randint(5, 50, (2, 10))
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    with torch.no_grad():
        everywhere = ours(input_ids=ids, labels=labels, next_sentence_label=torch.tensor([0, 1]), masked_only=False)
        only_targets = ours(input_ids=ids, labels=labels, next_sentence_label=torch.tensor([0, 1]), masked_only=True)
    assert torch.allclose(everywhere.mlm_loss, only_targets.mlm_loss, atol=1e-6)
    assert _answer("03.masked_only") == "b"


def test_04_predictions_match_what_the_code_does():
    from seqeval.metrics import accuracy_score, f1_score
    from seqeval.metrics.sequence_labeling import get_entities

    from course_utils.text import ner

    tags = ["B-PER", "I-PER", "O", "O", "B-LOC"]  # Arnold Schwarzenegger flew to Lyon
    label2id = {t: i for i, t in enumerate(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])}
    word_ids = [None, 0, 1, 1, 1, 1, 2, 3, 4, None]
    assert ner.align_labels(word_ids, tags, label2id).count(-100) == _answer("04.ignored_positions")
    assert ner.align_labels(word_ids, tags, label2id, label_all_subtokens=True).count(-100) == 2  # mistake 2

    gold, pred = [["B-LOC", "I-LOC", "I-LOC", "O", "B-PER"]], [["B-LOC", "I-LOC", "O", "O", "B-PER"]]
    assert abs(f1_score(gold, pred) - _answer("04.boundary_f1")) < 1e-9
    assert accuracy_score(gold, pred) == 0.8  # the token-accuracy mistake

    assert len(get_entities(["B-PER"] * 3)) == 3 and len(get_entities(["B-PER", "I-PER", "I-PER"])) == 1
    every = ner.align_labels([None, 0, 0, 0, None], ["B-PER"], {"B-PER": 1, "I-PER": 2}, label_all_subtokens=True)
    assert every == [-100, 1, 2, 2, -100] and _answer("04.all_subtokens") == "a"


def test_05_predictions_match_what_the_code_does():
    import math

    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from course_utils.vision import multimodal as mm
    from course_utils.vision import contrastive
    from course_utils.vision import shapes

    data = shapes.generate(3000, seed=0)
    count = data.subtypes == shapes.SUBTYPES.index("count")
    circles = data.shapes.sum(1, keepdim=True).expand_as(data.answers)
    rule = torch.maximum(circles, 6 - circles) + shapes.ANSWERS.index("1") - 1
    six_objects = 100 * (rule[count] == data.answers[count]).float().mean().item()
    assert abs(six_objects - 100 * 26 / 32) < 1.5, six_objects  # section 1's floor, which the exercise gives away
    # the exercise asks for 8 objects: simulate such scenes (shape of each object, which one is c)
    g = torch.Generator().manual_seed(0)
    scene_shapes = torch.randint(0, 2, (200_000, 8), generator=g)
    c = torch.randint(0, 8, (200_000,), generator=g)
    answer = (scene_shapes == scene_shapes.gather(1, c[:, None])).sum(1)
    circles8 = scene_shapes.sum(1)
    eight_objects = 100 * (torch.maximum(circles8, 8 - circles8) == answer).float().mean().item()
    assert abs(eight_objects - _answer("05.count_rule")) < 0.5, eight_objects

    rn = mm.RelationNetwork(d_image=34, n_elements=25, d_question=128)
    elements, question = torch.randn(1, 25, 34), torch.randn(1, 128)
    flops = {}
    for name, run in (("split", rn.first_layer), ("naive", rn.naive_pairs)):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            run(elements, question)
        flops[name] = counter.get_total_flops()
    assert abs(flops["naive"] / flops["split"] - _answer("05.pair_cost")) < 1e-9

    same = F.normalize(torch.ones(64, 16), dim=-1)
    assert abs(contrastive.contrastive_loss(same, same, 0.07).item() - _answer("05.collapsed_loss")) < 1e-5
    assert abs(_answer("05.collapsed_loss") - math.log(64)) < 1e-12

    film = mm.FiLMFusion(d_image=10, n_elements=6, d_question=11).eval()  # elements never meet before pooling
    question = mm.VectorQuestionEncoder(11)(shapes.ALL_QUESTION_VECTORS[:2])
    elements = torch.randn(2, 6, 10)
    changed = elements.clone()
    changed[:, 3] += 1.0

    def per_element(x):
        h = film.embed(x)
        for block, modulation in zip(film.blocks, film.film):
            gamma, beta = modulation(question.vector)[:, None, :].chunk(2, dim=-1)
            h = h + F.relu((1 + gamma) * block(h) + beta)
        return h

    with torch.no_grad():
        before, after = per_element(elements), per_element(changed)
    others = [i for i in range(6) if i != 3]
    assert torch.equal(before[:, others], after[:, others]) and not torch.equal(before[:, 3], after[:, 3])
    assert _answer("05.film_closest") == "b"


# ----------------------------------------------------------------------------- references against their libraries, any input

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG", "B-MISC"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(TAGS), max_size=12))
def test_04_span_reference_reads_tags_as_seqeval_does(tags):
    from seqeval.metrics.sequence_labeling import get_entities

    assert exercises.reference_answer("04.bio_spans")(tags) == [(k, a, b + 1) for k, a, b in get_entities(tags)]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.sampled_from(TAGS), min_size=1, max_size=6), min_size=1, max_size=4), st.randoms())
def test_04_f1_reference_is_seqevals(gold, rng):
    import warnings

    from seqeval.metrics import f1_score

    pred = [[t if rng.random() < 0.6 else rng.choice(TAGS) for t in tags] for tags in gold]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = f1_score(gold, pred)
    assert abs(exercises.reference_answer("04.entity_f1")(gold, pred) - want) < 1e-9
