"""Small timing helper shared by the benchmarks: interleaved repeats, medians, paired ratios.

The machines this course runs on are often shared, so absolute times drift during a run.
Candidates are therefore timed in turns (each repeat times one block of every candidate,
in a rotating order) and compared by the median of the per-repeat ratios: a slow patch
of the machine slows both sides of a pair alike.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass
class Comparison:
    """Seconds per call of each candidate, one number per repeat (the repeats are paired)."""

    seconds: dict[str, list[float]] = field(default_factory=dict)

    def median_ms(self, name: str) -> float:
        return 1e3 * statistics.median(self.seconds[name])

    def ratio(self, name: str, baseline: str) -> float:
        """Median over repeats of time(name) / time(baseline)."""
        return statistics.median(a / b for a, b in zip(self.seconds[name], self.seconds[baseline]))

    def spread(self, name: str, baseline: str) -> tuple[float, float]:
        """The lower and upper quartile of the per-repeat ratios (how much to trust the median)."""
        ratios = sorted(a / b for a, b in zip(self.seconds[name], self.seconds[baseline]))
        if len(ratios) < 4:
            return ratios[0], ratios[-1]
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        return q1, q3


def _calls_per_block(fn: Callable[[], object], min_block_s: float, sync: Callable[[], None]) -> int:
    """How many calls make one block last at least ``min_block_s`` (so timer overhead is negligible)."""
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        if time.perf_counter() - start >= min_block_s or calls >= 1 << 16:
            return calls
        calls *= 2


def compare(
    candidates: dict[str, Callable[[], object]],
    repeats: int = 11,
    min_block_s: float = 0.02,
    sync: Callable[[], None] | None = None,
) -> Comparison:
    """Time every candidate ``repeats`` times, interleaved; returns seconds per call.

    ``sync`` (e.g. ``torch.cuda.synchronize``) runs before each clock read on asynchronous devices.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    sync = sync or (lambda: None)
    names = list(candidates)
    calls = {name: _calls_per_block(candidates[name], min_block_s, sync) for name in names}  # also a warm-up
    result = Comparison({name: [] for name in names})
    for rep in range(repeats):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:  # rotate who goes first
            fn, n = candidates[name], calls[name]
            sync()
            start = time.perf_counter()
            for _ in range(n):
                fn()
            sync()
            result.seconds[name].append((time.perf_counter() - start) / n)
    return result


def machine_info() -> dict[str, str]:
    """What a reader needs to judge the numbers: CPU, threads, versions, load."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "cpu": f"{cpu} ({os.cpu_count()} logical cores)",
        "torch threads": f"{torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})",
        "python / torch": f"{platform.python_version()} / {torch.__version__}",
        "platform": platform.platform(),
    }
    if hasattr(os, "getloadavg"):
        info["load average at start (1/5/15 min)"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(report: str, out) -> None:
    """Print the markdown report and write it to ``out`` (a path under results/)."""
    from pathlib import Path

    out = Path(out)
    print("\n" + report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report, encoding="utf-8")
    print(f"written to {out}")
