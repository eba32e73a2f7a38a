"""Chapter 02 exercises.

Debug, retype and modify exercises on attention itself (a multi-head attention with two bugs,
torch's key padding mask, a mask that makes a position-blind layer reverse) come first on the
chapter's page and live in :mod:`course_utils.exercises.ch02_attention`, imported here first so
they are registered before this module's own. Here: retype the sinusoidal table and one residual
block. Predict: an encoder layer's parameter count (no module may be built and counted), the best
accuracy of a position-blind model on two-digit reversal. Conceptual: why post-LN failed without
warm-up.

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

from . import ch02_attention  # noqa: F401 - registers the chapter's first exercises, before this module's
from . import Mistake, choice, exercise, expect_same, forbid, numeric

_POSITIONS = "4. Positions"
_RESIDUAL = "5. Feed-forward, LayerNorm and residual connections"
_LAYER = "6. The encoder layer"


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
