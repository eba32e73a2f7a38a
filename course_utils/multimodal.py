"""Multimodal fusion: answering questions about images (chapter 05, Sort-of-CLEVR).

A visual question answering model has three parts:

* an **image encoder** that turns a picture into a set of element vectors, either the
  patches of a small CNN (:class:`PatchCNN`, a 5x5 grid with each patch's coordinates
  appended, as in the relation-network paper; pretrained on what each patch holds, frozen,
  and cached by :func:`cache_patches`) or the scene's object descriptions
  (:meth:`course_utils.shapes.SortOfClevr.object_descriptions`);
* a **question encoder** giving a question vector and question tokens: the paper's
  11-bit vector through an MLP (:class:`VectorQuestionEncoder`) or the English sentence
  through a BERT (:class:`BertQuestionEncoder`);
* a **fusion** that combines the two into answer logits. Every fusion has the same interface,
  ``fusion(elements (B, N, d_image), question: QuestionEncoding) -> logits (B, n_answers)``:

  - :class:`EarlyFusion` -- the paper's baseline: flatten the elements into one vector,
    concatenate it with the question (or add / multiply their projections), then an MLP;
  - :class:`FiLMFusion` -- the question scales and shifts every element's features;
  - :class:`CrossAttentionFusion` -- the question (vector or tokens) attends to the elements
    with the course's :class:`~course_utils.attention.MultiHeadAttention`;
  - :class:`RelationNetwork` -- an MLP ``g`` over every pair of elements with the question,
    summed, then an MLP ``f`` (Santoro et al. 2017).

:class:`VQAModel` puts the three together; :func:`~course_utils.vqa_training.train_vqa` trains it
(in :mod:`course_utils.vqa_training`, with the other training and scoring helpers; the figures and
the attention widget are in :mod:`course_utils.vqa_plots`). :class:`ContrastiveModel`
and :func:`contrastive_loss` build a shared image-text embedding space (CLIP-like).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F

from . import shapes, training
from .attention import MultiHeadAttention

GRID = 5                                   # the CNN's output grid: 5x5 patches of 15x15 pixels
CELL = shapes.IMAGE_SIZE // GRID           # 15
N_ANSWERS = len(shapes.ANSWERS)


# ============================================================================ image side

def check_images(images: torch.Tensor) -> None:
    """Raise a clear error unless ``images`` is a (B, 3, 75, 75) tensor."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor of shape (batch, 3, 75, 75), got {type(images).__name__}")
    size = shapes.IMAGE_SIZE
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[2:] != (size, size):
        hint = ""
        if images.dim() == 3:
            hint = " It looks like a single image: add a batch axis with images[None]."
        elif images.dim() == 4 and images.shape[-1] == 3:
            hint = " It looks channels-last (B, H, W, 3): use images.permute(0, 3, 1, 2)."
        raise ValueError(f"images have shape {tuple(images.shape)}; the model expects (batch, 3, {size}, {size}) "
                         f"RGB images as shapes.generate makes them.{hint}")
    if images.dtype != torch.uint8 and not images.dtype.is_floating_point:
        raise TypeError(f"images have dtype {images.dtype}; pass uint8 pixels 0..255 as shapes.generate makes them "
                        "(images.to(torch.uint8)) or floats centred on 0 (to_float(images)).")
    if images.dtype.is_floating_point and images.numel() and float(images.detach().abs().amax()) > 2.0:
        # to_float passes floats through: pixel values 0..255 as floats would reach the CNN unscaled
        raise ValueError(f"float images hold values up to {float(images.detach().abs().amax()):.4g}: they look like "
                         "pixels 0..255 stored as floats; pass the uint8 images, or to_float(images.to(torch.uint8)) "
                         "(about -0.5..0.5).")


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] -> floats centred on 0 (about [-0.5, 0.5]); float images pass through."""
    if images.dtype == torch.uint8:
        return images.float() / 255.0 - 0.5
    return images


def grid_coordinates(grid: int = GRID) -> torch.Tensor:
    """(grid*grid, 2): the (x, y) centre of each patch in [-1, 1], row by row (same scale as the objects)."""
    centre = (torch.arange(grid, dtype=torch.float32) * CELL + (CELL - 1) / 2) / (shapes.IMAGE_SIZE - 1) * 2 - 1
    y, x = torch.meshgrid(centre, centre, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=-1)


EMPTY = shapes.N_OBJECTS                     # the 7th "colour": no object is centred in this patch
PATCH_CLASSES = shapes.N_OBJECTS + 1
D_DESCRIPTION = PATCH_CLASSES + 1 + 2       # class probabilities, circle, position (x, y) = 10


class PatchCNN(nn.Module):
    """A small CNN whose 5x5 output grid lines up exactly with 15x15-pixel patches of the image.

    A 3x3 convolution with stride 3 cuts the 75x75 image into 25x25 blocks of 3x3 pixels; two 3x3
    convolutions let each block see its neighbours; a 5x5 convolution with stride 5 then turns each
    5x5 group of blocks -- one 15x15 patch -- into one vector (batch norm and ReLU after each).
    Each output vector thus describes one patch and sees 6 pixels beyond its edges.

    * :meth:`patches`: the 25 hidden vectors with each patch's (x, y) appended, (B, 25, channels + 2);
    * :meth:`forward`: a 1x1-convolution head on them, (B, 25, 10): which object is centred in the
      patch (7 logits: the six colours, then "none"), a circle logit, and the centre's offset (dx, dy)
      from the patch centre (see :func:`grid_targets`);
    * :meth:`describe`: the head's answers as 10 numbers per patch (:func:`describe_patches`).
    """

    def __init__(self, channels: int = 32):
        super().__init__()

        def block(c_in, c_out, kernel, stride):
            return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=(kernel // 2 if stride == 1 else 0)),
                    nn.BatchNorm2d(c_out), nn.ReLU()]

        self.body = nn.Sequential(*block(3, channels, 3, 3), *block(channels, channels, 3, 1),
                                  *block(channels, channels, 3, 1), *block(channels, channels, 5, 5))
        self.head = nn.Conv2d(channels, PATCH_CLASSES + 3, 1)
        self.channels = channels
        self.register_buffer("coords", grid_coordinates(), persistent=False)

    @property
    def d_out(self) -> int:
        return self.channels + 2

    def grid(self, images: torch.Tensor) -> torch.Tensor:
        """(B, channels, 5, 5) feature map."""
        check_images(images)
        weight = self.head.weight
        if images.dtype.is_floating_point and images.dtype != weight.dtype:
            raise TypeError(f"images are {images.dtype} but the CNN's weights are {weight.dtype}: convert them, "
                            f"images.to({weight.dtype}) (or pass the uint8 images).")
        return self.body(to_float(images).to(weight.dtype))

    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 25, channels + 2): one hidden vector per patch, coordinates appended."""
        return self.patches_of(self.grid(images))

    def patches_of(self, fmap: torch.Tensor) -> torch.Tensor:
        """:meth:`patches` from an already computed (B, channels, 5, 5) feature map."""
        hidden = fmap.flatten(2).transpose(1, 2)                      # (B, 25, channels)
        return torch.cat([hidden, self.coords.expand(hidden.shape[0], -1, -1)], dim=-1)

    def head_of(self, fmap: torch.Tensor) -> torch.Tensor:
        """The head's (B, 25, 10) answers from an already computed feature map."""
        return self.head(fmap).flatten(2).transpose(1, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head_of(self.grid(images))                        # (B, 25, 10)

    def describe(self, images: torch.Tensor) -> torch.Tensor:
        return describe_patches(self(images), self.coords)


def describe_patches(head_output: torch.Tensor, coords: torch.Tensor | None = None) -> torch.Tensor:
    """What the CNN says about each patch, as (B, 25, 10) numbers laid out like an object
    description (:meth:`~course_utils.shapes.SortOfClevr.object_descriptions`):

    the probabilities of the 7 classes (red ... gray, none); the probability of a circle, times the
    probability that an object is there (an empty patch says nothing about shape); and where the CNN
    places the object in the image, (x, y) in [-1, 1]: the patch centre plus the predicted offset,
    again weighted by the probability of an object (an empty patch sits at its centre).
    """
    probs = head_output[..., :PATCH_CLASSES].softmax(-1)
    occupied = 1 - probs[..., EMPTY:]
    coords = grid_coordinates().to(head_output.device) if coords is None else coords
    offset = head_output[..., PATCH_CLASSES + 1:] * occupied * (CELL - 1) / (shapes.IMAGE_SIZE - 1)
    return torch.cat([probs, torch.sigmoid(head_output[..., PATCH_CLASSES:PATCH_CLASSES + 1]) * occupied,
                      coords + offset], dim=-1)


def grid_targets(data: shapes.SortOfClevr) -> dict:
    """What each patch holds, from the scene, for every (image, patch):

    * ``holds``: the colour of the object whose centre lies in the patch, or :data:`EMPTY` (6);
      in the few images where two centres share a patch, the one nearer the patch centre;
    * ``circle``: that object's shape (1 = circle; 0 for an empty patch);
    * ``offset``: (dx, dy) from the patch centre to the object's centre, in half-patches (7 pixels),
      so within [-1, 1] (0 for an empty patch).
    """
    n, half = len(data), (CELL - 1) / 2
    x, y = data.centers[..., 0], data.centers[..., 1]
    cell = (y // CELL) * GRID + x // CELL                                   # (N, 6) patch of each object
    centres = (grid_coordinates() + 1) * (shapes.IMAGE_SIZE - 1) / 2        # (25, 2) patch centres, pixels
    to_centre = ((data.centers.float() - centres[cell]) ** 2).sum(-1)      # (N, 6)
    holds = torch.full((n, GRID * GRID), EMPTY, dtype=torch.long)
    best = torch.full((n, GRID * GRID), float("inf"))
    rows = torch.arange(n)
    for k in range(shapes.N_OBJECTS):                                       # nearest centre wins a shared patch
        better = to_centre[:, k] < best[rows, cell[:, k]]
        holds[rows[better], cell[better, k]] = k
        best[rows[better], cell[better, k]] = to_centre[better, k]
    occupied = holds != EMPTY
    who = holds.clamp(max=shapes.N_OBJECTS - 1)
    circle = torch.gather(data.shapes, 1, who).float() * occupied
    centre = torch.gather(data.centers, 1, who[..., None].expand(n, GRID * GRID, 2)).float()
    offset = (centre - centres) / half * occupied[..., None]
    return {"holds": holds, "circle": circle, "offset": offset}


def dense_loss(pred: torch.Tensor, targets: dict) -> torch.Tensor:
    """Cross-entropy over the 7 classes everywhere; shape and offset only where an object is."""
    loss = F.cross_entropy(pred[..., :PATCH_CLASSES].reshape(-1, PATCH_CLASSES), targets["holds"].flatten())
    occupied = (targets["holds"] != EMPTY).float()
    weight = occupied / occupied.sum().clamp(min=1)
    circle = pred[..., PATCH_CLASSES]
    loss = loss + (F.binary_cross_entropy_with_logits(circle, targets["circle"], reduction="none") * weight).sum()
    loss = loss + (((pred[..., PATCH_CLASSES + 1:] - targets["offset"]) ** 2).sum(-1) * weight).sum()
    return loss


@torch.no_grad()
def dense_metrics(pred: torch.Tensor, targets: dict) -> dict:
    """How well the CNN sees: ``cell_accuracy`` (patches whose class and, if occupied, shape are
    right), ``object_accuracy`` (the same over occupied patches only: objects found with the right
    colour and shape) and ``position_error_px`` (mean distance of predicted to true centres)."""
    holds = pred[..., :PATCH_CLASSES].argmax(-1)
    occupied = targets["holds"] != EMPTY
    shape_ok = (pred[..., PATCH_CLASSES] > 0) == targets["circle"].bool()
    cell_ok = (holds == targets["holds"]) & (shape_ok | ~occupied)
    half = (CELL - 1) / 2
    error = ((pred[..., PATCH_CLASSES + 1:] - targets["offset"]) * half).norm(dim=-1)[occupied]
    return {"cell_accuracy": cell_ok.float().mean().item(), "object_accuracy": cell_ok[occupied].float().mean().item(),
            "position_error_px": error.mean().item()}


def pretrain_patch_cnn(cnn: PatchCNN, data: shapes.SortOfClevr, steps: int, batch_size: int = 32,
                       lr: float = 3e-3, progress: bool = True, seed: int = 0) -> list:
    """Train ``cnn`` (body and head) to say what each patch holds; returns the loss per step.

    Adam with a one-cycle schedule on random batches of images, in the course's one loop
    (:func:`course_utils.training.train`, without gradient clipping)."""
    targets = grid_targets(data)
    opt = torch.optim.Adam(cnn.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    device = next(cnn.parameters()).device

    def random_images():
        while True:
            yield torch.randint(len(data), (batch_size,), generator=g)

    def loss_of(cnn: PatchCNN, idx: torch.Tensor) -> torch.Tensor:
        return dense_loss(cnn(data.images[idx].to(device)), {k: v[idx].to(device) for k, v in targets.items()})

    history = training.train(cnn, random_images(), loss_of, opt, sched, steps=steps, max_grad_norm=None,
                             progress=progress, desc="pretraining the CNN")
    cnn.eval()
    return history.values("loss")


@dataclass
class CachedPatches:
    """Per image, the vectors of the ``keep`` most object-like patches and which patches they are.

    vectors: (N, keep, d); index: (N, keep) patch numbers 0..24 in reading order.
    """

    vectors: torch.Tensor
    index: torch.Tensor

    def keep(self, k: int) -> "CachedPatches":
        """The k patches most likely to hold an object, from cached descriptions (reading order)."""
        if self.vectors.shape[-1] != D_DESCRIPTION:
            raise ValueError("keep() reads the objectness from patch descriptions (10 numbers per patch); "
                             "for hidden channels pass keep= to cache_patches instead")
        if not 1 <= k <= self.vectors.shape[1]:
            raise ValueError(f"keep must be between 1 and {self.vectors.shape[1]} patches, got {k}")
        objectness = 1 - self.vectors[..., EMPTY]
        pick = objectness.topk(k, dim=1).indices.sort(dim=1).values
        return CachedPatches(torch.gather(self.vectors, 1, pick[..., None].expand(-1, -1, self.vectors.shape[-1])),
                             torch.gather(self.index, 1, pick))

    def weights_on_grid(self, weights: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Spread (B, keep) weights of images ``rows`` back onto the (B, 25) patch grid."""
        grid = torch.zeros(weights.shape[0], GRID * GRID, dtype=weights.dtype)
        return grid.scatter(1, self.index[rows], weights.cpu())


@torch.no_grad()
def cache_patches(cnn: PatchCNN, images: torch.Tensor, keep: int = GRID * GRID, what: str = "description",
                  batch_size: int = 500) -> CachedPatches:
    """Run the frozen CNN once over every image and keep, per image, the ``keep`` patches it finds
    most likely to hold an object (in reading order).

    ``what="description"``: what the CNN says about each patch (10 numbers, :func:`describe_patches`);
    ``what="channels"``: its hidden vectors with coordinates (channels + 2 numbers).
    """
    if what not in ("description", "channels"):
        raise ValueError(f"what must be 'description' or 'channels', got {what!r}")
    if not 1 <= keep <= GRID * GRID:
        raise ValueError(f"keep must be between 1 and {GRID * GRID} patches, got {keep}")
    cnn.eval()
    device = next(cnn.parameters()).device
    vectors, index = [], []
    for start in range(0, images.shape[0], batch_size):
        fmap = cnn.grid(images[start:start + batch_size].to(device))           # the CNN body runs once
        head = cnn.head_of(fmap)
        v = describe_patches(head, cnn.coords) if what == "description" else cnn.patches_of(fmap)
        objectness = 1 - head[..., :PATCH_CLASSES].softmax(-1)[..., EMPTY]
        idx = objectness.topk(keep, dim=1).indices.sort(dim=1).values
        vectors.append(torch.gather(v, 1, idx[..., None].expand(-1, -1, v.shape[-1])).cpu())
        index.append(idx.cpu())
    return CachedPatches(torch.cat(vectors), torch.cat(index))


# ============================================================================ question side

@dataclass
class QuestionEncoding:
    """What a question encoder gives a fusion: one vector per question, and tokens to attend with.

    vector: (B, d); tokens: (B, T, d); mask: (B, T) bool, True at real tokens.
    The vector encoder has a single token (the vector itself).
    """

    vector: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor


class VectorQuestionEncoder(nn.Module):
    """The paper's 11-bit question vector through a two-layer MLP."""

    def __init__(self, d_model: int = 128, d_in: int = shapes.QUESTION_DIM):
        super().__init__()
        self.d_model, self.d_in = d_model, d_in
        self.mlp = nn.Sequential(nn.Linear(d_in, d_model), nn.ReLU(), nn.Linear(d_model, d_model))

    def forward(self, question_vectors: torch.Tensor, question_texts=None) -> QuestionEncoding:
        if question_vectors.dim() != 2 or question_vectors.shape[-1] != self.d_in:
            raise ValueError(f"question vectors have shape {tuple(question_vectors.shape)}; expected "
                             f"(batch, {self.d_in}), the paper's encoding (shapes.question_vector)")
        v = self.mlp(question_vectors)
        return QuestionEncoding(v, v[:, None, :], torch.ones(v.shape[0], 1, dtype=torch.bool, device=v.device))


def _pad(rows: list, value=0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences of different lengths -> (U, T, ...) padded with ``value``, and the (U, T) mask of real entries."""
    padded = nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=value)
    lengths = torch.tensor([r.shape[0] for r in rows], device=padded.device)
    return padded, torch.arange(padded.shape[1], device=padded.device)[None] < lengths[:, None]


class BertQuestionEncoder(nn.Module):
    """The English question through a BERT (chapter 03's, or any in the transformers layout).

    Vector: the mean of BERT's last hidden states over the real tokens, standardised per feature
    (:class:`~torch.nn.BatchNorm1d` statistics, no learned scale), projected to ``d_model``;
    tokens: each hidden state standardised the same way and projected. ``finetune=False``
    freezes BERT (only the projection learns) and caches each distinct sentence's hidden states;
    ``finetune=True`` trains BERT too, at ``lr_scale`` times the learning rate of the rest. Sort-of-CLEVR has only 36 distinct questions, so each batch
    runs BERT once per distinct sentence, not once per question.
    """

    needs_text = True

    def __init__(self, bert: nn.Module, tokenizer, d_model: int = 128, finetune: bool = False,
                 lr_scale: float = 0.1):
        super().__init__()
        from .bert import check_tokenizer_matches

        check_tokenizer_matches(bert, tokenizer)  # another model's tokenizer gives confident nonsense
        self.bert, self.tokenizer, self.finetune = bert, tokenizer, finetune
        self.d_model, self.lr_scale = d_model, lr_scale
        hidden = bert.config.hidden_size
        # BERT's sentence vectors share one large common direction (they all look alike); standardising
        # each feature over the questions makes their differences -- the colour, the kind -- stand out
        self.sentence_norm = nn.BatchNorm1d(hidden, affine=False)
        self.token_norm = nn.BatchNorm1d(hidden, affine=False)
        self.proj = nn.Linear(hidden, d_model)
        self.bert.requires_grad_(finetune)
        self._cache: dict = {}                               # sentence -> frozen hidden states
        self._ids: dict = {}                                 # sentence -> token ids

    def _encode_unique(self, texts: list) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, T, hidden) states and (U, T) mask for distinct sentences."""
        device = self.proj.weight.device
        for t in texts:                                  # tokenise each distinct sentence once
            if t not in self._ids:
                self._ids[t] = torch.tensor(self.tokenizer(t)["input_ids"])
        ids, mask = _pad([self._ids[t] for t in texts], self.tokenizer.pad_token_id or 0)
        ids, mask = ids.to(device), mask.to(device)
        if self.finetune:
            self.bert.train(self.training)
            return self.bert(ids, attention_mask=mask.long()).last_hidden_state, mask
        self.bert.eval()
        with torch.no_grad():
            return self.bert(ids, attention_mask=mask.long()).last_hidden_state, mask

    def forward(self, question_vectors=None, question_texts=None) -> QuestionEncoding:
        if question_texts is None or isinstance(question_texts, str):
            raise ValueError("BertQuestionEncoder reads the English questions: pass a list of sentences as "
                             "question_texts (QuestionSet.texts(rows) gives them)")
        unique = sorted(set(question_texts))
        where = {t: i for i, t in enumerate(unique)}
        if self.finetune:
            states, mask = self._encode_unique(unique)
        else:
            missing = [t for t in unique if t not in self._cache]
            if missing:
                new_states, new_mask = self._encode_unique(missing)
                for t, h, m in zip(missing, new_states, new_mask):
                    self._cache[t] = h[m]                              # (real tokens, hidden)
            states, mask = _pad([self._cache[t] for t in unique])
        real = mask[..., None].to(states.dtype)
        sentences = self._standardise(self.sentence_norm, (states * real).sum(1) / real.sum(1))   # (U, hidden)
        tokens = torch.zeros_like(states)
        tokens[mask] = self._standardise(self.token_norm, states[mask])
        index = torch.tensor([where[t] for t in question_texts], device=states.device)
        return QuestionEncoding(self.proj(sentences)[index], self.proj(tokens)[index], mask[index])

    def _standardise(self, norm: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
        """Per feature, subtract the mean and divide by the standard deviation over the batch's
        sentences (tokens) while training, over the running averages otherwise."""
        batch_stats = self.training and x.shape[0] > 1
        return F.batch_norm(x, norm.running_mean, norm.running_var, training=batch_stats,
                            momentum=norm.momentum, eps=norm.eps)


# ============================================================================ fusions

def _mlp(d_in: int, hidden: int, d_out: int, layers: int = 2, dropout: float = 0.0) -> nn.Sequential:
    """Linear-ReLU blocks (``layers`` of them) then a Linear to ``d_out``."""
    mods, d = [], d_in
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.ReLU()]
        if dropout:
            mods.append(nn.Dropout(dropout))
        d = hidden
    mods.append(nn.Linear(d, d_out))
    return nn.Sequential(*mods)


class Fusion(nn.Module):
    """Base class: checks the inputs every fusion receives."""

    def __init__(self, d_image: int, n_elements: int, d_question: int):
        super().__init__()
        self.d_image, self.n_elements, self.d_question = d_image, n_elements, d_question
        self.last_attention = None

    def check(self, elements: torch.Tensor, question: QuestionEncoding) -> None:
        if elements.dim() != 3 or elements.shape[-1] != self.d_image:
            raise ValueError(f"image elements have shape {tuple(elements.shape)}; this fusion expects "
                             f"(batch, elements, {self.d_image})")
        if question.vector.shape != (elements.shape[0], self.d_question):
            raise ValueError(f"question vector has shape {tuple(question.vector.shape)}; expected "
                             f"({elements.shape[0]}, {self.d_question}): one per image row, d_question wide")


class EarlyFusion(Fusion):
    """The paper's baseline: the image's elements, flattened into one long vector x (N * d_image
    numbers, in the order given), fused with the question vector q, then an MLP to the answers:

    * ``concat``: MLP([x; q]) -- the paper's CNN + MLP;
    * ``sum``: MLP(relu(W_x x + W_q q)) -- the same function as ``concat``: a Linear on [x; q]
      *is* W_x x + W_q q (see :meth:`as_concat`); only the starting weights differ;
    * ``product``: MLP((W_x x) * (W_q q)) -- the question multiplies the image features,
      switching on the ones it needs.

    No element is compared with another until the MLP does it, and the MLP sees slots: which
    element sits in which place of x matters (unlike every other fusion here).
    """

    OPS = ("concat", "sum", "product")

    def __init__(self, d_image: int, n_elements: int, d_question: int, op: str = "concat",
                 hidden: int = 256, dropout: float = 0.0):
        super().__init__(d_image, n_elements, d_question)
        if op not in self.OPS:
            raise ValueError(f"op must be one of {self.OPS}, got {op!r}")
        self.op = op
        d_flat = n_elements * d_image
        if op == "concat":
            self.head = _mlp(d_flat + d_question, hidden, N_ANSWERS, layers=3, dropout=dropout)
        else:
            self.image_proj = nn.Linear(d_flat, hidden)
            self.question_proj = nn.Linear(d_question, hidden)
            self.head = _mlp(hidden, hidden, N_ANSWERS, layers=2, dropout=dropout)

    def check(self, elements: torch.Tensor, question: QuestionEncoding) -> None:
        super().check(elements, question)
        if elements.shape[1] != self.n_elements:
            raise ValueError(f"{elements.shape[1]} image elements, but this fusion flattens exactly "
                             f"{self.n_elements}: build it with n_elements={elements.shape[1]}")

    def forward(self, elements: torch.Tensor, question: QuestionEncoding) -> torch.Tensor:
        self.check(elements, question)
        x = elements.flatten(1)
        if self.op == "concat":
            return self.head(torch.cat([x, question.vector], dim=-1))
        v, u = self.image_proj(x), self.question_proj(question.vector)
        return self.head(F.relu(v + u) if self.op == "sum" else v * u)

    def as_concat(self) -> "EarlyFusion":
        """A ``concat`` fusion computing exactly what this ``sum`` fusion computes: its first
        Linear on [x; q] gets the weight [W_x, W_q] and the bias b_x + b_q."""
        if self.op != "sum":
            raise ValueError("only a 'sum' fusion has a 'concat' twin")
        twin = EarlyFusion(self.d_image, self.n_elements, self.d_question, op="concat",
                           hidden=self.image_proj.out_features)
        with torch.no_grad():
            first = twin.head[0]
            first.weight.copy_(torch.cat([self.image_proj.weight, self.question_proj.weight], dim=1))
            first.bias.copy_(self.image_proj.bias + self.question_proj.bias)
            rest = [m for m in twin.head if isinstance(m, nn.Linear)][1:]
            for target, source in zip(rest, [m for m in self.head if isinstance(m, nn.Linear)]):
                target.load_state_dict(source.state_dict())
        return twin


class FiLMFusion(Fusion):
    """Pointwise FiLM: feature-wise linear modulation (Perez et al. 2018) applied to each element
    alone. In each of ``layers`` residual blocks the question gives a scale gamma and a shift beta
    per feature (one Linear of the question vector), the same for every element, and each element's
    vector becomes ``h = h + relu((1 + gamma) * (W h + b) + beta)``, with ``W h + b`` a Linear on that
    element only (``1 + gamma``: a freshly initialised layer starts near scale one). Then mean- and
    max-pooling over elements and an MLP. No element ever sees another before the pooling, so
    relations must pass through the pooled vector. Perez et al. modulate 3x3 convolutions over a
    feature map with coordinate channels, so neighbouring positions do mix there; this module does not.
    """

    def __init__(self, d_image: int, n_elements: int, d_question: int, hidden: int = 128, layers: int = 2):
        super().__init__(d_image, n_elements, d_question)
        self.embed = nn.Sequential(nn.Linear(d_image, hidden), nn.ReLU())
        self.blocks = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.film = nn.ModuleList(nn.Linear(d_question, 2 * hidden) for _ in range(layers))
        self.head = _mlp(2 * hidden, 2 * hidden, N_ANSWERS, layers=2)

    def forward(self, elements, question):
        self.check(elements, question)
        h = self.embed(elements)                                       # (B, N, hidden)
        for block, film in zip(self.blocks, self.film):
            gamma, beta = film(question.vector)[:, None, :].chunk(2, dim=-1)
            h = h + F.relu((1 + gamma) * block(h) + beta)             # 1 + gamma: starts as identity scale
        return self.head(torch.cat([h.mean(1), h.amax(1)], dim=-1))


class CrossAttentionFusion(Fusion):
    """The question attends to the image: the query is the question vector (or, with
    ``token_queries=True``, every question token), keys and values are the image elements. Each of ``layers`` pre-LN blocks does
    ``q = q + MHA(LN(q), elements)`` then ``q = q + FFN(LN(q))``; stacking two lets the question
    look twice (find the object of colour c, then the object nearest to it). With
    ``token_queries=True`` (BERT's tokens) each block first lets the tokens attend to each other,
    as a Transformer decoder does. The outputs, averaged over the real tokens, go to an MLP.
    With ``keep_attention = True``, ``last_attention`` holds, per layer, the cross-attention
    weights of the last forward, (B, heads, T, N).
    """

    def __init__(self, d_image: int, n_elements: int, d_question: int, d_model: int = 128,
                 num_heads: int = 4, layers: int = 2, token_queries: bool = False):
        super().__init__(d_image, n_elements, d_question)
        self.embed = _mlp(d_image, d_model, d_model, layers=1)
        self.norm_kv = nn.LayerNorm(d_model)
        self.query_in = nn.Linear(d_question, d_model)
        self.token_queries = token_queries
        if token_queries:
            self.self_attn = nn.ModuleList(MultiHeadAttention(d_model, num_heads) for _ in range(layers))
            self.norm_self = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(layers))
        self.cross_attn = nn.ModuleList(MultiHeadAttention(d_model, num_heads) for _ in range(layers))
        self.norm_q = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(layers))
        self.norm_ff = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(layers))
        self.ff = nn.ModuleList(_mlp(d_model, 2 * d_model, d_model, layers=1) for _ in range(layers))
        self.head = _mlp(d_model, d_model, N_ANSWERS, layers=1)
        self.keep_attention = False

    def forward(self, elements, question):
        self.check(elements, question)
        kv = self.norm_kv(self.embed(elements))                        # (B, N, d)
        if self.token_queries:
            q, real = self.query_in(question.tokens), question.mask     # (B, T, d): every token asks
        else:
            q = self.query_in(question.vector)[:, None, :]              # (B, 1, d): one question vector asks
            real = torch.ones(q.shape[0], 1, dtype=torch.bool, device=q.device)
        maps = []
        for i in range(len(self.cross_attn)):
            if self.token_queries:
                x = self.norm_self[i](q)
                q = q + self.self_attn[i](x, x, x, key_padding_mask=real, need_weights=False)[0]
            out, weights = self.cross_attn[i](self.norm_q[i](q), kv, kv, need_weights=self.keep_attention)
            q = q + out
            q = q + self.ff[i](self.norm_ff[i](q))
            maps.append(weights)
        self.last_attention = maps if self.keep_attention else None
        weight = real[..., None].to(q.dtype)
        return self.head((q * weight).sum(1) / weight.sum(1))


class RelationNetwork(Fusion):
    """RN(O, q) = f( sum over pairs (i, j) of g(o_i, o_j, q) ) (Santoro et al. 2017).

    g's first layer on the concatenation [o_i; o_j; q] is W [o_i; o_j; q] = W_i o_i + W_j o_j + W_q q:
    it is computed once per element and once per question, then broadcast-added into the
    (N x N) pairs -- N + N + 1 small products instead of N^2 big ones. The remaining layers of g
    run on every pair. :meth:`naive_pairs` builds the concatenations explicitly (for checking).
    """

    def __init__(self, d_image: int, n_elements: int, d_question: int, hidden: int = 128,
                 g_layers: int = 3, f_hidden: int = 256, dropout: float = 0.0, pool: str = "sum", norm: bool = False):
        super().__init__(d_image, n_elements, d_question)
        self.pool = pool
        self.norm = nn.LayerNorm(hidden) if norm else nn.Identity()
        self.g_first = nn.Linear(2 * d_image + d_question, hidden)
        rest = []
        for _ in range(g_layers - 1):
            rest += [nn.Linear(hidden, hidden), nn.ReLU()]
        self.g_rest = nn.Sequential(*rest)
        self.f = _mlp(hidden, f_hidden, N_ANSWERS, layers=2, dropout=dropout)

    def first_layer(self, elements: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        """(B, N, N, hidden): g's first layer (before ReLU) for every pair, by broadcast-adding."""
        d = self.d_image
        w_i, w_j, w_q = self.g_first.weight.split([d, d, self.d_question], dim=1)
        left = elements @ w_i.T                                         # (B, N, hidden): o_i's part
        right = elements @ w_j.T                                        # (B, N, hidden): o_j's part
        q = question @ w_q.T + self.g_first.bias                        # (B, hidden)
        return left[:, :, None, :] + right[:, None, :, :] + q[:, None, None, :]

    def naive_pairs(self, elements: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        """The same first layer from the explicit (B, N, N, 2d + d_q) concatenations."""
        b, n, d = elements.shape
        o_i = elements[:, :, None, :].expand(b, n, n, d)
        o_j = elements[:, None, :, :].expand(b, n, n, d)
        q = question[:, None, None, :].expand(b, n, n, question.shape[-1])
        return self.g_first(torch.cat([o_i, o_j, q], dim=-1))

    def forward(self, elements, question):
        self.check(elements, question)
        pairs = self.g_rest(F.relu(self.first_layer(elements, question.vector)))   # (B, N, N, hidden)
        pooled = pairs.sum(dim=(1, 2)) if self.pool == "sum" else pairs.mean(dim=(1, 2))
        return self.f(self.norm(pooled))


FUSIONS = ("concat", "sum", "product", "film", "cross_attention", "relation_network")


def make_fusion(name: str, d_image: int, n_elements: int, d_question: int, **kwargs) -> Fusion:
    """One of :data:`FUSIONS` by name, e.g. ``make_fusion("film", 34, 25, 128)``."""
    if name in EarlyFusion.OPS:
        return EarlyFusion(d_image, n_elements, d_question, op=name, **kwargs)
    if name == "film":
        return FiLMFusion(d_image, n_elements, d_question, **kwargs)
    if name == "cross_attention":
        return CrossAttentionFusion(d_image, n_elements, d_question, **kwargs)
    if name == "relation_network":
        return RelationNetwork(d_image, n_elements, d_question, **kwargs)
    raise ValueError(f"unknown fusion {name!r}; choose one of {FUSIONS}")


class VQAModel(nn.Module):
    """question encoder + fusion (+ an image encoder when trained from pixels).

    ``forward(image_input, question_vectors, question_texts=None)``: ``image_input`` is
    (B, N, d_image) elements (cached patches or object descriptions) when ``image_encoder`` is
    None, else (B, 3, 75, 75) images. With ``questions_per_image = k > 1`` (end-to-end
    training), ``image_input`` has B / k images and each image's elements serve its k questions:
    the CNN runs once per image, not once per question.
    """

    def __init__(self, question_encoder: nn.Module, fusion: Fusion, image_encoder: PatchCNN | None = None):
        super().__init__()
        self.question_encoder, self.fusion, self.image_encoder = question_encoder, fusion, image_encoder

    def forward(self, image_input, question_vectors, question_texts=None, questions_per_image: int = 1):
        elements = image_input if self.image_encoder is None else self.image_encoder.patches(image_input)
        if questions_per_image > 1:
            elements = elements.repeat_interleave(questions_per_image, dim=0)
        if elements.shape[0] != question_vectors.shape[0]:
            raise ValueError(f"{elements.shape[0]} image rows but {question_vectors.shape[0]} questions; "
                             "give one image per question (or set questions_per_image)")
        return self.fusion(elements, self.question_encoder(question_vectors, question_texts))


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# ============================================================================ shared embedding space

def scene_vocabulary() -> list:
    """Every word a scene description (:meth:`SortOfClevr.scene_text`) uses, plus padding."""
    words = ["[PAD]", "."] + list(shapes.COLORS) + list(shapes.SHAPES) + list(shapes.VERTICAL) + list(shapes.HORIZONTAL)
    return list(dict.fromkeys(words))


def tokenize_scenes(texts: list) -> torch.Tensor:
    """(B, L) word ids of scene descriptions (all the same length: 6 objects x 5 words)."""
    if isinstance(texts, str) or not len(texts):
        raise ValueError("no scene descriptions to tokenize: pass a non-empty list of "
                         "SortOfClevr.scene_text(i) strings (a single text as [text]).")
    vocab = {w: i for i, w in enumerate(scene_vocabulary())}
    rows = []
    for text in texts:
        words = text.replace(".", " .").split()
        unknown = [w for w in words if w not in vocab]
        if unknown:
            raise ValueError(f"words {unknown} are not in the scene vocabulary; descriptions come from "
                             "SortOfClevr.scene_text")
        rows.append(torch.tensor([vocab[w] for w in words]))
    return nn.utils.rnn.pad_sequence(rows, batch_first=True)


class ImageEmbedder(nn.Module):
    """Cached patch vectors (B, N, d) -> one unit-length vector per image: flatten, MLP, normalise."""

    def __init__(self, d_image: int, n_elements: int = GRID * GRID, d_embed: int = 64, hidden: int = 256):
        super().__init__()
        self.mlp = _mlp(d_image * n_elements, hidden, d_embed, layers=1)

    def forward(self, elements: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(elements.flatten(1)), dim=-1)


class TextEmbedder(nn.Module):
    """Word ids (B, L) -> one unit-length vector per text: embeddings, learned positions, one
    Transformer encoder layer (the course's), mean over words, projection, normalise."""

    def __init__(self, vocab_size: int, d_embed: int = 64, d_model: int = 64, num_heads: int = 4,
                 max_len: int = 64):
        super().__init__()
        from .transformer import TransformerEncoderLayer

        self.words = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.positions = nn.Embedding(max_len, d_model)
        self.layer = TransformerEncoderLayer(d_model, num_heads, 2 * d_model, norm_first=True)
        self.proj = nn.Linear(d_model, d_embed)

    def check_ids(self, ids: torch.Tensor) -> None:
        """(B, L) integer ids inside the vocabulary, L within the positions, a real word in every row."""
        if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.long, torch.int32) or ids.dim() != 2:
            raise TypeError(f"ids must be integer word ids (torch.long) of shape (batch, length), got "
                            f"{getattr(ids, 'dtype', type(ids).__name__)} {tuple(getattr(ids, 'shape', ()))}: "
                            "use tokenize_scenes(texts).")
        if ids.shape[1] > self.positions.num_embeddings:
            raise ValueError(f"the texts have {ids.shape[1]} words but the embedder has {self.positions.num_embeddings} "
                             "positions (max_len): shorten them, or build TextEmbedder(..., max_len=...) larger.")
        vocab = self.words.num_embeddings
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            bad = int(ids.max()) if int(ids.max()) >= vocab else int(ids.min())
            raise ValueError(f"word id {bad} is outside the vocabulary (0..{vocab - 1}): "
                             "tokenize with the vocabulary the embedder was built for.")
        empty = (ids == 0).all(dim=1).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"row {empty[0]} of the ids is only padding (0){f' ({len(empty)} rows in all)' if len(empty) > 1 else ''}: "
                             "a text with no word has no mean to take; drop empty descriptions.")

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self.check_ids(ids)
        real = ids != 0
        x = self.words(ids) + self.positions.weight[: ids.shape[1]]
        x = self.layer(x, key_padding_mask=real)
        pooled = (x * real[..., None]).sum(1) / real.sum(1, keepdim=True)
        return F.normalize(self.proj(pooled), dim=-1)


def contrastive_loss(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor,
                     temperature: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE (as in CLIP): row i of each side belongs with row i of the other.

    logits = image @ text^T / temperature; the loss is the mean of the cross-entropy of each
    image over all texts and of each text over all images, the right partner being the target.
    """
    if image_embeddings.shape != text_embeddings.shape or image_embeddings.dim() != 2:
        raise ValueError(f"image embeddings {tuple(image_embeddings.shape)} and text embeddings "
                         f"{tuple(text_embeddings.shape)} must both be (batch, d): one text per image")
    value = float(temperature.detach()) if isinstance(temperature, torch.Tensor) else float(temperature)
    if not 0.0 < value < math.inf:  # 0 divides by zero (inf - inf = NaN in the softmax); < 0 flips every ranking
        raise ValueError(f"temperature must be a positive, finite number (CLIP starts at 0.07), got {value}.")
    logits = image_embeddings @ text_embeddings.T / temperature
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


class ContrastiveModel(nn.Module):
    """An image embedder and a text embedder trained into one space; the temperature is learned
    (as its logarithm, started at 0.07 as in CLIP)."""

    def __init__(self, d_image: int, n_elements: int = GRID * GRID, d_embed: int = 64):
        super().__init__()
        self.image = ImageEmbedder(d_image, n_elements, d_embed)
        self.text = TextEmbedder(len(scene_vocabulary()), d_embed)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(0.07)))

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp().clamp(min=0.01)

    def forward(self, elements: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return contrastive_loss(self.image(elements), self.text(ids), self.temperature)


@torch.no_grad()
def similarity_matrix(model: ContrastiveModel, elements: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(N images, N texts) cosine similarities."""
    model.eval()
    return model.image(elements) @ model.text(ids).T


def recall_at_k(similarity: torch.Tensor, k: int) -> float:
    """Share of rows whose right partner (the diagonal) is among the k most similar columns."""
    if similarity.dim() != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be square (N images x N texts), got {tuple(similarity.shape)}")
    k = min(k, similarity.shape[1])
    top = similarity.topk(k, dim=1).indices
    return (top == torch.arange(similarity.shape[0], device=top.device)[:, None]).any(1).float().mean().item()


def train_contrastive(model: ContrastiveModel, elements: torch.Tensor, ids: torch.Tensor, steps: int,
                      batch_size: int = 128, lr: float = 2e-3, progress: bool = True, seed: int = 0) -> list:
    """Random batches of (image, its description), AdamW in the course's one loop
    (:func:`course_utils.training.train`, without gradient clipping); returns the loss per step."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)

    def random_pairs():
        while True:
            yield torch.randperm(elements.shape[0], generator=g)[:batch_size]

    def loss_of(model: ContrastiveModel, rows: torch.Tensor) -> torch.Tensor:
        return model(elements[rows], ids[rows])

    history = training.train(model, random_pairs(), loss_of, opt, steps=steps, max_grad_norm=None,
                             progress=progress, desc="contrastive training")
    model.eval()
    return history.values("loss")


# The training loop and the pictures live in their own modules; their names stay reachable as
# ``multimodal.X`` (chapters 05, 07 and 09 and older code import them from here).
_MOVED = {
    "vqa_training": ("QuestionSet", "TrainResult", "predict", "accuracy_by_subtype", "evaluate_vqa", "lr_factor",
                     "train_vqa", "step_budgets", "_forward_rows", "_sample_rows", "_param_groups"),
    "vqa_plots": ("show_dense_predictions", "plot_attention_on_image", "attention_maps", "attention_figure",
                  "attention_widget", "show_questions", "_image_hwc"),
}


def __getattr__(name: str):
    for module, names in _MOVED.items():
        if name in names:
            import importlib
            return getattr(importlib.import_module(f"{__package__}.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
