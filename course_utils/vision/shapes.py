"""Sort-of-CLEVR (Santoro et al. 2017, "A simple neural network module for relational reasoning").

Each image is 75x75 RGB on a white background with six objects, one per colour
(red, green, blue, orange, yellow, gray), each a square or a circle, none
overlapping. Object ``k`` always has colour ``k``, so a scene is just a shape
and a centre per colour. Every image comes with 20 questions, each drawing its own
colour c (uniformly, independently of the other questions; a colour may repeat or be
missing in an image) and its own subtype:

* 10 non-relational, subtype drawn uniformly among: the shape of c; is c on the
  left; is c on the top;
* 10 relational, subtype drawn uniformly among: the shape of the object closest
  to c; of the one furthest from c; how many objects have the same shape as c
  (c included).

Answers come from one vocabulary of ten, :data:`ANSWERS`. Each question is given
both as the paper's 11-bit vector (colour one-hot, non-relational/relational,
subtype one-hot) and as an English sentence.

:func:`generate` draws everything with NumPy in a few vectorised passes, so ten
thousand images take a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

IMAGE_SIZE = 75
OBJECT_RADIUS = 5  # a square is 11x11 pixels, a circle has radius 5
MIN_CENTER_GAP = 2 * OBJECT_RADIUS + 2  # Chebyshev distance between centres: bounding boxes never touch
COLORS = ("red", "green", "blue", "orange", "yellow", "gray")
RGB = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 156, 0), (255, 255, 0), (128, 128, 128)], dtype=np.uint8)
BACKGROUND = 255
SHAPES = ("square", "circle")
ANSWERS = ("yes", "no", "square", "circle", "1", "2", "3", "4", "5", "6")
SUBTYPES = ("shape", "left", "top", "closest", "furthest", "count")
RELATIONAL = (False, False, False, True, True, True)
QUESTIONS_PER_KIND = 10  # 10 non-relational + 10 relational per image, as in the paper
QUESTION_DIM = len(COLORS) + 2 + 3
N_OBJECTS = len(COLORS)

_TEMPLATES = (
    "What is the shape of the {c} object?",
    "Is the {c} object on the left?",
    "Is the {c} object on the top?",
    "What is the shape of the object closest to the {c} object?",
    "What is the shape of the object furthest from the {c} object?",
    "How many objects have the same shape as the {c} object?",
)
YES, NO, SQUARE = ANSWERS.index("yes"), ANSWERS.index("no"), ANSWERS.index("square")
COUNT_1 = ANSWERS.index("1")


def question_text(subtype: int, color: int) -> str:
    """The English sentence of a question, e.g. ``question_text(3, 0)`` -> closest to the red object."""
    return _TEMPLATES[int(subtype)].format(c=COLORS[int(color)])


def question_vector(subtype: int, color: int) -> torch.Tensor:
    """The paper's 11-bit encoding: colour one-hot (6), [non-relational, relational] (2), subtype one-hot (3)."""
    v = torch.zeros(QUESTION_DIM)
    v[int(color)] = 1.0
    v[len(COLORS) + int(RELATIONAL[int(subtype)])] = 1.0
    v[len(COLORS) + 2 + int(subtype) % 3] = 1.0
    return v


def question_id(subtype, color):
    """One integer per distinct question (6 subtypes x 6 colours = 36): ``subtype * 6 + color``."""
    return subtype * N_OBJECTS + color


ALL_QUESTION_TEXTS = tuple(question_text(s, c) for s in range(len(SUBTYPES)) for c in range(N_OBJECTS))
ALL_QUESTION_VECTORS = torch.stack([question_vector(s, c) for s in range(len(SUBTYPES)) for c in range(N_OBJECTS)])


@dataclass
class SortOfClevr:
    """N images, their scenes, and 20 questions per image (see the module docstring).

    images:      (N, 3, 75, 75) uint8, white background
    shapes:      (N, 6) long, shape of the object of colour k (0 = square, 1 = circle)
    centers:     (N, 6, 2) long, (x, y) pixel centre of the object of colour k; y grows downwards
    subtypes:    (N, 20) long, index into SUBTYPES (first 10 non-relational, then 10 relational)
    colors:      (N, 20) long, the colour each question asks about
    questions:   (N, 20, 11) float, the paper's question vectors
    question_text: N lists of 20 English questions
    answers:     (N, 20) long, index into ANSWERS
    """

    images: torch.Tensor
    shapes: torch.Tensor
    centers: torch.Tensor
    subtypes: torch.Tensor
    colors: torch.Tensor
    questions: torch.Tensor
    question_text: list
    answers: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index) -> "SortOfClevr":
        """A subset of images (a slice, a list or a tensor of indices), with their questions.

        One integer (Python, NumPy or a 0-d tensor) gives a one-image subset and indexes like a
        sequence: ``data[-1]`` is the last image, an index out of range raises IndexError.
        """
        if isinstance(index, torch.Tensor) and index.dim() == 0 and not index.dtype.is_floating_point:
            index = int(index)
        if isinstance(index, (int, np.integer)) and not isinstance(index, (bool, np.bool_)):
            n = len(self)
            if not -n <= index < n:
                raise IndexError(f"index {int(index)} is out of range for {n} images (valid: {-n}..{n - 1}).")
            start = int(index) % n
            index = slice(start, start + 1)
        idx = torch.arange(len(self))[index]
        return SortOfClevr(
            **{
                f.name: (
                    getattr(self, f.name)[idx]
                    if f.name != "question_text"
                    else [self.question_text[i] for i in idx.tolist()]
                )
                for f in fields(self)
            }
        )

    @property
    def question_ids(self) -> torch.Tensor:
        """(N, 20) long: which of the 36 distinct questions each one is (``subtype * 6 + color``)."""
        return question_id(self.subtypes, self.colors)

    def answer_text(self, image: int, question: int) -> str:
        return ANSWERS[int(self.answers[image, question])]

    def object_descriptions(self, shuffle: bool = True, seed: int = 0) -> torch.Tensor:
        """(N, 6, 10) float: per object colour one-hot (6), shape one-hot (2), x and y in [-1, 1].

        This is the paper's "state description" input. ``shuffle`` puts the objects of each
        image in a random order, so a model cannot find an object by its position in the list.
        """
        n = len(self)
        color = torch.eye(N_OBJECTS).expand(n, N_OBJECTS, N_OBJECTS)
        shape = torch.nn.functional.one_hot(self.shapes, 2).float()
        xy = self.centers.float() / (IMAGE_SIZE - 1) * 2 - 1  # centred: [-1, 1]
        objects = torch.cat([color, shape, xy], dim=-1)
        if shuffle:
            g = torch.Generator().manual_seed(seed)
            order = torch.argsort(torch.rand(n, N_OBJECTS, generator=g), dim=1)
            objects = torch.gather(objects, 1, order[:, :, None].expand_as(objects))
        return objects

    def scene_text(self, image: int) -> str:
        """The scene in words, objects in colour order, positions on a 3x3 grid:
        e.g. ``"red circle top left. green square middle centre. ..."``."""
        parts = []
        for k in range(N_OBJECTS):
            x, y = (int(v) for v in self.centers[image, k])
            parts.append(
                f"{COLORS[k]} {SHAPES[int(self.shapes[image, k])]} {_third(y, VERTICAL)} {_third(x, HORIZONTAL)}"
            )
        return ". ".join(parts) + "."


VERTICAL = ("top", "middle", "bottom")
HORIZONTAL = ("left", "centre", "right")


def _third(coordinate: int, words: tuple) -> str:
    return words[min(int(coordinate) * 3 // IMAGE_SIZE, 2)]


def _place_centers(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 6, 2) integer centres: inside the image and pairwise at least MIN_CENTER_GAP apart
    (Chebyshev distance), so no two objects overlap. Rejection sampling, all images at once."""
    low, high = OBJECT_RADIUS, IMAGE_SIZE - 1 - OBJECT_RADIUS
    centers = np.zeros((n, N_OBJECTS, 2), dtype=np.int64)
    for k in range(N_OBJECTS):
        todo = np.arange(n)
        while todo.size:
            candidate = rng.integers(low, high + 1, size=(todo.size, 2))
            if k:
                gap = np.abs(centers[todo, :k] - candidate[:, None, :]).max(axis=-1)  # (todo, k)
                ok = (gap >= MIN_CENTER_GAP).all(axis=1)
            else:
                ok = np.ones(todo.size, dtype=bool)
            centers[todo[ok], k] = candidate[ok]
            todo = todo[~ok]
    return centers


def _has_distance_ties(centers: np.ndarray) -> np.ndarray:
    """(n,) bool: some object has two closest or two furthest others (an ambiguous answer)."""
    xy = centers.astype(np.int64)
    dist2 = ((xy[:, :, None, :] - xy[:, None, :, :]) ** 2).sum(-1)  # exact integers
    eye = np.eye(N_OBJECTS, dtype=bool)
    near = np.where(eye, np.iinfo(np.int64).max, dist2)
    far = np.where(eye, -1, dist2)
    tie_near = (near == near.min(-1, keepdims=True)).sum(-1) > 1
    tie_far = (far == far.max(-1, keepdims=True)).sum(-1) > 1
    return (tie_near | tie_far).any(-1)


def _place_scenes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Centres for n scenes, redrawing the few (about 1%) where a closest/furthest object is tied."""
    centers = _place_centers(rng, n)
    redo = np.flatnonzero(_has_distance_ties(centers))
    while redo.size:
        centers[redo] = _place_centers(rng, redo.size)
        redo = redo[_has_distance_ties(centers[redo])]
    return centers


def _draw(centers: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """(n, 75, 75, 3) uint8 images: each object is stamped through an 11x11 template."""
    n = centers.shape[0]
    r = OBJECT_RADIUS
    offsets = np.arange(-r, r + 1)
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    # A circle paints the pixels whose centre lies within r + 1/2 of the object's centre, the disc
    # that just fits the 11x11 box: (dx^2 + dy^2 <= (r + 1/2)^2) is dx^2 + dy^2 <= r^2 + r on integers.
    # (<= r^2 left a one-pixel nub at each of the four extremes.)
    templates = np.stack([np.ones_like(dy, dtype=bool), dx**2 + dy**2 <= r * r + r])  # square, circle
    images = np.full((n * IMAGE_SIZE * IMAGE_SIZE, 3), BACKGROUND, dtype=np.uint8)  # one row per pixel
    image_start = (np.arange(n) * IMAGE_SIZE * IMAGE_SIZE)[:, None, None]
    for k in range(N_OBJECTS):
        ys = centers[:, k, 1, None, None] + dy  # (n, 11, 11) pixel rows of the stamp
        xs = centers[:, k, 0, None, None] + dx
        inside = templates[shapes[:, k]]  # (n, 11, 11) which stamp pixels to paint
        images[(image_start + ys * IMAGE_SIZE + xs)[inside]] = RGB[k]
    images = images.reshape(n, IMAGE_SIZE, IMAGE_SIZE, 3)
    return images


def _answers(centers: np.ndarray, shapes: np.ndarray, subtypes: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """(n, q) answer indices, computed for every subtype at once and then picked per question."""
    n = centers.shape[0]
    rows = np.arange(n)[:, None]
    xy = centers.astype(np.float64)
    dist2 = ((xy[:, :, None, :] - xy[:, None, :, :]) ** 2).sum(-1)  # (n, 6, 6)
    eye = np.eye(N_OBJECTS, dtype=bool)
    closest = np.where(eye, np.inf, dist2).argmin(-1)  # generate() leaves no ties
    furthest = np.where(eye, -np.inf, dist2).argmax(-1)
    same_shape_count = (shapes[:, :, None] == shapes[:, None, :]).sum(-1)  # (n, 6), includes itself
    half = IMAGE_SIZE / 2
    per_subtype = np.stack(
        [
            SQUARE + shapes,  # shape of c
            np.where(centers[..., 0] < half, YES, NO),  # c on the left
            np.where(centers[..., 1] < half, YES, NO),  # c on the top
            SQUARE + np.take_along_axis(shapes, closest, 1),  # shape of the closest
            SQUARE + np.take_along_axis(shapes, furthest, 1),  # shape of the furthest
            COUNT_1 - 1 + same_shape_count,  # how many share c's shape
        ]
    )  # (6 subtypes, n, 6 colours)
    return per_subtype[subtypes, rows, colors]


def generate(n_images: int, seed: int = 0) -> SortOfClevr:
    """``n_images`` Sort-of-CLEVR images with 10 non-relational and 10 relational questions each.

    The same ``(n_images, seed)`` always gives the same data.
    """
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images <= 0:
        raise ValueError(f"n_images must be a positive integer (how many images to draw), got {n_images!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    n = int(n_images)
    rng = np.random.default_rng(seed)
    centers = _place_scenes(rng, n)
    shapes = rng.integers(0, 2, size=(n, N_OBJECTS))
    images = _draw(centers, shapes)
    q = QUESTIONS_PER_KIND
    subtypes = np.concatenate([rng.integers(0, 3, size=(n, q)), rng.integers(3, 6, size=(n, q))], axis=1)
    colors = rng.integers(0, N_OBJECTS, size=(n, 2 * q))
    answers = _answers(centers, shapes, subtypes, colors)
    ids = question_id(subtypes, colors)
    return SortOfClevr(
        images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        shapes=torch.from_numpy(shapes),
        centers=torch.from_numpy(centers),
        subtypes=torch.from_numpy(subtypes),
        colors=torch.from_numpy(colors),
        questions=ALL_QUESTION_VECTORS[torch.from_numpy(ids)],
        question_text=[[ALL_QUESTION_TEXTS[i] for i in row] for row in ids.tolist()],
        answers=torch.from_numpy(answers),
    )


def answer_balance(data: SortOfClevr) -> dict:
    """Per subtype: how often each answer occurs and the majority-class baseline.

    Returns ``{subtype: {"counts": {answer: count}, "majority": answer, "baseline": accuracy}}``:
    the baseline is the accuracy of always giving the most frequent answer, the floor every
    model must beat.
    """
    result = {}
    for s, name in enumerate(SUBTYPES):
        answers = data.answers[data.subtypes == s]
        counts = torch.bincount(answers, minlength=len(ANSWERS))
        present = {ANSWERS[a]: int(c) for a, c in enumerate(counts.tolist()) if c}
        top = int(counts.argmax())
        result[name] = {
            "counts": present,
            "majority": ANSWERS[top],
            "baseline": float(counts[top]) / max(int(counts.sum()), 1),
        }
    return result


def show_examples(data: SortOfClevr, images=(0, 1, 2, 3), questions_per_image: int = 4, seed: int = 0):
    """A grid of images, each with a few of its questions and answers underneath."""
    import matplotlib.pyplot as plt

    images = list(images)
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(1, len(images), figsize=(3.2 * len(images), 4.2))
    for ax, i in zip(np.atleast_1d(axes), images):
        ax.imshow(data.images[i].permute(1, 2, 0).numpy())
        ax.set_xticks([]), ax.set_yticks([])
        picks = sorted(rng.choice(2 * QUESTIONS_PER_KIND, questions_per_image, replace=False))
        lines = [f"{_short(data.question_text[i][j])} {data.answer_text(i, j)}" for j in picks]
        ax.set_xlabel("\n".join(lines), fontsize=7, loc="left")
        ax.set_title(f"image {i}", fontsize=9)
    fig.tight_layout()
    return fig


def _short(text: str) -> str:
    return (
        text.replace("What is the shape of the object", "shape of obj.")
        .replace("What is the shape of the", "shape of")
        .replace("How many objects have the same shape as the", "# same shape as")
        .replace(" object", "")
    )
