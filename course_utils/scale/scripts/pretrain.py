"""Chapter 03's BERT pretraining (MLM + NSP) on N processes with DistributedDataParallel.

    python -m torch.distributed.run --nnodes=1 --nproc-per-node=2 --master-addr=127.0.0.1 \\
        --master-port=29500 -m course_utils.scale.scripts.pretrain --out runs/ch08_pretrain --steps 200

The same package code as chapter 03 (``corpus``, ``tokenization``, ``pretraining``,
``pretraining_run``, ``training.train``), with what data parallelism changes:

* the tokenizer is trained once, by rank 0, and loaded by the others (WordPiece training is
  not bit-for-bit repeatable: two ranks training their own would disagree on token ids);
* every rank draws the same global batches (same seeds) and keeps its rows ``rank::world``;
* the MLM loss is a mean over masked tokens, and ranks hold different numbers of them: each
  rank's sum is divided by the global count (all-reduced), times the world size because DDP
  averages gradients. Then N processes compute exactly what one process computes;
* the logged losses are global means (all-reduce SUM, then divide).

On GPUs (one per rank, nccl) ``--bf16`` runs the forward pass under bf16 autocast; the model
and corpus sizes are arguments (``--corpus wikitext`` downloads WikiText, falling back to the
offline corpus in one line). Rank 0 evaluates on held-out text and saves the model in the
transformers layout (``--out``/model); every rank writes ``rank{r}.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from course_utils.text import corpus, pretraining, pretraining_run, tokenization
from course_utils.scale import scaling
from course_utils import training
from course_utils.scale.scripts import check_numbers, init_distributed, write_json


def parse_args(argv=None) -> argparse.Namespace:
    d = pretraining_run.PretrainSettings()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for rank{r}.json, tokenizer/ and model/")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch: all ranks together")
    p.add_argument("--hidden-size", type=int, default=d.hidden_size)
    p.add_argument("--layers", type=int, default=d.num_layers)
    p.add_argument("--heads", type=int, default=d.num_heads)
    p.add_argument("--intermediate-size", type=int, default=d.intermediate_size)
    p.add_argument("--vocab-size", type=int, default=d.vocab_size)
    p.add_argument("--max-len", type=int, default=d.max_len)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--warmup-fraction", type=float, default=d.warmup_fraction)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--corpus", choices=corpus.CORPUS_NAMES, default="pydocs")
    p.add_argument("--max-documents", type=int, default=None, help="train on the first N documents only")
    p.add_argument("--tokenizer", default=None, help="a saved tokenizer folder to reuse instead of training one")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast in the forward pass")
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing of every layer")
    p.add_argument("--heldout-examples", type=int, default=512)
    p.add_argument("--timing-skip", type=int, default=3, help="first steps left out of the throughput")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds a collective may wait")
    args = check_numbers(
        p,
        p.parse_args(argv),
        positive=(
            "steps",
            "batch_size",
            "hidden_size",
            "layers",
            "heads",
            "intermediate_size",
            "vocab_size",
            "max_len",
            "heldout_examples",
        ),
        unit=("warmup_fraction",),
        finite_positive=("lr", "timeout"),
    )
    if args.hidden_size % args.heads:
        p.error(f"--hidden-size ({args.hidden_size}) must be a multiple of --heads ({args.heads})")
    if args.max_documents is not None and args.max_documents < 1:
        p.error(f"--max-documents must be at least 1, got {args.max_documents}")
    if args.timing_skip < 0:
        p.error(f"--timing-skip must be 0 or more, got {args.timing_skip}")
    return args


def settings_of(args) -> pretraining_run.PretrainSettings:
    return replace(
        pretraining_run.PretrainSettings(),
        corpus=args.corpus,
        vocab_size=args.vocab_size,
        max_len=args.max_len,
        hidden_size=args.hidden_size,
        num_layers=args.layers,
        num_heads=args.heads,
        intermediate_size=args.intermediate_size,
        max_position_embeddings=max(128, args.max_len),
        batch_size=args.batch_size,
        steps=args.steps,
        lr=args.lr,
        warmup_fraction=args.warmup_fraction,
        seed=args.seed,
    )


def shared_tokenizer(args, train_docs, rank: int, out: Path):
    """Rank 0 trains (or copies) the tokenizer and saves it; the others wait, then load that one."""
    folder = out / "tokenizer"
    if rank == 0:
        if args.tokenizer:
            tokenizer = tokenization.load_tokenizer(args.tokenizer)
        else:
            tokenizer = tokenization.train_tokenizer(
                (s for d in train_docs for s in d.sentences),
                vocab_size=args.vocab_size,
                model_max_length=max(128, args.max_len),
            )
        tokenizer.save_pretrained(str(folder))
    dist.barrier()
    return tokenization.load_tokenizer(folder)


def local_shards(batches, rank: int, world: int):
    """This rank's rows of every global batch (every rank draws the same global batches)."""
    for batch in batches:
        yield {k: v[rank::world] for k, v in batch.items()}


def make_step_fn(world: int, device: torch.device, bf16: bool):
    """``step_fn(model, batch)`` for ``training.train``: the token-count-correct loss under DDP."""
    autocast = (
        (lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    )

    def step_fn(model, batch):
        step_fn.times.append(time.perf_counter())  # one call per optimizer step: the throughput
        n_masked = int((batch["labels"] != pretraining.IGNORE_INDEX).sum())
        rows = len(batch["next_sentence_label"])
        counts = torch.tensor([n_masked, rows], dtype=torch.float64, device=device)
        dist.all_reduce(counts)  # SUM over ranks
        with autocast():
            out = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                token_type_ids=batch["token_type_ids"],
                labels=batch["labels"],
                next_sentence_label=batch["next_sentence_label"],
                masked_only=True,
            )
        mlm_sum = out.mlm_loss.float() * n_masked if n_masked else out.prediction_logits.sum() * 0.0
        nsp_sum = out.nsp_loss.float() * rows
        # DDP averages gradients over ranks, so multiply by world: sum over all tokens / all tokens
        loss = (mlm_sum / counts[0] + nsp_sum / counts[1]) * world
        logged = torch.tensor([mlm_sum.item(), nsp_sum.item()], dtype=torch.float64, device=device)
        dist.all_reduce(logged)
        mlm, nsp = (logged[0] / counts[0]).item(), (logged[1] / counts[1]).item()
        return {"loss": loss, "global_loss": mlm + nsp, "mlm_loss": mlm, "nsp_loss": nsp}

    step_fn.times = []
    return step_fn


def main(argv=None) -> None:
    args = parse_args(argv)
    rank, world, device = init_distributed(args.timeout)
    if args.batch_size % world:
        raise ValueError(
            f"--batch-size {args.batch_size} does not divide among {world} ranks: use a multiple of {world}"
        )
    out = Path(args.out)
    settings = settings_of(args)
    start = time.perf_counter()
    documents = corpus.load_corpus(args.corpus) if rank == 0 else None
    documents = _broadcast_object(documents)  # one download or read; every rank the same text
    train_docs, heldout_docs = corpus.split_documents(documents)
    if args.max_documents:
        train_docs = train_docs[: args.max_documents]
    tokenizer = shared_tokenizer(args, train_docs, rank, out)
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    train_ids = pretraining.encode_documents(train_docs, tokenizer)
    collator = pretraining.Collator(tokenizer, seed=args.seed)
    batches = pretraining.pretraining_batches(
        train_ids, collator, args.batch_size, args.max_len, cls_id, sep_id, seed=args.seed
    )

    torch.manual_seed(args.seed)  # the same initial weights on every rank
    model = pretraining_run.model_class()(pretraining_run.bert_config(settings, tokenizer)).to(device)
    if args.checkpointing:
        scaling.checkpoint_layers(model.bert.encoder.layers)
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = training.make_optimizer(model, lr=args.lr, weight_decay=settings.weight_decay)
    scheduler = training.linear_warmup_schedule(optimizer, int(args.warmup_fraction * args.steps), args.steps)
    setup_seconds = time.perf_counter() - start
    step_fn = make_step_fn(world, device, args.bf16)
    history = training.train(
        ddp,
        local_shards(batches, rank, world),
        step_fn,
        optimizer,
        scheduler,
        steps=args.steps,
        max_grad_norm=settings.max_grad_norm,
        progress=rank == 0,
        desc=f"pretraining on {world} process(es)",
        device=device,
    )
    timed = step_fn.times[args.timing_skip :] if len(step_fn.times) > args.timing_skip + 1 else step_fn.times
    seconds = timed[-1] - timed[0] if len(timed) > 1 else float("nan")
    result = {
        "rank": rank,
        "world_size": world,
        "device": str(device),
        "backend": dist.get_backend(),
        "bf16": args.bf16,
        "checkpointing": args.checkpointing,
        "settings": asdict(settings),
        "setup_seconds": setup_seconds,
        "train_seconds": history.seconds,
        "samples_per_second": (len(timed) - 1) * args.batch_size / seconds,
        "global_loss": history.values("global_loss"),
        "global_mlm_loss": history.values("mlm_loss"),
        "global_nsp_loss": history.values("nsp_loss"),
        "tokenizer_vocab": len(tokenizer),
    }
    if rank == 0:
        heldout_ids = pretraining.encode_documents(heldout_docs, tokenizer)
        heldout = pretraining.make_nsp_examples(heldout_ids, args.max_len, cls_id, sep_id, seed=10_000 + args.seed)
        heldout_batches = pretraining.fixed_batches(
            heldout[: args.heldout_examples], pretraining.Collator(tokenizer, seed=10_000 + args.seed), 128
        )
        baseline = pretraining_run.most_frequent_token(train_ids, tokenizer.all_special_ids)
        result["heldout"] = pretraining_run.evaluate_pretraining(
            model, heldout_batches, tokenizer.mask_token_id, baseline
        )
        scaling.checkpoint_layers(model.bert.encoder.layers, enabled=False)
        pretraining_run.save_bert(
            model.cpu(),
            tokenizer,
            out / "model",
            extra={"settings": asdict(settings), "heldout": result["heldout"], "world_size": world, "mode": "ch08"},
        )
    write_json(out / f"rank{rank}.json", result)
    dist.barrier()
    dist.destroy_process_group()


def _broadcast_object(obj):
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


if __name__ == "__main__":
    main()
