"""Chapter 02 exercises.

Retype (a formula or convention shown in the chapter, written again): the sinusoidal table,
torch's key padding mask, one residual block. Predict: an encoder layer's parameter count (no
module may be built and counted), the best accuracy of a position-blind model on two-digit
reversal. Modify: make a position-blind attention layer reverse by adding one thing, a mask.
Debug: a multi-head attention with two bugs. Conceptual: why post-LN failed without warm-up.

Every check compares with an independent reference computed here (the paper's formula with
``math``, torch's own modules, brute-force enumeration), on several inputs including edge
cases, and each typical mistake is listed with the message that diagnoses it.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections import Counter

import torch
from torch import nn

from . import Mistake, choice, exercise, expect_same, forbid, given_function, numeric

_POSITIONS = "4. Positions"
_MHA = "2. Multi-head attention as a module"
_RESIDUAL = "5. Feed-forward, LayerNorm and residual connections"
_LAYER = "6. The encoder layer"


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


# ----------------------------------------------------------------------------- 02.sinusoidal_positions (retype)


def _sinusoidal_reference(max_len: int, d_model: int) -> torch.Tensor:
    table = torch.tensor(
        [
            [
                math.sin(p / 10000 ** (c / d_model)) if c % 2 == 0 else math.cos(p / 10000 ** ((c - 1) / d_model))
                for c in range(d_model)
            ]
            for p in range(max_len)
        ],
        dtype=torch.float32,
    )
    return table.reshape(max_len, d_model)


def _sinusoidal_mistakes():
    def swapped(n, d):  # cosine in the even columns
        return _sinusoidal_reference(n, d)[:, [c + 1 if c % 2 == 0 else c - 1 for c in range(d)]]

    def exponent_i(n, d):  # 10000^(i/d) with i = 0, 1, 2, ...: the frequencies fall too slowly
        angle = torch.arange(n, dtype=torch.float32)[:, None] / 10000 ** (torch.arange(d // 2) / d)
        return torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(n, d)

    def from_one(n, d):  # positions counted from 1
        return _sinusoidal_reference(n + 1, d)[1:]

    def halves(n, d):  # all sines first, then all cosines
        t = _sinusoidal_reference(n, d)
        return torch.cat([t[:, 0::2], t[:, 1::2]], dim=1)

    return [
        Mistake(swapped, "sines belong in the even columns (0, 2, ...) and cosines in the odd ones"),
        Mistake(
            exponent_i,
            "the exponent is 2i / d_model, with 2i the even column index: columns 2i "
            "and 2i+1 share the frequency 10000^(-2i/d_model)",
        ),
        Mistake(from_one, "count positions from 0: row 0 is sin(0) = 0, cos(0) = 1"),
        Mistake(
            halves,
            "interleave: sine and cosine of one frequency sit side by side in columns 2i, "
            "2i+1, not all sines first and all cosines after",
        ),
        Mistake(lambda n, d: _package_table(n, d), "the package's sinusoidal_positions is the answer"),
    ]


def _package_table(n, d):
    from course_utils.layers.transformer import sinusoidal_positions

    return sinusoidal_positions(n, d)


@exercise(
    "02.sinusoidal_positions",
    "The sinusoidal position table",
    "Write sinusoidal_positions(max_len, d_model) returning the (max_len, d_model) table of the 2017 "
    "paper: PE[p, 2i] = sin(p / 10000^(2i / d_model)) and PE[p, 2i+1] = cos(p / 10000^(2i / d_model)), "
    "positions p counted from 0, sines in the even columns and cosines in the odd ones.",
    reference=_sinusoidal_reference,
    mistakes=_sinusoidal_mistakes,
    kind="retype",
    section=_POSITIONS,
    minutes=6,
    rules=[
        forbid(
            "course_utils.layers.transformer.sinusoidal_positions",
            "course_utils.layers.transformer.SinusoidalPositionalEncoding",
            says="write the table yourself: the package's sinusoidal_positions is the answer, not a tool",
        )
    ],
)
def check_sinusoidal_positions(fn) -> None:
    for max_len, d_model in ((1, 2), (5, 4), (12, 16), (50, 64)):  # one position; the narrowest table
        expect_same(
            fn,
            _sinusoidal_reference,
            max_len,
            d_model,
            what=f"sinusoidal_positions({max_len}, {d_model})",
            atol=1e-4,
            hint="check the exponent 2i / d_model and that columns 2i and 2i+1 share one frequency",
        )


# ----------------------------------------------------------------------------- 02.residual_block (retype)


def _residual_block_reference(x, sublayer, norm, norm_first: bool):
    rows = []
    for row in x.reshape(-1, x.shape[-1]):  # one position at a time, the two formulas spelled out
        rows.append(row + sublayer(norm(row)) if norm_first else norm(row + sublayer(row)))
    return torch.stack(rows).reshape(x.shape)


def _residual_block_mistakes():
    return [
        Mistake(
            lambda x, s, n, f: n(x + s(x)), "norm_first=True is pre-LN: x + sublayer(norm(x)), not the post-LN form"
        ),
        Mistake(
            lambda x, s, n, f: n(x + s(x)) if f else x + s(n(x)),
            "the two forms are swapped: norm_first=True (pre-LN) normalises the sublayer's INPUT",
        ),
        Mistake(
            lambda x, s, n, f: x + n(s(x)) if f else n(x + s(x)),
            "pre-LN normalises the sublayer's input, not its output: x + sublayer(norm(x))",
        ),
        Mistake(lambda x, s, n, f: s(n(x)) if f else n(s(x)), "the residual connection is missing: add x back"),
    ]


@exercise(
    "02.residual_block",
    "One sublayer with its residual connection and LayerNorm",
    "Write residual_block(x, sublayer, norm, norm_first) applying one sublayer (attention or "
    "feed-forward, any function of x) with its residual connection and LayerNorm `norm`: post-LN "
    "(norm_first=False, the 2017 paper) normalises after adding the residual; pre-LN "
    "(norm_first=True) normalises the sublayer's input and adds the raw x back.",
    reference=_residual_block_reference,
    mistakes=_residual_block_mistakes,
    kind="retype",
    section=_RESIDUAL,
    minutes=4,
)
def check_residual_block(fn) -> None:
    torch.manual_seed(0)
    sublayer, norm = nn.Linear(6, 6), nn.LayerNorm(6)
    with torch.no_grad():  # a LayerNorm that is not the identity-at-init, so misplacing it shows
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-1.0, 1.0)
    for shape in ((2, 3, 6), (1, 1, 6)):
        x = torch.randn(shape) * 3 + 1
        for norm_first in (False, True):
            with torch.no_grad():
                expect_same(
                    fn,
                    _residual_block_reference,
                    x,
                    sublayer,
                    norm,
                    norm_first,
                    what=f"residual_block(x of shape {shape}, ..., norm_first={norm_first})",
                )


# ----------------------------------------------------------------------------- 02.encoder_layer_parameters (predict)


def _count_reference(d_model: int, num_heads: int, d_ff: int) -> int:
    attention = 4 * (d_model * d_model + d_model)  # W_q, W_k, W_v, W_o with biases
    feed_forward = (d_model * d_ff + d_ff) + (d_ff * d_model + d_model)
    layer_norms = 2 * (2 * d_model)  # two LayerNorms: gain and bias each
    return attention + feed_forward + layer_norms  # num_heads plays no part


_NO_MODULES = forbid(
    "torch.nn.Module",
    "torch.nn.Module.parameters",
    "torch.nn.Module.named_parameters",
    "torch.nn.Module.state_dict",
    says="count from the shapes: build no module (nn.TransformerEncoderLayer, nn.Linear, "
    "the course's layer) and count nothing with .parameters()",
)


def _count_mistakes():
    return [
        Mistake(
            lambda d, h, f: 4 * d * d + 2 * d * f,
            "biases and LayerNorms are parameters too: every "
            "nn.Linear has a bias, every LayerNorm a gain and a bias of d_model numbers",
        ),
        Mistake(
            lambda d, h, f: 4 * (d * d + d) + (d * f + f) + (f * d + d),
            "the two LayerNorms are missing: 2 x (gain + bias) = 4 d_model numbers",
        ),
        Mistake(
            lambda d, h, f: 3 * (d * d + d) + (d * f + f) + (f * d + d) + 4 * d,
            "the output projection W_O (d_model x d_model + bias) is missing",
        ),
        Mistake(
            lambda d, h, f: h * 4 * (d * d + d) + (d * f + f) + (f * d + d) + 4 * d,
            "the heads share the d_model x d_model projections (each head owns d_head of their "
            "columns), so num_heads does not change the count",
        ),
        Mistake(
            lambda d, h, f: 4 * (d * d + d) + 2 * (d * f + f) + 4 * d,
            "the second linear maps d_ff back to d_model, so its bias has d_model numbers, not d_ff",
        ),
        Mistake(
            lambda d, h, f: sum(p.numel() for p in nn.TransformerEncoderLayer(d, h, f).parameters()), "build no module"
        ),
    ]


@exercise(
    "02.encoder_layer_parameters",
    "Predict an encoder layer's parameter count",
    "Before running anything, predict how many trainable numbers one encoder layer has, as a formula: "
    "write count_parameters(d_model, num_heads, d_ff) for the layer of this chapter (four attention "
    "projections and two feed-forward linears, all with biases, two LayerNorms). Work it out from the "
    "shapes; building a layer and counting its .parameters() is against the rules. Does num_heads "
    "change the answer? Then try it on BERT-base: d_model=768, 12 heads, d_ff=3072.",
    reference=_count_reference,
    mistakes=_count_mistakes,
    kind="predict",
    rules=[_NO_MODULES],
    section=_LAYER,
    minutes=8,
)
def check_encoder_layer_parameters(fn) -> None:
    for d_model, num_heads, d_ff in ((8, 2, 16), (64, 4, 256), (64, 16, 256), (6, 1, 1), (768, 12, 3072)):
        got = fn(d_model, num_heads, d_ff)
        assert isinstance(got, numbers.Integral) and not isinstance(got, bool), (
            f"count_parameters should return a whole number (int), got {type(got).__name__} {got!r}"
        )
        want = sum(p.numel() for p in nn.TransformerEncoderLayer(d_model, num_heads, d_ff).parameters())
        if got != want:
            expect_same(
                fn,
                lambda *args, count=want: count,
                d_model,
                num_heads,
                d_ff,
                what=f"count_parameters({d_model}, {num_heads}, {d_ff})",
                hint="count every weight matrix, every bias and both LayerNorms",
            )


# ----------------------------------------------------------------------------- 02.why_post_ln_failed (conceptual)

choice(
    "02.why_post_ln_failed",
    "Why did post-LN fail without a warm-up?",
    "In section 7, post-LN and pre-LN stacks started from the same weights and saw the same batches at "
    "the same high learning rate with Adam. Without a warm-up, post-LN failed to train while pre-LN "
    "trained, and post-LN trained once the learning rate was warmed up. Which explanation fits "
    "everything the section measured?",
    options={
        "a": "Post-LN's gradients near the output are large, and Adam's step is proportional to the gradient, "
        "so those parameters take huge steps.",
        "b": "Adam moves every parameter by about the full learning rate from the first step on, with a "
        "second-moment estimate that rests on a few gradients; post-LN (whose gradients near the output "
        "are large at initialisation) is knocked off course by such early steps, pre-LN is not, and a "
        "warm-up keeps the early steps small until Adam's estimates settle.",
        "c": "The learning rate was too high for this model, whatever the arrangement of its LayerNorms.",
        "d": "Post-LN has more parameters than pre-LN, so it needs more steps before it learns anything.",
    },
    correct="b",
    why="Adam's first step is lr * g / (|g| + eps), about lr in every parameter (section 7 measured it); "
    "Liu et al. (2020) trace warm-up's benefit to the large variance of Adam's early adaptive rate, and "
    "Xiong et al. (2020) show post-LN's large gradients near the output at initialisation, while pre-LN's "
    "are well-behaved.",
    why_not={
        "a": "Adam divides by the root of the running mean of squared gradients: the step is about the "
        "learning rate whatever the gradient's size (section 7's one-step measurement).",
        "c": "pre-LN trained at the very same rate from the same weights, and post-LN trained at that peak "
        "rate once it was warmed up: the arrangement, and the first steps, matter.",
        "d": "it has fewer: pre-LN adds one final LayerNorm; and post-LN did not learn slowly, it failed.",
    },
    section="7. Why post-LN needs a warm-up",
    minutes=4,
)
# ----------------------------------------------------------------------------- 02.blind_two_digits (predict)


def _blind_two_digits_reference() -> float:
    """Brute force: the best guess for every (own digit, bag) over all 100 two-digit sequences."""
    hits_by_view: dict = {}
    for sequence in itertools.product(range(10), repeat=2):
        for position, digit in enumerate(sequence):
            view = (digit, tuple(sorted(sequence)))  # all a position-blind model sees
            hits_by_view.setdefault(view, Counter())[sequence[1 - position]] += 1
    return sum(max(hits.values()) for hits in hits_by_view.values()) / 200


numeric(
    "02.blind_two_digits",
    "Predict: reversal without positions, two digits",
    "A model without any positional information sees, at each position, its own digit and the bag "
    "of the sequence's digits (section 9). On sequences of exactly TWO random digits, what is the best "
    "token accuracy such a model can reach on reversal? Answer a fraction between 0 and 1.",
    reference=_blind_two_digits_reference,
    tolerance=0.005,
    mistakes=lambda: [
        Mistake(0.1, "better than chance: the bag tells a lot. With two digits, what is the bag minus your own digit?"),
        Mistake(
            0.5, "the model does not need to know WHICH of the two positions it is: each one's mirror is the other"
        ),
        Mistake(
            0.28,
            "that is about the chapter's number for lengths 4 to 16; with two digits the bag "
            "minus your own digit is exactly the other digit",
        ),
    ],
    hint="each position's mirror is the other position; what does the bag minus your own digit contain?",
    section="9. A toy task: reversing digits",
    minutes=3,
    explanation="With two digits the bag minus your own digit IS your mirror's digit: 100%, no positions "
    "needed. Positions matter from length 3 on, where several positions compete.",
)
