"""Sort-of-CLEVR, checked against the pixels and against a separate, plain-Python implementation."""

import collections
import math

import pytest
import torch

from course_utils.vision import shapes

N = 60


@pytest.fixture(scope="module")
def data():
    return shapes.generate(N, seed=3)


def test_shapes_and_dtypes(data):
    assert data.images.shape == (N, 3, 75, 75) and data.images.dtype == torch.uint8
    assert data.shapes.shape == (N, 6) and data.centers.shape == (N, 6, 2)
    assert data.questions.shape == (N, 20, 11) and data.answers.shape == (N, 20)
    assert len(data.question_text) == N and all(len(q) == 20 for q in data.question_text)
    assert len(data) == N


def test_objects_inside_the_image(data):
    r = shapes.OBJECT_RADIUS
    assert int(data.centers.min()) - r >= 0
    assert int(data.centers.max()) + r <= 74


def test_objects_do_not_overlap(data):
    # bounding boxes [c - r, c + r] must be disjoint on at least one axis for every pair
    r = shapes.OBJECT_RADIUS
    for i in range(N):
        c = data.centers[i].tolist()
        for a in range(6):
            for b in range(a + 1, 6):
                apart_x = abs(c[a][0] - c[b][0]) > 2 * r
                apart_y = abs(c[a][1] - c[b][1]) > 2 * r
                assert apart_x or apart_y, f"image {i}: objects {a} and {b} overlap"


def _disk(r):
    """The pixels (dx, dy) whose centre lies within r + 1/2 of the object's centre (a plain reference)."""
    return {(dx, dy) for dx in range(-r, r + 1) for dy in range(-r, r + 1) if math.hypot(dx, dy) <= r + 0.5}


def _disk_area(r):
    return len(_disk(r))


def _circle_masks(data):
    """Every drawn circle of ``data`` as the set of (dx, dy) offsets painted in its colour."""
    rgb = torch.tensor(shapes.RGB, dtype=torch.uint8)
    r = shapes.OBJECT_RADIUS
    for i in range(len(data)):
        img = data.images[i].permute(1, 2, 0)
        for k in range(6):
            if int(data.shapes[i, k]) == 1:
                x, y = data.centers[i, k].tolist()
                crop = (img[y - r : y + r + 1, x - r : x + r + 1] == rgb[k]).all(-1)
                yield {(dx - r, dy - r) for dy, dx in crop.nonzero().tolist()}


def test_circles_are_round_discs_of_radius_r_plus_a_half(data):
    expected = _disk(shapes.OBJECT_RADIUS)
    masks = list(_circle_masks(data))
    assert len(masks) > 50
    assert all(m == expected for m in masks)


def test_circles_have_no_one_pixel_nubs_and_are_symmetric(data):
    r = shapes.OBJECT_RADIUS
    for m in _circle_masks(data):
        # symmetric under both mirror images and the transpose (the eight symmetries of the square grid)
        assert m == {(-dx, dy) for dx, dy in m} == {(dx, -dy) for dx, dy in m} == {(dy, dx) for dx, dy in m}
        # no nub: the outermost column (and, by symmetry, row) holds more than one pixel,
        # and every pixel touches at least two painted neighbours (4-connectivity)
        assert sum(1 for dx, dy in m if dx == r) > 1
        for dx, dy in m:
            assert sum((dx + a, dy + b) in m for a, b in ((1, 0), (-1, 0), (0, 1), (0, -1))) >= 2


def test_pixels_match_the_scene(data):
    rgb = {0: (255, 0, 0), 1: (0, 255, 0), 2: (0, 0, 255), 3: (255, 156, 0), 4: (255, 255, 0), 5: (128, 128, 128)}
    r = shapes.OBJECT_RADIUS
    area = {0: (2 * r + 1) ** 2, 1: _disk_area(r)}
    for i in range(0, N, 7):
        img = data.images[i].permute(1, 2, 0)  # (75, 75, 3)
        for k in range(6):
            x, y = data.centers[i, k].tolist()
            shape = int(data.shapes[i, k])
            assert tuple(img[y, x].tolist()) == rgb[k], f"image {i}: centre of colour {k} has the wrong colour"
            corner = tuple(img[y + r, x + r].tolist())
            assert (corner == rgb[k]) == (shape == 0), f"image {i}: corner pixel contradicts the shape"
            # every pixel of the object is there: none was painted over by another object
            n_pixels = int((img == torch.tensor(rgb[k], dtype=torch.uint8)).all(-1).sum())
            assert n_pixels == area[shape]
        n_background = int((img == 255).all(-1).sum())
        assert n_background == 75 * 75 - sum(area[int(s)] for s in data.shapes[i])


def _answer_by_hand(centers, obj_shapes, subtype, color):
    """A second, deliberately plain implementation of the six question subtypes."""
    names = ["square", "circle"]
    x, y = centers[color]
    if subtype == 0:
        return names[obj_shapes[color]]
    if subtype == 1:
        return "yes" if x < 37.5 else "no"
    if subtype == 2:
        return "yes" if y < 37.5 else "no"
    dists = {k: math.hypot(centers[k][0] - x, centers[k][1] - y) for k in range(6) if k != color}
    if subtype == 3:
        return names[obj_shapes[min(dists, key=dists.get)]]
    if subtype == 4:
        return names[obj_shapes[max(dists, key=dists.get)]]
    return str(sum(1 for s in obj_shapes if s == obj_shapes[color]))


def test_answers_recomputed_from_the_scene(data):
    for i in range(N):
        centers, obj_shapes = data.centers[i].tolist(), data.shapes[i].tolist()
        for j in range(20):
            expected = _answer_by_hand(centers, obj_shapes, int(data.subtypes[i, j]), int(data.colors[i, j]))
            assert data.answer_text(i, j) == expected, (i, j, data.question_text[i][j])


def test_no_ambiguous_closest_or_furthest(data):
    for i in range(N):
        c = data.centers[i].tolist()
        for a in range(6):
            d = sorted((c[a][0] - c[b][0]) ** 2 + (c[a][1] - c[b][1]) ** 2 for b in range(6) if b != a)
            assert d[0] < d[1] and d[-2] < d[-1], f"image {i}: a tie would make the answer ambiguous"


def test_ten_of_each_kind_and_answers_fit_the_subtype(data):
    relational = torch.tensor(shapes.RELATIONAL)[data.subtypes]
    assert relational[:, :10].logical_not().all() and relational[:, 10:].all()
    allowed = {
        0: {"square", "circle"},
        1: {"yes", "no"},
        2: {"yes", "no"},
        3: {"square", "circle"},
        4: {"square", "circle"},
        5: {"1", "2", "3", "4", "5", "6"},
    }
    for i in range(N):
        for j in range(20):
            assert data.answer_text(i, j) in allowed[int(data.subtypes[i, j])]


def test_question_vector_and_text_agree(data):
    for i in range(0, N, 5):
        for j in range(20):
            v, text = data.questions[i, j], data.question_text[i][j]
            color = int(v[:6].argmax())
            assert v[:6].sum() == 1 and v[6:8].sum() == 1 and v[8:].sum() == 1
            assert f" {shapes.COLORS[color]} " in text
            assert color == int(data.colors[i, j])
            subtype = int(data.subtypes[i, j])
            assert bool(v[7]) == shapes.RELATIONAL[subtype] and int(v[8:].argmax()) == subtype % 3
    assert len(set(shapes.ALL_QUESTION_TEXTS)) == 36
    assert torch.unique(shapes.ALL_QUESTION_VECTORS, dim=0).shape[0] == 36


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = shapes.generate(5, seed=1), shapes.generate(5, seed=1), shapes.generate(5, seed=2)
    assert torch.equal(a.images, b.images) and torch.equal(a.answers, b.answers)
    assert not torch.equal(a.images, c.images)


def test_object_descriptions_are_a_shuffle_of_the_scene(data):
    plain = data.object_descriptions(shuffle=False)
    mixed = data.object_descriptions(shuffle=True, seed=5)
    assert plain.shape == (N, 6, 10)
    assert torch.equal(plain[:, :, :6], torch.eye(6).expand(N, 6, 6))
    assert torch.allclose(plain[..., 8:], data.centers.float() / 74 * 2 - 1)
    for i in range(N):
        assert sorted(map(tuple, plain[i].tolist())) == sorted(map(tuple, mixed[i].tolist()))
    assert not torch.equal(plain, mixed)


def test_subset_keeps_questions_with_their_images(data):
    sub = data[[4, 2]]
    assert torch.equal(sub.images[1], data.images[2]) and sub.question_text[0] == data.question_text[4]
    assert len(data[3]) == 1 and len(data[10:20]) == 10


def test_answer_balance_matches_a_count(data):
    balance = shapes.answer_balance(data)
    for s, name in enumerate(shapes.SUBTYPES):
        counter = collections.Counter(
            data.answer_text(i, j) for i in range(N) for j in range(20) if int(data.subtypes[i, j]) == s
        )
        top = max(counter.values())
        assert balance[name]["baseline"] == pytest.approx(top / sum(counter.values()))
        assert balance[name]["counts"] == dict(counter)


def test_scene_text_names_every_object(data):
    text = data.scene_text(0)
    for k, color in enumerate(shapes.COLORS):
        assert text.count(color) == 1
        assert f"{color} {shapes.SHAPES[int(data.shapes[0, k])]}" in text


@pytest.mark.parametrize("n", [0, -3, 2.5, "10", True])
def test_bad_n_images(n):
    with pytest.raises(ValueError, match="n_images must be a positive integer"):
        shapes.generate(n)


def test_bad_seed():
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        shapes.generate(3, seed=-1)
