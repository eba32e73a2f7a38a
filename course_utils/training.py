"""Training helpers shared by chapters 03-05: optimizer, schedule, loop, early stopping, checkpoints.

* :func:`param_groups` / :func:`make_optimizer`: AdamW with weight decay on the weight
  matrices only; biases and LayerNorm weights are not decayed (shrinking a LayerNorm gain
  or a bias towards zero is not a useful prior).
* :func:`linear_warmup_schedule`: the learning rate rises linearly from 0 to its peak over
  the warm-up steps, then falls linearly to 0 at the last step (BERT's schedule).
* :func:`train`: the loop (forward, backward, gradient clipping, step), with a ``tqdm.auto``
  progress bar and a :class:`History` of every metric; optional evaluation and
  :class:`EarlyStopping`, which keeps the best weights in memory.
* :func:`save_checkpoint` / :func:`load_checkpoint`: weights in safetensors (never pickle).
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

# ---------------------------------------------------------------------------------------------
# Optimizer and schedule
# ---------------------------------------------------------------------------------------------


def _is_norm(module: nn.Module) -> bool:
    return (
        isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d))
        or "norm" in type(module).__name__.lower()
    )


def no_decay_names(model: nn.Module) -> list[str]:
    """Names of the parameters that get no weight decay: biases, normalisation weights, 1-D tensors."""
    names = []
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if param.ndim < 2 or name == "bias" or _is_norm(module):
                names.append(f"{module_name}.{name}" if module_name else name)
    return names


def param_groups(model: nn.Module, weight_decay: float = 0.01) -> list[dict]:
    """Two AdamW parameter groups: the weight matrices (decayed) and the rest (not decayed).

    Only parameters with ``requires_grad`` are included, so frozen layers are left out.
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    skip = set(no_decay_names(model))
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if name in skip else decay).append(param)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(
    model: nn.Module,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`."""
    if lr <= 0:
        raise ValueError(f"lr must be positive, got {lr}")
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps)


def warmup_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """The learning-rate multiplier at ``step``: step/warmup while warming up, then linear decay to 0."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def linear_warmup_schedule(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the optimizer's lr over ``warmup_steps``, then linear decay to 0 at ``total_steps``."""
    if total_steps <= 0 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"need 0 <= warmup_steps <= total_steps and total_steps > 0, "
            f"got warmup_steps={warmup_steps}, total_steps={total_steps}"
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_factor(step, warmup_steps, total_steps))


# ---------------------------------------------------------------------------------------------
# History, early stopping
# ---------------------------------------------------------------------------------------------


class History:
    """Metrics logged during training: for each name, the steps and the values."""

    def __init__(self):
        self._data: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.seconds = 0.0
        self.steps_done = 0

    def log(self, step: int, **metrics: float) -> None:
        for name, value in metrics.items():
            self._data[name].append((int(step), float(value)))

    def __contains__(self, name: str) -> bool:
        return name in self._data

    def names(self) -> list[str]:
        return list(self._data)

    def _get(self, name: str) -> list[tuple[int, float]]:
        if name not in self._data:
            raise KeyError(f"no metric {name!r} in the history; logged: {', '.join(self._data) or 'none'}")
        return self._data[name]

    def values(self, name: str) -> list[float]:
        return [v for _, v in self._get(name)]

    def steps(self, name: str) -> list[int]:
        return [s for s, _ in self._get(name)]

    def curve(self, name: str) -> tuple[list[int], list[float]]:
        """``(steps, values)``, the form ``viz.plot_curves`` takes for a curve with its own x values."""
        return self.steps(name), self.values(name)

    def last(self, name: str) -> float:
        return self._get(name)[-1][1]

    def mean(self, name: str, last: int | None = None) -> float:
        values = self.values(name)[-last:] if last else self.values(name)
        return sum(values) / len(values)

    @property
    def steps_per_second(self) -> float:
        return self.steps_done / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict[str, list[tuple[int, float]]]:
        return {name: list(points) for name, points in self._data.items()}

    def __repr__(self) -> str:
        return f"History({self.steps_done} steps in {self.seconds:.1f} s; metrics: {', '.join(self._data)})"


def state_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's weights on the CPU (not views that later training would change)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class EarlyStopping:
    """Stop when a metric has not improved for ``patience`` evaluations; keep the best weights.

    ``mode="max"`` for accuracy or F1, ``"min"`` for a loss. Call :meth:`update` after each
    evaluation; it returns True when the metric improved (by more than ``min_delta``).
    ``should_stop`` turns True after ``patience`` evaluations without improvement, and
    :meth:`restore` loads the best weights back into the model.
    """

    def __init__(self, patience: int = 3, mode: str = "max", min_delta: float = 0.0, monitor: str | None = None):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' (accuracy, F1) or 'min' (a loss), got {mode!r}")
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be a whole number of evaluations >= 1, got {patience!r}")
        self.patience, self.mode, self.min_delta, self.monitor = patience, mode, min_delta, monitor
        self.best: float | None = None
        self.best_step: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_evaluations = 0

    def is_better(self, value: float) -> bool:
        if self.best is None:
            return not math.isnan(value)
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def update(self, value: float, model: nn.Module | None = None, step: int | None = None) -> bool:
        value = float(value)
        if self.is_better(value):
            self.best, self.best_step, self.bad_evaluations = value, step, 0
            if model is not None:
                self.best_state = state_snapshot(model)
            return True
        self.bad_evaluations += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_evaluations >= self.patience

    def restore(self, model: nn.Module) -> None:
        if self.best_state is None:
            raise RuntimeError("no best weights kept yet: call update(value, model) after an evaluation first")
        model.load_state_dict(self.best_state)


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def to_device(batch: Any, device: torch.device | str | None) -> Any:
    """Move the tensors of a batch (a tensor, dict, list or tuple of them) to ``device``."""
    if device is None:
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _endless(batches: Iterable) -> Iterable:
    """Iterate ``batches`` again and again (epochs); a one-shot iterator is used once."""
    while True:
        produced = False
        for batch in batches:
            produced = True
            yield batch
        if iter(batches) is batches or not produced:
            return  # a generator cannot start again; an empty iterable never yields


def train(
    model: nn.Module,
    batches: Iterable,
    step_fn: Callable[[nn.Module, Any], Any],
    optimizer: torch.optim.Optimizer,
    scheduler=None,
    steps: int | None = None,
    epochs: int = 1,
    max_grad_norm: float | None = 1.0,
    eval_fn: Callable[[nn.Module], dict] | None = None,
    eval_every: int | None = None,
    early_stopping: EarlyStopping | None = None,
    progress: bool = True,
    desc: str = "training",
    device: torch.device | str | None = None,
    history: History | None = None,
) -> History:
    """Train ``model`` for ``steps`` optimizer steps (or ``epochs`` passes over ``batches``).

    ``step_fn(model, batch)`` returns the loss tensor, or a dict with ``"loss"`` and other
    numbers to log. Each step: forward, backward, clip the gradient norm to ``max_grad_norm``,
    optimizer and scheduler step. Logged every step: the metrics, ``lr``, ``grad_norm``.
    Every ``eval_every`` steps (and at the end), ``eval_fn(model)`` returns metrics logged
    with an ``eval_`` prefix; with ``early_stopping`` (its ``monitor`` names the metric)
    training stops when it says so and the best weights are restored.
    """
    from tqdm.auto import tqdm

    if steps is None:
        if not hasattr(batches, "__len__"):
            raise ValueError("give steps= when batches has no length (an endless generator)")
        steps = epochs * len(batches)
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    if early_stopping is not None and (eval_fn is None or early_stopping.monitor is None):
        raise ValueError("early stopping needs eval_fn and EarlyStopping(monitor='metric name')")
    history = history if history is not None else History()
    stream = iter(_endless(batches))
    model.train()
    start = time.perf_counter()
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=True)
    running, shown = 0.0, 0
    try:
        for step in range(1, steps + 1):
            try:
                batch = next(stream)
            except StopIteration:
                break
            result = step_fn(model, to_device(batch, device))
            metrics = result if isinstance(result, dict) else {"loss": result}
            loss = metrics["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm) if max_grad_norm else None
            optimizer.step()
            lr = optimizer.param_groups[0]["lr"]
            if scheduler is not None:
                scheduler.step()
            logged = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}
            logged["lr"] = lr
            if grad_norm is not None:
                logged["grad_norm"] = float(grad_norm)
            history.log(step, **logged)
            history.steps_done = step
            running, shown = running + logged["loss"], shown + 1
            bar.update(1)
            if step % 20 == 0 or step == steps:
                bar.set_postfix(loss=f"{running / shown:.3f}", refresh=False)
                running, shown = 0.0, 0
            if eval_fn is not None and ((eval_every and step % eval_every == 0) or step == steps):
                results = eval_fn(model)
                model.train()
                history.log(step, **{f"eval_{k}": v for k, v in results.items()})
                bar.set_postfix({k: f"{v:.3f}" for k, v in list(results.items())[:3]}, refresh=False)
                if early_stopping is not None:
                    early_stopping.update(results[early_stopping.monitor], model, step)
                    if early_stopping.should_stop:
                        break
    finally:
        bar.close()
        history.seconds += time.perf_counter() - start
    if early_stopping is not None and early_stopping.best_state is not None:
        early_stopping.restore(model)
    return history


# ---------------------------------------------------------------------------------------------
# Checkpoints (safetensors)
# ---------------------------------------------------------------------------------------------


def save_checkpoint(model: nn.Module, path: str | Path, metadata: dict | None = None) -> Path:
    """Save the weights to a ``.safetensors`` file, with JSON-able ``metadata`` (step, metrics...).

    Tied weights (BERT's decoder shares the word embeddings) are stored once.
    """
    from safetensors.torch import save_model

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint files end in .safetensors (weights only, never pickle), got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path), metadata={"course_metadata": json.dumps(metadata or {})})
    return path


def read_checkpoint_metadata(path: str | Path) -> dict:
    """The ``metadata`` a checkpoint was saved with (no weights are loaded)."""
    from safetensors import safe_open

    path = _existing_checkpoint(path)
    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {}).get("course_metadata", "{}"))


def load_checkpoint(model: nn.Module, path: str | Path, strict: bool = True) -> dict:
    """Load weights saved by :func:`save_checkpoint` into ``model``; returns the metadata."""
    from safetensors.torch import load_model

    from . import checkpoints

    path = _existing_checkpoint(path)
    saved = checkpoints.safetensors_header(path)  # a damaged file: one line naming it, not SafetensorError
    own = model.state_dict()
    wrong = [
        f"{k}: file {tuple(saved[k]['shape'])}, model {tuple(own[k].shape)}"
        for k in own
        if k in saved and tuple(saved[k]["shape"]) != tuple(own[k].shape)
    ]
    if wrong:  # torch's own message runs over many lines
        raise ValueError(
            f"checkpoint {path} was saved from a model of another size ({'; '.join(wrong[:4])}): "
            "build the model with the config it was trained with"
        )
    missing, unexpected = load_model(model, str(path), strict=False)
    if strict and (missing or unexpected):
        raise ValueError(
            f"checkpoint {path.name} does not fit this model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}; build the model with the same config "
            "or pass strict=False"
        )
    return read_checkpoint_metadata(path)


def _existing_checkpoint(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: save one with save_checkpoint(model, path)")
    return path
