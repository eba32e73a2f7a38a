"""LoRA (low-rank adaptation) from scratch, for the course's own BERT.

Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models": keep a pretrained
weight ``W`` (out x in) frozen and learn only a low-rank update, ``W + (alpha / r) * B @ A``
with ``A`` (r x in) and ``B`` (out x r). ``B`` starts at zero, so training starts from the
pretrained model exactly; after training the update is added into ``W`` once ("merged") and
inference costs nothing extra.

* :class:`LoRALinear` wraps an ``nn.Linear``: ``base(x) + scale * B(A(dropout(x)))``.
* :func:`add_lora` puts one on each attention projection named in ``target`` (the course's
  names ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``, or transformers' / peft's
  ``query``, ``key``, ``value``) and freezes every other weight except ``modules_to_save``
  (e.g. the new ``classifier`` head), as the ``peft`` library's ``LoraConfig`` does.
* :func:`merge_lora` folds ``scale * B @ A`` into ``W`` and puts the plain ``nn.Linear`` back.
* :func:`lora_state_dict` / :func:`save_lora` / :func:`load_lora`: only the adapter (and the
  saved modules), a file of a few kilobytes instead of the whole model, as safetensors.
* :func:`trainable_parameters`: how many weights the optimizer actually updates.

The tests prove, with numbers from ``peft`` on the same transformers model and weights, that
logits agree before and after AdamW steps, that merging agrees with peft's
``merge_and_unload()`` and that the trainable counts agree with ``get_nb_trainable_parameters()``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple, Sequence

import torch
from torch import nn
import torch.nn.functional as F

__all__ = [
    "LoRALinear",
    "LoRAError",
    "ParameterCount",
    "add_lora",
    "merge_lora",
    "has_lora",
    "lora_state_dict",
    "save_lora",
    "load_lora",
    "trainable_parameters",
]

# transformers' (and so peft's) names of BERT's attention projections -> the course's names
HF_ALIASES = {"query": "q_proj", "key": "k_proj", "value": "v_proj"}


class LoRAError(ValueError):
    """LoRA asked for in a way that cannot work (bad rank, no such module, applied twice, ...), with the fix."""


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) * B(A(dropout(x)))`` with ``base`` (an ``nn.Linear``) frozen.

    ``lora_A`` (r, in_features) starts Kaiming-uniform as in peft (and in ``nn.Linear``);
    ``lora_B`` (out_features, r) starts at zero, so the wrapped layer first computes exactly
    what ``base`` does. Dropout acts on the input of the LoRA path only.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        _check_rank(r, alpha, dropout)
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}.")
        self.base = base
        self.base.weight.requires_grad_(False)
        if self.base.bias is not None:
            self.base.bias.requires_grad_(False)
        self.r, self.alpha, self.scale = r, alpha, alpha / r
        weight = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=weight.device, dtype=weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=weight.device, dtype=weight.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # peft's choice: nn.Linear's own init
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    # what code that reads a projection's shape or weight expects to find
    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def delta_weight(self) -> torch.Tensor:
        """The update LoRA adds to W: scale * B @ A, shape (out_features, in_features)."""
        return (self.lora_B @ self.lora_A) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # two thin matrix products (in -> r -> out) instead of forming the (out, in) update
        return self.base(x) + F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B) * self.scale

    def merged(self) -> nn.Linear:
        """The base ``nn.Linear`` with the update added into its weight (this module's base, changed in place)."""
        with torch.no_grad():
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
        return self.base

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, scale={self.scale:g}"


def _check_rank(r, alpha, dropout) -> None:
    if isinstance(r, bool) or not isinstance(r, int):
        raise LoRAError(f"r (the rank) must be a positive int, got {r!r} ({type(r).__name__}); e.g. r=8.")
    if r <= 0:
        raise LoRAError(f"r (the rank) must be at least 1, got {r}: the update B @ A has rank r; e.g. r=8.")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise LoRAError(f"alpha must be a finite number (the update is scaled by alpha / r), got {alpha!r}.")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise LoRAError(f"dropout must be a probability in [0, 1), got {dropout!r}; 0 switches it off.")


def has_lora(model: nn.Module) -> bool:
    """True when some module of ``model`` is a :class:`LoRALinear`."""
    return any(isinstance(m, LoRALinear) for m in model.modules())


def _matches(name: str, target: str) -> bool:
    """peft's rule for a name in target_modules: the whole module name, or its last dotted part(s)."""
    return name == target or name.endswith("." + target)


def _as_names(value, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise LoRAError(f"{what} must be a module name or a list of names, e.g. ('query', 'value'); got {value!r}.")
    return tuple(value)


def _find(model: nn.Module, names: tuple[str, ...], kind, what: str) -> dict[str, nn.Module]:
    """Modules of type ``kind`` whose names match ``names``; a name that matches nothing is an error."""
    found = {}
    for target in names:
        own = HF_ALIASES.get(target, target)
        hits = {n: m for n, m in model.named_modules() if n and _matches(n, own)}
        wrong = [n for n, m in hits.items() if not isinstance(m, kind)]
        if wrong:
            raise LoRAError(
                f"{what} {target!r} names {wrong[0]} ({type(hits[wrong[0]]).__name__}), "
                f"not an nn.{kind.__name__}; name the linear layers themselves."
            )
        if not hits:
            linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
            tops = sorted(n for n, _ in model.named_children())
            raise LoRAError(
                f"{what} {target!r} matches no module of {type(model).__name__}. Its linear layers "
                f"are named {linear} (aliases {sorted(HF_ALIASES)}); its top-level modules are {tops}."
            )
        found.update(hits)
    return found


def add_lora(
    model: nn.Module,
    r: int = 8,
    alpha: float = 16,
    target: Sequence[str] | str = ("query", "value"),
    dropout: float = 0.0,
    modules_to_save: Sequence[str] | str = (),
) -> nn.Module:
    """Freeze ``model`` and put a :class:`LoRALinear` on each linear layer named in ``target``, in place.

    ``target``: the course's names (``q_proj``, ``v_proj``, ...) or transformers' / peft's
    (``query``, ``value``, ...); a name matches a module whose full name is it or ends with
    ``.name``, as in peft. ``modules_to_save``: modules left fully trainable (e.g.
    ``"classifier"``, the new head, which LoRA cannot learn from a random start). Returns the model.
    """
    _check_rank(r, alpha, dropout)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"add_lora expects a torch nn.Module (e.g. the course's BertForTokenClassification), "
            f"got {type(model).__name__}."
        )
    if has_lora(model):
        raise LoRAError(
            f"{type(model).__name__} already has LoRA layers: add_lora was applied twice. "
            "Build the model again, or merge_lora(model) first to fold the old adapter in."
        )
    targets = _find(model, _as_names(target, "target"), nn.Linear, "target")
    saved = _find(model, _as_names(modules_to_save, "modules_to_save"), nn.Module, "modules_to_save")
    clash = [n for n in targets if any(n == s or n.startswith(s + ".") for s in saved)]
    if clash:
        raise LoRAError(f"{clash[0]} is both a LoRA target and inside modules_to_save: choose one.")
    frozen = [n for n, p in model.named_parameters() if p.requires_grad]
    for p in model.parameters():
        p.requires_grad_(False)
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout))
    for module in saved.values():
        for p in module.parameters():
            p.requires_grad_(True)
    # remembered so that merge_lora gives back the model as it was, trainable again
    model._lora_config = {
        "r": r,
        "alpha": alpha,
        "dropout": dropout,
        "target": sorted(targets),
        "modules_to_save": sorted(saved),
        "was_trainable": frozen,
    }
    return model


def _require_lora(model: nn.Module, what: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{what} expects a torch nn.Module, got {type(model).__name__}.")
    if not has_lora(model):
        raise LoRAError(
            f"{type(model).__name__} has no LoRA layers, so there is nothing to {what.split('_')[0]}: "
            "call add_lora(model, r=..., target=...) first."
        )


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold each adapter into its weight (W += alpha / r * B @ A) and put the plain nn.Linear back, in place.

    The result is the original architecture (same parameter names, saveable with
    ``save_pretrained``, convertible with ``to_hf``) and computes the same outputs as the
    model with LoRA; the parameters add_lora froze are trainable again. Returns the model.
    """
    _require_lora(model, "merge_lora")
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, module.merged())
    config = model.__dict__.pop("_lora_config", None)
    if config is not None:
        was_trainable = set(config["was_trainable"])
        for name, p in model.named_parameters():
            p.requires_grad_(name in was_trainable)
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only what LoRA training changed: every ``lora_A`` / ``lora_B`` and the ``modules_to_save`` weights."""
    _require_lora(model, "lora_state_dict")
    saved = tuple(getattr(model, "_lora_config", {}).get("modules_to_save", ()))
    return {
        n: p.detach()
        for n, p in model.named_parameters()
        if n.endswith((".lora_A", ".lora_B")) or any(n.startswith(s + ".") for s in saved)
    }


def save_lora(model: nn.Module, path: str | Path) -> Path:
    """Write :func:`lora_state_dict` as safetensors, with r, alpha, targets in the file's metadata."""
    from safetensors.torch import save_file

    tensors = {k: v.cpu().contiguous() for k, v in lora_state_dict(model).items()}
    config = {k: v for k, v in getattr(model, "_lora_config", {}).items() if k != "was_trainable"}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt", "lora": json.dumps(config)})
    return path


def load_lora(model: nn.Module, path: str | Path) -> nn.Module:
    """Load an adapter written by :func:`save_lora` into ``model``; a model without LoRA gets it added first.

    The base weights must be the ones the adapter was trained on (this file does not hold them).
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no adapter file at {path}: write one with save_lora(model, path).")
    with safe_open(str(path), framework="pt") as f:
        meta = (f.metadata() or {}).get("lora")
    if meta is None:
        raise LoRAError(f"{path} is not an adapter written by save_lora (its metadata has no 'lora' entry).")
    config = json.loads(meta)
    if not has_lora(model):
        add_lora(model, config["r"], config["alpha"], config["target"], config["dropout"], config["modules_to_save"])
    tensors = load_file(str(path))
    own = dict(model.named_parameters())
    wrong = [k for k in tensors if k not in own or own[k].shape != tensors[k].shape]
    missing = [k for k in lora_state_dict(model) if k not in tensors]
    if wrong or missing:
        raise LoRAError(
            f"{path} does not fit this model (another r, target or architecture?): "
            f"unknown or differently shaped {wrong[:5]}, missing {missing[:5]}."
        )
    with torch.no_grad():
        for k, v in tensors.items():
            own[k].copy_(v)
    return model


class ParameterCount(NamedTuple):
    """Trainable and total parameter counts, as peft's ``get_nb_trainable_parameters()`` returns them."""

    trainable: int
    total: int

    @property
    def fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"trainable params: {self.trainable:,} || all params: {self.total:,} || trainable%: {100 * self.fraction:.4f}"


def trainable_parameters(model: nn.Module) -> ParameterCount:
    """(trainable, total) parameter counts; a tensor shared by two modules is counted once."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"trainable_parameters expects a torch nn.Module, got {type(model).__name__}.")
    params = list(model.parameters())  # parameters() yields each shared tensor once
    return ParameterCount(sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))
