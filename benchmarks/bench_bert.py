"""Speed of the course's BERT against transformers' BERT, as ratios measured in one interleaved run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_bert.py            # default sizes, several minutes
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_bert.py --quick    # a smoke run

Compares ``course_utils.text.bert.BertModel`` with ``transformers.BertModel`` holding the same
config and weights, with transformers' default attention (sdpa) and with its eager attention;
forward (eval, ``no_grad``: inference) and forward + backward (train mode, the config's
dropout 0.1: a training step without the optimizer), on right-padded batches. A second table
times a pretraining step: ours with the MLM head only at the masked positions
(``masked_only=True``) against transformers' BertForPreTraining (head at every position).
Target: own / transformers (sdpa) within 1.15x. Prints a markdown table and writes it to
benchmarks/results/bert.md.
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

from course_utils.text import bert  # noqa: E402
from timing import compare, machine_info, markdown_table, write_report  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bert.md"
TARGET = 1.15
# name -> (layers, hidden, heads, intermediate, vocab)
MODELS = {
    "design 2L/128": (2, 128, 2, 512, 4000),  # chapter 03's calibrated pretraining model
    "bert-mini 4L/256": (4, 256, 4, 1024, 30522),
}
SHAPES = [(8, 64), (8, 128), (32, 64), (32, 128)]  # (batch, length)
QUICK_SHAPES = [(8, 64)]


def make_config(layers, hidden, heads, intermediate, vocab, attn):
    config = transformers.BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=512,
    )
    config._attn_implementation = attn
    return config


def padded_batch(batch, length, vocab, gen):
    """Random ids, right-padded: each sequence keeps between half and all of its positions."""
    ids = torch.randint(5, vocab, (batch, length), generator=gen)
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=gen)
    lengths[0] = length
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    types = torch.zeros_like(ids)
    types[:, length // 2 :] = 1
    return ids.masked_fill(mask == 0, 0), mask, types


def forward_only(model, inputs):
    def call():
        with torch.no_grad():
            model(**inputs)

    return call


def training_step(model, inputs):
    def call():
        model.zero_grad(set_to_none=True)
        out = model(**inputs)
        loss = out.loss if getattr(out, "loss", None) is not None else out.last_hidden_state.pow(2).mean()
        loss.backward()

    return call


def bench_encoder(models, shapes, repeats):
    rows, worst = [], 0.0
    gen = torch.Generator().manual_seed(0)
    for name, sizes in models.items():
        torch.manual_seed(0)
        sdpa = transformers.BertModel(make_config(*sizes, "sdpa"))
        eager = transformers.BertModel(make_config(*sizes, "eager"))
        eager.load_state_dict(sdpa.state_dict())
        ours = bert.BertModel.from_hf(sdpa)
        models_ = {"own": ours, "hf sdpa": sdpa, "hf eager": eager}
        for batch, length in shapes:
            ids, mask, types = padded_batch(batch, length, sizes[-1], gen)
            inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            for mode in ("forward", "fwd+bwd"):
                for m in models_.values():
                    m.train(mode == "fwd+bwd")
                make = forward_only if mode == "forward" else training_step
                result = compare({k: make(m, inputs) for k, m in models_.items()}, repeats=repeats)
                ratio = result.ratio("own", "hf sdpa")
                worst = max(worst, ratio)
                q1, q3 = result.spread("own", "hf sdpa")
                rows.append(
                    [
                        name,
                        f"{batch}×{length}",
                        mode,
                        *(f"{result.median_ms(k):.1f}" for k in models_),
                        f"**{ratio:.2f}** ({q1:.2f}–{q3:.2f})",
                        f"{result.ratio('own', 'hf eager'):.2f}",
                    ]
                )
                print(" | ".join(rows[-1]), flush=True)
    header = ["model", "B×L", "pass", "own ms", "hf sdpa ms", "hf eager ms", "own / sdpa (IQR)", "own / eager"]
    return markdown_table(header, rows), worst


def bench_pretraining(models, shapes, repeats):
    rows = []
    gen = torch.Generator().manual_seed(1)
    for name, sizes in models.items():
        torch.manual_seed(0)
        theirs = transformers.BertForPreTraining(make_config(*sizes, "sdpa"))
        ours = bert.BertForPreTraining.from_hf(theirs)
        for batch, length in shapes:
            ids, mask, types = padded_batch(batch, length, sizes[-1], gen)
            chosen = (torch.rand(ids.shape, generator=gen) < 0.15) & (mask == 1)
            labels = torch.where(chosen, ids, torch.full_like(ids, -100))
            inputs = {
                "input_ids": ids,
                "attention_mask": mask,
                "token_type_ids": types,
                "labels": labels,
                "next_sentence_label": torch.randint(0, 2, (batch,), generator=gen),
            }
            ours.train(), theirs.train()
            candidates = {
                "own masked_only": training_step(ours, {**inputs, "masked_only": True}),
                "own full": training_step(ours, inputs),
                "hf": training_step(theirs, inputs),
            }
            result = compare(candidates, repeats=repeats)
            rows.append(
                [
                    name,
                    f"{batch}×{length}",
                    *(f"{result.median_ms(k):.1f}" for k in candidates),
                    f"**{result.ratio('own full', 'hf'):.2f}**",
                    f"**{result.ratio('own masked_only', 'hf'):.2f}**",
                ]
            )
            print(" | ".join(rows[-1]), flush=True)
    header = ["model", "B×L", "own masked_only ms", "own full ms", "hf ms", "own full / hf", "own masked_only / hf"]
    return markdown_table(header, rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small shape, 3 repeats (a smoke run)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats per case (default 9, quick 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: as OMP_NUM_THREADS set it)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"markdown output (default {RESULTS})")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 9)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()

    info = machine_info()
    print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    encoder_table, worst = bench_encoder(MODELS, shapes, repeats)
    pretraining_table = bench_pretraining(MODELS, shapes, repeats)
    verdict = "within" if worst <= TARGET else "NOT within"
    report = "\n".join(
        [
            "# BERT benchmark: course_utils.text.bert vs transformers",
            "",
            *(f"- {k}: {v}" for k, v in info.items()),
            f"- transformers {transformers.__version__}; {repeats} interleaved repeats per case; times are medians per "
            "call; ratios are medians of the per-repeat ratios (below 1: ours is faster), IQR in brackets",
            "- the machine may be shared: absolute times can be inflated 1.5-3x, ratios from one interleaved run stay fair",
            "",
            "## BertModel (embeddings + encoder + pooler)",
            "Same config and weights; right-padded batches (each sequence keeps half to all positions), segment ids. "
            "forward: eval + `no_grad`; fwd+bwd: train mode (dropout 0.1), loss = mean(last_hidden_state²). "
            "hf sdpa = transformers' default attention, hf eager = its matmul-softmax attention.",
            "",
            encoder_table,
            "",
            f"Largest own / sdpa ratio: {worst:.2f}, {verdict} the {TARGET}x target.",
            "",
            "## A pretraining step (MLM + NSP loss, backward)",
            "15% of the real tokens masked. own full = `BertForPreTraining` scoring every position (as transformers); "
            "own masked_only = scoring only the masked positions.",
            "",
            pretraining_table,
            "",
        ]
    )
    write_report(report, args.out)


if __name__ == "__main__":
    main()
