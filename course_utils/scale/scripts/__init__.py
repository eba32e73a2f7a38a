"""Entry points that ``torchrun`` starts, one process per rank (chapter 08).

    python -m torch.distributed.run --nnodes=1 --nproc-per-node=2 \\
        --master-addr=127.0.0.1 --master-port=29500 -m course_utils.scale.scripts.ddp_check --out runs/ddp

* :mod:`course_utils.scale.scripts.ddp_check`: DDP == one process, DistributedSampler and set_epoch,
  no_sync counted with a communication hook, the global mean of a logged loss, FSDP.
* :mod:`course_utils.scale.scripts.pretrain`: chapter 03's BERT pretraining on N processes.

Each rank writes its results to files (JSON; parameters as safetensors) that the chapter reads:
a notebook launches these with :func:`course_utils.scale.launch.torchrun`, never in its own kernel.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
from pathlib import Path

import torch
import torch.distributed as dist


def check_numbers(
    parser: argparse.ArgumentParser, args: argparse.Namespace, *, positive=(), unit=(), finite_positive=()
) -> argparse.Namespace:
    """Refuse impossible numbers before any rank starts (argparse's one-line error, exit code 2).

    ``positive``: whole numbers >= 1; ``unit``: numbers in [0, 1); ``finite_positive``: finite
    numbers > 0. A wrong value would otherwise fail deep inside every rank, or hang one.
    """
    for name in positive:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in unit:
        value = getattr(args, name)
        if not 0 <= value < 1:
            parser.error(f"--{name.replace('_', '-')} must be in [0, 1), got {value}")
    for name in finite_positive:
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            parser.error(f"--{name.replace('_', '-')} must be a finite number above 0, got {value}")
    return args


def init_distributed(timeout_s: float = 60.0) -> tuple[int, int, torch.device]:
    """Join the process group torchrun set up; returns (rank, world size, device).

    gloo on CPUs, nccl with one GPU per rank (``LOCAL_RANK``). A short ``timeout`` so that a
    rank whose partner died fails with an error instead of waiting half an hour (the default).
    On the CPU each rank uses one thread: two ranks on two cores, no oversubscription.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise RuntimeError(
            "RANK and WORLD_SIZE are not set: start this script with torchrun "
            "(python -m torch.distributed.run --nproc-per-node=2 -m <module>) or "
            "course_utils.scale.launch.torchrun(...)"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        backend = "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size(), device


def write_json(path: str | Path, data: dict) -> Path:
    """Write ``data`` as JSON (via a temporary file, so a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)
    return path


def read_rank_results(directory: str | Path, name: str = "rank") -> list[dict]:
    """Every ``{name}{r}.json`` in ``directory``, ordered by rank (what the chapter reads)."""
    directory = Path(directory)
    files = sorted(directory.glob(f"{name}[0-9]*.json"), key=lambda p: int(p.stem[len(name) :]))
    if not files:
        raise FileNotFoundError(f"no {name}N.json in {directory}: did the torchrun launch finish? See its log.")
    return [json.loads(p.read_text(encoding="utf-8")) for p in files]
