"""What DistributedDataParallel does, checked on N ranks (chapter 08). Start it with torchrun:

    python -m torch.distributed.run --nnodes=1 --nproc-per-node=2 --master-addr=127.0.0.1 \\
        --master-port=29500 -m course_utils.scale.scripts.ddp_check --out runs/ch08_ddp

Every rank writes ``rank{r}.json``; rank 0 also writes the final parameters of each run as
safetensors. The chapter compares them with one process training on the same global batches.

1. ``ddp``: each rank takes its share of every global batch (rows ``rank::world``), the token
   losses are summed and divided by the global token count (all-reduced), times the world
   size because DDP *averages* gradients over ranks. ``ddp_mean_of_means``: the usual mistake
   (each rank's mean loss), for contrast.
2. ``no_sync`` / ``sync_every_micro``: k micro-batches per step, with and without
   ``DDP.no_sync()``, the all-reduce calls counted by a communication hook.
3. the logged loss: each rank's mean, and the global mean (SUM of sums and counts, then divide).
4. ``DistributedSampler``: the indices each rank gets per epoch, with and without ``set_epoch``;
   and the padding that repeats samples when the data set does not divide evenly.
5. ``fsdp``: the same training with ``torch.distributed.fsdp.fully_shard`` (FSDP2), if it runs.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data.distributed import DistributedSampler

from course_utils.scale import scaling
from course_utils.scale.scripts import check_numbers, init_distributed, write_json


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for rank{r}.json and the *.safetensors files")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps")
    parser.add_argument("--global-batch", type=int, default=8, help="sequences per optimizer step (all ranks)")
    parser.add_argument("--micro-batches", type=int, default=2, help="k micro-batches per rank per step (no_sync)")
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sampler-size", type=int, default=10, help="data set size for the sampler demo")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--no-fsdp", action="store_true", help="skip the FSDP run")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a collective may wait")
    return check_numbers(
        parser,
        parser.parse_args(argv),
        positive=("steps", "global_batch", "micro_batches", "sampler_size", "epochs"),
        finite_positive=("lr", "timeout"),
    )


def experiment_data(args) -> list[list[list[int]]]:
    """The global batches every rank and the one-process reference use (same seed: same data)."""
    sequences = scaling.make_token_data(args.steps * args.global_batch, seed=args.seed)
    return scaling.chunks(sequences, args.global_batch)


def fresh_model(args) -> torch.nn.Module:
    torch.manual_seed(args.seed)  # DDP would broadcast rank 0's weights anyway; FSDP needs the same init
    return scaling.TinyTokenModel()


def on(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def global_count(count: int, device) -> int:
    """The number of target tokens on all ranks together."""
    total = torch.tensor([count], dtype=torch.long, device=device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return int(total.item())


def global_mean(loss_sum: float, count: int, device) -> float:
    """The mean over all ranks' tokens: all-reduce SUM of (sum, count), then divide.

    Not ReduceOp.AVG (gloo lacks it in some versions) and not the mean of the ranks' means
    (wrong when ranks hold different numbers of tokens).
    """
    both = torch.tensor([loss_sum, float(count)], dtype=torch.float64, device=device)
    dist.all_reduce(both, op=dist.ReduceOp.SUM)
    return (both[0] / both[1]).item()


def train_ddp(model, batches, rank, world, lr, device, normalize="tokens") -> list[dict]:
    """One DDP step per global batch; returns what each step logged on this rank."""
    ddp = DDP(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=lr)
    log = []
    for sequences in batches:
        batch = on(scaling.collate_tokens(sequences[rank::world]), device)  # this rank's share
        optimizer.zero_grad(set_to_none=True)
        loss_sum, count = scaling.token_loss_sum(ddp, batch)
        if normalize == "tokens":
            loss = loss_sum / global_count(count, device) * world  # DDP divides by world: undo
        else:
            loss = loss_sum / count  # each rank's mean: the trap
        loss.backward()
        optimizer.step()
        log.append(
            {
                "tokens": count,
                "local_mean": loss_sum.item() / count,
                "global_mean": global_mean(loss_sum.item(), count, device),
            }
        )
    return log


def counting_allreduce_hook(state: dict, bucket):
    """A DDP communication hook: count the call in ``state``, then all-reduce as DDP would."""
    state["calls"] += 1
    return default_hooks.allreduce_hook(None, bucket)  # None: the default process group


def train_accumulating(model, batches, rank, world, lr, k, device, use_no_sync=True) -> list[int]:
    """k micro-batches per rank per step; returns the all-reduce calls of each step."""
    ddp = DDP(model)
    counter = {"calls": 0}
    ddp.register_comm_hook(state=counter, hook=counting_allreduce_hook)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=lr)
    calls = []
    for sequences in batches:
        micro = [on(scaling.collate_tokens(part), device) for part in scaling.split_batch(sequences[rank::world], k)]
        local = sum(int((mb["labels"] != scaling.IGNORE_INDEX).sum()) for mb in micro)
        total = global_count(local, device)
        before = counter["calls"]
        optimizer.zero_grad(set_to_none=True)
        for i, mb in enumerate(micro):
            last = i == len(micro) - 1
            # no_sync around forward AND backward: DDP decides in forward whether to all-reduce
            context = ddp.no_sync() if use_no_sync and not last else contextlib.nullcontext()
            with context:
                loss_sum, _ = scaling.token_loss_sum(ddp, mb)
                (loss_sum / total * world).backward()
        optimizer.step()
        calls.append(counter["calls"] - before)
    return calls


def sampler_orders(size, rank, world, epochs, seed, call_set_epoch: bool) -> list[list[int]]:
    sampler = DistributedSampler(range(size), num_replicas=world, rank=rank, shuffle=True, seed=seed)
    orders = []
    for epoch in range(epochs):
        if call_set_epoch:
            sampler.set_epoch(epoch)  # forget this and every epoch repeats epoch 0's order
        orders.append(list(sampler))
    return orders


def train_fsdp(model, batches, rank, world, lr, device) -> dict[str, torch.Tensor]:
    """The same steps with FSDP2: each rank holds a shard of every parameter; the full ones at the end."""
    from torch.distributed.fsdp import fully_shard

    for layer in (model.embed, model.hidden, model.out):
        fully_shard(layer)  # one all-gather / reduce-scatter unit per layer
    fully_shard(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for sequences in batches:
        batch = on(scaling.collate_tokens(sequences[rank::world]), device)
        optimizer.zero_grad(set_to_none=True)
        loss_sum, count = scaling.token_loss_sum(model, batch)
        (loss_sum / global_count(count, device) * world).backward()  # FSDP averages gradients too
        optimizer.step()
    return {name: p.full_tensor().detach().cpu() for name, p in model.named_parameters()}


def params_of(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters()}


def main(argv=None) -> None:
    args = parse_args(argv)
    rank, world, device = init_distributed(args.timeout)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    batches = experiment_data(args)
    result = {"rank": rank, "world_size": world, "backend": dist.get_backend(), "device": str(device)}
    saved = {}

    model = fresh_model(args).to(device)
    result["ddp_log"] = train_ddp(model, batches, rank, world, args.lr, device)
    saved["ddp"] = params_of(model)
    model = fresh_model(args).to(device)
    train_ddp(model, batches, rank, world, args.lr, device, normalize="mean_of_means")
    saved["ddp_mean_of_means"] = params_of(model)

    for name, use_no_sync in (("no_sync", True), ("sync_every_micro", False)):
        model = fresh_model(args).to(device)
        result[f"{name}_allreduce_calls"] = train_accumulating(
            model, batches, rank, world, args.lr, args.micro_batches, device, use_no_sync
        )
        saved[name] = params_of(model)

    result["sampler_set_epoch"] = sampler_orders(args.sampler_size, rank, world, args.epochs, args.seed, True)
    result["sampler_no_set_epoch"] = sampler_orders(args.sampler_size, rank, world, args.epochs, args.seed, False)
    uneven = args.sampler_size + 1  # does not divide by 2: padded with repeated samples
    result["eval_sampler_padded"] = list(DistributedSampler(range(uneven), world, rank, shuffle=False))
    result["eval_sampler_drop_last"] = list(
        DistributedSampler(range(uneven), world, rank, shuffle=False, drop_last=True)
    )
    result["eval_size"] = uneven

    if not args.no_fsdp:
        try:
            saved["fsdp"] = train_fsdp(fresh_model(args).to(device), batches, rank, world, args.lr, device)
            result["fsdp"] = "ran"
        except Exception as err:  # noqa: BLE001 -- report it: the chapter says FSDP is GPU-only here, then
            result["fsdp"] = f"failed: {type(err).__name__}: {err}"
    if rank == 0:
        for name, params in saved.items():
            save_file(params, str(out / f"{name}.safetensors"))
    write_json(out / f"rank{rank}.json", result)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
