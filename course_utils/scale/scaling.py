"""Scaling up without changing the mathematics (chapter 08).

Each technique here changes speed or memory, never the result; the chapter and the tests
prove it against a plain computation:

* **gradient accumulation** (:func:`accumulate_gradients`): k micro-batches, one optimizer
  step. With sequences of unequal length, dividing each micro-batch's *mean* loss by k is
  wrong; sum the token losses and divide by the token count of the whole batch (all ranks).
* **mixed precision** (:func:`autocast_output_dtypes`, :func:`amp_step`): bf16 autocast on
  the CPU, fp16 with a gradient scaler on a GPU.
* **activation checkpointing** (:func:`checkpoint_layers`): ``torch.utils.checkpoint`` with
  ``use_reentrant=False`` and the RNG state preserved, so dropout gives the same gradients.
* **tiled attention** (:func:`tiled_attention`): the online-softmax algorithm behind
  FlashAttention in plain torch; its memory grows linearly with the sequence length.
* **measuring memory on a CPU**: :class:`SavedTensors` (what autograd keeps for the backward
  pass, via ``torch.autograd.graph.saved_tensors_hooks``) and :class:`MemoryTracker` (every
  tensor storage allocated inside the block, its bytes, and the peak of the live ones).

Also the toy token model and data that the accumulation and DDP proofs share.
"""

from __future__ import annotations

import functools
import math
import time
import weakref
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import (
    TorchDispatchMode,  # what torch.utils.flop_counter builds on
)
from typing_extensions import Self

from course_utils.layers.attention import _check_mask, _check_qkv

IGNORE_INDEX = -100

# ---------------------------------------------------------------------------------------------
# A toy token model and data of unequal lengths (the accumulation and DDP proofs)
# ---------------------------------------------------------------------------------------------


class TinyTokenModel(nn.Module):
    """Embedding -> Linear -> tanh -> Linear: a score for every vocabulary entry at each position."""

    def __init__(self, vocab_size: int = 50, dim: int = 16, dropout: float = 0.0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.hidden = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(dim, vocab_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(torch.tanh(self.hidden(self.embed(input_ids)))))


def make_token_data(
    n_sequences: int, vocab_size: int = 50, min_len: int = 2, max_len: int = 24, seed: int = 0
) -> list[list[int]]:
    """``n_sequences`` lists of token ids, lengths drawn from ``min_len..max_len`` (unequal on purpose)."""
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (n_sequences,), generator=g)
    return [torch.randint(0, vocab_size, (int(n),), generator=g).tolist() for n in lengths]


def collate_tokens(sequences: Sequence[Sequence[int]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad to the longest; the target at each position is the next token (-100 at the last and at padding)."""
    if not sequences:
        raise ValueError("cannot collate an empty list of sequences")
    length = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    labels = torch.full((len(sequences), length), IGNORE_INDEX, dtype=torch.long)
    for row, s in enumerate(sequences):
        input_ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
        labels[row, : len(s) - 1] = torch.tensor(s[1:], dtype=torch.long)
    return {"input_ids": input_ids, "labels": labels}


def token_loss_sum(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(sum of the token cross-entropies, number of target tokens) of one batch."""
    logits = model(batch["input_ids"])
    labels = batch["labels"]
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return total, int((labels != IGNORE_INDEX).sum())


# ---------------------------------------------------------------------------------------------
# Gradient accumulation
# ---------------------------------------------------------------------------------------------

NORMALIZATIONS = ("tokens", "mean_of_means")


def split_batch(sequences: Sequence, k: int) -> list[list]:
    """``k`` consecutive micro-batches of (nearly) equal size."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"the number of micro-batches must be a whole number >= 1, got {k!r}")
    if k > len(sequences):
        raise ValueError(
            f"cannot split {len(sequences)} sequences into {k} non-empty micro-batches: use k <= {len(sequences)}"
        )
    bounds = [round(i * len(sequences) / k) for i in range(k + 1)]
    return [list(sequences[bounds[i] : bounds[i + 1]]) for i in range(k)]


def accumulate_gradients(
    model: nn.Module,
    micro_batches: Sequence[dict],
    loss_fn: Callable[[nn.Module, dict], tuple[torch.Tensor, int]] = token_loss_sum,
    normalize: str = "tokens",
    global_tokens: int | None = None,
    scale: float = 1.0,
) -> float:
    """Backward through every micro-batch, adding into ``.grad``; returns the loss of the whole batch.

    ``loss_fn(model, batch) -> (sum of token losses, token count)``. ``normalize="tokens"``
    (right): each micro-batch's sum is divided by the token count of *all* micro-batches
    (``global_tokens``, for example all-reduced over ranks), so the gradient is that of the
    mean over every token. ``"mean_of_means"`` (the trap): each micro-batch's mean divided by
    k, right only when every micro-batch has as many tokens. ``scale`` multiplies every loss
    (DDP averages over ranks: pass the world size to undo it). Gradients are not zeroed here.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if not micro_batches:
        raise ValueError("no micro-batches to accumulate")
    counts = [int((mb["labels"] != IGNORE_INDEX).sum()) for mb in micro_batches]
    total_tokens = global_tokens if global_tokens is not None else sum(counts)
    if total_tokens <= 0 or 0 in counts and normalize == "mean_of_means":
        raise ValueError("a micro-batch has no target token: its mean loss is undefined")
    logged = 0.0
    for mb in micro_batches:
        loss_sum, count = loss_fn(model, mb)
        if normalize == "tokens":
            loss = loss_sum / total_tokens
        else:
            loss = loss_sum / count / len(micro_batches)
        (loss * scale).backward()
        logged += loss.item()
    return logged


def chunks(sequences: Sequence, size: int) -> list[list]:
    """Consecutive global batches of ``size`` sequences (a last, shorter one is dropped)."""
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"the batch size must be a whole number >= 1, got {size!r}")
    return [list(sequences[i : i + size]) for i in range(0, len(sequences) - size + 1, size)]


def train_token_model(
    model: nn.Module,
    global_batches: Sequence[Sequence],
    lr: float = 0.5,
    micro_batches: int = 1,
    normalize: str = "tokens",
) -> list[float]:
    """Plain SGD on one process: one optimizer step per global batch, the reference of the DDP runs.

    Each global batch (a list of sequences) is split into ``micro_batches`` whose gradients
    are accumulated (:func:`accumulate_gradients`). Returns the loss of every step.
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for sequences in global_batches:
        optimizer.zero_grad(set_to_none=True)
        micro = [collate_tokens(part) for part in split_batch(sequences, micro_batches)]
        losses.append(accumulate_gradients(model, micro, normalize=normalize))
        optimizer.step()
    return losses


def gradients(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every parameter's gradient, by name (zeros where there is none)."""
    return {
        name: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
        for name, p in model.named_parameters()
    }


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest absolute difference between two dicts of tensors with the same keys."""
    if a.keys() != b.keys():
        raise ValueError(f"the two dicts hold different names: {sorted(a.keys() ^ b.keys())[:5]}")
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


# ---------------------------------------------------------------------------------------------
# Mixed precision
# ---------------------------------------------------------------------------------------------


def autocast_output_dtypes(
    model: nn.Module, run: Callable[[], object], device_type: str = "cpu", dtype: torch.dtype = torch.bfloat16
) -> dict[str, set[torch.dtype]]:
    """Run ``run()`` under autocast; the dtypes each kind of leaf module produced, by class name."""
    seen: dict[str, set[torch.dtype]] = {}

    def record(module, _inputs, output):
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        for t in outputs:
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                seen.setdefault(type(module).__name__, set()).add(t.dtype)

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(record) for m in leaves]
    try:
        with torch.autocast(device_type=device_type, dtype=dtype):
            run()
    finally:
        for h in handles:
            h.remove()
    return seen


class _OpDtypes(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen: dict[str, set[torch.dtype]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in _tensors(out):
            if t.is_floating_point():
                self.seen.setdefault(func.overloadpacket.__name__, set()).add(t.dtype)
        return out


def autocast_op_dtypes(
    run: Callable[[], object], device_type: str = "cpu", dtype: torch.dtype = torch.bfloat16
) -> dict[str, set[torch.dtype]]:
    """Run ``run()`` under autocast; the dtypes each aten op produced (what autocast decided per op)."""
    with torch.autocast(device_type=device_type, dtype=dtype), _OpDtypes() as recorder:
        run()
    return recorder.seen


def amp_step(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    device_type: str = "cpu",
    dtype: torch.dtype | None = torch.bfloat16,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[float, bool]:
    """One optimizer step with autocast (``dtype=None``: plain fp32); returns (loss, stepped).

    With a ``scaler`` (fp16 on a GPU) the loss is multiplied before backward, the gradients
    divided before the step, and a step whose gradients hold inf or NaN is skipped (and the
    scale halved): ``stepped`` is False then. bf16 has fp32's exponent range and needs none.
    """
    optimizer.zero_grad(set_to_none=True)
    if dtype is None:
        loss = loss_fn(model)
    else:
        with torch.autocast(device_type=device_type, dtype=dtype):
            loss = loss_fn(model)
    if scaler is None:
        loss.float().backward()
        optimizer.step()
        return loss.item(), True
    scale_before = scaler.get_scale()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.item(), scaler.get_scale() >= scale_before


# ---------------------------------------------------------------------------------------------
# Activation checkpointing
# ---------------------------------------------------------------------------------------------


def _checkpointed(forward: Callable, preserve_rng_state: bool) -> Callable:
    @functools.wraps(forward)
    def run(*args, **kwargs):
        if not torch.is_grad_enabled():  # nothing is saved without autograd: nothing to recompute
            return forward(*args, **kwargs)
        return torch.utils.checkpoint.checkpoint(
            forward, *args, use_reentrant=False, preserve_rng_state=preserve_rng_state, **kwargs
        )

    run.course_checkpointed = True
    return run


def checkpoint_layers(layers: Iterable[nn.Module], enabled: bool = True, preserve_rng_state: bool = True) -> int:
    """Recompute each layer's activations in the backward pass instead of keeping them.

    Replaces ``layer.forward`` on each instance (the weights and their names stay as they
    are, so checkpoints and DDP see the same model); ``enabled=False`` undoes it. Returns
    the number of layers changed. ``preserve_rng_state=False`` (faster, wrong with dropout:
    the recomputation draws new dropout masks) is there to show why it is the default.
    """
    changed = 0
    for layer in layers:
        if not isinstance(layer, nn.Module):
            raise TypeError(
                f"checkpoint_layers takes nn.Modules (e.g. model.bert.encoder.layers), got {type(layer).__name__}"
            )
        wrapped = getattr(layer.__dict__.get("forward"), "course_checkpointed", False)
        if enabled and not wrapped:
            layer.forward = _checkpointed(layer.forward, preserve_rng_state)
            changed += 1
        elif not enabled and wrapped:
            del layer.forward  # back to the class's forward
            changed += 1
    return changed


class SavedTensors:
    """Counts what autograd saves for the backward pass inside the block (not parameters).

    ``count``: tensors saved; ``bytes``: the bytes of their distinct storages (a tensor saved
    twice, or two views of one storage, count once). Uses
    ``torch.autograd.graph.saved_tensors_hooks``; checkpointed regions install their own
    hooks, so what they drop is not seen here (their inputs, kept by checkpoint, neither).
    """

    def __init__(self, model: nn.Module | None = None):
        self._params = {p.untyped_storage().data_ptr() for p in model.parameters()} if model is not None else set()
        self.count = 0
        self._storages: dict[int, int] = {}

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in self._params:
            self.count += 1
            self._storages[storage.data_ptr()] = storage.nbytes()
        return t

    @property
    def bytes(self) -> int:
        return sum(self._storages.values())

    def __enter__(self) -> Self:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


class MemoryTracker(TorchDispatchMode):
    """Peak bytes of the tensor storages allocated inside the block, measured on any device.

    Every op's new output storage is added when it appears and subtracted when it is freed
    (a ``weakref.finalize`` on the storage, which torch keeps alive exactly as long as the
    memory). ``peak`` is the largest total alive at once, ``allocated`` the sum of all
    allocations. Memory that existed before the block (inputs, weights) is not counted;
    scratch memory inside one fused kernel is not visible either. Slows ops down: measure
    memory and time in separate runs.
    """

    def __init__(self):
        super().__init__()
        self.current = self.peak = self.allocated = 0
        self._live: dict[int, int] = {}

    def _free(self, ptr: int, nbytes: int) -> None:
        if self._live.pop(ptr, None) is not None:
            self.current -= nbytes

    def _track(self, t: torch.Tensor, known: set[int]) -> None:
        storage = t.untyped_storage()
        ptr, nbytes = storage.data_ptr(), storage.nbytes()
        if nbytes == 0 or ptr in known or ptr in self._live:
            return
        self._live[ptr] = nbytes
        self.current += nbytes
        self.allocated += nbytes
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._free, ptr, nbytes)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        known = {t.untyped_storage().data_ptr() for t in _tensors((args, kwargs))}  # in-place and views
        out = func(*args, **kwargs)
        for t in _tensors(out):
            self._track(t, known)
        return out

    def __enter__(self) -> Self:
        super().__enter__()
        return self


def _tensors(tree) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, (list, tuple)):
        return [t for item in tree for t in _tensors(item)]
    if isinstance(tree, dict):
        return [t for item in tree.values() for t in _tensors(item)]
    return []


def peak_memory(fn: Callable[[], object]) -> int:
    """Peak bytes allocated while ``fn()`` runs (its result is released before returning)."""
    with MemoryTracker() as tracker:
        result = fn()
        del result
    return tracker.peak


def seconds_per_call(fn: Callable[[], object], repeats: int = 3, min_time: float = 0.05) -> float:
    """The best of ``repeats`` timings of ``fn`` (each block long enough for the timer)."""
    fn()  # warm-up
    calls, best = 1, float("inf")
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time or calls >= 1024:
            break
        calls *= 2
    best = elapsed / calls
    for _ in range(repeats - 1):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


# ---------------------------------------------------------------------------------------------
# Tiled attention with an online softmax (the FlashAttention algorithm, in plain torch)
# ---------------------------------------------------------------------------------------------


def _block_of(mask: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
    """The mask's part for these query rows and key columns; a broadcast (size-1) axis stays whole."""
    if mask.shape[-2] != 1:
        mask = mask[..., rows, :]
    if mask.shape[-1] != 1:
        mask = mask[..., cols]
    return mask


def tiled_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    block_size: int = 64,
    scale: float | None = None,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v, one (block_size x block_size) tile of scores at a time.

    Shapes and masks as :func:`course_utils.layers.attention.scaled_dot_product_attention` (boolean,
    True = may attend; a query that may attend to nothing gets zeros). For each block of
    queries it keeps the running maximum ``m`` of the scores, the running sum ``l`` of
    exp(score - m) and the running weighted sum of values; when a new key block raises the
    maximum, the old sums are rescaled by exp(m_old - m_new). Only the output is returned:
    the weights are never built. Memory: O(L * block_size) per head instead of O(L^2).
    """
    _check_qkv(q, k, v)
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a whole number >= 1, got {block_size!r}")
    len_q, len_k = q.shape[-2], k.shape[-2]
    lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    if mask is not None:
        _check_mask(mask, torch.Size((*lead, len_q, len_k)))
        while mask.dim() < 2:
            mask = mask.unsqueeze(0)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    out = q.new_empty((*lead, len_q, v.shape[-1]))
    for q_start in range(0, len_q, block_size):
        rows = slice(q_start, min(q_start + block_size, len_q))
        q_block = q[..., rows, :] * scale
        n_rows = rows.stop - rows.start
        running_max = q.new_full((*lead, n_rows, 1), float("-inf"))
        running_sum = q.new_zeros((*lead, n_rows, 1))
        acc = q.new_zeros((*lead, n_rows, v.shape[-1]))
        for k_start in range(0, len_k, block_size):
            cols = slice(k_start, min(k_start + block_size, len_k))
            scores = q_block @ k[..., cols, :].transpose(-2, -1)
            if mask is not None:
                scores = scores.masked_fill(~_block_of(mask, rows, cols), float("-inf"))
            new_max = torch.maximum(running_max, scores.amax(dim=-1, keepdim=True))
            # a row with no allowed key so far has max -inf; shift by 0 there so exp gives 0, not NaN
            shift = torch.where(torch.isinf(new_max), torch.zeros_like(new_max), new_max)
            probs = torch.exp(scores - shift)
            rescale = torch.exp(running_max - shift)
            running_sum = running_sum * rescale + probs.sum(dim=-1, keepdim=True)
            acc = acc * rescale + probs @ v[..., cols, :]
            running_max = new_max
        out[..., rows, :] = acc / torch.where(running_sum > 0, running_sum, torch.ones_like(running_sum))
    return out
