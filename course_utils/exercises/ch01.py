"""Chapter 01 exercises: predict, choose, modify and debug, on the mathematics of attention.

Every check compares the learner's answer with an independent reference computed here (torch's
own softmax and SDPA, or a loop written from the definition), on several inputs drawn with a
fixed seed, edge cases included. Each typical mistake has its own diagnosing message.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import Mistake, choice, exercise, expect_same, forbid, given_function, numeric

# ----------------------------------------------------------------------------- predict: numbers

numeric(
    "01.uniform_entropy",
    "The entropy of a uniform attention row",
    "A query may attend to 8 keys and its 8 scores are all equal. Predict the entropy of its row of "
    "attention weights in bits, -sum(w * log2(w)), the quantity the explorer of section 11 draws for "
    "every row. Answer with a number, before running anything.",
    reference=lambda: -sum((1 / 8) * math.log2(1 / 8) for _ in range(8)),
    tolerance=0.01,
    mistakes=lambda: [
        Mistake(8.0, "8 is the number of keys; the entropy of a uniform row over n keys is log2(n)"),
        Mistake(math.log(8), "that is ln 8, the entropy in nats; the explorer counts bits, with log base 2"),
        Mistake(0.125, "0.125 is each weight (1/8); the entropy sums -w log2(w) over the row"),
        Mistake(1.0, "1 is the sum of the weights; the entropy sums -w log2(w) over the row"),
        Mistake(
            0.0,
            "0 bits is a one-hot row (all weight on one key); equal scores give the flattest row, the largest entropy",
        ),
    ],
    hint="equal scores give equal weights 1/8; add up -w log2(w)",
    section="2. Softmax; 11. Explore",
    minutes=3,
)

numeric(
    "01.score_variance",
    "The variance of an unscaled score",
    "The query q and the key k each have d_k = 64 entries, all drawn independently from N(0, 1). "
    "Predict the variance of the raw score q·k (no division by sqrt(d_k)).",
    reference=lambda: sum(1.0 * 1.0 for _ in range(64)),  # 64 independent products, each of variance 1 x 1
    tolerance=0.5,
    mistakes=lambda: [
        Mistake(8.0, "8 = sqrt(64) is the standard deviation of q·k; the variance is its square"),
        Mistake(1.0, "1 is the variance after dividing by sqrt(d_k); without the division it grows with d_k"),
        Mistake(
            4096.0,
            "64² would be the variance of 64 times ONE product; q·k adds 64 independent products, "
            "and variances of independent terms add: 64 x 1",
        ),
        Mistake(0.0, "0 is the mean of q·k; its variance is the sum of the 64 products' variances"),
    ],
    hint="q·k is a sum of 64 independent products q_i k_i, each of mean 0 and variance 1",
    section="3. Why divide by √d_k",
    minutes=3,
)

numeric(
    "01.score_memory",
    "How much memory the score matrix takes",
    "Our attention function keeps the (batch, heads, L, L) matrix of scores in float32. With batch 1, "
    "8 heads and L = 1024 it takes 32 MiB. How many MiB does it take at L = 4096 (same batch and heads)?",
    reference=lambda: 1 * 8 * 4096 * 4096 * 4 / 2**20,
    tolerance=0.01,
    relative=True,
    mistakes=lambda: [
        Mistake(128.0, "x4 is linear in L; the matrix has L x L entries, so 4 times the length is 16 times the memory"),
        Mistake(64.0, "the length grew 4 times, not 2, and the memory grows with the square of it"),
        Mistake(2048.0, "x64 would be cubic in L; the matrix has L x L entries (the d_k axis is summed away)"),
    ],
    hint="count the entries of an L x L matrix",
    section="10. The cost",
    minutes=3,
)

# ----------------------------------------------------------------------------- conceptual: choices

choice(
    "01.diagonal_cause",
    "Why the diagonal is bright",
    "In section 6 the weights of both heads have a bright diagonal: most tokens put their largest "
    "weight on themselves. Which explanation holds?",
    options={
        "a": "The causal mask adds weight to the diagonal.",
        "b": "The heads learned to attend to their own token.",
        "c": "Queries and keys were the same vectors, so a token's score with itself, |x_i|² / sqrt(d), "
        "is usually the largest in its row.",
        "d": "Softmax always gives its largest weight to the diagonal entry.",
    },
    correct="c",
    why="Section 6 passed the same slice as Q, K and V. By Cauchy-Schwarz x_i·x_j <= |x_i| |x_j|, so the "
    "diagonal wins whenever x_i is at least as long as the others, and usually even otherwise; with "
    "random projections W_Q != W_K section 6 measured the diagonal winning only about as often as chance.",
    why_not={
        "a": "the causal mask only removes keys above the diagonal (weight 0 there); it adds nothing to the "
        "diagonal, and section 6's projected run keeps the mask but loses the bright diagonal.",
        "b": "nothing was trained in section 6: the vectors are random and there are no learned weights.",
        "d": "softmax gives its largest weight to the largest score, wherever it is; with projected queries "
        "and keys the diagonal wins only about as often as chance.",
    },
    section="6. Multi-head attention",
    minutes=3,
)

choice(
    "01.dropout_row_sums",
    "A row of weights after dropout",
    "A model trains with dropout p = 0.1 on its attention weights, applied as torch applies it. After "
    "dropout, what is true of one row of weights?",
    options={
        "a": "It still sums to exactly 1: dropout renormalises the row.",
        "b": "It sums to 0.9: a tenth of the weight is dropped.",
        "c": "Its sum varies from row to row but is 1 on average: dropped weights become 0 and the "
        "survivors are divided by 0.9.",
        "d": "The softmax is computed again over the surviving keys, so the row sums to 1 over fewer keys.",
    },
    correct="c",
    why="Inverted dropout zeroes each weight with probability p and divides the survivors by 1 - p, so "
    "every weight keeps its expected value; a row's sum is random, 1 on average (section 9 measured it).",
    why_not={
        "a": "nothing renormalises after dropout: section 9 measured rows summing to less and to more than 1.",
        "b": "that would be dropout without rescaling; torch divides the survivors by 1 - p = 0.9, so the "
        "expected sum stays 1, and a single row's sum is random, not 0.9.",
        "d": "dropout acts after the softmax, on the weights; the softmax is not computed again.",
    },
    section="9. Dropout",
    minutes=3,
)

# ----------------------------------------------------------------------------- modify: softmax with a temperature

_SOFTMAX_RULE = forbid(
    "torch.softmax",
    "torch.Tensor.softmax",
    "torch.nn.functional.softmax",
    "torch.special.softmax",
    "torch.log_softmax",
    "torch.Tensor.log_softmax",
    "torch.nn.functional.log_softmax",
    "torch.nn.Softmax",
    "torch.nn.functional.scaled_dot_product_attention",
    "torch.logsumexp",
    "torch.Tensor.logsumexp",
    says="write the softmax yourself with exp, max and sum (torch.softmax, Tensor.softmax, F.softmax, "
    "log_softmax, logsumexp, nn.Softmax and F.scaled_dot_product_attention are not allowed)",
)


def _softmax_temperature_reference(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    scaled = scores / temperature
    scaled = scaled - scaled.max(dim=-1, keepdim=True).values  # same result, and exp cannot overflow
    e = scaled.exp()
    return e / e.sum(dim=-1, keepdim=True)


def _stable(s: torch.Tensor, dim: int = -1) -> torch.Tensor:
    e = (s - s.max(dim=dim, keepdim=True).values).exp()
    return e / e.sum(dim=dim, keepdim=True)


def _softmax_temperature_mistakes():
    return [
        Mistake(lambda s, t: torch.softmax(s / t, dim=-1), "write the softmax yourself"),
        Mistake(lambda s, t: (s / t).softmax(-1), "write the softmax yourself"),
        Mistake(lambda s, t: F.softmax(s / t, dim=-1), "write the softmax yourself"),
        Mistake(
            lambda s, t: ((s / t) - torch.logsumexp(s / t, dim=-1, keepdim=True)).exp(), "write the softmax yourself"
        ),
        Mistake(lambda s, t: _stable(s), "the temperature is ignored: divide the scores by it before the exp"),
        Mistake(
            lambda s, t: _stable(s * t),
            "you multiplied the scores by the temperature; softmax(s / T) divides, "
            "so that a low T sharpens the weights",
        ),
        Mistake(
            lambda s, t: _stable(s / t, dim=0),
            "the softmax runs over the wrong axis: each row (the last axis, dim=-1) must sum to 1",
        ),
        Mistake(
            lambda s, t: (s / t).exp() / (s / t).exp().sum(-1, keepdim=True),
            "exp overflowed to inf (and inf / inf is NaN) for scores near 1000: subtract each row's maximum "
            "before the exp",
        ),
        Mistake(
            lambda s, t: ((s / t) - (s / t).max()).exp() / ((s / t) - (s / t).max()).exp().sum(-1, keepdim=True),
            "you subtracted the maximum of the whole tensor: a row far below it underflows to 0 / 0; "
            "subtract each row's own maximum (max(dim=-1, keepdim=True))",
        ),
    ]


@exercise(
    "01.softmax_temperature",
    "A numerically stable softmax with a temperature",
    "Change section 2's softmax into softmax_with_temperature(scores, temperature), returning "
    "softmax(scores / temperature) over the LAST axis, for tensors of any number of axes. It must not "
    "produce NaN for scores as large as 1000, nor for rows of very different sizes in one tensor.",
    reference=_softmax_temperature_reference,
    mistakes=_softmax_temperature_mistakes,
    kind="modify",
    rules=[_SOFTMAX_RULE],
    section="2. Softmax",
    minutes=8,
)
def check_softmax_temperature(fn) -> None:
    def want(scores, temperature):
        return torch.softmax(scores / temperature, dim=-1)

    generator = torch.Generator().manual_seed(1)
    scores = torch.randn(3, 5, generator=generator) * 3
    for temperature in (0.5, 4.0, 1.0):
        expect_same(fn, want, scores, temperature, what=f"softmax_with_temperature(scores, {temperature})")
    expect_same(fn, want, torch.randn(2, 4, 6, generator=generator), 2.0, what="a (2, 4, 6) tensor")
    expect_same(fn, want, torch.tensor([2.0, 1.0, 0.1]), 0.25, what="a 1-D tensor")
    expect_same(fn, want, torch.tensor([[1000.0, 1001.0, 999.0]]), 1.0, what="scores near 1000")
    expect_same(
        fn, want, torch.tensor([[0.0, 1.0, 2.0], [1000.0, 1001.0, 999.0]]), 1.0, what="rows of very different sizes"
    )
    expect_same(fn, want, torch.tensor([[3.0, 1.0, 2.0]]), 0.01, what="a very low temperature (0.01)")


# ----------------------------------------------------------------------------- modify: a causal mask for L_q != L_k


def _causal_mask_reference(l_q: int, l_k: int) -> torch.Tensor:
    return torch.ones(l_q, l_k, dtype=torch.bool).tril(diagonal=l_k - l_q)  # query i sits at position i + l_k - l_q


def _causal_mask_from_definition(l_q: int, l_k: int) -> torch.Tensor:
    return torch.tensor([[j <= i + (l_k - l_q) for j in range(l_k)] for i in range(l_q)], dtype=torch.bool)


def _causal_mask_mistakes():
    def ones(a, b):
        return torch.ones(a, b, dtype=torch.bool)

    return [
        Mistake(
            lambda a, b: ones(a, b).tril(),
            "your mask is aligned top-left (query i sees keys 0..i), as torch's is_causal=True is; here the "
            "queries are the LAST l_q positions, so shift the diagonal by l_k - l_q",
        ),
        Mistake(
            lambda a, b: ones(a, b).triu(b - a),
            "True above the diagonal lets each query see the future; the allowed keys are the past (tril)",
        ),
        Mistake(
            lambda a, b: ~ones(a, b).tril(b - a),
            "True must mean 'may attend' (torch SDPA's convention); you returned the masked positions",
        ),
        Mistake(
            lambda a, b: ones(a, b).tril(b - a - 1),
            "each query must see its own position: the shifted diagonal must be True",
        ),
        Mistake(
            lambda a, b: ones(a, b).tril(a - b),
            "the shift has the wrong sign: query i sits at position i + l_k - l_q, later than i",
        ),
        Mistake(lambda a, b: torch.ones(a, b).tril(b - a), "the mask must be boolean (dtype torch.bool)"),
    ]


@exercise(
    "01.causal_mask",
    "A causal mask when the queries are the last positions",
    "When a model generates text it keeps the keys of the words so far and adds queries only for the "
    "newest ones: the l_q queries are the LAST l_q positions of l_k. Query i sits at position "
    "i + l_k - l_q and may attend to keys 0 .. i + l_k - l_q. Change section 5's causal_mask into "
    "causal_mask(l_q, l_k) returning that boolean (l_q, l_k) mask, True = may attend. With l_q = l_k it "
    "is section 5's mask.",
    reference=_causal_mask_reference,
    mistakes=_causal_mask_mistakes,
    kind="modify",
    section="5. Masks; 8. Cross-attention",
    minutes=8,
)
def check_causal_mask(fn) -> None:
    for l_q, l_k in ((4, 4), (2, 5), (1, 6), (3, 7), (1, 1)):
        mask = fn(l_q, l_k)
        assert isinstance(mask, torch.Tensor), (
            f"causal_mask({l_q}, {l_k}) should return a tensor, got {type(mask).__name__}"
        )
        assert mask.dtype == torch.bool, (
            f"causal_mask({l_q}, {l_k}) has dtype {mask.dtype}: the mask must be boolean (dtype torch.bool)"
        )
        expect_same(fn, _causal_mask_from_definition, l_q, l_k, what=f"causal_mask({l_q}, {l_k})")


# ----------------------------------------------------------------------------- retype: the padding mask


def _padding_mask_reference(lengths: list[int], max_len: int) -> torch.Tensor:
    positions = torch.arange(max_len)  # (max_len,)
    real = positions[None, :] < torch.tensor(lengths)[:, None]  # (batch, max_len), True at real tokens
    return real[:, None, None, :]  # (batch, 1, 1, max_len)


def _padding_mask_from_definition(lengths: list[int], max_len: int) -> torch.Tensor:
    return torch.tensor([[j < n for j in range(max_len)] for n in lengths], dtype=torch.bool)[:, None, None, :]


def _padding_mask_mistakes():
    def real(lengths, n):
        return torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]

    return [
        Mistake(
            lambda lengths, n: real(lengths, n),
            "shape (batch, max_len) does not broadcast over (batch, heads, L_q, L_k) scores: "
            "return (batch, 1, 1, max_len), e.g. real[:, None, None, :]",
        ),
        Mistake(
            lambda lengths, n: ~real(lengths, n)[:, None, None, :],
            "True must mark the real tokens (True = may attend); you marked the padding",
        ),
        Mistake(
            lambda lengths, n: (torch.arange(n)[None, :] <= torch.tensor(lengths)[:, None])[:, None, None, :],
            "one position too many: a sequence of n real tokens has positions 0..n-1 (use <, not <=)",
        ),
        Mistake(
            lambda lengths, n: real(lengths, max(lengths))[:, None, None, :],
            "the width must be max_len, not the longest sequence: a batch may be padded further",
        ),
    ]


@exercise(
    "01.padding_mask",
    "The padding mask",
    "Write padding_mask(lengths, max_len): lengths is a list with the number of real tokens of each "
    "sequence in a batch padded to max_len. Return a boolean tensor of shape (batch, 1, 1, max_len), "
    "True at the real tokens, so that it broadcasts over heads and queries of (batch, heads, L_q, L_k) scores.",
    reference=_padding_mask_reference,
    mistakes=_padding_mask_mistakes,
    kind="retype",
    section="5. Masks",
    minutes=4,
)
def check_padding_mask(fn) -> None:
    for lengths, max_len in (([3, 1, 2], 5), ([4, 2], 4), ([1], 1), ([0, 3], 3)):
        mask = fn(lengths, max_len)
        assert isinstance(mask, torch.Tensor) and mask.dtype == torch.bool, (
            f"padding_mask({lengths}, {max_len}) must return a boolean tensor, got "
            f"{getattr(mask, 'dtype', type(mask).__name__)}"
        )
        expect_same(fn, _padding_mask_from_definition, lengths, max_len, what=f"padding_mask({lengths}, {max_len})")


# ----------------------------------------------------------------------------- debug: merging the heads

BROKEN_MERGE_HEADS = """def merge_heads(x):                            # x: (batch, heads, length, d_head)
    batch, heads, length, d_head = x.shape
    return x.reshape(batch, length, heads * d_head)
"""


def _merge_heads_reference(x: torch.Tensor) -> torch.Tensor:
    batch, heads, length, d_head = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * d_head)  # heads next to the features, then merge


def _merge_heads_from_definition(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x[:, h] for h in range(x.shape[1])], dim=-1)  # head 0's features, then head 1's, ...


def _merge_heads_mistakes():
    return [
        Mistake(
            given_function(BROKEN_MERGE_HEADS, "merge_heads", "01.merge_heads"),
            "that is the broken function unchanged: reshape alone mixes positions and heads; move the heads "
            "axis next to the features first (transpose(1, 2)), then reshape",
        ),
        Mistake(
            lambda x: x.permute(0, 2, 3, 1).reshape(x.shape[0], x.shape[2], -1),
            "the features are interleaved by head (d_head before heads); head h's features must be one "
            "contiguous block [h * d_head : (h + 1) * d_head]",
        ),
        Mistake(
            lambda x: x.transpose(1, 2),
            "the heads are not concatenated: the result must be (batch, length, heads * d_head)",
        ),
    ]


@exercise(
    "01.merge_heads",
    "Debug: merging the heads",
    "The merge_heads below runs without an error but gives wrong numbers. Find the bug and fix it: for x of shape (batch, heads, length, d_head) it must return (batch, length, heads * d_head), "
    "where features [h * d_head : (h + 1) * d_head] of position t are head h's output at position t.",
    reference=_merge_heads_reference,
    mistakes=_merge_heads_mistakes,
    kind="debug",
    given=BROKEN_MERGE_HEADS,
    section="6. Multi-head attention",
    minutes=5,
)
def check_merge_heads(fn) -> None:
    generator = torch.Generator().manual_seed(6)
    cases = [
        torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5),
        torch.randn(1, 4, 3, 2, generator=generator),
        torch.randn(2, 1, 3, 4, generator=generator),  # one head: nothing to mix
        torch.randn(2, 4, 1, 3, generator=generator),
    ]  # one position
    for x in cases:
        expect_same(fn, _merge_heads_from_definition, x, what=f"merge_heads of a {tuple(x.shape)} tensor")


# ----------------------------------------------------------------------------- debug: masked attention

_ATTENTION_RULE = forbid(
    "torch.nn.functional.scaled_dot_product_attention",
    "torch.nn.MultiheadAttention",
    says="fix the function itself: torch's F.scaled_dot_product_attention and nn.MultiheadAttention are not allowed",
)

BROKEN_ATTENTION = """def my_attention(q, k, v, mask):
    scores = q @ k.transpose(-2, -1) / math.sqrt(k.shape[-2])
    scores = scores.masked_fill(~mask, 0.0)
    weights = torch.softmax(scores, dim=-2)
    return weights @ v, weights
"""


def _masked_attention_reference(q, k, v, mask):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # scale by sqrt(d_k), the feature axis
    scores = scores.masked_fill(~mask, float("-inf"))  # masked keys: weight e^-inf = 0
    weights = torch.softmax(scores, dim=-1)  # over the keys
    weights = weights.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)  # a row with no allowed key: 0, not NaN
    return weights @ v, weights


def _masked_attention_independent(q, k, v, mask):
    """torch's SDPA for the output; the weights from their definition, row by row where a key is allowed."""
    output = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    has_key = mask.expand(*q.shape[:-1], k.shape[-2]).any(dim=-1, keepdim=True)
    output = torch.where(has_key, output, torch.zeros(()))  # torch < 2.5 gives NaN on empty rows
    scores = torch.einsum("...qd,...kd->...qk", q, k) * q.shape[-1] ** -0.5
    weights = torch.exp(scores - scores.amax(dim=-1, keepdim=True)) * mask
    weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-30)
    return output, weights


def _masked_attention_mistakes():
    def nan_rows(q, k, v, mask):  # every bug fixed but the empty rows
        scores = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        return weights @ v, weights

    def zero_fill(q, k, v, mask):
        scores = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~mask, 0.0)
        weights = torch.softmax(scores, dim=-1).masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
        return weights @ v, weights

    def sqrt_of_keys(q, k, v, mask):
        scores = (q @ k.transpose(-2, -1) / math.sqrt(k.shape[-2])).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1).masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
        return weights @ v, weights

    def over_queries(q, k, v, mask):
        scores = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-2).nan_to_num(0.0)
        return weights @ v, weights

    def minus_1e9(q, k, v, mask):  # the additive mask many libraries use
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) + torch.where(mask, 0.0, -1e9)
        weights = torch.softmax(scores, dim=-1)
        return weights @ v, weights

    def zero_weights(q, k, v, mask):  # the right output from a correct function, weights not returned
        output, weights = _masked_attention_reference(q, k, v, mask)
        return output, torch.zeros_like(weights)

    def torch_output(q, k, v, mask):
        output = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return output, torch.zeros(*q.shape[:-1], k.shape[-2])

    return [
        Mistake(
            given_function(BROKEN_ATTENTION, "my_attention", "01.masked_attention"),
            "that is the function as given: look at what the scale takes the square root of, "
            "at the value masked scores get, and at the axis of the softmax",
        ),
        Mistake(
            nan_rows,
            "a row with no allowed key gives NaN (a softmax of only -inf is 0/0): set the weights "
            "of such rows to 0 (mask.any(dim=-1, keepdim=True))",
        ),
        Mistake(zero_fill, "a masked score of 0 still gets weight e^0: fill masked scores with float('-inf')"),
        Mistake(
            sqrt_of_keys,
            "you divide by sqrt(k.shape[-2]), the square root of the number of keys; the scale "
            "is sqrt(d_k), the size of the last axis of q and k",
        ),
        Mistake(
            over_queries,
            "the softmax runs over the queries (dim=-2): each query's row over the keys (dim=-1) must sum to 1",
        ),
        Mistake(
            minus_1e9,
            "adding -1e9 instead of filling with -inf gives a row with no allowed key uniform "
            "weights over keys it may not see; such a row must get all-zero weights",
        ),
        Mistake(
            zero_weights,
            "the output is right but the weights are not: return the weights you multiplied v with, not zeros",
        ),
        Mistake(torch_output, "fix the function itself"),
    ]


@exercise(
    "01.masked_attention",
    "Debug: masked attention",
    "The my_attention below has bugs. Fix them. my_attention(q, k, v, mask) must return "
    "(output, weights) = (softmax(q k^T / sqrt(d_k)) v, the weights), mask boolean and broadcastable to "
    "(..., L_q, L_k), True = may attend. Masked keys get weight exactly 0; a query whose mask row is all "
    "False gets all-zero weights and output, not NaN (what torch's SDPA returns from torch 2.5 on; before "
    "2.5 it returned NaN there). It must work when L_q, L_k and d_k all differ.",
    reference=_masked_attention_reference,
    mistakes=_masked_attention_mistakes,
    kind="debug",
    given=BROKEN_ATTENTION,
    rules=[_ATTENTION_RULE],
    section="4. Step by step; 5. Masks; 8. Cross-attention",
    minutes=10,
)
def check_masked_attention(fn) -> None:
    generator = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 2, 4, 8, generator=generator) for _ in range(3))
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    padding = (torch.arange(4)[None, :] < torch.tensor([4, 2])[:, None])[:, None, None, :]
    empty_row = causal.clone()
    empty_row[2] = False
    for name, mask in (
        ("a causal mask", causal),
        ("a padding mask", padding),
        ("causal and padding", causal & padding),
        ("a mask with an all-False row", empty_row),
    ):
        _compare(fn, q, k, v, mask, name)
    q_x = torch.randn(2, 3, 8, generator=generator)  # cross-attention: L_q=3, L_k=5, d_k=8, d_v=6
    k_x, v_x = torch.randn(2, 5, 8, generator=generator), torch.randn(2, 5, 6, generator=generator)
    cross_padding = (torch.arange(5)[None, :] < torch.tensor([5, 2])[:, None])[:, None, :]  # (2, 1, 5)
    _compare(fn, q_x, k_x, v_x, cross_padding, "cross-attention (L_q=3, L_k=5, d_k=8, d_v=6) with padding")


def _compare(fn, q, k, v, mask, name) -> None:
    got = fn(q.clone(), k.clone(), v.clone(), mask.clone())
    assert isinstance(got, tuple) and len(got) == 2, (
        f"with {name}: return a pair (output, weights), got {type(got).__name__}"
    )
    want = _masked_attention_independent(q, k, v, mask)
    for part, value, expected in (("output", got[0], want[0]), ("weights", got[1], want[1])):
        assert isinstance(value, torch.Tensor) and value.shape == expected.shape, (
            f"with {name}: the {part} should be a tensor of shape {tuple(expected.shape)}, got "
            f"{tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}"
        )
    what = f"with {name}, (output, weights)"
    try:
        expect_same(fn, _masked_attention_independent, q, k, v, mask, what=what)
    except AssertionError as err:
        if not str(err).startswith(what):  # a typical mistake, diagnosed by its own message
            raise
        wrong = [
            f"the {part} by up to {(value - expected).abs().nan_to_num(float('inf')).max():.3g}"
            for part, value, expected in (("output differs", got[0], want[0]), ("weights differ", got[1], want[1]))
            if not torch.allclose(value, expected, atol=1e-5, equal_nan=False)
        ]
        raise AssertionError(
            f"with {name}: " + " and ".join(wrong) + " from the expected values: weights = "
            "softmax(q k^T / sqrt(d_k)) with masked keys exactly 0 and rows with no allowed key "
            "all 0, output = weights @ v"
        ) from None
