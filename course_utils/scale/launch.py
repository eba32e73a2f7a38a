"""Run a package script under ``torchrun`` from a notebook or a test, as a subprocess.

torchrun starts one process per rank and cannot run inside a Jupyter kernel, so the
chapter launches ``python -m torch.distributed.run ... -m course_utils.scale.scripts.X`` with
:func:`torchrun`, waits (with a timeout: a hung rank must not stall a notebook or CI), and
reads what the ranks wrote to files. A failure becomes one line naming the log file.
"""

from __future__ import annotations

import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path


class LaunchError(RuntimeError):
    """torchrun failed or timed out; the message names the log with the details."""


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1 (for the rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(module: str, args: Sequence[str] = (), nproc: int = 2) -> list[str]:
    """The command line: one node, ``nproc`` ranks, rendezvous on 127.0.0.1 at a free port."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        f"--nproc-per-node={nproc}",
        "--master-addr=127.0.0.1",
        f"--master-port={free_port()}",
        "-m",
        module,
        *map(str, args),
    ]


_RANK_ERROR = re.compile(r"^\[rank\d+\]:\s*((?:[\w.]+\.)?\w*(?:Error|Exception|Interrupt)\b.*)$")
_ARGPARSE = re.compile(r"^(\S+: error: .*)$")  # a script's bad command line
_ERROR = re.compile(r"^((?:[\w.]+\.)?\w*(?:Error|Exception)\b:.*)$")


def _last_error_line(log: str) -> str:
    """The exception a rank raised (its traceback's last line), else the last error-like line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for pattern in (_RANK_ERROR, _ARGPARSE, _ERROR):
        for line in lines:
            found = pattern.match(line)
            if found and "ChildFailedError" not in found.group(1):
                return found.group(1)[:300]
    return lines[-1][:300] if lines else "(the log is empty)"


def torchrun(
    module: str,
    args: Sequence[str] = (),
    nproc: int = 2,
    log_file: str | Path = "torchrun.log",
    timeout: float = 300,
    threads_per_process: int = 1,
    env: dict | None = None,
) -> float:
    """Run ``python -m module args`` on ``nproc`` local ranks; returns the seconds it took.

    stdout and stderr of every rank go to ``log_file``. Each rank gets ``OMP_NUM_THREADS =
    threads_per_process`` (on a 2-core machine, 2 ranks x 1 thread). Raises
    :class:`LaunchError` with one line (the error and the log's path) when a rank fails or
    the run takes longer than ``timeout`` seconds (then every process of the run is killed).
    """
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be a whole number >= 1, got {nproc!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise ValueError(f"timeout must be a finite number of seconds above 0, got {timeout!r}")
    if isinstance(threads_per_process, bool) or not isinstance(threads_per_process, int) or threads_per_process < 1:
        raise ValueError(f"threads_per_process must be a whole number >= 1, got {threads_per_process!r}")
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    root = str(Path(__file__).resolve().parents[1])
    run_env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads_per_process),
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p),
        **(env or {}),
    }
    command = torchrun_command(module, args, nproc)
    start = time.perf_counter()
    with open(log_file, "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        # a session of its own, so a timeout can end torchrun and every rank it started together
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=run_env, cwd=root, start_new_session=True
        )
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise LaunchError(
                f"torchrun {module} did not finish within {timeout:.0f} s (a rank hung?) and was "
                f"stopped; see {log_file}"
            ) from None
    seconds = time.perf_counter() - start
    if code != 0:
        message = _last_error_line(log_file.read_text(encoding="utf-8", errors="replace"))
        raise LaunchError(f"torchrun {module} failed (exit {code}): {message} -- full log: {log_file}")
    return seconds


def _kill_group(process: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue
