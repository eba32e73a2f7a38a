"""Multimodal sentiment posts (chapter 09): a short text in Chinese or English and a small drawn
image, where the label (1 positive, 0 negative) needs the image, the text, or both.

Every post is drawn from a few latent facts, and the label follows from them by three rules, one
per **slice**:

* ``text decides`` -- the image is a neutral object (a cup, a box, a book); the text gives an
  opinion: a sentiment word, perhaps negated ("this is not great" / "这不好"), or sarcasm that the
  text itself gives away ("great, it's raining again" / "太好了，又下雨了" is negative; "great, it's
  sunny again" is positive). Label = the text's polarity.
* ``image decides`` -- the text says nothing ("look at this" / "看看这个") or praises in a way that
  may be sarcastic ("great, just what i needed" / "太好了，又是这样"); the image is a face (smile or
  frown) or the weather (sun or rain). Label = the image's valence (smile, sun: 1; frown, rain: 0).
* ``both needed`` -- the text states a wish about the weather ("hoping for sunshine today" /
  "希望下雨"), the image shows sun or rain. Label = 1 when the image shows what was wished for.

Because the latent facts are drawn with known probabilities (:data:`SLICE_SHARES` and 1/2 for every
binary choice), the best accuracy a model seeing ONE modality can reach is computed exactly from
the rules (:func:`single_modality_floors`): a fused model must beat it.

Images are 48x48 RGB uint8, (3, 48, 48), drawn with NumPy (discs, rectangles, lines) in the spirit
of chapter 05's Sort-of-CLEVR, with random positions, sizes, colours and pixel noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IMAGE_SIZE = 48
SLICES = ("text decides", "image decides", "both needed")
SLICE_SHARES = (1 / 3, 1 / 3, 1 / 3)
LABELS = ("negative", "positive")
LANGUAGES = ("en", "zh")

# text kinds: which slice each belongs to
TEXT_KINDS = ("opinion", "sarcasm", "remark", "praise", "wish")
IMAGE_KINDS = ("object", "face", "weather")
# within "text decides": share of sarcasm among the opinions; within "image decides": share of praise
# texts (the rest are remarks) and share of weather images (the rest are faces)
SARCASM_SHARE = 0.25
PRAISE_SHARE = 0.5
WEATHER_SHARE_IN_IMAGE_SLICE = 0.5

# ---------------------------------------------------------------- word lists (polarity 1 / 0)
EN = {
    "opinion": [  # (template, needs a word of polarity p) -- {w} is a sentiment word; {not} negates
        "i {not}{w} this",
        "this is {not}{w2}",
        "i {not}feel {w3} today",
        "honestly, this is {not}{w2}",
        "my day is {not}{w2}",
    ],
    "verbs": {1: ["love", "like", "enjoy"], 0: ["hate", "dislike"]},
    "adjs": {
        1: ["great", "wonderful", "lovely", "amazing", "nice"],
        0: ["terrible", "awful", "horrible", "boring", "bad"],
    },
    "feels": {1: ["happy", "glad", "cheerful"], 0: ["sad", "upset", "miserable"]},
    "sarcasm": {
        0: [
            "great, it's raining again",
            "wonderful, more rain today",
            "perfect, another rainy day",
            "oh lovely, rain again",
        ],
        1: [
            "great, it's sunny again",
            "wonderful, more sunshine today",
            "perfect, another sunny day",
            "oh lovely, sun again",
        ],
    },
    "remark": [
        "look at this",
        "just posted this",
        "today at noon",
        "here it is",
        "another photo",
        "this is what i saw",
        "posting from my phone",
        "a picture from this morning",
    ],
    "praise": [
        "great, just what i needed",
        "perfect, this again",
        "oh wonderful, another one",
        "just great",
        "lovely, exactly as planned",
        "amazing, simply amazing",
    ],
    "wish": {
        "sun": [
            "hoping for sunshine today",
            "we really need some sun",
            "i want a sunny weekend",
            "please let it be sunny",
        ],
        "rain": ["hoping for rain today", "we really need some rain", "i want a rainy weekend", "please let it rain"],
    },
}
ZH = {
    "opinion": ["我{not}{w}这个", "这{not}{w2}", "今天我{not}{w3}", "说实话，这{not}{w2}", "我的一天{not}{w2}"],
    "verbs": {1: ["喜欢", "爱", "欣赏"], 0: ["讨厌", "厌恶"]},
    "adjs": {1: ["好", "棒", "美", "精彩", "可爱"], 0: ["糟糕", "差", "无聊", "可怕", "烂"]},
    "feels": {1: ["开心", "高兴", "快乐"], 0: ["难过", "伤心", "失望"]},
    "sarcasm": {
        0: ["太好了，又下雨了", "真棒，今天又下雨", "完美，又是一个雨天", "好极了，又在下雨"],
        1: ["太好了，又是晴天", "真棒，今天又出太阳", "完美，又是一个晴天", "好极了，又是好天气"],
    },
    "remark": ["看看这个", "刚拍的", "今天中午", "就是这个", "又一张照片", "这是我看到的", "用手机发的", "今早的照片"],
    "praise": ["太好了，又是这样", "真棒，正是我想要的", "完美，又来了", "好极了", "真是太好了", "厉害，真厉害"],
    "wish": {
        "sun": ["希望今天出太阳", "我们真需要晴天", "周末想要好太阳", "拜托让它放晴"],
        "rain": ["希望今天下雨", "我们真需要下雨", "周末想要下场雨", "拜托让它下雨"],
    },
}
WORDS = {"en": EN, "zh": ZH}
NEGATION = {"en": "not ", "zh": "不"}
# English "i {not}{w} this" needs "do not" before a verb
EN_VERB_NEGATION = "do not "


@dataclass
class Posts:
    """N posts. ``images`` (N, 3, 48, 48) uint8; ``labels`` (N,) int64; the latent facts per post."""

    texts: list
    images: torch.Tensor
    labels: torch.Tensor
    slices: np.ndarray  # index into SLICES
    languages: list  # "en" / "zh"
    text_kinds: list  # one of TEXT_KINDS
    text_polarity: np.ndarray  # 1 / 0 for opinion and sarcasm, -1 otherwise (the text's stated polarity)
    negated: np.ndarray  # bool: the opinion's word is negated
    wishes: list  # "sun" / "rain" for wish texts, "" otherwise
    image_kinds: list  # one of IMAGE_KINDS
    image_valence: np.ndarray  # 1 smile/sun, 0 frown/rain, -1 object
    weather: list  # "sun" / "rain" for weather images, "" otherwise

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index) -> "Posts":
        idx = np.arange(len(self))[index]
        idx = np.atleast_1d(idx)
        pick = lambda seq: [seq[i] for i in idx]  # noqa: E731
        return Posts(
            pick(self.texts),
            self.images[torch.as_tensor(idx)],
            self.labels[torch.as_tensor(idx)],
            self.slices[idx],
            pick(self.languages),
            pick(self.text_kinds),
            self.text_polarity[idx],
            self.negated[idx],
            pick(self.wishes),
            pick(self.image_kinds),
            self.image_valence[idx],
            pick(self.weather),
        )

    def slice_mask(self, name: str) -> np.ndarray:
        if name not in SLICES:
            raise ValueError(f"unknown slice {name!r}; the slices are {SLICES}")
        return self.slices == SLICES.index(name)


# ---------------------------------------------------------------- the rules


def label_of(slice_name: str, text_polarity: int, wish: str, image_valence: int, weather: str) -> int:
    """The label rules (see the module docstring)."""
    if slice_name == "text decides":
        return int(text_polarity)
    if slice_name == "image decides":
        return int(image_valence)
    if slice_name == "both needed":
        return int(wish == weather)
    raise ValueError(f"unknown slice {slice_name!r}; the slices are {SLICES}")


def latent_distribution() -> list:
    """Every combination of the latent facts a model could read from ONE modality, with its exact
    probability: rows (probability, slice, text_key, image_key, label). ``text_key`` is what the
    text tells (kind and polarity or wish), ``image_key`` what the image tells (kind and valence)."""
    rows = []
    p_td, p_id, p_bn = SLICE_SHARES
    for pol in (0, 1):  # text decides: opinion or sarcasm of polarity pol, a neutral object
        rows.append((p_td * (1 - SARCASM_SHARE) / 2, "text decides", ("opinion", pol), ("object", -1), pol))
        rows.append((p_td * SARCASM_SHARE / 2, "text decides", ("sarcasm", pol), ("object", -1), pol))
    for kind, pk in (("praise", PRAISE_SHARE), ("remark", 1 - PRAISE_SHARE)):  # image decides
        for image, pi in (("weather", WEATHER_SHARE_IN_IMAGE_SLICE), ("face", 1 - WEATHER_SHARE_IN_IMAGE_SLICE)):
            for val in (0, 1):
                rows.append((p_id * pk * pi / 2, "image decides", (kind, -1), (image, val), val))
    for wish in ("sun", "rain"):  # both needed: independent wish and weather
        for weather in ("sun", "rain"):
            val = int(weather == "sun")
            rows.append((p_bn / 4, "both needed", ("wish", wish), ("weather", val), int(wish == weather)))
    return rows


def single_modality_floors() -> dict:
    """The best accuracy of a model that sees only the text (only the image), overall and per
    slice: the Bayes classifier picks, for each thing a modality can tell, the more likely label.
    Returns {"text": {"all": acc, slice: acc, ...}, "image": {...}}. Ties go to label 1 (a tie is
    worth 1/2 either way)."""
    rows = latent_distribution()
    out = {}
    for modality, key_index in (("text", 2), ("image", 3)):
        mass: dict = {}
        for p, _, tk, ik, y in rows:
            key = (tk, ik)[key_index - 2]
            mass.setdefault(key, [0.0, 0.0])[y] += p
        decide = {k: int(m[1] >= m[0]) for k, m in mass.items()}
        acc = {"all": sum(p for p, _, tk, ik, y in rows if decide[(tk, ik)[key_index - 2]] == y)}
        for s in SLICES:
            total = sum(p for p, sl, *_ in rows if sl == s)
            acc[s] = sum(p for p, sl, tk, ik, y in rows if sl == s and decide[(tk, ik)[key_index - 2]] == y) / total
        out[modality] = acc
    return out


# ---------------------------------------------------------------- texts


def _opinion_text(rng: np.random.Generator, lang: str, polarity: int, negated: bool) -> str:
    words = WORDS[lang]
    template = words["opinion"][rng.integers(len(words["opinion"]))]
    word_polarity = polarity ^ int(negated)  # "not great" is negative: the word has the other polarity
    if "{w}" in template:
        word = rng.choice(words["verbs"][word_polarity])
        neg = (EN_VERB_NEGATION if lang == "en" else NEGATION[lang]) if negated else ""
        return template.replace("{not}", neg).replace("{w}", word)
    key, slot = ("adjs", "{w2}") if "{w2}" in template else ("feels", "{w3}")
    word = rng.choice(words[key][word_polarity])
    neg = ""
    if negated:  # English "i ... feel" takes "do not", "this is" takes "not"
        neg = EN_VERB_NEGATION if lang == "en" and template.startswith("i ") else NEGATION[lang]
    if lang == "zh" and not negated and key == "adjs":
        word = "真" + word  # "这真好": Chinese wants an adverb before a bare adjective
    if lang == "zh" and not negated and key == "feels":
        word = "很" + word
    return template.replace("{not}", neg).replace(slot, word)


def make_text(
    rng: np.random.Generator, lang: str, kind: str, polarity: int = -1, negated: bool = False, wish: str = ""
) -> str:
    """One text of the given kind (see the module docstring)."""
    words = WORDS[lang]
    if kind == "opinion":
        return _opinion_text(rng, lang, polarity, negated)
    if kind == "sarcasm":
        return str(rng.choice(words["sarcasm"][polarity]))
    if kind in ("remark", "praise"):
        return str(rng.choice(words[kind]))
    if kind == "wish":
        return str(rng.choice(words["wish"][wish]))
    raise ValueError(f"unknown text kind {kind!r}; the kinds are {TEXT_KINDS}")


# ---------------------------------------------------------------- images

_YY, _XX = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]
OBJECT_COLORS = np.array(
    [(220, 40, 40), (40, 160, 60), (50, 80, 220), (240, 140, 20), (150, 60, 180), (120, 120, 120)], dtype=np.float32
)


def _disc(img, cx, cy, r, color):
    img[(_XX - cx) ** 2 + (_YY - cy) ** 2 <= r * r] = color


def _rect(img, x0, y0, x1, y1, color):
    img[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = color


def _line(img, x0, y0, x1, y1, color, steps=24):
    for t in np.linspace(0, 1, steps):
        x, y = int(round(x0 + t * (x1 - x0))), int(round(y0 + t * (y1 - y0)))
        if 0 <= x < IMAGE_SIZE and 0 <= y < IMAGE_SIZE:
            img[y, x] = color


def _background(rng) -> np.ndarray:
    tone = rng.uniform(200, 250, size=3).astype(np.float32)
    return np.broadcast_to(tone, (IMAGE_SIZE, IMAGE_SIZE, 3)).copy()


def draw_face(rng: np.random.Generator, smile: bool) -> np.ndarray:
    img = _background(rng)
    r = rng.integers(13, 18)
    cx, cy = rng.integers(r + 2, IMAGE_SIZE - r - 2, size=2)
    skin = np.array([rng.uniform(230, 255), rng.uniform(180, 225), rng.uniform(40, 120)], dtype=np.float32)
    _disc(img, cx, cy, r, skin)
    eye = r // 3
    for dx in (-eye, eye):
        _disc(img, cx + dx, cy - r // 4, max(1, r // 8), (30, 30, 30))
    # the mouth: a parabola y = cy + r/3 -/+ k (x - cx)^2 (smile: corners up, frown: corners down)
    width = r * 0.55
    k = (r * 0.3) / width**2
    for x in np.arange(cx - width, cx + width + 0.01, 0.25):
        bend = k * (x - cx) ** 2
        y = cy + r * 0.45 - bend if smile else cy + r * 0.25 + bend
        xi, yi = int(round(x)), int(round(y))
        img[max(yi - 1, 0) : yi + 1, max(xi, 0) : xi + 1] = (30, 30, 30)
    return img


def draw_weather(rng: np.random.Generator, sunny: bool) -> np.ndarray:
    if sunny:
        img = np.broadcast_to(
            np.array([rng.uniform(90, 150), rng.uniform(170, 210), 250], np.float32), (IMAGE_SIZE, IMAGE_SIZE, 3)
        ).copy()
        r = rng.integers(7, 11)
        cx, cy = rng.integers(r + 6, IMAGE_SIZE - r - 6, size=2)
        for angle in np.arange(0, 2 * np.pi, np.pi / 4) + rng.uniform(0, np.pi / 4):
            _line(img, cx, cy, cx + (r + 5) * np.cos(angle), cy + (r + 5) * np.sin(angle), (255, 210, 0))
        _disc(img, cx, cy, r, (255, 220, 30))
        return img
    img = np.broadcast_to(
        np.array([rng.uniform(150, 190)] * 2 + [rng.uniform(180, 210)], np.float32), (IMAGE_SIZE, IMAGE_SIZE, 3)
    ).copy()
    cx, cy = rng.integers(14, IMAGE_SIZE - 14), rng.integers(8, 18)
    grey = rng.uniform(90, 130)
    for dx, dr in ((-7, 6), (0, 8), (7, 6)):
        _disc(img, cx + dx, cy, dr, (grey, grey, grey + 10))
    for _ in range(rng.integers(6, 11)):
        x = cx + rng.integers(-12, 13)
        y = cy + 9 + rng.integers(0, 12)
        _line(img, x, y, x - 2, y + 7, (20, 60, 230), steps=10)
    return img


def draw_object(rng: np.random.Generator) -> np.ndarray:
    img = _background(rng)
    color = OBJECT_COLORS[rng.integers(len(OBJECT_COLORS))] + rng.uniform(-15, 15, size=3)
    what = rng.integers(3)
    cx, cy = rng.integers(14, IMAGE_SIZE - 14, size=2)
    if what == 0:  # a cup: a body and a handle
        _rect(img, cx - 7, cy - 9, cx + 5, cy + 9, color)
        _rect(img, cx + 5, cy - 4, cx + 10, cy - 2, color)
        _rect(img, cx + 8, cy - 4, cx + 10, cy + 4, color)
        _rect(img, cx + 5, cy + 2, cx + 10, cy + 4, color)
    elif what == 1:  # a box with a lid
        _rect(img, cx - 10, cy - 8, cx + 10, cy + 10, color)
        _rect(img, cx - 11, cy - 11, cx + 11, cy - 7, color * 0.7)
    else:  # a book: a cover and a spine
        _rect(img, cx - 8, cy - 11, cx + 8, cy + 11, color)
        _rect(img, cx - 8, cy - 11, cx - 5, cy + 11, color * 0.6)
    return img


def draw_image(rng: np.random.Generator, kind: str, valence: int) -> np.ndarray:
    """(3, 48, 48) uint8: a face (valence 1 smiles), the weather (1 sunny) or a neutral object."""
    if kind == "face":
        img = draw_face(rng, bool(valence))
    elif kind == "weather":
        img = draw_weather(rng, bool(valence))
    elif kind == "object":
        img = draw_object(rng)
    else:
        raise ValueError(f"unknown image kind {kind!r}; the kinds are {IMAGE_KINDS}")
    img = img + rng.normal(0, 6, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8).transpose(2, 0, 1)


def blank_image() -> torch.Tensor:
    """The 'missing image': one flat mid-grey (3, 48, 48) uint8 picture."""
    return torch.full((3, IMAGE_SIZE, IMAGE_SIZE), 128, dtype=torch.uint8)


# ---------------------------------------------------------------- the generator


def generate(n: int, seed: int = 0, zh_share: float = 0.5) -> Posts:
    """``n`` posts drawn with the probabilities the module docstring states (same seed, same posts)."""
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer number of posts, got {n!r}")
    if not 0.0 <= zh_share <= 1.0:
        raise ValueError(f"zh_share is the share of Chinese posts, between 0 and 1; got {zh_share!r}")
    rng = np.random.default_rng(seed)
    cols = {
        k: []
        for k in (
            "texts",
            "images",
            "labels",
            "slices",
            "languages",
            "text_kinds",
            "text_polarity",
            "negated",
            "wishes",
            "image_kinds",
            "image_valence",
            "weather",
        )
    }
    for _ in range(n):
        s = int(rng.choice(3, p=SLICE_SHARES))
        lang = "zh" if rng.random() < zh_share else "en"
        polarity, negated, wish, weather, valence = -1, False, "", "", -1
        if s == 0:
            polarity = int(rng.integers(2))
            kind = "sarcasm" if rng.random() < SARCASM_SHARE else "opinion"
            negated = kind == "opinion" and bool(rng.integers(2))
            image_kind = "object"
        elif s == 1:
            kind = "praise" if rng.random() < PRAISE_SHARE else "remark"
            image_kind = "weather" if rng.random() < WEATHER_SHARE_IN_IMAGE_SLICE else "face"
            valence = int(rng.integers(2))
        else:
            kind, image_kind = "wish", "weather"
            wish = ("sun", "rain")[rng.integers(2)]
            valence = int(rng.integers(2))
        if image_kind == "weather":
            weather = "sun" if valence == 1 else "rain"
        text = make_text(rng, lang, kind, polarity, negated, wish)
        cols["texts"].append(text)
        cols["images"].append(draw_image(rng, image_kind, valence))
        cols["labels"].append(label_of(SLICES[s], polarity, wish, valence, weather))
        for key, value in (
            ("slices", s),
            ("languages", lang),
            ("text_kinds", kind),
            ("text_polarity", polarity),
            ("negated", negated),
            ("wishes", wish),
            ("image_kinds", image_kind),
            ("image_valence", valence),
            ("weather", weather),
        ):
            cols[key].append(value)
    return Posts(
        cols["texts"],
        torch.from_numpy(np.stack(cols["images"])),
        torch.tensor(cols["labels"]),
        np.array(cols["slices"]),
        cols["languages"],
        cols["text_kinds"],
        np.array(cols["text_polarity"]),
        np.array(cols["negated"]),
        cols["wishes"],
        cols["image_kinds"],
        np.array(cols["image_valence"]),
        cols["weather"],
    )


def slice_table(posts: Posts) -> list:
    """Rows (slice, count, share positive, share Chinese) for a quick look at a data set."""
    rows = []
    for s in SLICES:
        m = posts.slice_mask(s)
        zh = np.array([lang == "zh" for lang in posts.languages])[m]
        rows.append(
            (
                s,
                int(m.sum()),
                float(posts.labels.numpy()[m].mean()) if m.any() else float("nan"),
                float(zh.mean()) if m.any() else float("nan"),
            )
        )
    return rows


def show_posts(posts: Posts, indices=range(8), per_row: int = 4):
    """A grid of posts: the image, the text, the slice and the label."""
    import matplotlib.pyplot as plt

    indices = list(indices)
    rows = (len(indices) + per_row - 1) // per_row
    fig, axes = plt.subplots(rows, per_row, figsize=(3.2 * per_row, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, indices):
        ax.imshow(posts.images[i].permute(1, 2, 0).numpy())
        # the text is printed, not drawn: matplotlib's default fonts have no Chinese characters
        ax.set_title(f"#{i}: {SLICES[posts.slices[i]]} -> {LABELS[int(posts.labels[i])]}", fontsize=9)
    fig.tight_layout()
    for i in indices:
        print(f"#{i}: {posts.texts[i]}")
    return fig
