"""Chapter 09's post generator: labels re-derived by this file's own reading of the stated rules
(from the words of the texts and the pixels of the images, not from the generator's labeller),
the slices' single-modality floors confirmed by counting, determinism and bad input."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest
import torch

from course_utils.vision import sentiment_data as sd

POSTS = sd.generate(1500, seed=3)
BIG = sd.generate(6000, seed=11)  # for the statistics

# this test's own word lists, written from the module docstring's rules (not imported)
EN_POSITIVE = {"love", "like", "enjoy", "great", "wonderful", "lovely", "amazing", "nice", "happy", "glad", "cheerful"}
EN_NEGATIVE = {"hate", "dislike", "terrible", "awful", "horrible", "boring", "bad", "sad", "upset", "miserable"}
ZH_POSITIVE = ["喜欢", "爱", "欣赏", "好", "棒", "美", "精彩", "可爱", "开心", "高兴", "快乐"]
ZH_NEGATIVE = ["讨厌", "厌恶", "糟糕", "差", "无聊", "可怕", "烂", "难过", "伤心", "失望"]


def text_says(text: str, lang: str) -> tuple[str, object]:
    """What a careful reader gets from the text alone: ("wish", "sun"/"rain"), ("polar", 0/1) or
    ("nothing", None) -- remarks and unspecific praise (which may be sarcastic)."""
    t = text.lower()
    rainy = ("rain" in t) or ("雨" in t)
    sunny = ("sun" in t) or ("晴" in t) or ("太阳" in t) or ("好天气" in t)
    if any(w in t for w in ("hoping for", "need some", "i want a", "please let", "希望", "需要", "周末想要", "拜托")):
        return "wish", "rain" if rainy else "sun"
    if rainy or sunny:  # praise + named weather: sarcasm the text gives away
        return "polar", int(sunny and not rainy)
    if lang == "en":
        words = t.replace(",", " ").split()
        pos = [w for w in words if w in EN_POSITIVE]
        neg = [w for w in words if w in EN_NEGATIVE]
        if len(pos) + len(neg) != 1 or any(
            p in t for p in ("just what", "this again", "another one", "just great", "as planned", "simply amazing")
        ):
            return "nothing", None
        return "polar", int(bool(pos)) ^ int(" not " in f" {t} ")
    pos = [w for w in ZH_POSITIVE if w in t]
    neg = [w for w in ZH_NEGATIVE if w in t]
    if "太好了" in t or t.startswith("真棒，") or "完美" in t or "好极了" in t or "厉害" in t or not (pos or neg):
        return "nothing", None
    return "polar", int(bool(pos) and not neg) ^ int("不" in t)


def image_says(image: torch.Tensor) -> tuple[str, object]:
    """From pixels: ("sun", 1), ("rain", 0), ("face", None) or ("object", None)."""
    rgb = image.permute(1, 2, 0).numpy().astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    yellow_sun = ((r > 225) & (g > 190) & (b < 90)).sum()
    rain_drops = ((b > 180) & (r < 70) & (g < 110)).sum()
    dark = ((r < 60) & (g < 60) & (b < 60)).sum()
    sky = ((b > 230) & (r < 170)).sum()
    cloud = ((abs(r - g) < 15) & (r > 70) & (r < 145) & (b - r > -10) & (b - r < 35)).sum()
    if sky > 600 and yellow_sun > 50:
        return "sun", 1
    if rain_drops > 10 and cloud > 80:  # drops under a grey cloud (a blue book has no cloud)
        return "rain", 0
    if dark > 8:
        return "face", None
    return "object", None


def face_smiles(image: torch.Tensor) -> bool:
    """A smile's mouth corners are higher (smaller y) than its middle; a frown's are lower."""
    rgb = image.permute(1, 2, 0).numpy().astype(int)
    dark = (rgb < 60).all(-1)
    ys, xs = np.nonzero(dark)
    low = ys > np.median(ys)  # eyes sit above, the mouth below
    ys, xs = ys[low | (ys >= ys.max() - 8)], xs[low | (ys >= ys.max() - 8)]
    mid = np.abs(xs - xs.mean()) <= 1
    ends = np.abs(xs - xs.mean()) >= (xs.max() - xs.min()) / 2 - 1
    return ys[ends].mean() < ys[mid].mean()


def independent_label(text: str, lang: str, image: torch.Tensor) -> tuple[str, int]:
    kind, value = text_says(text, lang)
    what, valence = image_says(image)
    if what == "face":
        valence = int(face_smiles(image))
    if kind == "wish":
        assert what in ("sun", "rain"), "a wish goes with a weather picture"
        return "both needed", int(value == what)
    if what == "object":
        assert kind == "polar", f"a neutral object goes with an opinion text: {text!r}"
        return "text decides", value
    assert kind == "nothing", f"a polar picture goes with a text that says nothing: {text!r}"
    return "image decides", valence


def test_labels_follow_the_stated_rules_read_from_text_and_pixels():
    wrong = []
    for i in range(len(POSTS)):
        slice_name, label = independent_label(POSTS.texts[i], POSTS.languages[i], POSTS.images[i])
        if slice_name != sd.SLICES[POSTS.slices[i]] or label != int(POSTS.labels[i]):
            wrong.append((i, POSTS.texts[i], slice_name, label, int(POSTS.labels[i])))
    assert not wrong, f"{len(wrong)} posts disagree with the rules, e.g. {wrong[:3]}"


def test_every_kind_appears_in_both_languages():
    seen = Counter(zip(POSTS.text_kinds, POSTS.languages))
    for kind in sd.TEXT_KINDS:
        for lang in sd.LANGUAGES:
            assert seen[(kind, lang)] > 10, (kind, lang, seen)
    assert {"rain", "sun"} <= set(POSTS.weather)


def _majority_accuracy(keys, labels) -> float:
    groups = defaultdict(list)
    for k, y in zip(keys, labels):
        groups[k].append(y)
    return sum(max(Counter(v).values()) for v in groups.values()) / len(labels)


def test_floors_match_counting_on_a_large_sample():
    """Group posts by their exact text (by what the image shows) and take each group's majority
    label: the best any text-only (image-only) model could do on this sample; it must be close to
    the floor computed from the rules (a few points above: small groups fit their own noise)."""
    posts = BIG
    floors = sd.single_modality_floors()
    labels = posts.labels.tolist()
    text_acc = _majority_accuracy(posts.texts, labels)
    image_keys = [(k, v) for k, v in zip(posts.image_kinds, posts.image_valence)]
    image_acc = _majority_accuracy(image_keys, labels)
    # exact values from the rules, by hand: slices 1/3 each; text-only is right on "text decides"
    # and half of the rest; image-only on "image decides" and half of the rest
    assert floors["text"]["all"] == pytest.approx(1 / 3 + 2 / 3 * 0.5)
    assert floors["image"]["all"] == pytest.approx(1 / 3 + 2 / 3 * 0.5)
    assert floors["text"]["both needed"] == floors["image"]["both needed"] == pytest.approx(0.5)
    assert floors["text"]["text decides"] == floors["image"]["image decides"] == pytest.approx(1.0)
    assert abs(text_acc - floors["text"]["all"]) < 0.04, text_acc
    assert abs(image_acc - floors["image"]["all"]) < 0.03, image_acc


def test_balance_and_shares():
    for s, n, positive, zh in sd.slice_table(BIG):
        assert abs(n / 6000 - 1 / 3) < 0.03 and abs(positive - 0.5) < 0.05 and abs(zh - 0.5) < 0.05, (
            s,
            n,
            positive,
            zh,
        )


def test_same_seed_same_posts_and_indexing():
    a, b = sd.generate(50, seed=7), sd.generate(50, seed=7)
    assert a.texts == b.texts and torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    c = sd.generate(50, seed=8)
    assert a.texts != c.texts
    sub = a[[3, 1]]
    assert sub.texts == [a.texts[3], a.texts[1]] and torch.equal(sub.images[0], a.images[3]) and len(sub) == 2
    assert a.images.dtype == torch.uint8 and a.images.shape == (50, 3, sd.IMAGE_SIZE, sd.IMAGE_SIZE)


@pytest.mark.parametrize("bad, match", [(0, "positive integer"), (2.5, "positive integer")])
def test_bad_n(bad, match):
    with pytest.raises(ValueError, match=match):
        sd.generate(bad)


def test_bad_slice_and_kind():
    with pytest.raises(ValueError, match="unknown slice"):
        POSTS.slice_mask("text only")
    with pytest.raises(ValueError, match="unknown image kind"):
        sd.draw_image(np.random.default_rng(0), "cat", 1)
