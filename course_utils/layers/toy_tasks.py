"""Chapter 02's toy task and the small encoder trained on it.

The task: read a sequence of digits and write, at every position, the digit
of another position. ``"reverse"`` (the chapter's task) writes the sequence
backwards, so position i must copy position L-1-i; ``"sort"`` writes it in
ascending order. Neither can be done by looking at one position alone, and
neither can be done without knowing *where* each digit is: a Transformer
without positional information treats its input as a bag of tokens.

:func:`make_split` draws held-out test sequences that never occur in training;
:class:`ToyEncoder` is token embedding + positions + the course's
:class:`~course_utils.layers.transformer.TransformerEncoder` + a linear read-out;
:func:`train` runs the course's loop (:func:`course_utils.training.train`) on this task;
:func:`evaluate` gives the accuracies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from course_utils import training
from course_utils.layers.positions import RotaryMultiHeadAttention
from course_utils.training import History
from course_utils.layers.transformer import LearnedPositionalEmbedding, SinusoidalPositionalEncoding, TransformerEncoder

TASKS = ("reverse", "sort")
POSITIONS = ("learned", "sinusoidal", "rope", "none")


IGNORE_INDEX = -100  # targets at padding positions: cross_entropy skips them


def pad_id(num_symbols: int) -> int:
    """The padding token's id: one past the last symbol."""
    return num_symbols


def target_for(inputs: torch.Tensor, task: str = "reverse", num_symbols: int = 10) -> torch.Tensor:
    """The answer the task asks for, for (N, L) inputs padded on the right with ``pad_id(num_symbols)``.

    Padding positions get ``IGNORE_INDEX``. "reverse" reverses each sequence's real part,
    "sort" sorts it.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    real = inputs != pad_id(num_symbols)
    lengths = real.sum(dim=-1, keepdim=True)
    if task == "reverse":
        position = torch.arange(inputs.shape[-1]).expand_as(inputs)
        source = (lengths - 1 - position).clamp(min=0)  # position i reads position length-1-i
        targets = inputs.gather(-1, source)
    else:  # padding (the largest id) sorts to the end, where it stays padding
        targets = inputs.sort(dim=-1).values
    return targets.masked_fill(~real, IGNORE_INDEX)


def make_sequences(
    num_sequences: int,
    length: int,
    num_symbols: int = 10,
    task: str = "reverse",
    min_length: int | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, targets)``, both (num_sequences, length) int64; symbols uniform in 0..num_symbols-1.

    With ``min_length`` the sequences have lengths uniform in min_length..length and are
    padded on the right with ``pad_id(num_symbols)`` (targets: ``IGNORE_INDEX`` there).
    """
    _check_sizes(num_sequences=num_sequences, length=length, num_symbols=num_symbols)
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    min_length = length if min_length is None else min_length
    if not isinstance(min_length, int) or not 1 <= min_length <= length:
        raise ValueError(f"min_length must be an integer in 1..length={length}, got {min_length!r}")
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randint(num_symbols, (num_sequences, length), generator=generator)
    lengths = torch.randint(min_length, length + 1, (num_sequences, 1), generator=generator)
    inputs = inputs.masked_fill(torch.arange(length) >= lengths, pad_id(num_symbols))
    return inputs, target_for(inputs, task, num_symbols)


def best_position_blind_guess(inputs: torch.Tensor, num_symbols: int = 10) -> torch.Tensor:
    """(N, L) guesses for reversal by the best model that cannot see positions.

    Such a model sees, at each position, only its own digit and the bag (multiset) of the
    sequence's digits. Every arrangement of the bag is equally likely, so the expected number
    of right answers among the positions holding digit ``a``, guessing ``g``, is proportional
    to the count of ``g`` among the OTHER positions when the length is even, and to the count
    of ``g`` in the whole sequence when the length is odd (the middle position is its own
    mirror, which adds one for ``g == a``). The guess is the argmax (ties: the smallest digit).
    Padding positions get ``IGNORE_INDEX``.
    """
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 2 or inputs.dtype != torch.long:
        raise ValueError("inputs must be a (N, L) int64 tensor of digits padded with pad_id(num_symbols)")
    real = inputs != pad_id(num_symbols)
    one_hot = F.one_hot(inputs, num_symbols + 1)[..., :num_symbols] * real[..., None]  # (N, L, S)
    counts = one_hot.sum(dim=1, keepdim=True)  # (N, 1, S)
    odd = (real.sum(dim=1) % 2 == 1)[:, None, None]
    score = torch.where(odd, counts, counts - one_hot)  # odd length: the whole bag; even: the others
    return score.argmax(-1).masked_fill(~real, IGNORE_INDEX)


@dataclass
class Split:
    """Training and held-out test sequences of one task; no test sequence occurs in training."""

    train_inputs: torch.Tensor
    train_targets: torch.Tensor
    test_inputs: torch.Tensor
    test_targets: torch.Tensor
    task: str
    num_symbols: int

    @property
    def length(self) -> int:
        return self.train_inputs.shape[1]

    @property
    def pad_id(self) -> int:
        return pad_id(self.num_symbols)


def make_split(
    num_train: int,
    num_test: int,
    length: int,
    num_symbols: int = 10,
    task: str = "reverse",
    min_length: int | None = None,
    seed: int = 0,
) -> Split:
    """Draw ``num_train`` + ``num_test`` distinct sequences; the test ones never occur in training."""
    _check_sizes(num_train=num_train, num_test=num_test, length=length, num_symbols=num_symbols)
    total = num_train + num_test
    kinds = sum(num_symbols**n for n in range(length if min_length is None else min_length, length + 1))
    if kinds < 2 * total:
        raise ValueError(
            f"only {kinds} different sequences exist, too few to draw {total} distinct ones: raise "
            "length (or min_length) or num_symbols, or ask for fewer sequences."
        )
    inputs, _ = make_sequences(2 * total, length, num_symbols, task, min_length, seed)  # spares for duplicates
    _, first = _unique_rows_first_index(inputs)
    if first.shape[0] < total:
        raise ValueError(f"could not draw {total} distinct sequences; ask for fewer or raise min_length")
    inputs = inputs[first[:total]]
    targets = target_for(inputs, task, num_symbols)
    return Split(inputs[:num_train], targets[:num_train], inputs[num_train:], targets[num_train:], task, num_symbols)


def _unique_rows_first_index(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct rows and the index of each one's first occurrence, in order of first occurrence."""
    unique, inverse = torch.unique(rows, dim=0, return_inverse=True)
    first = torch.full((unique.shape[0],), rows.shape[0], dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(rows.shape[0]), reduce="amin")
    return unique, first.sort().values


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


class ToyEncoder(nn.Module):
    """Token embedding + positions + a Transformer encoder + a linear read-out per position.

    forward(tokens (B, L) int64, padded with ``pad_id(num_symbols)``) -> logits (B, L, num_symbols).
    Padding keys are masked out of every attention. ``positions`` is ``"learned"``,
    ``"sinusoidal"`` (a vector added to each embedding), ``"rope"`` (nothing added: every
    layer's attention rotates its queries and keys, :mod:`course_utils.layers.positions`) or
    ``"none"`` (no positional information at all).
    """

    def __init__(
        self,
        num_symbols: int = 10,
        max_len: int = 32,
        d_model: int = 64,
        num_heads: int = 4,
        d_ff: int = 128,
        num_layers: int = 2,
        positions: str = "learned",
        norm_first: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        if positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
        self.num_symbols, self.max_len, self.positions = num_symbols, max_len, positions
        self.pad_id = pad_id(num_symbols)
        self.embed = nn.Embedding(num_symbols + 1, d_model, padding_idx=self.pad_id)
        if positions == "learned":
            self.position = LearnedPositionalEmbedding(d_model, max_len)
        elif positions == "sinusoidal":
            self.position = SinusoidalPositionalEncoding(d_model, max_len)
        else:
            self.position = nn.Identity()
        self.encoder = TransformerEncoder(num_layers, d_model, num_heads, d_ff, dropout=dropout, norm_first=norm_first)
        if positions == "rope":  # positions enter inside attention, in every layer
            for layer in self.encoder.layers:
                layer.self_attn = RotaryMultiHeadAttention(d_model, num_heads, dropout=dropout)
        self.readout = nn.Linear(d_model, num_symbols)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.dtype != torch.long:
            got = f"{tokens.dtype} {tuple(tokens.shape)}" if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"tokens must be a (batch, length) int64 tensor, got {got}")
        if tokens.shape[1] > self.max_len:
            raise ValueError(
                f"sequence length {tokens.shape[1]} > max_len={self.max_len}: "
                f"build the model with max_len >= {tokens.shape[1]}"
            )
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) > self.pad_id):
            raise ValueError(
                f"tokens must lie in 0..{self.num_symbols - 1} (or be the padding id "
                f"{self.pad_id}), got values {int(tokens.min())}..{int(tokens.max())}"
            )
        x = self.position(self.embed(tokens))
        return self.readout(self.encoder(x, key_padding_mask=tokens != self.pad_id))


@torch.no_grad()
def evaluate(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int = 1024) -> dict[str, float]:
    """Per-token accuracy (share of positions right) and per-sequence accuracy (every position right)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    tokens_right = tokens_total = sequences_right = 0
    for start in range(0, inputs.shape[0], batch_size):
        x = inputs[start : start + batch_size].to(device)
        y = targets[start : start + batch_size].to(device)
        real = y != IGNORE_INDEX
        right = (model(x).argmax(-1) == y) & real
        tokens_right += int(right.sum())
        tokens_total += int(real.sum())
        sequences_right += int((right == real).all(dim=1).sum())
    model.train(was_training)
    return {"token_accuracy": tokens_right / tokens_total, "sequence_accuracy": sequences_right / targets.shape[0]}


OPTIMIZERS = {"adam": torch.optim.Adam, "radam": torch.optim.RAdam}


def train(
    model: nn.Module,
    split: Split,
    steps: int,
    batch_size: int = 64,
    lr: float = 3e-3,
    warmup: int = 50,
    eval_every: int = 100,
    seed: int = 0,
    progress: bool = True,
    description: str = "training",
    optimizer: str = "adam",
) -> History:
    """Adam (or RAdam) with linear warmup then cosine decay, cross-entropy at every position.

    The course's one loop, :func:`course_utils.training.train`, with what this task adds: random
    batches drawn with their own seeded generator, the loss, no gradient clipping, and the held-out
    accuracies every ``eval_every`` steps (logged as ``eval_token_accuracy`` and
    ``eval_sequence_accuracy``). ``warmup=0`` starts at the peak learning rate. Returns the
    loop's :class:`~course_utils.training.History`.
    """
    _check_sizes(steps=steps, batch_size=batch_size, eval_every=eval_every)
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a whole number of steps >= 0 (0: no warm-up), got {warmup!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
    device = next(model.parameters()).device
    adam = OPTIMIZERS[optimizer](model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(adam, lambda step: _warmup_cosine(step, warmup, steps))
    generator = torch.Generator().manual_seed(seed)

    def random_batches():
        while True:
            index = torch.randint(split.train_inputs.shape[0], (batch_size,), generator=generator)
            yield split.train_inputs[index], split.train_targets[index]

    def loss_of(model: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE_INDEX)

    def held_out(model: nn.Module) -> dict[str, float]:
        return evaluate(model, split.test_inputs, split.test_targets)

    return training.train(
        model,
        random_batches(),
        loss_of,
        adam,
        schedule,
        steps=steps,
        max_grad_norm=None,
        eval_fn=held_out,
        eval_every=eval_every,
        progress=progress,
        desc=description,
        device=device,
    )


def _warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Linear warm-up from 1/warmup, then cosine to 0: transformers' ``get_cosine_schedule_with_warmup``,
    except that the warm-up is one step ahead (the library's first step has learning rate 0);
    tests/test_library_agreement.py shows both. Kept so that chapter 02's measured runs stay as they are."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
