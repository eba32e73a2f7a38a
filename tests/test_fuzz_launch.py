"""Fuzzing chapter 08's launch path: the torchrun launcher's settings, the scripts' command lines
and the error line read back from a log. Every bad value is refused before any process starts,
with one line; nothing here starts torchrun (the Popen is a stand-in that records the command)."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from course_utils.scale import launch
from course_utils.scale.scripts import ddp_check, pretrain

FUZZ = settings(
    derandomize=True, max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.just([2]),
)


class FakePopen:
    """Stands in for torchrun: records the command and exits 0 at once."""

    commands: list = []

    def __init__(self, command, **kwargs):
        FakePopen.commands.append(command)
        self.pid = -1

    def wait(self, timeout=None):
        return 0


@FUZZ
@given(nproc=anything, timeout=anything, threads=anything)
def test_launcher_settings_are_checked_before_anything_starts(nproc, timeout, threads, tmp_path, monkeypatch):
    monkeypatch.setattr(launch.subprocess, "Popen", FakePopen)
    FakePopen.commands = []
    valid = (
        type(nproc) is int
        and nproc >= 1
        and type(timeout) in (int, float)
        and 0 < timeout < math.inf
        and type(threads) is int
        and threads >= 1
    )
    if valid:
        launch.torchrun(
            "course_utils.scale.scripts.ddp_check",
            ["--out", str(tmp_path)],
            nproc=nproc,
            timeout=timeout,
            threads_per_process=threads,
            log_file=tmp_path / "log",
        )
        (command,) = FakePopen.commands
        assert f"--nproc-per-node={nproc}" in command and "--master-addr=127.0.0.1" in command
    else:
        with pytest.raises(ValueError) as err:
            launch.torchrun(
                "course_utils.scale.scripts.ddp_check",
                [],
                nproc=nproc,
                timeout=timeout,
                threads_per_process=threads,
                log_file=tmp_path / "log",
            )
        assert "\n" not in str(err.value) and FakePopen.commands == []


def option_values(names):
    value = st.one_of(
        st.integers(-3, 300).map(str), st.sampled_from(["0", "-1", "nan", "inf", "-inf", "1e-3", "0.5", "abc", ""])
    )
    return st.lists(st.tuples(st.sampled_from(names), value), max_size=4).map(
        lambda pairs: [part for name, v in pairs for part in (name, v)]
    )


def parses_or_exits_with_one_line(parse, argv, capsys):
    try:
        args = parse(argv)
    except SystemExit as exit:
        assert exit.code == 2
        error_lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert len(error_lines) == 1  # argparse: usage, then one error line
        return None
    return args


DDP_OPTIONS = [
    "--steps",
    "--global-batch",
    "--micro-batches",
    "--lr",
    "--seed",
    "--sampler-size",
    "--epochs",
    "--timeout",
]


@FUZZ
@given(argv=option_values(DDP_OPTIONS))
def test_ddp_check_command_line(argv, capsys):
    args = parses_or_exits_with_one_line(ddp_check.parse_args, ["--out", "x", *argv], capsys)
    if args is not None:  # what parsed can run: no rank fails on a number a check could have caught
        assert min(args.steps, args.global_batch, args.micro_batches, args.sampler_size, args.epochs) >= 1
        assert math.isfinite(args.lr) and args.lr > 0 and math.isfinite(args.timeout) and args.timeout > 0


PRETRAIN_OPTIONS = [
    "--steps",
    "--batch-size",
    "--hidden-size",
    "--layers",
    "--heads",
    "--intermediate-size",
    "--vocab-size",
    "--max-len",
    "--lr",
    "--warmup-fraction",
    "--timeout",
    "--max-documents",
    "--timing-skip",
    "--heldout-examples",
]


@FUZZ
@given(argv=option_values(PRETRAIN_OPTIONS))
def test_pretrain_command_line(argv, capsys):
    args = parses_or_exits_with_one_line(pretrain.parse_args, ["--out", "x", *argv], capsys)
    if args is not None:
        assert (
            min(
                args.steps,
                args.batch_size,
                args.hidden_size,
                args.layers,
                args.heads,
                args.intermediate_size,
                args.vocab_size,
                args.max_len,
                args.heldout_examples,
            )
            >= 1
        )
        assert args.hidden_size % args.heads == 0 and 0 <= args.warmup_fraction < 1
        assert math.isfinite(args.lr) and args.lr > 0 and math.isfinite(args.timeout) and args.timeout > 0
        assert args.max_documents is None or args.max_documents >= 1


@FUZZ
@given(log=st.text(max_size=400))
def test_the_error_line_from_any_log_is_one_short_line(log):
    line = launch._last_error_line(log)
    assert "\n" not in line and "\r" not in line and len(line) <= 300


def test_the_error_line_names_the_rank_exception():
    log = (
        "W1201 noise\n[rank1]: Traceback (most recent call last):\n[rank1]:   File x\n"
        "[rank1]: ValueError: global batch 7 does not split over 2 ranks\nChildFailedError: ...\n"
    )
    assert launch._last_error_line(log) == "ValueError: global batch 7 does not split over 2 ranks"
