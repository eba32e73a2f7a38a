"""Scene captions: the parser inverts the generator on every reference; the scene check against
counts kept by the test itself; BLEU equals sacrebleu's with references passed as streams."""

from __future__ import annotations

import numpy as np
import pytest
import sacrebleu
from hypothesis import given, settings
from hypothesis import strategies as st

from course_utils.vision import captions as C
from course_utils.vision import shapes

# ---------------------------------------------------------------- an independent reading of the scene


def _region_by_hand(x, y):
    """Thirds of a 75-pixel side: 0-24, 25-49, 50-74."""
    row = "top" if y < 25 else "middle" if y < 50 else "bottom"
    col = "left" if x < 25 else "centre" if x < 50 else "right"
    return "centre" if (row, col) == ("middle", "centre") else f"{row} {col}"


def _closest_by_hand(scene, color, relation):
    anchor = next(o for o in scene if o.color == color)
    d = sorted(((o.x - anchor.x) ** 2 + (o.y - anchor.y) ** 2, o.color) for o in scene if o.color != color)
    return d[0][1] if relation == "closest" else d[-1][1]


@pytest.fixture(scope="module")
def data():
    return shapes.generate(40, seed=11)


def test_regions_match_a_hand_count(data):
    for i in range(len(data)):
        for o in C.scene_of(data, i):
            assert C.region_of(o.x, o.y) == _region_by_hand(o.x, o.y)
    assert C.region_of(24, 25) == "middle left" and C.region_of(50, 49) == "middle right"
    assert C.region_of(37, 37) == "centre" and C.region_of(0, 74) == "bottom left"


def test_scene_of_follows_the_data(data):
    scene = C.scene_of(data, 3)
    assert [o.color for o in scene] == list(shapes.COLORS)
    assert [o.shape for o in scene] == [shapes.SHAPES[int(s)] for s in data.shapes[3]]
    assert [(o.x, o.y) for o in scene] == [tuple(c) for c in data.centers[3].tolist()]


def test_relations_agree_with_the_datasets_answers(data):
    # shapes.generate answers "shape of the object closest to c": our relation must name that object
    for i in range(len(data)):
        scene = C.scene_of(data, i)
        for q in range(20):
            subtype, color = int(data.subtypes[i, q]), shapes.COLORS[int(data.colors[i, q])]
            if shapes.SUBTYPES[subtype] in C.RELATIONS:
                other = C.true_relation(scene, color, shapes.SUBTYPES[subtype])
                assert other.shape == data.answer_text(i, q)
                assert other.color == _closest_by_hand(scene, color, shapes.SUBTYPES[subtype])


# ---------------------------------------------------------------- the parser inverts the generator

scene_strategy = st.lists(
    st.tuples(st.sampled_from(shapes.COLORS), st.sampled_from(shapes.SHAPES), st.integers(0, 74), st.integers(0, 74)),
    min_size=1,
    max_size=6,
    unique_by=lambda t: t[0],
).map(lambda objs: [C.SceneObject(*o) for o in objs])


@settings(derandomize=True, max_examples=150, deadline=None)
@given(scene=scene_strategy, n=st.integers(1, 6), relations=st.integers(0, 3), seed=st.integers(0, 2**16))
def test_parse_inverts_every_reference(scene, n, relations, seed):
    refs = C.references(scene, n=n, relations=relations, rng=np.random.default_rng(seed))
    assert len(refs) == n
    expected = {(o.color, o.shape, _region_by_hand(o.x, o.y)) for o in scene}
    for ref in refs:
        parsed = C.parse(ref)
        assert not parsed.unknown_words and not parsed.unreadable, ref
        assert len(parsed.objects) == len(scene)
        assert {tuple(f) for f in parsed.objects} == expected
        for r in parsed.relations:  # every stated relation is true, checked by hand
            assert r.other_color == _closest_by_hand(scene, r.color, r.relation)
        check = C.check_caption(ref, scene)
        assert check.exact and check.correct == len(scene)


@settings(derandomize=True, max_examples=60, deadline=None)
@given(scene=scene_strategy, order=st.sampled_from(C.ORDERS), phrasing=st.integers(0, 3), seed=st.integers(0, 999))
def test_describe_orders(scene, order, phrasing, seed):
    caption = C.describe(scene, order=order, phrasing=phrasing, rng=np.random.default_rng(seed))
    said = [f.color for f in C.parse(caption).objects]
    if order == "colour":
        assert said == [c for c in shapes.COLORS if c in said]
    if order == "reading":
        rows = [C.REGIONS.index(_region_by_hand(o.x, o.y)) for c in said for o in scene if o.color == c]
        assert rows == sorted(rows)
    assert sorted(said) == sorted(o.color for o in scene)


def test_references_are_varied_and_repeatable(data):
    scene = C.scene_of(data, 0)
    refs = C.references(scene, n=5, relations=2, rng=np.random.default_rng(7))
    assert len(set(refs)) == 5
    assert refs == C.references(scene, n=5, relations=2, rng=np.random.default_rng(7))
    assert refs[0] == C.canonical_caption(scene, relations=2)
    assert C.corpus_references(data[:3], n=3, seed=1) == C.corpus_references(data[:3], n=3, seed=1)
    assert "an orange" in refs[0] and "a orange" not in refs[0]


def test_tokenizer_round_trip(data):
    tok = C.CaptionTokenizer()
    caption = C.canonical_caption(C.scene_of(data, 1), relations=2)
    ids = tok.encode(caption)
    assert ids[0] == tok.BOS and ids[-1] == tok.EOS
    assert tok.decode(ids) == caption
    batch, mask = tok.batch([caption, "a red square is in the centre."])
    assert batch.shape[0] == 2 and int(mask[1].sum()) == len(tok.encode("a red square is in the centre."))


# ---------------------------------------------------------------- the scene check, against counts kept here


def _sentence(color, shape, region):
    return f"there is a {color} {shape} in the {region}."


def test_scene_check_against_an_independent_count(data):
    """Damage captions in known ways and count by hand what the check must find."""
    rng = np.random.default_rng(0)
    captions, scenes = [], []
    said = correct = exact = dups = absent = bindings = regions = 0
    for i in range(len(data)):
        scene = C.scene_of(data, i)
        kind = i % 6
        if kind == 5:  # a scene with the gray object removed
            scene = scene[:5]
        objs = [(o.color, o.shape, _region_by_hand(o.x, o.y)) for o in scene]
        sentences = [_sentence(*o) for o in objs]
        n_said, n_correct = len(objs), len(objs)
        if kind == 0:  # right
            exact += 1
        elif kind == 1:  # drop one object
            sentences.pop(int(rng.integers(len(sentences))))
            n_said, n_correct = n_said - 1, n_correct - 1
        elif kind == 2:  # describe the first object twice
            sentences.append(sentences[0])
            n_said += 1
            dups += 1
        elif kind == 3:  # wrong shape for one colour
            c, s, r = objs[2]
            sentences[2] = _sentence(c, "square" if s == "circle" else "circle", r)
            n_correct -= 1
            bindings += 1
        elif kind == 4:  # wrong region for one object
            c, s, r = objs[1]
            sentences[1] = _sentence(c, s, "bottom right" if r != "bottom right" else "top left")
            n_correct -= 1
            regions += 1
        elif kind == 5:  # a gray object the scene does not have
            sentences.append(_sentence("gray", "circle", "centre"))
            n_said += 1
            absent += 1
        captions.append(" ".join(sentences))
        scenes.append(scene)
        said += n_said
        correct += n_correct
    n_true = sum(len(s) for s in scenes)
    got = C.scene_check(captions, scenes)
    p, r = correct / said, correct / n_true
    assert got["precision"] == pytest.approx(p) and got["recall"] == pytest.approx(r)
    assert got["f1"] == pytest.approx(2 * p * r / (p + r))
    assert got["exact"] == pytest.approx(exact / len(captions))
    assert got["duplicates"] == pytest.approx(dups / len(captions))
    assert got["absent_colours"] == pytest.approx(absent / len(captions))
    assert got["wrong_bindings"] == pytest.approx(bindings / len(captions))
    assert got["wrong_regions"] == pytest.approx(regions / len(captions))
    assert got["relation_accuracy"] is None and got["unknown_words"] == 0


def test_relation_check():
    scene = [
        C.SceneObject("red", "square", 10, 10),
        C.SceneObject("green", "circle", 20, 10),
        C.SceneObject("blue", "circle", 70, 70),
    ]
    base = "a red square is in the top left. a green circle is in the top left. a blue circle is in the bottom right."
    right = C.check_caption(base + " the red square is closest to the green circle.", scene)
    wrong = C.check_caption(base + " the red square is closest to the blue circle.", scene)
    wrong_shape = C.check_caption(base + " the object furthest from the red square is the blue square.", scene)
    assert (right.relations_true, right.exact) == (1, True)
    assert (wrong.relations_true, wrong.exact) == (0, False)
    assert wrong_shape.relations_said == 1 and wrong_shape.relations_true == 0
    got = C.scene_check(
        [base + " the red square is closest to the green circle. the red square is furthest from the green circle."],
        [scene],
    )
    assert got["relation_accuracy"] == 0.5


# ---------------------------------------------------------------- BLEU with sacrebleu


def test_bleu_passes_references_as_streams():
    hyps = ["a red square is in the centre.", "the blue circle is in the top left."]
    refs = [
        ["a red square is in the centre.", "the red square is in the centre."],
        ["a blue circle is in the top left.", "there is a blue circle in the top left."],
    ]
    streams = [[refs[0][0], refs[1][0]], [refs[0][1], refs[1][1]]]  # written out by hand
    assert C.bleu(hyps, refs) == pytest.approx(sacrebleu.corpus_bleu(hyps, streams).score)
    # the mistake the function exists to avoid: one image's references passed as one stream
    transposed = sacrebleu.corpus_bleu(hyps, refs).score
    assert C.bleu(hyps, refs) != pytest.approx(transposed)
    assert C.bleu(hyps, [[h] for h in hyps]) == pytest.approx(100.0)


def test_bleu_misses_bindings():
    """Right words, wrong colour-shape bindings: BLEU stays high, the scene check does not."""
    scene = [C.SceneObject("red", "square", 10, 10), C.SceneObject("blue", "circle", 60, 60)]
    truth = C.canonical_caption(scene)
    swapped = (
        truth.replace("red square", "red XX").replace("blue circle", "blue square").replace("red XX", "red circle")
    )
    assert sorted(C.words(swapped)) == sorted(C.words(truth))
    score = C.bleu([swapped], [[truth]])
    check = C.scene_check([swapped], [scene])
    assert score > 40 and check["f1"] == 0.0 and check["wrong_bindings"] == 2


# ---------------------------------------------------------------- bad input


def test_parser_reports_unknown_words_instead_of_crashing():
    parsed = C.parse("a purple circle is in the top left. a red square is in the  CENTRE. blah")
    assert parsed.unknown_words == ["purple", "blah"]
    assert parsed.objects == [C.ObjectFact("red", "square", "centre")]
    assert parsed.unreadable == ["a circle is in the top left."]
    assert C.parse("").objects == [] and C.parse("...").unreadable == []


def test_bad_input_is_named():
    scene = [C.SceneObject("red", "square", 10, 10)]
    with pytest.raises(TypeError, match="string"):
        C.parse(None)
    with pytest.raises(ValueError, match="one object per colour"):
        C.describe([("red", "square", 1, 1), ("red", "circle", 50, 50)])
    with pytest.raises(ValueError, match="colours are"):
        C.describe([("purple", "square", 1, 1)])
    with pytest.raises(ValueError, match="outside"):
        C.region_of(75, 3)
    with pytest.raises(ValueError, match="order must be"):
        C.describe(scene, order="size")
    with pytest.raises(ValueError, match="needs rng"):
        C.describe(scene, order="random")
    with pytest.raises(ValueError, match="one caption per image"):
        C.scene_check(["a"], [scene, scene])
    with pytest.raises(ValueError, match="same number"):
        C.bleu(["a", "b"], [["a"], ["b", "c"]])
    with pytest.raises(ValueError, match="hypotheses"):
        C.bleu(["a"], [["a"], ["b"]])
    with pytest.raises(ValueError, match="vocabulary"):
        C.CaptionTokenizer().encode("a purple square.")


def test_articles():
    assert (
        C._articles("a orange square. an yellow circle. a red square.")
        == "an orange square. a yellow circle. a red square."
    )
