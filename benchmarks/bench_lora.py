"""Full fine-tuning vs a frozen encoder (head only) vs LoRA: trainable parameters and step time.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_lora.py            # about a minute
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_lora.py --quick    # a smoke run

Chapter 04's setup: the offline MiniLM (6 layers, hidden 384) as the course's
``BertForTokenClassification`` with a new 9-label NER head, one batch of the offline NER
training sentences. A step is forward + loss + backward + AdamW step, in train mode. The four
ways to fine-tune, timed interleaved in one run (benchmarks/timing.py), as ratios to full
fine-tuning:

* full: every weight trains;
* frozen + head: only the classifier trains (autograd stops at the head);
* LoRA r=4 / r=8 on the query and value projections, plus the head (``modules_to_save``):
  the backward pass still runs through every layer (A and B sit in all of them), but
  computes no gradient for, and AdamW keeps no state for, the frozen weights.

Writes a markdown table to benchmarks/results/lora.md. Time only: F1 is the notebook's job.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from course_utils.text import bio_tags, ner, ner_models  # noqa: E402
from course_utils.text.bert import minilm_path  # noqa: E402
from course_utils.text.lora import add_lora, trainable_parameters  # noqa: E402
from timing import compare, machine_info, markdown_table, write_report  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "lora.md"


def ner_batch(batch_size: int, labels: list[str], sentences):
    tokenizer = ner_models.load_tokenizer(minilm_path())
    label2id = {label: i for i, label in enumerate(labels)}
    features = ner.encode(tokenizer, sentences[:batch_size], label2id, 128)
    return ner.collate(features, pad_id=tokenizer.pad_token_id)


def build(kind: str, labels: list[str]):
    torch.manual_seed(0)
    model = ner_models.token_classifier(minilm_path(), labels).train()
    if kind == "frozen + head":
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("classifier."))
    elif kind.startswith("LoRA"):
        r = int(kind.split("r=")[1])
        add_lora(model, r=r, alpha=2 * r, target=("query", "value"), modules_to_save="classifier")
    return model


def step_fn(model, batch):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        loss = model(batch["input_ids"], batch["attention_mask"], labels=batch["labels"]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 8, 3 repeats (a smoke run)")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="sentences per step (default 32: chapter 04's full mode)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 9, quick 3)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"markdown output (default {RESULTS})")
    args = parser.parse_args()
    batch_size = args.batch_size or (8 if args.quick else 32)
    repeats = args.repeats or (3 if args.quick else 9)

    info = machine_info()
    data, source = ner.load_ner_data()
    labels = bio_tags.label_list(*data.values())
    batch = ner_batch(batch_size, labels, data["train"])
    kinds = ["full", "frozen + head", "LoRA r=4", "LoRA r=8"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = {kind: build(kind, labels) for kind in kinds}
    counts = {kind: trainable_parameters(m) for kind, m in models.items()}
    timing = compare({kind: step_fn(m, batch) for kind, m in models.items()}, repeats=repeats, min_block_s=0.2)

    rows = []
    for kind in kinds:
        count = counts[kind]
        q1, q3 = timing.spread(kind, "full")
        rows.append(
            [
                kind,
                f"{count.trainable:,}",
                f"{100 * count.fraction:.3f}%",
                f"{timing.median_ms(kind):.1f}",
                f"{timing.ratio(kind, 'full'):.2f} ({q1:.2f}-{q3:.2f})",
            ]
        )
    table = markdown_table(
        ["fine-tuning", "trainable parameters", "of all", "ms per step (median)", "time / full (quartiles)"], rows
    )
    shape = tuple(batch["input_ids"].shape)
    report = "\n".join(
        [
            "# LoRA vs full fine-tuning vs a frozen encoder: trainable parameters and step time",
            "",
            f"MiniLM (6 layers, hidden 384) as the course's BertForTokenClassification, {len(labels)} NER labels; "
            f"one training step (forward, loss, backward, AdamW) on a batch of shape {shape} from {source}; "
            f"{repeats} interleaved repeats, ratio = median of per-repeat time / full fine-tuning's. "
            "LoRA on query and value, alpha = 2r, plus the trainable head. All parameters counted: "
            f"{counts['full'].total:,} (LoRA adds A and B to that).",
            "",
            table,
            "",
            "Machine: " + "; ".join(f"{k}: {v}" for k, v in info.items()),
            "",
        ]
    )
    write_report(report, args.out)


if __name__ == "__main__":
    main()
