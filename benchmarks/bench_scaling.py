"""Chapter 08's trade-offs measured in one run: throughput, memory and time as ratios.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_scaling.py            # several minutes
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_scaling.py --quick    # a smoke run

1. chapter 03's pretraining step under torchrun (``course_utils.scale.scripts.pretrain``, 2-layer
   128-wide BERT, batch 32, length 64): samples per second with 1 process x 1 thread,
   2 processes x 1 thread (DDP, gloo) and 1 process x 2 threads;
2. peak memory of attention (``scaling.MemoryTracker``) at growing lengths: chapter 01's
   plain attention, the tiled one, torch's SDPA (its kernel's scratch memory is invisible to
   the tracker), and their times;
3. activation checkpointing on a 4-layer 256-wide BERT: peak memory and step time, with/without;
4. bf16 autocast vs fp32: a training step of the 2-layer 128-wide BERT.

Timed candidates are interleaved (benchmarks/timing.py). Writes benchmarks/results/scaling.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))
import transformers
from timing import compare, machine_info, markdown_table, write_report

from course_utils.layers import attention
from course_utils.text import bert
from course_utils.scale import launch, scaling
from course_utils.scale.scripts import read_rank_results

RESULTS = Path(__file__).resolve().parent / "results" / "scaling.md"


def bench_throughput(steps: int, max_documents: int | None) -> tuple[str, dict]:
    common = [
        "--steps",
        steps,
        "--hidden-size",
        128,
        "--layers",
        2,
        "--intermediate-size",
        512,
        "--vocab-size",
        4000,
        "--batch-size",
        32,
        "--heldout-examples",
        64,
        "--timing-skip",
        5,
    ]
    if max_documents:
        common += ["--max-documents", max_documents]
    work = Path(tempfile.mkdtemp(prefix="bench_scaling_"))
    runs, rows = {}, []
    try:
        tokenizer = None
        for name, procs, threads in [
            ("1 process x 1 thread", 1, 1),
            ("2 processes x 1 thread (DDP)", 2, 1),
            ("1 process x 2 threads", 1, 2),
        ]:
            out = work / name.replace(" ", "_")
            extra = ["--tokenizer", tokenizer] if tokenizer else []
            launch.torchrun(
                "course_utils.scale.scripts.pretrain",
                ["--out", out, *common, *extra],
                nproc=procs,
                log_file=out / "log.txt",
                timeout=3600,
                threads_per_process=threads,
            )
            tokenizer = tokenizer or out / "tokenizer"
            runs[name] = read_rank_results(out)[0]["samples_per_second"]
            print(f"{name}: {runs[name]:.1f} samples/s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = runs["1 process x 1 thread"]
    rows = [[name, f"{v:.1f}", f"**{v / base:.2f}**"] for name, v in runs.items()]
    return markdown_table(["run", "samples/s", "vs 1 process x 1 thread"], rows), runs


def bench_attention(lengths, repeats) -> tuple[str, list]:
    heads, dim, block = 4, 32, 128
    rows, data = [], []
    g = torch.Generator().manual_seed(0)
    for length in lengths:
        q = torch.randn(1, heads, length, dim, generator=g)
        candidates = {
            "plain": lambda q=q: attention.scaled_dot_product_attention(q, q, q)[0],
            "tiled": lambda q=q: scaling.tiled_attention(q, q, q, block_size=block),
            "sdpa": lambda q=q: torch.nn.functional.scaled_dot_product_attention(q, q, q),
        }
        with torch.no_grad():
            peaks = {k: scaling.peak_memory(fn) for k, fn in candidates.items()}
            timed = compare(candidates, repeats=repeats)
        rows.append(
            [
                length,
                *(f"{peaks[k] / 2**20:.2f}" for k in candidates),
                f"**{peaks['plain'] / peaks['tiled']:.1f}**",
                *(f"{timed.median_ms(k):.2f}" for k in candidates),
                f"**{timed.ratio('tiled', 'plain'):.2f}**",
            ]
        )
        data.append((length, peaks))
        print(" | ".join(map(str, rows[-1])), flush=True)
    header = [
        "L",
        "plain MiB",
        "tiled MiB",
        "sdpa MiB (output only)",
        "plain / tiled memory",
        "plain ms",
        "tiled ms",
        "sdpa ms",
        "tiled / plain time",
    ]
    return markdown_table(header, rows), data


def _bert(hidden, layers, dropout=0.1):
    config = transformers.BertConfig(
        vocab_size=4000,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(2, hidden // 64),
        intermediate_size=4 * hidden,
        max_position_embeddings=512,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    torch.manual_seed(0)
    return bert.BertForPreTraining(config).train()


def _batch(batch, length):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 4000, (batch, length), generator=g)
    return {
        "input_ids": ids,
        "labels": torch.where(torch.rand(ids.shape, generator=g) < 0.15, ids, -100),
        "next_sentence_label": torch.randint(0, 2, (batch,), generator=g),
        "masked_only": True,
    }


def _step(model, inputs, dtype=None):
    def call():
        model.zero_grad(set_to_none=True)
        if dtype is None:
            loss = model(**inputs).loss
        else:
            with torch.autocast("cpu", dtype=dtype):
                loss = model(**inputs).loss
        loss.backward()

    return call


def bench_checkpointing(shape, repeats) -> tuple[str, dict]:
    model, inputs = _bert(256, 4), _batch(*shape)
    layers = model.bert.encoder.layers
    peaks, saved = {}, {}
    for name, enabled in (("plain", False), ("checkpointed", True)):
        scaling.checkpoint_layers(layers, enabled=enabled)
        peaks[name] = scaling.peak_memory(_step(model, inputs))
        with scaling.SavedTensors(model) as s:
            loss = model(**inputs).loss
        saved[name] = (s.count, s.bytes)
        del loss
    scaling.checkpoint_layers(layers, enabled=False)
    plain_step = _step(model, inputs)
    ckpt_model = _bert(256, 4)
    scaling.checkpoint_layers(ckpt_model.bert.encoder.layers)
    timed = compare({"plain": plain_step, "checkpointed": _step(ckpt_model, inputs)}, repeats=repeats)
    rows = [
        [
            name,
            saved[name][0],
            f"{saved[name][1] / 2**20:.1f}",
            f"{peaks[name] / 2**20:.1f}",
            f"{timed.median_ms(name):.0f}",
        ]
        for name in ("plain", "checkpointed")
    ]
    summary = {
        "memory_saved": 1 - peaks["checkpointed"] / peaks["plain"],
        "time_ratio": timed.ratio("checkpointed", "plain"),
    }
    table = markdown_table(["", "saved tensors", "saved MiB", "peak MiB (fwd+bwd)", "ms per step"], rows)
    return table + (
        f"\n\nCheckpointing: peak memory **{100 * summary['memory_saved']:.0f}% lower**, step time "
        f"**{summary['time_ratio']:.2f}x**."
    ), summary


def bench_bf16(shape, repeats) -> tuple[str, float]:
    model, inputs = _bert(128, 2, dropout=0.0), _batch(*shape)
    timed = compare(
        {"fp32": _step(model, inputs), "bf16 autocast": _step(model, inputs, torch.bfloat16)}, repeats=repeats
    )
    ratio = timed.ratio("bf16 autocast", "fp32")
    q1, q3 = timed.spread("bf16 autocast", "fp32")
    rows = [
        ["fp32", f"{timed.median_ms('fp32'):.0f}", "1.00"],
        ["bf16 autocast", f"{timed.median_ms('bf16 autocast'):.0f}", f"**{ratio:.2f}** ({q1:.2f}–{q3:.2f})"],
    ]
    return markdown_table(["training step", "ms", "vs fp32 (IQR)"], rows), ratio


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (a smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    repeats = 3 if args.quick else 7
    info = machine_info()
    print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    throughput_table, _ = bench_throughput(steps=20 if args.quick else 150, max_documents=200 if args.quick else None)
    attention_table, _ = bench_attention([256, 512, 1024] if args.quick else [512, 1024, 2048, 4096], repeats)
    checkpoint_table, _ = bench_checkpointing((4, 64) if args.quick else (16, 128), repeats)
    bf16_table, _ = bench_bf16((8, 64) if args.quick else (32, 64), repeats)
    report = "\n".join(
        [
            "# Scaling benchmark (chapter 08)",
            "",
            *(f"- {k}: {v}" for k, v in info.items()),
            f"- {repeats} interleaved repeats per timed case; times are medians, ratios medians of per-repeat ratios",
            "- the machine may be shared: absolute numbers drift with its load; the ratios are from one run",
            "",
            "## Pretraining throughput under torchrun (2-layer 128-wide BERT, global batch 32, length 64)",
            (
                "Samples per second while training (setup and the first 5 steps left out). The 2-process run is DDP with "
                "gloo on this machine's cores; the 1-process x 2-threads run uses the same cores inside one process."
            ),
            "",
            throughput_table,
            "",
            "## Attention: peak memory (MemoryTracker) and time, 1 sequence x 4 heads, d = 32, tiles of 128",
            "",
            attention_table,
            "",
            "## Activation checkpointing: 4-layer 256-wide BERT, dropout 0.1, a training step",
            "",
            checkpoint_table,
            "",
            "## bf16 autocast vs fp32: a training step of the 2-layer 128-wide BERT",
            "",
            bf16_table,
            "",
        ]
    )
    write_report(report, args.out)


if __name__ == "__main__":
    main()
