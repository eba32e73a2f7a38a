"""Chapter 08 exercises: loss normalisation under accumulation and DDP, counting all-reduces,
merging online-softmax states, the memory of a score matrix, the same-batches bug, and the
global mean of a logged loss.

Each check compares with an independent computation (autograd on the whole batch, a plain
softmax, arithmetic from first principles) on inputs chosen so the usual mistakes differ.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import Mistake, choice, exercise, expect_same, forbid, given_function, numeric

_ACCUMULATION = "1. Gradient accumulation, and the unequal-length trap"
_DDP = "5. Data parallelism with DistributedDataParallel"
_TILED = "4. Attention in tiles: the FlashAttention algorithm in plain PyTorch"


# ----------------------------------------------------------------------------- 08.accumulate


def _micro_losses_reference(loss_sums, counts, global_count, world_size):
    return [s / global_count * world_size for s in loss_sums]


def _micro_losses_mistakes():
    return [
        Mistake(
            lambda sums, counts, total, world: [s / c / len(sums) * world for s, c in zip(sums, counts)],
            "each micro-batch's mean divided by k is a mean of means: a token in a short micro-batch "
            "weighs more. Divide each sum of token losses by the token count of the whole batch.",
        ),
        Mistake(
            lambda sums, counts, total, world: [s / total for s in sums],
            "DDP averages the gradients over the ranks (it divides by the world size): multiply by "
            "world_size to get the gradient of the mean over all tokens.",
        ),
        Mistake(
            lambda sums, counts, total, world: [s / sum(counts) * world for s in sums],
            "you divided by this rank's token count; the mean is over the tokens of every rank: use "
            "global_count (the all-reduced count).",
        ),
        Mistake(
            lambda sums, counts, total, world: [s / len(sums) for s in sums],
            "dividing the sums by k gives a gradient that grows with the number of tokens: divide by the "
            "token count instead.",
        ),
        Mistake(
            lambda sums, counts, total, world: list(sums),
            "a plain sum of token losses: its gradient grows with the number of tokens. Divide by the "
            "global token count (times the world size under DDP).",
        ),
    ]


def _accumulate_cases():
    g = torch.Generator().manual_seed(8)
    cases = []
    for counts_per_rank in ([[3, 17, 1, 9]], [[5, 20], [2, 11]], [[4, 4], [4, 4]], [[1], [30], [7]]):
        world = len(counts_per_rank)
        total = sum(sum(c) for c in counts_per_rank)
        for counts in counts_per_rank:
            sums = [torch.rand((), generator=g) * c * 3 for c in counts]
            cases.append((sums, counts, total, world))
    return cases


def _gradient_check(fn) -> None:
    """Simulated ranks and micro-batches: the averaged gradients equal the big batch's (autograd)."""
    g = torch.Generator().manual_seed(80)
    vocab, dim = 7, 4
    weight = torch.randn(vocab, dim, generator=g)
    micro_per_rank = [[3, 12], [1, 6]]  # target tokens of each micro-batch, per rank
    feats = [[torch.randn(n, dim, generator=g) for n in ranks] for ranks in micro_per_rank]
    targets = [[torch.randint(0, vocab, (n,), generator=g) for n in ranks] for ranks in micro_per_rank]
    total = sum(sum(r) for r in micro_per_rank)
    world = len(micro_per_rank)
    all_x = torch.cat([x for r in feats for x in r])
    all_y = torch.cat([y for r in targets for y in r])
    w = weight.clone().requires_grad_()
    F.cross_entropy(all_x @ w.T, all_y).backward()
    want = w.grad
    rank_grads = []
    for xs, ys, counts in zip(feats, targets, micro_per_rank):
        w = weight.clone().requires_grad_()
        sums = [F.cross_entropy(x @ w.T, y, reduction="sum") for x, y in zip(xs, ys)]
        for loss in fn(sums, list(counts), total, world):
            loss.backward(retain_graph=True)
        rank_grads.append(w.grad)
    got = sum(rank_grads) / world  # what DDP's all-reduce gives every rank
    assert torch.allclose(got, want, atol=1e-6), (
        "your losses return the right numbers but their gradients, averaged over ranks, differ from the big "
        "batch's: return tensors computed from loss_sums (not floats or detached copies)."
    )


@exercise(
    "08.accumulate",
    "The loss each micro-batch backpropagates, on one rank of N",
    "Write micro_batch_losses(loss_sums, counts, global_count, world_size): loss_sums[i] is the sum of the "
    "token losses of this rank's micro-batch i (a tensor with a graph), counts[i] its number of target tokens, "
    "global_count the target tokens of the whole step on all ranks, world_size the number of ranks. Return the "
    "list of tensors to call backward() on, so that after DDP averages the ranks' gradients they equal the "
    "gradient of the mean token loss over the whole global batch.",
    reference=_micro_losses_reference,
    mistakes=_micro_losses_mistakes,
    kind="modify",
    section=_ACCUMULATION,
    minutes=8,
    rules=[
        forbid(
            "course_utils.scale.scaling.accumulate_gradients",
            says="write the normalisation yourself, without scaling.accumulate_gradients",
        )
    ],
)
def check_accumulate(fn) -> None:
    for sums, counts, total, world in _accumulate_cases():
        expect_same(
            fn,
            _micro_losses_reference,
            sums,
            counts,
            total,
            world,
            atol=1e-6,
            what=f"micro_batch_losses(counts={counts}, global_count={total}, world_size={world})",
        )
    _gradient_check(fn)


# ----------------------------------------------------------------------------- 08.allreduce_calls

numeric(
    "08.allreduce_calls",
    "Count the all-reduces",
    "A model's gradients fill 3 DDP buckets. You train 5 optimizer steps, each with k = 4 micro-batches per "
    "rank, and wrap forward and backward of the first 3 micro-batches of each step in ddp.no_sync(). How many "
    "times does a communication hook registered with register_comm_hook run on one rank?",
    reference=lambda: 3 * 5,
    tolerance=0.0,
    mistakes=lambda: [
        Mistake(5, "that counts one call per step, but the hook runs once per bucket: 3 buckets per step."),
        Mistake(
            60,
            "that is without no_sync (every micro-batch all-reduces every bucket); with no_sync only the "
            "last micro-batch of each step communicates.",
        ),
        Mistake(
            20,
            "that is one call per micro-batch: with no_sync the first 3 micro-batches do not communicate "
            "at all, and the last one runs the hook once per bucket.",
        ),
        Mistake(45, "the micro-batches inside no_sync do not communicate: only the last of each step does."),
        Mistake(3, "that is one step; there are 5."),
    ],
    hint="count per optimizer step: which micro-batches communicate, and how many buckets each sends.",
    section=_DDP,
    minutes=3,
)


# ----------------------------------------------------------------------------- 08.online_softmax_merge


def _merge_reference(m1, l1, acc1, m2, l2, acc2):
    m = torch.maximum(m1, m2)
    shift = torch.where(torch.isinf(m), torch.zeros_like(m), m)  # both empty: keep exp() at 0, not NaN
    a1, a2 = torch.exp(m1 - shift), torch.exp(m2 - shift)
    return m, l1 * a1 + l2 * a2, acc1 * a1 + acc2 * a2


def _merge_mistakes():
    def no_rescale(m1, l1, acc1, m2, l2, acc2):
        return torch.maximum(m1, m2), l1 + l2, acc1 + acc2

    def sums_only(m1, l1, acc1, m2, l2, acc2):
        m = torch.maximum(m1, m2)
        a1, a2 = torch.exp(m1 - m), torch.exp(m2 - m)
        return m, l1 * a1 + l2 * a2, acc1 + acc2

    def nan_when_empty(m1, l1, acc1, m2, l2, acc2):
        m = torch.maximum(m1, m2)
        a1, a2 = torch.exp(m1 - m), torch.exp(m2 - m)
        return m, l1 * a1 + l2 * a2, acc1 * a1 + acc2 * a2

    def wrong_direction(m1, l1, acc1, m2, l2, acc2):
        m = torch.maximum(m1, m2)
        shift = torch.where(torch.isinf(m), torch.zeros_like(m), m)
        a1, a2 = torch.exp(shift - m1).nan_to_num(0.0, 0.0, 0.0), torch.exp(shift - m2).nan_to_num(0.0, 0.0, 0.0)
        return m, l1 * a1 + l2 * a2, acc1 * a1 + acc2 * a2

    return [
        Mistake(
            no_rescale, "the two sums were computed with different maxima: rescale each by exp(m_i - m) before adding."
        ),
        Mistake(
            sums_only, "you rescaled l but not acc: the weighted sums of values need the same factor exp(m_i - m)."
        ),
        Mistake(
            nan_when_empty,
            "rows where both blocks are empty (m = -inf) give -inf - (-inf) = NaN: shift by 0 "
            "there, so exp gives 0 and the row stays empty.",
        ),
        Mistake(wrong_direction, "the factor is exp(m_i - m) <= 1 (the old maximum was smaller), not exp(m - m_i)."),
    ]


def _state(scores, values):
    """(m, l, acc) of one block of keys; scores (rows, n) may hold -inf (masked)."""
    m = scores.amax(-1, keepdim=True)
    shift = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    p = torch.exp(scores - shift)
    return m, p.sum(-1, keepdim=True), p @ values


@exercise(
    "08.online_softmax_merge",
    "Merge two online-softmax states",
    "Tiled attention keeps, for each query row and a block of keys, m (the largest score, -inf if every key is "
    "masked), l = sum exp(s_j - m) and acc = sum exp(s_j - m) v_j. Write merge(m1, l1, acc1, m2, l2, acc2) "
    "returning (m, l, acc) of both blocks together, as if computed in one go. Shapes: m and l (rows, 1), acc "
    "(rows, d_v). A row empty in both blocks must stay m=-inf, l=0, acc=0 (no NaN).",
    reference=_merge_reference,
    mistakes=_merge_mistakes,
    kind="modify",
    section=_TILED,
    minutes=8,
    rules=[
        forbid(
            "torch.softmax",
            "torch.Tensor.softmax",
            "torch.nn.functional.softmax",
            says="merge the running sums; no softmax over the concatenated scores",
        )
    ],
)
def check_online_softmax_merge(fn) -> None:
    g = torch.Generator().manual_seed(88)
    rows, n1, n2, dv = 5, 3, 4, 2
    s1, s2 = torch.randn(rows, n1, generator=g) * 3, torch.randn(rows, n2, generator=g) * 3 + 2
    s1[1] = float("-inf")  # row 1: block 1 empty
    s2[2] = float("-inf")  # row 2: block 2 empty
    s1[3], s2[3] = float("-inf"), float("-inf")  # row 3: empty in both
    v1, v2 = torch.randn(n1, dv, generator=g), torch.randn(n2, dv, generator=g)
    state1, state2 = _state(s1, v1), _state(s2, v2)
    expect_same(fn, _merge_reference, *state1, *state2, atol=1e-5, what="merge(state of block 1, state of block 2)")
    _, total, acc = fn(*state1, *state2)
    scores, values = torch.cat([s1, s2], -1), torch.cat([v1, v2])
    weights = torch.softmax(scores, -1).nan_to_num(0.0)  # the plain attention of the two blocks
    out = acc / torch.where(total > 0, total, torch.ones_like(total))
    assert torch.allclose(out, weights @ values, atol=1e-5), (
        "acc / l does not give the attention output of the two blocks together: rescale both sums by exp(m_i - m)."
    )


# ----------------------------------------------------------------------------- 08.score_memory

numeric(
    "08.score_memory",
    "How big is the score matrix?",
    "Chapter 01's attention runs on a batch of 4 sequences, 16 heads, 4096 tokens each, in float32. How many "
    "bytes does the tensor of attention scores q k^T take (one tensor, not counting the softmax that follows)?",
    reference=lambda: 4 * 16 * 4096 * 4096 * 4,
    tolerance=0.01,
    relative=True,
    mistakes=lambda: [
        Mistake(4 * 4096 * 4096 * 4, "every head has its own (L x L) scores: multiply by the 16 heads."),
        Mistake(16 * 4096 * 4096 * 4, "every sequence of the batch has its own scores: multiply by the batch of 4."),
        Mistake(4 * 16 * 4096 * 4096 * 2, "float32 takes 4 bytes per number (2 is bf16/fp16)."),
        Mistake(4 * 16 * 4096 * 4096 * 32, "32 is the number of bits; a byte is 8 bits: 4 bytes per float32."),
        Mistake(4 * 16 * 4096 * 4 * 64, "the scores hold one number per (query, key) pair: L x L per head, not L x d."),
        Mistake(4 * 16 * 4096 * 4, "one number per (query, key) pair: L x L per head, not L."),
    ],
    hint="batch x heads x L_q x L_k numbers, 4 bytes each.",
    section=_TILED,
    minutes=3,
)


# ----------------------------------------------------------------------------- 08.same_batches

choice(
    "08.same_batches",
    "Two ranks, the same batches",
    "You move a training script to 2 GPUs with DDP and log the example ids each rank trains on: in every step "
    "rank 0 and rank 1 train on exactly the same examples. Which explains it?",
    options={
        "a": "sampler.set_epoch(epoch) is never called.",
        "b": "the DataLoader uses shuffle=True and no DistributedSampler, and every rank seeds torch alike.",
        "c": "DDP broadcasts rank 0's batch to the other ranks before the forward pass.",
        "d": "the DistributedSampler of each rank was given a different seed.",
    },
    correct="b",
    why="Without a DistributedSampler each rank's DataLoader shuffles the whole data set; with the same seed "
    "they draw the same permutation, so both ranks train on the same examples and the step is a big batch "
    "of duplicates. A DistributedSampler gives rank r every world-th index of one shared permutation.",
    why_not={
        "a": "forgetting set_epoch repeats the same order every epoch, but the ranks still get different, "
        "disjoint parts of it.",
        "c": "DDP broadcasts the parameters (and buffers) from rank 0, once at construction; it never moves data.",
        "d": "with different seeds the ranks' parts overlap partly and some examples are missed, but they are "
        "not identical.",
    },
    section=_DDP,
    minutes=3,
)


# ----------------------------------------------------------------------------- 08.global_mean

GLOBAL_MEAN_GIVEN = """
def global_mean_loss(rank_sums, rank_counts):
    rank_means = [s / c for s, c in zip(rank_sums, rank_counts)]
    return sum(rank_means) / len(rank_means)
"""


def _global_mean_reference(rank_sums, rank_counts):
    return sum(rank_sums) / sum(rank_counts)


def _global_mean_mistakes():
    return [
        Mistake(
            given_function(GLOBAL_MEAN_GIVEN, "global_mean_loss", "08.global_mean"),
            "the mean of the ranks' means weighs a token on a rank with few tokens more: all-reduce the sums "
            "and the counts, then divide.",
        ),
        Mistake(
            lambda sums, counts: sum(sums) / len(sums), "that divides by the number of ranks, not the number of tokens."
        ),
        Mistake(
            lambda sums, counts: sums[0] / counts[0], "that is rank 0's own mean: the other ranks' tokens are left out."
        ),
        Mistake(
            lambda sums, counts: sum(sums) / max(counts) / len(counts),
            "divide by the total number of tokens, sum(rank_counts).",
        ),
    ]


@exercise(
    "08.global_mean",
    "Log the loss of the global batch",
    "Each rank knows the sum of its token losses and its token count; the function below receives them from "
    "every rank (as an all-reduce would gather them) and should return the mean loss over all tokens of the "
    "global batch. Fix global_mean_loss(rank_sums, rank_counts).",
    reference=_global_mean_reference,
    mistakes=_global_mean_mistakes,
    kind="debug",
    section=_DDP,
    minutes=4,
    given=GLOBAL_MEAN_GIVEN,
)
def check_global_mean(fn) -> None:
    cases = [([30.0, 4.0], [10, 1]), ([12.5, 12.5], [5, 5]), ([7.0], [3]), ([1.0, 50.0, 9.0], [1, 20, 3])]
    for sums, counts in cases:
        expect_same(fn, _global_mean_reference, sums, counts, atol=1e-9, what=f"global_mean_loss({sums}, {counts})")
    got = fn([2.0, 8.0], [1, 4])
    assert isinstance(got, (int, float)) and math.isfinite(got), "return one number, the mean loss"
