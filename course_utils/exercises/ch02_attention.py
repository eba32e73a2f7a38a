"""Chapter 02 exercises on attention as a module, the first on the chapter's page (sections 2 and 3).

Debug: a multi-head attention with two bugs. Retype: torch's key padding mask. Modify: make a
position-blind attention layer reverse a sequence by adding one thing, a mask.
:mod:`course_utils.exercises.ch02`, which holds the chapter's other exercises, imports this module
first, so these are registered before its own, in the chapter's order.

Every check compares with an independent reference computed here (torch's own
``nn.MultiheadAttention``, a mask built position by position), on several inputs including edge
cases, and each typical mistake is listed with the message that diagnoses it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import Mistake, exercise, expect_same, forbid, given_function

_MHA = "2. Multi-head attention as a module"


def _boolean(got, what: str, message: str) -> None:
    assert isinstance(got, torch.Tensor), f"{what} should be a torch.Tensor, got {type(got).__name__}"
    assert got.dtype == torch.bool, f"{what} has dtype {got.dtype}: {message}"


# ----------------------------------------------------------------------------- 02.fix_multi_head (debug)

FIX_MULTI_HEAD_GIVEN = '''
def multi_head(x, w_q, w_k, w_v, w_o, num_heads):
    """Self-attention of x (batch, L, d) with (d, d) weights used as x @ w: split into heads,
    attend, merge, project. It runs and returns the right shape, but gives wrong numbers."""
    batch, length, d = x.shape
    d_head = d // num_heads
    q = (x @ w_q).reshape(batch, num_heads, length, d_head)
    k = (x @ w_k).reshape(batch, num_heads, length, d_head)
    v = (x @ w_v).reshape(batch, num_heads, length, d_head)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    weights = torch.softmax(scores, dim=-1)
    out = (weights @ v).reshape(batch, length, d)
    return out @ w_o
'''


def _multi_head_reference(x, w_q, w_k, w_v, w_o, num_heads):
    """torch's nn.MultiheadAttention holding the same weights (it stores W^T, packed)."""
    d = x.shape[-1]
    torch_mha = nn.MultiheadAttention(d, num_heads, bias=False, batch_first=True)
    with torch.no_grad():
        torch_mha.in_proj_weight.copy_(torch.cat([w_q.T, w_k.T, w_v.T]))
        torch_mha.out_proj.weight.copy_(w_o.T)
        out, _ = torch_mha(x, x, x, need_weights=False)
    return out


def _fixed_multi_head(x, w_q, w_k, w_v, w_o, num_heads):
    batch, length, d = x.shape
    d_head = d // num_heads

    def split(t):  # (batch, L, d) -> (batch, heads, L, d_head): head h owns features h*d_head..
        return t.reshape(batch, length, num_heads, d_head).transpose(1, 2)

    q, k, v = split(x @ w_q), split(x @ w_k), split(x @ w_v)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_head)  # each head sums d_head products
    weights = torch.softmax(scores, dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(batch, length, d)  # undo the split
    return out @ w_o


def _course_attention(x, w_q, w_k, w_v, w_o, h):
    from course_utils.layers.attention import scaled_dot_product_attention

    b, n, d = x.shape

    def split(t):
        return t.reshape(b, n, h, d // h).transpose(1, 2)

    out, _ = scaled_dot_product_attention(split(x @ w_q), split(x @ w_k), split(x @ w_v))
    return out.transpose(1, 2).reshape(b, n, d) @ w_o


def _multi_head_mistakes():
    def split_fixed_only(x, w_q, w_k, w_v, w_o, h):
        b, n, d = x.shape

        def split(t):
            return t.reshape(b, n, h, d // h).transpose(1, 2)

        weights = torch.softmax(split(x @ w_q) @ split(x @ w_k).transpose(-2, -1) / math.sqrt(d), dim=-1)
        return (weights @ split(x @ w_v)).transpose(1, 2).reshape(b, n, d) @ w_o

    def scale_fixed_only(x, w_q, w_k, w_v, w_o, h):
        b, n, d = x.shape

        def split(t):
            return t.reshape(b, h, n, d // h)

        weights = torch.softmax(split(x @ w_q) @ split(x @ w_k).transpose(-2, -1) / math.sqrt(d // h), dim=-1)
        return (weights @ split(x @ w_v)).reshape(b, n, d) @ w_o

    def merge_not_undone(x, w_q, w_k, w_v, w_o, h):
        b, n, d = x.shape

        def split(t):
            return t.reshape(b, n, h, d // h).transpose(1, 2)

        weights = torch.softmax(split(x @ w_q) @ split(x @ w_k).transpose(-2, -1) / math.sqrt(d // h), dim=-1)
        return (weights @ split(x @ w_v)).reshape(b, n, d) @ w_o

    def softmax_over_queries(x, w_q, w_k, w_v, w_o, h):
        b, n, d = x.shape

        def split(t):
            return t.reshape(b, n, h, d // h).transpose(1, 2)

        weights = torch.softmax(split(x @ w_q) @ split(x @ w_k).transpose(-2, -1) / math.sqrt(d // h), dim=-2)
        return (weights @ split(x @ w_v)).transpose(1, 2).reshape(b, n, d) @ w_o

    return [
        Mistake(
            given_function(FIX_MULTI_HEAD_GIVEN, "multi_head", "02.fix_multi_head"),
            "that is the function as given: it has two bugs, one in how the heads are cut out and one in the scale",
        ),
        Mistake(
            split_fixed_only,
            "the heads are right now; one bug left: the scale. Each head's dot product "
            "sums d_head products, so divide by sqrt(d_head), not sqrt(d)",
        ),
        Mistake(
            scale_fixed_only,
            "the scale is right now; one bug left: reshape(batch, num_heads, L, d_head) "
            "cuts the (L, d) matrix into blocks of ROWS, so a head mixes positions. Head h "
            "owns FEATURES h*d_head..(h+1)*d_head: reshape to (batch, L, num_heads, d_head), "
            "then transpose(1, 2)",
        ),
        Mistake(
            merge_not_undone,
            "the merge must undo the split: transpose(1, 2) back to (batch, L, heads, "
            "d_head) before reshaping to (batch, L, d)",
        ),
        Mistake(softmax_over_queries, "softmax over the KEYS (the last axis): each query's weights sum to 1"),
        Mistake(lambda x, w_q, w_k, w_v, w_o, h: _multi_head_reference(x, w_q, w_k, w_v, w_o, h), "fix the function"),
        Mistake(_course_attention, "or the course's (course_utils.layers.attention)"),
    ]


@exercise(
    "02.fix_multi_head",
    "Debug a multi-head attention",
    "multi_head(x, w_q, w_k, w_v, w_o, num_heads) below computes self-attention with the four (d, d) "
    "weights used as x @ w, no biases. It runs and returns the right shape, but its numbers are wrong "
    "whenever num_heads > 1. Find the two bugs and fix them. Handing the job to torch's attention is "
    "against the rules.",
    reference=_fixed_multi_head,
    mistakes=_multi_head_mistakes,
    kind="debug",
    given=FIX_MULTI_HEAD_GIVEN,
    rules=[
        forbid(
            "torch.nn.MultiheadAttention",
            "torch.nn.functional.multi_head_attention_forward",
            "torch.nn.functional.scaled_dot_product_attention",
            "course_utils.layers.attention",
            says="fix the function: do not hand the job to torch's attention (nn.MultiheadAttention, "
            "F.scaled_dot_product_attention) or the course's (course_utils.layers.attention)",
        )
    ],
    section=_MHA,
    minutes=10,
)
def check_fix_multi_head(fn) -> None:
    generator = torch.Generator().manual_seed(0)
    # several heads (where the bugs show), one head (where they do not), a single position
    for batch, length, d, heads in ((2, 5, 8, 2), (1, 7, 12, 3), (3, 4, 8, 1), (2, 1, 8, 4), (1, 6, 16, 8)):
        x = torch.randn(batch, length, d, generator=generator)
        w_q, w_k, w_v, w_o = (torch.randn(d, d, generator=generator) / math.sqrt(d) for _ in range(4))
        expect_same(
            fn,
            _multi_head_reference,
            x,
            w_q,
            w_k,
            w_v,
            w_o,
            heads,
            atol=1e-4,
            what=f"multi_head on x of shape {(batch, length, d)} with {heads} heads",
            hint="compare with the module of section 2: how split_heads cuts the features",
        )


# ----------------------------------------------------------------------------- 02.torch_key_padding_mask (retype)


def _torch_key_padding_reference(lengths: list[int], max_len: int) -> torch.Tensor:
    return torch.tensor(
        [[position >= length for position in range(max_len)] for length in lengths], dtype=torch.bool
    ).reshape(len(lengths), max_len)


def _torch_key_padding_mistakes():
    return [
        Mistake(
            lambda lengths, n: torch.arange(n)[None, :] < torch.tensor(lengths)[:, None],
            "that is the course's convention (True = real key); torch's key_padding_mask is the "
            "opposite, True = padding to IGNORE: flip it with ~",
        ),
        Mistake(
            lambda lengths, n: (torch.arange(n)[None, :] >= torch.tensor(lengths)[:, None])[:, None, None, :],
            "torch's key_padding_mask is (batch, L_k), without the head and query axes",
        ),
        Mistake(
            lambda lengths, n: torch.arange(n)[None, :] > torch.tensor(lengths)[:, None],
            "off by one: a sequence of length L has real tokens at 0..L-1, so position L is already padding",
        ),
        Mistake(
            lambda lengths, n: (torch.arange(n)[None, :] >= torch.tensor(lengths)[:, None]).float(),
            "give a boolean mask: torch reads a float mask as numbers ADDED to the scores",
        ),
    ]


@exercise(
    "02.torch_key_padding_mask",
    "A key padding mask in torch's convention",
    "torch.nn.MultiheadAttention and nn.TransformerEncoderLayer take key_padding_mask of shape "
    "(batch, L) where True means 'IGNORE this key' (the opposite of the course's masks). Write "
    "torch_key_padding_mask(lengths, max_len) for a batch padded on the right: lengths[b] real "
    "tokens, then padding up to max_len.",
    reference=_torch_key_padding_reference,
    mistakes=_torch_key_padding_mistakes,
    kind="retype",
    section=_MHA,
    minutes=4,
)
def check_torch_key_padding_mask(fn) -> None:
    _boolean(fn([2, 1], 2), "the mask", "give a boolean mask: torch reads a float mask as numbers ADDED to the scores")
    for lengths, max_len in (([4, 1, 3], 4), ([2], 2), ([1, 6, 3, 5], 7)):
        mask = expect_same(
            fn, _torch_key_padding_reference, lengths, max_len, what=f"torch_key_padding_mask({lengths}, {max_len})"
        )
    torch.manual_seed(0)  # and it makes torch ignore the padding: a padding key's value changes nothing
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    x = torch.randn(4, 7, 8)
    noisy = x.clone()
    noisy[0, 1:] += 100.0
    with torch.no_grad():
        a, _ = mha(x, x, x, key_padding_mask=mask)
        b, _ = mha(noisy, noisy, noisy, key_padding_mask=mask)
    assert torch.allclose(a[0, 0], b[0, 0], atol=1e-5), "changing a padding key changed a real token's output"


# ----------------------------------------------------------------------------- 02.reversal_mask (modify)


def _reversal_mask_reference(lengths: list[int], max_len: int) -> torch.Tensor:
    mask = torch.zeros(len(lengths), max_len, max_len, dtype=torch.bool)
    for b, length in enumerate(lengths):
        for i in range(max_len):
            if i < length:
                mask[b, i, length - 1 - i] = True  # a real query sees only its mirror
            else:
                mask[b, i, :length] = True  # a padding query: the real keys, as usual
    return mask


def _reversal_mask_mistakes():
    def ignores_length(lengths, n):
        return torch.eye(n, dtype=torch.bool).flip(-1).expand(len(lengths), n, n).clone()

    def off_by_one(lengths, n):
        mask = _reversal_mask_reference(lengths, n)
        for b, length in enumerate(lengths):
            for i in range(length):
                mask[b, i] = False
                mask[b, i, (length - i) % n] = True
        return mask

    def padding_rows_empty(lengths, n):
        mask = _reversal_mask_reference(lengths, n)
        for b, length in enumerate(lengths):
            mask[b, length:] = False
        return mask

    def causal(lengths, n):
        return torch.ones(n, n, dtype=torch.bool).tril().expand(len(lengths), n, n).clone()

    return [
        Mistake(
            ignores_length,
            "key max_len-1-i is the mirror only in a sequence of full length: use each "
            "sequence's own length L, key L-1-i",
        ),
        Mistake(off_by_one, "off by one: positions count from 0, so position i's mirror is L-1-i"),
        Mistake(
            lambda lengths, n: ~_reversal_mask_reference(lengths, n),
            "True means 'may attend' in the course's convention: you marked the keys to HIDE",
        ),
        Mistake(
            lambda lengths, n: _reversal_mask_reference(lengths, n).float(),
            "give a boolean mask (True = may attend), not numbers",
        ),
        Mistake(
            padding_rows_empty,
            "a padding query must still see something (the real keys, as with a "
            "key padding mask): a row with no allowed key gives NaN in torch",
        ),
        Mistake(
            causal,
            "a causal mask lets query i see keys 0..i and averages them; reversal needs "
            "exactly one key per query, its mirror",
        ),
    ]


@exercise(
    "02.reversal_mask",
    "Make a position-blind layer reverse, by adding one thing",
    "Attention without positional encodings cannot reverse a sequence: it is permutation equivariant "
    "(section 3). Add ONE thing, without touching the embeddings or the weights: a mask. Write "
    "reversal_mask(lengths, max_len) returning a boolean (batch, max_len, max_len) mask in the "
    "course's convention (True = may attend) for a batch padded on the right (lengths[b] real tokens) "
    "with which ANY attention layer outputs, at every real position i, a function of the token at "
    "L-1-i alone. A padding query may attend to the real keys of its sequence (as a key padding mask "
    "allows). Where did the positional information come from?",
    reference=_reversal_mask_reference,
    mistakes=_reversal_mask_mistakes,
    kind="modify",
    section="3. Attention alone does not know the order",
    minutes=8,
)
def check_reversal_mask(fn) -> None:
    _boolean(fn([3, 1], 3), "the mask", "give a boolean mask (True = may attend), not numbers")
    for lengths, max_len in (([5, 3, 1], 5), ([2], 2), ([1], 1), ([7, 4, 6, 2], 8)):
        mask = expect_same(fn, _reversal_mask_reference, lengths, max_len, what=f"reversal_mask({lengths}, {max_len})")
    torch.manual_seed(0)  # and with it, torch's own attention (random weights) reverses
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    x = torch.randn(4, 8, 8)
    with torch.no_grad():
        out, _ = mha(x, x, x, attn_mask=(~mask).repeat_interleave(2, dim=0))  # torch: True = NOT allowed
        per_token = mha.out_proj(x @ mha.in_proj_weight[16:].T + mha.in_proj_bias[16:])  # W_O(W_V x + b)
    for b, length in enumerate([7, 4, 6, 2]):
        assert torch.allclose(out[b, :length], per_token[b, :length].flip(0), atol=1e-5), (
            f"with your mask, torch's attention does not reverse sequence {b}"
        )
