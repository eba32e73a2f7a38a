"""Real torchrun launches, 2 processes with gloo on 127.0.0.1: DDP and FSDP end where one process ends,
the sampler splits and reshuffles, no_sync all-reduces once per step, the logged loss is the global mean,
and chapter 03's pretraining on 2 processes equals 1 process. Every launch has a timeout, so a hung rank
fails the test instead of stalling CI. References: plain one-process training in this process."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

from course_utils.scale import launch, scaling
from course_utils.scale.scripts import ddp_check, read_rank_results

LAUNCH_TIMEOUT = 240  # seconds; a normal run takes a fraction of it


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_check")
    launch.torchrun(
        "course_utils.scale.scripts.ddp_check",
        ["--out", out, "--steps", "3"],
        nproc=2,
        log_file=out / "torchrun.log",
        timeout=LAUNCH_TIMEOUT,
    )
    args = ddp_check.parse_args(["--out", str(out), "--steps", "3"])
    model = ddp_check.fresh_model(args)
    losses = scaling.train_token_model(model, ddp_check.experiment_data(args), lr=args.lr)
    return out, read_rank_results(out), args, {n: p.detach() for n, p in model.named_parameters()}, losses


def test_two_ranks_with_gloo(ddp_run):
    _, ranks, _, _, _ = ddp_run
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 and r["backend"] == "gloo" for r in ranks)


@pytest.mark.parametrize("name", ["ddp", "no_sync", "sync_every_micro", "fsdp"])
def test_distributed_training_equals_one_process(ddp_run, name):
    out, ranks, _, reference, _ = ddp_run
    if name == "fsdp" and ranks[0]["fsdp"] != "ran":
        pytest.fail(f"fully_shard did not run on gloo: {ranks[0]['fsdp']}")
    assert scaling.max_abs_diff(reference, load_file(out / f"{name}.safetensors")) < 1e-6


def test_mean_of_means_under_ddp_is_wrong(ddp_run):
    out, _, _, reference, _ = ddp_run
    assert scaling.max_abs_diff(reference, load_file(out / "ddp_mean_of_means.safetensors")) > 1e-4


def test_no_sync_all_reduces_once_per_step(ddp_run):
    _, ranks, args, _, _ = ddp_run
    for r in ranks:
        assert r["no_sync_allreduce_calls"] == [1] * args.steps
        assert r["sync_every_micro_allreduce_calls"] == [args.micro_batches] * args.steps


def test_logged_loss_is_the_global_mean(ddp_run):
    _, ranks, args, _, losses = ddp_run
    for step, want in enumerate(losses):
        for r in ranks:
            assert r["ddp_log"][step]["global_mean"] == pytest.approx(want, abs=1e-6)
    assert any(ranks[0]["ddp_log"][s]["tokens"] != ranks[1]["ddp_log"][s]["tokens"] for s in range(args.steps))


def test_distributed_sampler_splits_and_set_epoch_reshuffles(ddp_run):
    _, ranks, args, _, _ = ddp_run
    for epoch in range(args.epochs):
        parts = [r["sampler_set_epoch"][epoch] for r in ranks]
        assert sorted(parts[0] + parts[1]) == list(range(args.sampler_size))
    assert len({tuple(o) for o in ranks[0]["sampler_set_epoch"]}) == args.epochs
    assert len({tuple(o) for o in ranks[0]["sampler_no_set_epoch"]}) == 1
    padded = ranks[0]["eval_sampler_padded"] + ranks[1]["eval_sampler_padded"]
    assert len(padded) == args.sampler_size + 2 and len(set(padded)) == args.sampler_size + 1


def test_pretraining_on_two_processes_equals_one(tmp_path, monkeypatch):
    """The torchrun pretraining script on 2 ranks, then the same script in this process as 1 rank."""
    from course_utils.scale.scripts import pretrain

    common = [
        "--steps",
        "4",
        "--hidden-size",
        "32",
        "--layers",
        "1",
        "--heads",
        "2",
        "--intermediate-size",
        "64",
        "--vocab-size",
        "600",
        "--max-documents",
        "60",
        "--heldout-examples",
        "32",
        "--timing-skip",
        "1",
    ]
    two = tmp_path / "two"
    launch.torchrun(
        "course_utils.scale.scripts.pretrain",
        ["--out", two, *common],
        nproc=2,
        log_file=two / "log.txt",
        timeout=LAUNCH_TIMEOUT,
    )
    one = tmp_path / "one"
    for key, value in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(launch.free_port()),
    }.items():
        monkeypatch.setenv(key, value)
    threads = torch.get_num_threads()
    try:
        pretrain.main(["--out", str(one), *common, "--tokenizer", str(two / "tokenizer")])
    finally:
        torch.set_num_threads(threads)
    assert os.environ["WORLD_SIZE"] == "1"
    results_two, results_one = read_rank_results(two), read_rank_results(one)
    assert len(results_two) == 2 and results_two[0]["global_loss"] == results_two[1]["global_loss"]
    assert max(abs(a - b) for a, b in zip(results_two[0]["global_loss"], results_one[0]["global_loss"])) < 1e-5
    weights_two = load_file(two / "model" / "model.safetensors")
    weights_one = load_file(one / "model" / "model.safetensors")
    assert scaling.max_abs_diff(weights_two, weights_one) < 1e-5
    from course_utils.text import pretraining_run

    pretraining_run.check_bert_dir(two / "model")  # the transformers layout, loadable by chapter 04
