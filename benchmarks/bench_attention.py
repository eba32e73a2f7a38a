"""Speed of the course's attention against torch's, as ratios measured in one interleaved run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_attention.py            # default sizes
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_attention.py --quick    # a smoke run
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_attention.py --grid     # every size

Compares
* ``course_utils.layers.attention.scaled_dot_product_attention`` (which also returns the weights) with
  ``torch.nn.functional.scaled_dot_product_attention`` forced to its math backend (the same
  algorithm in C++; the target is own/math <= 1.3) and with torch's default backend;
* ``course_utils.layers.attention.MultiHeadAttention`` (weights path and ``need_weights=False``) with
  ``torch.nn.MultiheadAttention`` (``need_weights=True`` per head, and ``False``);
forward (under ``no_grad``, as in inference) and forward + backward. Prints a markdown table
and writes it to benchmarks/results/attention.md.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing
from course_utils.layers.attention import MultiHeadAttention, scaled_dot_product_attention  # noqa: E402
from timing import compare, machine_info, markdown_table, write_report  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "attention.md"
TARGET = 1.3  # own / torch math backend
# (batch, heads, length, d_head)
SDPA_SIZES = [(8, 4, 64, 32), (8, 8, 128, 64), (32, 4, 128, 32), (8, 4, 256, 64), (32, 8, 256, 32)]
SDPA_GRID = list(itertools.product((8, 32), (4, 8), (64, 128, 256), (32, 64)))
SDPA_QUICK = [(8, 4, 64, 32), (8, 8, 128, 64)]
# (batch, length, d_model, heads)
MHA_SIZES = [(8, 128, 256, 4), (32, 128, 512, 8), (8, 256, 512, 8)]
MHA_QUICK = [(8, 64, 128, 4)]


def padding_mask(batch: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """(batch, 1, 1, length), True at real keys; each sequence keeps between half and all of them."""
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=gen)
    return (torch.arange(length)[None, :] < lengths[:, None])[:, None, None, :]


def forward_and_backward(attend, inputs, cotangent):
    def step():
        for t in inputs:
            t.grad = None
        out = attend(*inputs)
        out.backward(cotangent)

    return step


def no_grad(fn):
    def call():
        with torch.no_grad():
            fn()

    return call


def bench_sdpa(sizes, masks, repeats, device):
    rows, worst = [], 0.0
    gen = torch.Generator().manual_seed(0)

    def own(q, k, v, mask):
        return scaled_dot_product_attention(q, k, v, mask)[0]

    def torch_math(q, k, v, mask):
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    def torch_default(q, k, v, mask):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    for (batch, heads, length, d_head), mask_kind in itertools.product(sizes, masks):
        q, k, v = (torch.randn(batch, heads, length, d_head, generator=gen).to(device) for _ in range(3))
        mask = padding_mask(batch, length, gen).to(device) if mask_kind == "padding" else None
        fns = {"own": own, "math": torch_math, "default": torch_default}
        for mode in ("forward", "fwd+bwd"):
            if mode == "forward":
                candidates = {name: no_grad(lambda f=f: f(q, k, v, mask)) for name, f in fns.items()}
            else:
                inputs = [t.clone().requires_grad_() for t in (q, k, v)]
                cotangent = torch.randn_like(q)
                candidates = {
                    name: forward_and_backward(lambda *a, f=f: f(*a, mask), inputs, cotangent)
                    for name, f in fns.items()
                }
            result = compare(candidates, repeats=repeats, sync=_sync(device))
            ratio_math = result.ratio("own", "math")
            worst = max(worst, ratio_math)
            q1, q3 = result.spread("own", "math")
            rows.append(
                [
                    f"{batch}×{heads}×{length}×{d_head}",
                    mask_kind,
                    mode,
                    f"{result.median_ms('own'):.2f}",
                    f"{result.median_ms('math'):.2f}",
                    f"{result.median_ms('default'):.2f}",
                    f"**{ratio_math:.2f}** ({q1:.2f}–{q3:.2f})",
                    f"{result.ratio('own', 'default'):.2f}",
                ]
            )
            print(" | ".join(rows[-1]), flush=True)
    header = [
        "B×H×L×d_head",
        "mask",
        "pass",
        "own ms",
        "torch math ms",
        "torch default ms",
        "own / math (IQR)",
        "own / default",
    ]
    return markdown_table(header, rows), worst


def bench_mha(sizes, repeats, device):
    rows = []
    gen = torch.Generator().manual_seed(1)
    for batch, length, d_model, heads in sizes:
        torch.manual_seed(0)
        theirs = nn.MultiheadAttention(d_model, heads, batch_first=True).to(device)
        ours = MultiHeadAttention.from_torch(theirs)
        x = torch.randn(batch, length, d_model, generator=gen).to(device)
        keys_real = padding_mask(batch, length, gen)[:, 0, 0].to(device)
        kpm = ~keys_real  # torch: True = ignore this key

        calls = {
            "own weights": lambda x: ours(x, x, x, key_padding_mask=keys_real)[0],
            "own fused": lambda x: ours(x, x, x, key_padding_mask=keys_real, need_weights=False)[0],
            "torch weights": lambda x: theirs(
                x, x, x, key_padding_mask=kpm, need_weights=True, average_attn_weights=False
            )[0],
            "torch fused": lambda x: theirs(x, x, x, key_padding_mask=kpm, need_weights=False)[0],
        }
        for mode in ("forward", "fwd+bwd"):
            if mode == "forward":  # eval + no_grad: torch may take its native fast path, as in inference
                ours.eval(), theirs.eval()
                candidates = {name: no_grad(lambda f=f: f(x)) for name, f in calls.items()}
            else:
                ours.train(), theirs.train()
                inputs = [x.clone().requires_grad_()]
                cotangent = torch.randn_like(x)
                candidates = {name: forward_and_backward(f, inputs, cotangent) for name, f in calls.items()}
            result = compare(candidates, repeats=repeats, sync=_sync(device))
            rows.append(
                [
                    f"{batch}×{length}×{d_model}, {heads} heads",
                    mode,
                    *(f"{result.median_ms(name):.2f}" for name in calls),
                    f"**{result.ratio('own weights', 'torch weights'):.2f}**",
                    f"**{result.ratio('own fused', 'torch fused'):.2f}**",
                ]
            )
            print(" | ".join(rows[-1]), flush=True)
    header = [
        "B×L×d_model",
        "pass",
        "own weights ms",
        "own fused ms",
        "torch weights ms",
        "torch fused ms",
        "own / torch (weights)",
        "own / torch (fused)",
    ]
    return markdown_table(header, rows)


def _sync(device):
    return torch.cuda.synchronize if device.type == "cuda" else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size_group = parser.add_mutually_exclusive_group()
    size_group.add_argument("--quick", action="store_true", help="two small sizes, few repeats (a smoke run)")
    size_group.add_argument(
        "--grid", action="store_true", help="every size: batch 8/32 × heads 4/8 × L 64/128/256 × d_head 32/64"
    )
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats per case (default 11, quick 3)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: leave as OMP_NUM_THREADS set it)"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"markdown output (default {RESULTS})")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda was asked for but torch sees no CUDA GPU")
    repeats = args.repeats or (3 if args.quick else 11)
    sdpa_sizes = SDPA_QUICK if args.quick else SDPA_GRID if args.grid else SDPA_SIZES
    mha_sizes = MHA_QUICK if args.quick else MHA_SIZES

    info = machine_info()
    print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    sdpa_table, worst = bench_sdpa(sdpa_sizes, ["none", "padding"], repeats, device)
    mha_table = bench_mha(mha_sizes, repeats, device)

    verdict = "within" if worst <= TARGET else "NOT within"
    report = "\n".join(
        [
            "# Attention benchmark: course_utils vs torch",
            "",
            *(f"- {k}: {v}" for k, v in info.items()),
            f"- device: {device}; {repeats} interleaved repeats per case; times are medians per call; ratios are "
            "medians of the per-repeat ratios (below 1: ours is faster), IQR in brackets",
            "- the machine may be shared: absolute times can be inflated, ratios from one interleaved run stay fair",
            "",
            "## scaled_dot_product_attention",
            "own = `course_utils.layers.attention.scaled_dot_product_attention` (also returns the weights); "
            "math = `F.scaled_dot_product_attention` under `sdpa_kernel(SDPBackend.MATH)`; default = torch's choice. "
            "mask: none, or a boolean padding mask (batch, 1, 1, L). forward runs under `no_grad`.",
            "",
            sdpa_table,
            "",
            f"Largest own / math ratio: {worst:.2f}, {verdict} the {TARGET}x target.",
            "",
            "## MultiHeadAttention (self-attention with a key padding mask)",
            "own weights = `MultiHeadAttention` returning per-head weights; own fused = `need_weights=False`; "
            "torch = `nn.MultiheadAttention(batch_first=True)` with `need_weights=True, average_attn_weights=False` "
            "or `need_weights=False`. forward: eval + `no_grad` (torch may use its native fast path); "
            "fwd+bwd: train mode, dropout 0.",
            "",
            mha_table,
            "",
        ]
    )
    write_report(report, args.out)


if __name__ == "__main__":
    main()
