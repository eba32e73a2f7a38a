"""Speed of the course's text generation: with and without the KV cache, and against transformers'
generate on the same weights, as ratios measured in one interleaved run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_generation.py            # default sizes, several minutes
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_generation.py --quick    # a smoke run

Greedy decoding of a fixed number of new tokens (no EOS, so every candidate does the same work)
with ``course_utils.text.generation.generate`` on ``course_utils.text.decoder.GPTModel``: cached (the
KV cache, one new token per step) and uncached (the whole sequence at every step), and
``transformers.GPT2LMHeadModel.generate`` (its default sdpa attention and DynamicCache) on the
same weights; the three must return the same ids. Targets: the cache at least 3x faster than no
cache at 128 new tokens; own cached within 1.3x of transformers'. Prints a markdown table and
writes it to benchmarks/results/generation.md.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))
import transformers  # noqa: E402

from course_utils.text.decoder import GPTModel, tiny_config  # noqa: E402
from course_utils.text.generation import generate  # noqa: E402
from timing import compare, machine_info, markdown_table, write_report  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "generation.md"
CACHE_TARGET, HF_TARGET = 3.0, 1.3
# name -> (layers, d_model, heads, vocab)
MODELS = {
    "ch06 full 2L/128": (2, 128, 4, 2000),  # the chapter's trained GPT's size
    "4L/256": (4, 256, 4, 8000),
}
# (batch, prompt tokens, new tokens)
CASES = [(1, 16, 32), (1, 16, 128), (1, 64, 128), (4, 16, 128)]
QUICK_CASES = [(1, 16, 32)]


def build(layers, d_model, heads, vocab):
    torch.manual_seed(0)
    config = tiny_config(vocab_size=vocab, n_positions=512, n_embd=d_model, n_layer=layers, n_head=heads)
    theirs = transformers.GPT2LMHeadModel(config).eval()
    theirs.generation_config.eos_token_id = None  # generate exactly max_new_tokens, as ours without EOS
    theirs.generation_config.bos_token_id = None
    theirs.generation_config.pad_token_id = 0
    return GPTModel.from_hf(theirs).eval(), theirs


def candidates(ours, theirs, ids, new):
    mask = torch.ones_like(ids)

    def own(use_cache):
        return lambda: generate(ours, ids, new, use_cache=use_cache)

    def hf():
        return theirs.generate(ids, attention_mask=mask, max_new_tokens=new, do_sample=False)

    found = {"own cached": own(True), "own uncached": own(False), "hf generate": hf}
    outputs = {name: fn() for name, fn in found.items()}
    reference = outputs["hf generate"]
    for name, out in outputs.items():  # the same work, the same answer
        assert torch.equal(out, reference), f"{name} gave other ids than transformers' generate"
        assert out.shape[1] == ids.shape[1] + new
    return found


def bench(models, cases, repeats):
    rows, cache_at_128, own_vs_hf = [], [], []
    gen = torch.Generator().manual_seed(0)
    for name, sizes in models.items():
        ours, theirs = build(*sizes)
        for batch, prompt, new in cases:
            ids = torch.randint(0, sizes[-1], (batch, prompt), generator=gen)
            with torch.no_grad():
                result = compare(candidates(ours, theirs, ids, new), repeats=repeats, min_block_s=0.05)
            speedup = result.ratio("own uncached", "own cached")
            vs_hf = result.ratio("own cached", "hf generate")
            q1, q3 = result.spread("own cached", "hf generate")
            if new >= 128:
                cache_at_128.append(speedup)
            own_vs_hf.append(vs_hf)
            tokens = batch * new
            rows.append(
                [
                    name,
                    f"{batch}×{prompt}+{new}",
                    *(
                        f"{tokens / (result.median_ms(k) / 1e3):.0f}"
                        for k in ("own cached", "own uncached", "hf generate")
                    ),
                    f"**{speedup:.1f}x**",
                    f"**{vs_hf:.2f}** ({q1:.2f}–{q3:.2f})",
                ]
            )
            print(" | ".join(rows[-1]), flush=True)
    header = [
        "model",
        "B×prompt+new",
        "own cached tok/s",
        "own uncached tok/s",
        "hf generate tok/s",
        "cache speed-up (uncached / cached time)",
        "own cached / hf time (IQR)",
    ]
    return markdown_table(header, rows), cache_at_128, own_vs_hf


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small case, 3 repeats (a smoke run)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats per case (default 7, quick 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: as OMP_NUM_THREADS set it)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"markdown output (default {RESULTS})")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 7)
    cases = QUICK_CASES if args.quick else CASES
    models = dict(list(MODELS.items())[:1]) if args.quick else MODELS
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()

    info = machine_info()
    print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    table, cache_at_128, own_vs_hf = bench(models, cases, repeats)
    lines = []
    if cache_at_128:
        lowest = min(cache_at_128)
        lines.append(
            f"Cache speed-up at 128 new tokens: {lowest:.1f}x at the least, "
            f"{'meeting' if lowest >= CACHE_TARGET else 'NOT meeting'} the {CACHE_TARGET:.0f}x target."
        )
    worst = max(own_vs_hf)
    lines.append(
        f"Own cached / transformers' generate: {min(own_vs_hf):.2f}-{worst:.2f}, "
        f"{'within' if worst <= HF_TARGET else 'NOT within'} the {HF_TARGET}x target."
    )
    report = "\n".join(
        [
            "# Generation benchmark: course_utils.text.generation vs transformers' generate",
            "",
            *(f"- {k}: {v}" for k, v in info.items()),
            f"- transformers {transformers.__version__}; {repeats} interleaved repeats per case; tokens/s = batch × new "
            "tokens / median seconds per call; ratios are medians of the per-repeat ratios, IQR in brackets",
            "- the machine may be shared: absolute times can be inflated 1.5-3x, ratios from one interleaved run stay fair",
            "",
            "Greedy decoding, no EOS (every candidate generates exactly the new tokens), random weights (speed does "
            "not depend on them), position table 512. own cached = `generate(model, ids, n)` with the KV cache; own "
            "uncached = `use_cache=False` (the whole sequence at every step); hf generate = "
            "`GPT2LMHeadModel.generate` (sdpa attention, DynamicCache) on the same weights. All three return the same ids.",
            "",
            table,
            "",
            *lines,
            "",
        ]
    )
    write_report(report, args.out)


if __name__ == "__main__":
    main()
