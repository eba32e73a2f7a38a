"""A shared image-text embedding space (chapter 05, CLIP-like).

:class:`ContrastiveModel` embeds cached image patches (:class:`ImageEmbedder`) and scene descriptions
(:class:`TextEmbedder`, over :func:`tokenize_scenes`'s word ids) into one space, trained with the
symmetric InfoNCE loss :func:`contrastive_loss` by :func:`train_contrastive`; :func:`similarity_matrix`
and :func:`recall_at_k` score retrieval. Zero-shot retrieval builds on it in :mod:`course_utils.vision.vl_retrieval`.
"""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from course_utils.vision import shapes
from course_utils import training
from course_utils.vision.multimodal import _mlp
from course_utils.vision.patch_cnn import GRID


def scene_vocabulary() -> list:
    """Every word a scene description (:meth:`SortOfClevr.scene_text`) uses, plus padding."""
    words = ["[PAD]", "."] + list(shapes.COLORS) + list(shapes.SHAPES) + list(shapes.VERTICAL) + list(shapes.HORIZONTAL)
    return list(dict.fromkeys(words))


def tokenize_scenes(texts: list) -> torch.Tensor:
    """(B, L) word ids of scene descriptions (all the same length: 6 objects x 5 words)."""
    if isinstance(texts, str) or not len(texts):
        raise ValueError(
            "no scene descriptions to tokenize: pass a non-empty list of "
            "SortOfClevr.scene_text(i) strings (a single text as [text])."
        )
    vocab = {w: i for i, w in enumerate(scene_vocabulary())}
    rows = []
    for text in texts:
        words = text.replace(".", " .").split()
        unknown = [w for w in words if w not in vocab]
        if unknown:
            raise ValueError(
                f"words {unknown} are not in the scene vocabulary; descriptions come from SortOfClevr.scene_text"
            )
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

    def __init__(self, vocab_size: int, d_embed: int = 64, d_model: int = 64, num_heads: int = 4, max_len: int = 64):
        super().__init__()
        from course_utils.layers.transformer import TransformerEncoderLayer

        self.words = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.positions = nn.Embedding(max_len, d_model)
        self.layer = TransformerEncoderLayer(d_model, num_heads, 2 * d_model, norm_first=True)
        self.proj = nn.Linear(d_model, d_embed)

    def check_ids(self, ids: torch.Tensor) -> None:
        """(B, L) integer ids inside the vocabulary, L within the positions, a real word in every row."""
        if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.long, torch.int32) or ids.dim() != 2:
            raise TypeError(
                f"ids must be integer word ids (torch.long) of shape (batch, length), got "
                f"{getattr(ids, 'dtype', type(ids).__name__)} {tuple(getattr(ids, 'shape', ()))}: "
                "use tokenize_scenes(texts)."
            )
        if ids.shape[1] > self.positions.num_embeddings:
            raise ValueError(
                f"the texts have {ids.shape[1]} words but the embedder has {self.positions.num_embeddings} "
                "positions (max_len): shorten them, or build TextEmbedder(..., max_len=...) larger."
            )
        vocab = self.words.num_embeddings
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            bad = int(ids.max()) if int(ids.max()) >= vocab else int(ids.min())
            raise ValueError(
                f"word id {bad} is outside the vocabulary (0..{vocab - 1}): "
                "tokenize with the vocabulary the embedder was built for."
            )
        empty = (ids == 0).all(dim=1).nonzero().flatten().tolist()
        if empty:
            raise ValueError(
                f"row {empty[0]} of the ids is only padding (0){f' ({len(empty)} rows in all)' if len(empty) > 1 else ''}: "
                "a text with no word has no mean to take; drop empty descriptions."
            )

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self.check_ids(ids)
        real = ids != 0
        x = self.words(ids) + self.positions.weight[: ids.shape[1]]
        x = self.layer(x, key_padding_mask=real)
        pooled = (x * real[..., None]).sum(1) / real.sum(1, keepdim=True)
        return F.normalize(self.proj(pooled), dim=-1)


def contrastive_loss(
    image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, temperature: torch.Tensor | float
) -> torch.Tensor:
    """Symmetric InfoNCE (as in CLIP): row i of each side belongs with row i of the other.

    logits = image @ text^T / temperature; the loss is the mean of the cross-entropy of each
    image over all texts and of each text over all images, the right partner being the target.
    """
    if image_embeddings.shape != text_embeddings.shape or image_embeddings.dim() != 2:
        raise ValueError(
            f"image embeddings {tuple(image_embeddings.shape)} and text embeddings "
            f"{tuple(text_embeddings.shape)} must both be (batch, d): one text per image"
        )
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


def train_contrastive(
    model: ContrastiveModel,
    elements: torch.Tensor,
    ids: torch.Tensor,
    steps: int,
    batch_size: int = 128,
    lr: float = 2e-3,
    progress: bool = True,
    seed: int = 0,
) -> list:
    """Random batches of (image, its description), AdamW in the course's one loop
    (:func:`course_utils.training.train`, without gradient clipping); returns the loss per step."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)

    def random_pairs():
        while True:
            yield torch.randperm(elements.shape[0], generator=g)[:batch_size]

    def loss_of(model: ContrastiveModel, rows: torch.Tensor) -> torch.Tensor:
        return model(elements[rows], ids[rows])

    history = training.train(
        model,
        random_pairs(),
        loss_of,
        opt,
        steps=steps,
        max_grad_norm=None,
        progress=progress,
        desc="contrastive training",
    )
    model.eval()
    return history.values("loss")
