"""Captions for Sort-of-CLEVR scenes, a parser that reads them back, and the scene check (chapter 07).

A caption says, for each object, its colour, its shape and where it is on a 3x3 grid of the
image ("top left" ... "centre" ... "bottom right"); optionally it adds relational sentences
("the red square is closest to the gray circle."). Everything here works from the *scene*
(what is where), so any caption, written by the generator or by a model, can be checked
against the truth:

* :func:`describe` writes one caption (objects in colour, reading or random order, one of
  several phrasings); :func:`references` writes several correct ones per image, so that
  n-gram metrics have variety to match; :func:`canonical_caption` is the training target;
* :func:`parse` turns a caption back into facts (:class:`ObjectFact`, :class:`RelationFact`),
  reporting words outside :data:`VOCABULARY` and sentences it cannot read instead of failing;
* :func:`check_caption` / :func:`scene_check`: object-level precision, recall and F1, the share
  of images described exactly, and the hallucinations (an object described twice, a colour the
  scene does not have, a colour bound to the wrong shape), plus the truth of relations;
* :func:`bleu`: corpus BLEU-4 with ``sacrebleu``, references passed as it expects (one stream
  per reference *position*, ``corpus_bleu(hyps, [refs_1, refs_2, ...])``);
* :class:`CaptionTokenizer`: caption words <-> ids for a model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from course_utils.vision import shapes

ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "centre", "right")
REGIONS = tuple("centre" if (r, c) == ("middle", "centre") else f"{r} {c}" for r in ROWS for c in COLUMNS)
RELATIONS = ("closest", "furthest")

# {c} colour, {s} shape, {r} region; every phrasing names the object before or after its region
OBJECT_TEMPLATES = (
    "a {c} {s} is in the {r}.",
    "there is a {c} {s} in the {r}.",
    "in the {r} there is a {c} {s}.",
    "the {c} {s} is in the {r}.",
)
# the anchor object is always named first, the object it is closest to / furthest from second
RELATION_TEMPLATES = {
    "closest": ("the {c} {s} is closest to the {c2} {s2}.", "the object closest to the {c} {s} is the {c2} {s2}."),
    "furthest": (
        "the {c} {s} is furthest from the {c2} {s2}.",
        "the object furthest from the {c} {s} is the {c2} {s2}.",
    ),
}
ORDERS = ("colour", "reading", "random")


def words(caption: str) -> list[str]:
    """Lower-cased words with the full stop as a word of its own: ``"A red square."`` -> a red square ."""
    if not isinstance(caption, str):
        raise TypeError(f"a caption must be a string, got {type(caption).__name__}")
    return caption.lower().replace(".", " . ").split()


def join_words(tokens: Sequence[str]) -> str:
    """The inverse of :func:`words` for the captions made here: ``a red square .`` -> ``a red square.``"""
    return " ".join(tokens).replace(" .", ".")


def _template_words() -> set:
    found = set()
    for template in OBJECT_TEMPLATES + sum(RELATION_TEMPLATES.values(), ()):
        found.update(words(re.sub(r"\{\w+\}", " ", template)))
    return found


VOCABULARY = tuple(
    sorted(_template_words() | {"an"} | set(shapes.COLORS) | set(shapes.SHAPES) | set(ROWS) | set(COLUMNS))
)


# ---------------------------------------------------------------- scenes and facts


class SceneObject(NamedTuple):
    color: str
    shape: str
    x: int  # pixel centre; y grows downwards
    y: int


class ObjectFact(NamedTuple):
    color: str
    shape: str
    region: str


class RelationFact(NamedTuple):
    color: str  # the anchor ...
    shape: str
    relation: str  # ... is "closest" to / "furthest" from ...
    other_color: str  # ... this object
    other_shape: str


def region_of(x: int, y: int) -> str:
    """The cell of a 3x3 grid over the 75x75 image that holds pixel (x, y)."""
    size = shapes.IMAGE_SIZE
    if not (0 <= x < size and 0 <= y < size):
        raise ValueError(f"({x}, {y}) is outside the {size}x{size} image")
    return REGIONS[min(int(y) * 3 // size, 2) * 3 + min(int(x) * 3 // size, 2)]


def scene_of(data: shapes.SortOfClevr, image: int) -> list[SceneObject]:
    """The objects of one image of a :class:`~course_utils.vision.shapes.SortOfClevr`, in colour order."""
    if not 0 <= int(image) < len(data):
        raise IndexError(f"image {image} is out of range: the data holds {len(data)} images")
    return [
        SceneObject(
            shapes.COLORS[k],
            shapes.SHAPES[int(data.shapes[image, k])],
            int(data.centers[image, k, 0]),
            int(data.centers[image, k, 1]),
        )
        for k in range(shapes.N_OBJECTS)
    ]


def scenes_of(data: shapes.SortOfClevr) -> list[list[SceneObject]]:
    return [scene_of(data, i) for i in range(len(data))]


def _check_scene(scene) -> list[SceneObject]:
    scene = [SceneObject(*o) for o in scene]
    colors = [o.color for o in scene]
    if len(set(colors)) != len(colors):
        raise ValueError(
            f"a scene holds at most one object per colour (the captions name objects by colour); got {colors}"
        )
    for o in scene:
        if o.color not in shapes.COLORS or o.shape not in shapes.SHAPES:
            raise ValueError(
                f"unknown object {o.color!r} {o.shape!r}: colours are {shapes.COLORS}, shapes {shapes.SHAPES}"
            )
    return scene


def object_facts(scene) -> set[ObjectFact]:
    """What a complete, correct caption says about the objects of ``scene``."""
    return {ObjectFact(o.color, o.shape, region_of(o.x, o.y)) for o in _check_scene(scene)}


def _others_by_distance(scene: list[SceneObject], anchor: SceneObject, relation: str) -> list[SceneObject]:
    """The object(s) closest to / furthest from ``anchor`` (several when distances tie)."""
    d2 = {o.color: (o.x - anchor.x) ** 2 + (o.y - anchor.y) ** 2 for o in scene if o.color != anchor.color}
    if not d2:
        return []
    best = min(d2.values()) if relation == "closest" else max(d2.values())
    return [o for o in scene if d2.get(o.color) == best]


def true_relation(scene, color: str, relation: str) -> SceneObject | None:
    """The object closest to / furthest from the object of ``color``; None if it is absent or tied."""
    scene = _check_scene(scene)
    anchor = next((o for o in scene if o.color == color), None)
    if anchor is None:
        return None
    found = _others_by_distance(scene, anchor, relation)
    return found[0] if len(found) == 1 else None


# ---------------------------------------------------------------- writing captions


def _ordered(scene: list[SceneObject], order: str, rng: np.random.Generator | None) -> list[SceneObject]:
    if order == "colour":
        return sorted(scene, key=lambda o: shapes.COLORS.index(o.color))
    if order == "reading":  # row by row, left to right inside a row
        return sorted(scene, key=lambda o: (REGIONS.index(region_of(o.x, o.y)), o.x, o.y))
    if order == "random":
        if rng is None:
            raise ValueError("order='random' needs rng=np.random.default_rng(seed)")
        return [scene[i] for i in rng.permutation(len(scene))]
    raise ValueError(f"order must be one of {ORDERS}, got {order!r}")


def _phrasing(phrasing: int | None, n: int, rng: np.random.Generator | None) -> int:
    if phrasing is None:
        if rng is None:
            raise ValueError("phrasing=None (a random phrasing per sentence) needs rng=np.random.default_rng(seed)")
        return int(rng.integers(n))
    if not 0 <= int(phrasing) < n:
        raise ValueError(f"phrasing must be in 0..{n - 1} (or None for random), got {phrasing!r}")
    return int(phrasing)


def describe(
    scene, order: str = "colour", phrasing: int | None = 0, relations: int = 0, rng: np.random.Generator | None = None
) -> str:
    """One caption of ``scene``: a sentence per object, in ``order``, then ``relations`` relational
    sentences (anchors: the first objects of that order whose answer is not tied; closest and
    furthest alternate). ``phrasing``: a template index, or None for a random one per sentence."""
    scene = _check_scene(scene)
    if not isinstance(relations, (int, np.integer)) or relations < 0:
        raise ValueError(f"relations must be a non-negative integer, got {relations!r}")
    ordered = _ordered(scene, order, rng)
    sentences = []
    for o in ordered:
        template = OBJECT_TEMPLATES[_phrasing(phrasing, len(OBJECT_TEMPLATES), rng)]
        sentences.append(_articles(template.format(c=o.color, s=o.shape, r=region_of(o.x, o.y))))
    for j, o in enumerate([o for o in ordered if all(true_relation(scene, o.color, r) for r in RELATIONS)][:relations]):
        relation = RELATIONS[j % 2]
        other = true_relation(scene, o.color, relation)
        template = RELATION_TEMPLATES[relation][_phrasing(None if phrasing is None else int(phrasing) % 2, 2, rng)]
        sentences.append(template.format(c=o.color, s=o.shape, c2=other.color, s2=other.shape))
    return " ".join(sentences)


def _articles(sentence: str) -> str:
    """English wants "an" before a vowel and "a" before a consonant: "a orange" -> "an orange"."""
    return re.sub(r"\b(?:a|an) (?=(\w))", lambda m: "an " if m.group(1) in "aeiou" else "a ", sentence)


def canonical_caption(scene, relations: int = 0) -> str:
    """The training target: objects in colour order, the first phrasing."""
    return describe(scene, order="colour", phrasing=0, relations=relations)


def references(scene, n: int = 4, relations: int = 0, rng: np.random.Generator | None = None) -> list[str]:
    """``n`` different correct captions: the canonical one, reading order with the second phrasing,
    then random orders and phrasings (from ``rng``)."""
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive number of references, got {n!r}")
    rng = np.random.default_rng(0) if rng is None else rng
    refs = [canonical_caption(scene, relations)]
    if n > 1:
        refs.append(describe(scene, order="reading", phrasing=1, relations=relations))
    while len(refs) < n:
        refs.append(describe(scene, order="random", phrasing=None, relations=relations, rng=rng))
    return refs


def corpus_references(data: shapes.SortOfClevr, n: int = 4, relations: int = 0, seed: int = 0) -> list[list[str]]:
    """``n`` references for every image of ``data``; image i's come from ``default_rng([seed, i])``."""
    return [references(scene_of(data, i), n, relations, np.random.default_rng([seed, i])) for i in range(len(data))]


# ---------------------------------------------------------------- reading captions back


@dataclass
class ParsedCaption:
    """What :func:`parse` read: object and relation facts in the order said, the words outside
    :data:`VOCABULARY`, and the sentences that fit no pattern (kept as text)."""

    objects: list = field(default_factory=list)
    relations: list = field(default_factory=list)
    unknown_words: list = field(default_factory=list)
    unreadable: list = field(default_factory=list)


def _mentions(tokens: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """The (colour, shape) pairs of a sentence, and its regions."""
    objects, regions = [], []
    for i, t in enumerate(tokens):
        if t in shapes.COLORS and i + 1 < len(tokens) and tokens[i + 1] in shapes.SHAPES:
            objects.append((t, tokens[i + 1]))
        elif t in ROWS and i + 1 < len(tokens) and tokens[i + 1] in COLUMNS:
            regions.append("centre" if (t, tokens[i + 1]) == ("middle", "centre") else f"{t} {tokens[i + 1]}")
        elif t == "centre" and (i == 0 or tokens[i - 1] not in ROWS):
            regions.append("centre")
    return objects, regions


def parse(caption: str) -> ParsedCaption:
    """Facts from any caption: an object sentence names one coloured shape and one region; a
    relational sentence names "closest" or "furthest" and two coloured shapes, the anchor first.
    Words outside the vocabulary are reported and skipped; sentences that fit neither pattern are
    kept in ``unreadable``. Never raises on a string."""
    tokens = words(caption)
    result = ParsedCaption(unknown_words=[t for t in tokens if t not in VOCABULARY and t != "."])
    known = [t for t in tokens if t in VOCABULARY or t == "."]
    sentence: list[str] = []
    for t in known + ["."]:
        if t != ".":
            sentence.append(t)
            continue
        if not sentence:
            continue
        objects, regions = _mentions(sentence)
        relation = [r for r in RELATIONS if r in sentence]
        if len(relation) == 1 and len(objects) == 2 and not regions:
            (c, s), (c2, s2) = objects
            result.relations.append(RelationFact(c, s, relation[0], c2, s2))
        elif not relation and len(objects) == 1 and len(regions) == 1:
            result.objects.append(ObjectFact(*objects[0], regions[0]))
        else:
            result.unreadable.append(join_words(sentence + ["."]))
        sentence = []
    return result


# ---------------------------------------------------------------- checking captions against the scene


@dataclass
class CaptionCheck:
    """One caption against its scene (counts; see :func:`check_caption`)."""

    n_true: int  # objects in the scene
    n_said: int  # object sentences read
    correct: int  # said objects matching a true one (each true one matched once)
    exact: bool  # every object said once and right, nothing else, relations true
    duplicates: int  # an object (colour) described again
    absent_colours: int  # a colour the scene does not have
    wrong_bindings: int  # a present colour given the wrong shape
    wrong_regions: int  # right colour and shape, wrong region
    relations_said: int
    relations_true: int
    unknown_words: int
    unreadable: int


def check_caption(caption: str, scene) -> CaptionCheck:
    """Compare what ``caption`` says with ``scene`` (a list of :class:`SceneObject`)."""
    truth = {f.color: f for f in object_facts(scene)}
    said = parse(caption)
    correct, seen, dup, absent, binding, region = 0, set(), 0, 0, 0, 0
    for fact in said.objects:
        if fact.color in seen:
            dup += 1
            continue
        seen.add(fact.color)
        true = truth.get(fact.color)
        if true is None:
            absent += 1
        elif true.shape != fact.shape:
            binding += 1
        elif true.region != fact.region:
            region += 1
        else:
            correct += 1
    rel_true = 0
    for r in said.relations:
        other = true_relation(scene, r.color, r.relation)
        anchor = truth.get(r.color)
        if (
            other is not None
            and anchor is not None
            and anchor.shape == r.shape
            and (other.color, other.shape) == (r.other_color, r.other_shape)
        ):
            rel_true += 1
    exact = (
        correct == len(truth) == len(said.objects)
        and rel_true == len(said.relations)
        and not said.unknown_words
        and not said.unreadable
    )
    return CaptionCheck(
        len(truth),
        len(said.objects),
        correct,
        exact,
        dup,
        absent,
        binding,
        region,
        len(said.relations),
        rel_true,
        len(said.unknown_words),
        len(said.unreadable),
    )


def scene_check(captions: Sequence[str], scenes: Sequence) -> dict:
    """Corpus figures over many captions: object ``precision``, ``recall``, ``f1`` (micro-averaged
    over objects), ``exact`` (share of images described exactly), hallucinations per caption
    (``duplicates``, ``absent_colours``, ``wrong_bindings``), ``wrong_regions`` per caption,
    ``relation_accuracy`` (share of stated relations that are true; None when none was stated),
    and the counts of ``unknown_words`` and ``unreadable`` sentences."""
    if isinstance(captions, str) or not isinstance(captions, Sequence):
        raise TypeError("captions must be a list of strings, one per image")
    if len(captions) != len(scenes):
        raise ValueError(f"{len(captions)} captions for {len(scenes)} scenes: give one caption per image")
    if not captions:
        raise ValueError("no captions to check")
    checks = [check_caption(c, s) for c, s in zip(captions, scenes)]
    total = {k: sum(getattr(c, k) for c in checks) for k in CaptionCheck.__dataclass_fields__ if k != "exact"}
    precision = total["correct"] / total["n_said"] if total["n_said"] else 0.0
    recall = total["correct"] / total["n_true"] if total["n_true"] else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = len(checks)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "exact": sum(c.exact for c in checks) / n,
        "duplicates": total["duplicates"] / n,
        "absent_colours": total["absent_colours"] / n,
        "wrong_bindings": total["wrong_bindings"] / n,
        "wrong_regions": total["wrong_regions"] / n,
        "relation_accuracy": total["relations_true"] / total["relations_said"] if total["relations_said"] else None,
        "unknown_words": total["unknown_words"],
        "unreadable": total["unreadable"],
    }


def bleu(hypotheses: Sequence[str], references_per_image: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU-4 (0-100) with sacrebleu's defaults. ``references_per_image[i]`` holds image i's
    references; sacrebleu wants them the other way round, one stream per reference position
    (``[[ref 0 of every image], [ref 1 of every image], ...]``), which is what we pass."""
    import sacrebleu

    if isinstance(hypotheses, str) or isinstance(references_per_image, str):
        raise TypeError("bleu takes a list of hypotheses and, per image, a list of references")
    if len(hypotheses) != len(references_per_image):
        raise ValueError(f"{len(hypotheses)} hypotheses but references for {len(references_per_image)} images")
    counts = {len(r) for r in references_per_image}
    if len(counts) != 1 or 0 in counts or any(isinstance(r, str) for r in references_per_image):
        raise ValueError(
            "give every image the same number (>= 1) of references, each a list of strings; "
            f"found per-image counts {sorted(counts)}"
        )
    streams = [list(refs) for refs in zip(*references_per_image)]
    return float(sacrebleu.corpus_bleu(list(hypotheses), streams).score)


# ---------------------------------------------------------------- words <-> ids


class CaptionTokenizer:
    """Caption words <-> ids: ``[PAD]=0``, ``[BOS]=1``, ``[EOS]=2``, then :data:`VOCABULARY` and ".".

    ``encode`` adds [BOS] and [EOS]; ``decode`` stops at [EOS] and skips the specials.
    """

    PAD, BOS, EOS = 0, 1, 2
    SPECIALS = ("[PAD]", "[BOS]", "[EOS]")

    def __init__(self):
        self.itos = list(self.SPECIALS) + sorted(set(VOCABULARY) | {"."})
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, caption: str) -> list[int]:
        tokens = words(caption)
        unknown = sorted({t for t in tokens if t not in self.stoi})
        if unknown:
            raise ValueError(
                f"words outside the caption vocabulary: {unknown}; captions here use only "
                "captions.VOCABULARY (write them with captions.describe)"
            )
        return [self.BOS] + [self.stoi[t] for t in tokens] + [self.EOS]

    def batch(self, captions: Sequence[str]):
        """(B, L) long ids padded with [PAD] = 0, and the (B, L) bool mask of real tokens."""
        import torch

        rows = [self.encode(c) for c in captions]
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.PAD, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        return ids, ids != self.PAD

    def decode(self, ids) -> str:
        out = []
        for i in ids.tolist() if hasattr(ids, "tolist") else list(ids):
            if i == self.EOS:
                break
            if not 0 <= i < len(self.itos):
                raise ValueError(f"id {i} is outside the vocabulary (0..{len(self.itos) - 1})")
            if i not in (self.PAD, self.BOS):
                out.append(self.itos[i])
        return join_words(out)

    def tokens(self, ids) -> list[str]:
        """Each id as its word (specials included), for showing what a model generated step by step."""
        return [self.itos[i] for i in (ids.tolist() if hasattr(ids, "tolist") else list(ids))]
