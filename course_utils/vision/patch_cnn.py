"""Chapter 05's image side: a small CNN whose 5x5 output grid lines up with 15x15-pixel patches.

:class:`PatchCNN` cuts a 75x75 Sort-of-CLEVR image into 25 patch vectors (coordinates appended, as in
the relation-network paper); :func:`pretrain_patch_cnn` trains it to say what each patch holds
(:func:`grid_targets`, :func:`dense_loss`, :func:`dense_metrics`), after which it is frozen and
:func:`cache_patches` runs it once over every image. Chapter 07's captioner reads the same patches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F

from course_utils.vision import shapes
from course_utils import training

GRID = 5  # the CNN's output grid: 5x5 patches of 15x15 pixels
CELL = shapes.IMAGE_SIZE // GRID  # 15


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
        raise ValueError(
            f"images have shape {tuple(images.shape)}; the model expects (batch, 3, {size}, {size}) "
            f"RGB images as shapes.generate makes them.{hint}"
        )
    if images.dtype != torch.uint8 and not images.dtype.is_floating_point:
        raise TypeError(
            f"images have dtype {images.dtype}; pass uint8 pixels 0..255 as shapes.generate makes them "
            "(images.to(torch.uint8)) or floats centred on 0 (to_float(images))."
        )
    if images.dtype.is_floating_point and images.numel() and float(images.detach().abs().amax()) > 2.0:
        # to_float passes floats through: pixel values 0..255 as floats would reach the CNN unscaled
        raise ValueError(
            f"float images hold values up to {float(images.detach().abs().amax()):.4g}: they look like "
            "pixels 0..255 stored as floats; pass the uint8 images, or to_float(images.to(torch.uint8)) "
            "(about -0.5..0.5)."
        )


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


EMPTY = shapes.N_OBJECTS  # the 7th "colour": no object is centred in this patch
PATCH_CLASSES = shapes.N_OBJECTS + 1
D_DESCRIPTION = PATCH_CLASSES + 1 + 2  # class probabilities, circle, position (x, y) = 10


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
            return [
                nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=(kernel // 2 if stride == 1 else 0)),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            ]

        self.body = nn.Sequential(
            *block(3, channels, 3, 3),
            *block(channels, channels, 3, 1),
            *block(channels, channels, 3, 1),
            *block(channels, channels, 5, 5),
        )
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
            raise TypeError(
                f"images are {images.dtype} but the CNN's weights are {weight.dtype}: convert them, "
                f"images.to({weight.dtype}) (or pass the uint8 images)."
            )
        return self.body(to_float(images).to(weight.dtype))

    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 25, channels + 2): one hidden vector per patch, coordinates appended."""
        return self.patches_of(self.grid(images))

    def patches_of(self, fmap: torch.Tensor) -> torch.Tensor:
        """:meth:`patches` from an already computed (B, channels, 5, 5) feature map."""
        hidden = fmap.flatten(2).transpose(1, 2)  # (B, 25, channels)
        return torch.cat([hidden, self.coords.expand(hidden.shape[0], -1, -1)], dim=-1)

    def head_of(self, fmap: torch.Tensor) -> torch.Tensor:
        """The head's (B, 25, 10) answers from an already computed feature map."""
        return self.head(fmap).flatten(2).transpose(1, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head_of(self.grid(images))  # (B, 25, 10)

    def describe(self, images: torch.Tensor) -> torch.Tensor:
        return describe_patches(self(images), self.coords)


def describe_patches(head_output: torch.Tensor, coords: torch.Tensor | None = None) -> torch.Tensor:
    """What the CNN says about each patch, as (B, 25, 10) numbers laid out like an object
    description (:meth:`~course_utils.vision.shapes.SortOfClevr.object_descriptions`):

    the probabilities of the 7 classes (red ... gray, none); the probability of a circle, times the
    probability that an object is there (an empty patch says nothing about shape); and where the CNN
    places the object in the image, (x, y) in [-1, 1]: the patch centre plus the predicted offset,
    again weighted by the probability of an object (an empty patch sits at its centre).
    """
    probs = head_output[..., :PATCH_CLASSES].softmax(-1)
    occupied = 1 - probs[..., EMPTY:]
    coords = grid_coordinates().to(head_output.device) if coords is None else coords
    offset = head_output[..., PATCH_CLASSES + 1 :] * occupied * (CELL - 1) / (shapes.IMAGE_SIZE - 1)
    return torch.cat(
        [probs, torch.sigmoid(head_output[..., PATCH_CLASSES : PATCH_CLASSES + 1]) * occupied, coords + offset], dim=-1
    )


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
    cell = (y // CELL) * GRID + x // CELL  # (N, 6) patch of each object
    centres = (grid_coordinates() + 1) * (shapes.IMAGE_SIZE - 1) / 2  # (25, 2) patch centres, pixels
    to_centre = ((data.centers.float() - centres[cell]) ** 2).sum(-1)  # (N, 6)
    holds = torch.full((n, GRID * GRID), EMPTY, dtype=torch.long)
    best = torch.full((n, GRID * GRID), float("inf"))
    rows = torch.arange(n)
    for k in range(shapes.N_OBJECTS):  # nearest centre wins a shared patch
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
    loss = loss + (((pred[..., PATCH_CLASSES + 1 :] - targets["offset"]) ** 2).sum(-1) * weight).sum()
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
    error = ((pred[..., PATCH_CLASSES + 1 :] - targets["offset"]) * half).norm(dim=-1)[occupied]
    return {
        "cell_accuracy": cell_ok.float().mean().item(),
        "object_accuracy": cell_ok[occupied].float().mean().item(),
        "position_error_px": error.mean().item(),
    }


def pretrain_patch_cnn(
    cnn: PatchCNN,
    data: shapes.SortOfClevr,
    steps: int,
    batch_size: int = 32,
    lr: float = 3e-3,
    progress: bool = True,
    seed: int = 0,
) -> list:
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

    history = training.train(
        cnn,
        random_images(),
        loss_of,
        opt,
        sched,
        steps=steps,
        max_grad_norm=None,
        progress=progress,
        desc="pretraining the CNN",
    )
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
            raise ValueError(
                "keep() reads the objectness from patch descriptions (10 numbers per patch); "
                "for hidden channels pass keep= to cache_patches instead"
            )
        if not 1 <= k <= self.vectors.shape[1]:
            raise ValueError(f"keep must be between 1 and {self.vectors.shape[1]} patches, got {k}")
        objectness = 1 - self.vectors[..., EMPTY]
        pick = objectness.topk(k, dim=1).indices.sort(dim=1).values
        return CachedPatches(
            torch.gather(self.vectors, 1, pick[..., None].expand(-1, -1, self.vectors.shape[-1])),
            torch.gather(self.index, 1, pick),
        )

    def weights_on_grid(self, weights: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Spread (B, keep) weights of images ``rows`` back onto the (B, 25) patch grid."""
        grid = torch.zeros(weights.shape[0], GRID * GRID, dtype=weights.dtype)
        return grid.scatter(1, self.index[rows], weights.cpu())


@torch.no_grad()
def cache_patches(
    cnn: PatchCNN, images: torch.Tensor, keep: int = GRID * GRID, what: str = "description", batch_size: int = 500
) -> CachedPatches:
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
        fmap = cnn.grid(images[start : start + batch_size].to(device))  # the CNN body runs once
        head = cnn.head_of(fmap)
        v = describe_patches(head, cnn.coords) if what == "description" else cnn.patches_of(fmap)
        objectness = 1 - head[..., :PATCH_CLASSES].softmax(-1)[..., EMPTY]
        idx = objectness.topk(keep, dim=1).indices.sort(dim=1).values
        vectors.append(torch.gather(v, 1, idx[..., None].expand(-1, -1, v.shape[-1])).cpu())
        index.append(idx.cpu())
    return CachedPatches(torch.cat(vectors), torch.cat(index))
