"""Chapter 02 exercises: the sinusoidal table, torch's mask convention, one residual block in
post-LN and pre-LN form, counting an encoder layer's parameters, and the attention pattern
that reverses a padded sequence.

Each check compares the learner's answer with an independent reference computed here (the
paper's formula written out with ``math``, torch's own modules, or an explicit loop), on
inputs chosen so that the usual mistakes show.
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from . import exercise


def _is_tensor(got, what: str) -> None:
    assert isinstance(got, torch.Tensor), f"{what} should be a torch.Tensor, got {type(got).__name__}"


def _close(got, want, what: str, atol: float = 1e-5) -> None:
    _is_tensor(got, what)
    assert got.shape == want.shape, f"{what} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    diff = (got.float() - want.float()).abs().max().item()
    assert diff <= atol, f"{what} is off by up to {diff:.3g} from the expected values"


# ----------------------------------------------------------------------------- 02.sinusoidal_positions

def _sinusoidal_reference(max_len: int, d_model: int) -> torch.Tensor:
    position = torch.arange(max_len, dtype=torch.float32)[:, None]           # (max_len, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float32)                 # 0, 2, 4, ...
    angle = position / 10000 ** (two_i / d_model)                            # (max_len, d_model / 2)
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(angle)                                        # even columns: sine
    table[:, 1::2] = torch.cos(angle)                                        # odd columns: cosine
    return table


def _sinusoidal_wrong():
    def swapped(n, d):  # cosine in the even columns
        return _sinusoidal_reference(n, d)[:, [c + 1 if c % 2 == 0 else c - 1 for c in range(d)]]

    def exponent_i(n, d):  # 10000^(i/d) with i = 0, 1, 2, ...: the frequencies fall too slowly
        angle = torch.arange(n, dtype=torch.float32)[:, None] / 10000 ** (torch.arange(d // 2) / d)
        return torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(n, d)

    def from_one(n, d):  # positions counted from 1
        return _sinusoidal_reference(n + 1, d)[1:]

    def halves(n, d):  # all sines first, then all cosines (a valid table, but not this convention)
        t = _sinusoidal_reference(n, d)
        return torch.cat([t[:, 0::2], t[:, 1::2]], dim=1)

    return [swapped, exponent_i, from_one, halves]


@exercise(
    "02.sinusoidal_positions", "The sinusoidal position table",
    "Write sinusoidal_positions(max_len, d_model) returning the (max_len, d_model) table of the 2017 "
    "paper: PE[p, 2i] = sin(p / 10000^(2i / d_model)) and PE[p, 2i+1] = cos(p / 10000^(2i / d_model)), "
    "positions p counted from 0, sines in the even columns and cosines in the odd ones.",
    reference=_sinusoidal_reference, wrong=_sinusoidal_wrong)
def check_sinusoidal_positions(fn) -> None:
    for max_len, d_model in ((5, 4), (12, 16)):
        table = fn(max_len, d_model)
        _is_tensor(table, f"sinusoidal_positions({max_len}, {d_model})")
        assert table.shape == (max_len, d_model), (
            f"sinusoidal_positions({max_len}, {d_model}) has shape {tuple(table.shape)}, expected {(max_len, d_model)}")
        want = torch.tensor([[math.sin(p / 10000 ** (c / d_model)) if c % 2 == 0
                              else math.cos(p / 10000 ** ((c - 1) / d_model)) for c in range(d_model)]
                             for p in range(max_len)])
        assert torch.allclose(table[0].float(), want[0], atol=1e-5), (
            "row 0 (position 0) should be sin(0) = 0 in even columns and cos(0) = 1 in odd ones: "
            "count positions from 0, sines in the even columns")
        assert torch.allclose(table[:, :2].float(), want[:, :2], atol=1e-5), (
            "columns 0 and 1 should be sin(p) and cos(p) (the fastest frequency, 10000^0 = 1)")
        _close(table, want, f"sinusoidal_positions({max_len}, {d_model}) (check the exponent 2i / d_model "
               "and that columns 2i and 2i+1 share one frequency)")


# ----------------------------------------------------------------------------- 02.torch_key_padding_mask

def _torch_key_padding_reference(lengths: list[int], max_len: int) -> torch.Tensor:
    real = torch.arange(max_len)[None, :] < torch.tensor(lengths)[:, None]   # ours: True = may attend
    return ~real                                                             # torch: True = ignore


def _torch_key_padding_wrong():
    return [
        lambda lengths, n: torch.arange(n)[None, :] < torch.tensor(lengths)[:, None],   # our convention
        lambda lengths, n: (torch.arange(n)[None, :] >= torch.tensor(lengths)[:, None])[:, None, None, :],
        lambda lengths, n: torch.arange(n)[None, :] > torch.tensor(lengths)[:, None],   # one padding too few
        lambda lengths, n: (torch.arange(n)[None, :] >= torch.tensor(lengths)[:, None]).float(),
    ]


@exercise(
    "02.torch_key_padding_mask", "A key padding mask in torch's convention",
    "torch.nn.MultiheadAttention and nn.TransformerEncoderLayer take key_padding_mask of shape "
    "(batch, L) where True means 'IGNORE this key' (the opposite of the course's masks). Write "
    "torch_key_padding_mask(lengths, max_len) for a batch padded on the right: lengths[b] real "
    "tokens, then padding up to max_len.",
    reference=_torch_key_padding_reference, wrong=_torch_key_padding_wrong)
def check_torch_key_padding_mask(fn) -> None:
    lengths, max_len = [4, 1, 3], 4
    mask = fn(lengths, max_len)
    _is_tensor(mask, "the mask")
    assert mask.dtype == torch.bool, (
        f"dtype {mask.dtype}: torch reads a float mask as numbers ADDED to the scores; use a boolean mask")
    assert mask.shape == (3, 4), (
        f"shape {tuple(mask.shape)}; torch's key_padding_mask is (batch, L_k) = (3, 4), no head or query axes")
    assert not mask[0].any(), "sequence 0 has 4 real tokens and no padding: its row must be all False (keep)"
    assert mask[1, 1:].all() and not mask[1, 0], (
        "sequence 1 has 1 real token: position 0 False (keep), positions 1..3 True (ignore); "
        "in torch's convention True marks the padding")
    want = torch.tensor([[0, 0, 0, 0], [0, 1, 1, 1], [0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(mask, want), "some sequence marks the wrong positions as padding"
    torch.manual_seed(0)  # and it must make torch ignore the padding: outputs don't depend on it
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    x = torch.randn(3, 4, 8)
    noisy = x.clone()
    noisy[1, 1:] += 100.0
    a, _ = mha(x, x, x, key_padding_mask=mask)
    b, _ = mha(noisy, noisy, noisy, key_padding_mask=mask)
    assert torch.allclose(a[1, 0], b[1, 0], atol=1e-5), "changing a padding key changed a real token's output"


# ----------------------------------------------------------------------------- 02.residual_block

def _residual_block_reference(x, sublayer, norm, norm_first: bool):
    if norm_first:
        return x + sublayer(norm(x))      # pre-LN: normalise the sublayer's input, keep a clean residual path
    return norm(x + sublayer(x))          # post-LN: normalise after adding the residual


def _residual_block_wrong():
    return [
        lambda x, s, n, f: n(x + s(x)),                                   # always post-LN
        lambda x, s, n, f: n(x + s(x)) if f else x + s(n(x)),             # the two forms swapped
        lambda x, s, n, f: x + n(s(x)) if f else n(x + s(x)),             # pre-LN normalising the output
        lambda x, s, n, f: s(n(x)) if f else n(s(x)),                     # no residual connection
    ]


@exercise(
    "02.residual_block", "One sublayer with its residual connection and LayerNorm",
    "Write residual_block(x, sublayer, norm, norm_first) applying one sublayer (attention or "
    "feed-forward, any function of x) with its residual connection and LayerNorm `norm`: post-LN "
    "(norm_first=False, the 2017 paper) normalises after adding the residual; pre-LN "
    "(norm_first=True) normalises the sublayer's input and adds the raw x back.",
    reference=_residual_block_reference, wrong=_residual_block_wrong)
def check_residual_block(fn) -> None:
    torch.manual_seed(0)
    sublayer, norm = nn.Linear(6, 6), nn.LayerNorm(6)
    with torch.no_grad():  # a LayerNorm that is not the identity-at-init, so misplacing it shows
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-1.0, 1.0)
    x = torch.randn(2, 3, 6) * 3 + 1
    with torch.no_grad():
        post, pre = fn(x, sublayer, norm, False), fn(x, sublayer, norm, True)
        post_want = torch.stack([norm(row + sublayer(row)) for row in x])
        pre_want = torch.stack([row + sublayer(norm(row)) for row in x])
    _close(post, post_want, "residual_block(..., norm_first=False) (post-LN: norm(x + sublayer(x)))")
    _close(pre, pre_want, "residual_block(..., norm_first=True) (pre-LN: x + sublayer(norm(x)))")


# ----------------------------------------------------------------------------- 02.encoder_layer_parameters

def _count_reference(d_model: int, num_heads: int, d_ff: int) -> int:
    attention = 4 * (d_model * d_model + d_model)                 # W_q, W_k, W_v, W_o with biases
    feed_forward = (d_model * d_ff + d_ff) + (d_ff * d_model + d_model)
    layer_norms = 2 * (2 * d_model)                               # two LayerNorms: gain and bias each
    return attention + feed_forward + layer_norms                 # num_heads plays no part


def _count_wrong():
    return [
        lambda d, h, f: 4 * d * d + 2 * d * f,                                           # no biases, no norms
        lambda d, h, f: 4 * (d * d + d) + (d * f + f) + (f * d + d),                     # LayerNorms forgotten
        lambda d, h, f: 3 * (d * d + d) + (d * f + f) + (f * d + d) + 4 * d,             # output projection forgotten
        lambda d, h, f: h * 4 * (d * d + d) + (d * f + f) + (f * d + d) + 4 * d,          # a d x d projection per head
    ]


@exercise(
    "02.encoder_layer_parameters", "Counting an encoder layer's parameters",
    "Write count_parameters(d_model, num_heads, d_ff) returning the number of trainable numbers in one "
    "encoder layer: the four attention projections (query, key, value, output) and the two "
    "feed-forward linears, all with biases, and two LayerNorms. Does num_heads change the answer?",
    reference=_count_reference, wrong=_count_wrong)
def check_encoder_layer_parameters(fn) -> None:
    for d_model, num_heads, d_ff in ((8, 2, 16), (64, 4, 256), (64, 16, 256), (768, 12, 3072)):
        want = sum(p.numel() for p in nn.TransformerEncoderLayer(d_model, num_heads, d_ff).parameters())
        got = fn(d_model, num_heads, d_ff)
        assert isinstance(got, numbers.Integral) or (isinstance(got, torch.Tensor) and got.numel() == 1), (
            f"count_parameters should return a whole number, got {type(got).__name__}")
        assert int(got) == want, (
            f"count_parameters({d_model}, {num_heads}, {d_ff}) = {int(got)}, but the layer has {want} "
            f"parameters ({int(got) - want:+d}): count every weight matrix, every bias and both LayerNorms")


# ----------------------------------------------------------------------------- 02.reversal_attention

def _reversal_attention_reference(lengths: list[int], max_len: int) -> torch.Tensor:
    lengths = torch.as_tensor(lengths)[:, None, None]              # (batch, 1, 1)
    query = torch.arange(max_len)[None, :, None]                   # (1, L, 1)
    key = torch.arange(max_len)[None, None, :]                     # (1, 1, L)
    # real query i puts all its weight on key length-1-i; a padding query (i >= length) on nothing
    return ((key == lengths - 1 - query) & (query < lengths)).float()


def _reversal_attention_wrong():
    def ignores_length(lengths, n):  # reverses the padded row, moving the padding to the front
        return torch.eye(n).flip(-1).expand(len(lengths), n, n).clone()

    def off_by_one(lengths, n):
        lengths = torch.as_tensor(lengths)[:, None, None]
        q, k = torch.arange(n)[None, :, None], torch.arange(n)[None, None, :]
        return ((k == lengths - q) & (q < lengths)).float()

    def identity(lengths, n):
        return torch.eye(n).expand(len(lengths), n, n).clone()

    return [ignores_length, off_by_one, identity]


@exercise(
    "02.reversal_attention", "The attention pattern that reverses",
    "Write reversal_attention(lengths, max_len) returning (batch, max_len, max_len) float weights for a "
    "batch padded on the right (lengths[b] real tokens): the weights of an ideal attention head that "
    "reverses each sequence, so that weights @ x puts x[length-1-i] at every real position i. Rows of "
    "padding queries are all zero. (Compare with the trained model's heads in the chapter.)",
    reference=_reversal_attention_reference, wrong=_reversal_attention_wrong)
def check_reversal_attention(fn) -> None:
    lengths, max_len = [5, 3, 1], 5
    weights = fn(lengths, max_len)
    _is_tensor(weights, "the weights")
    assert weights.shape == (3, 5, 5), f"shape {tuple(weights.shape)}, expected (batch, max_len, max_len) = (3, 5, 5)"
    x = torch.arange(1.0, 16.0).view(3, 5, 1)  # distinct values, so every copied position is identifiable
    got = (weights.float() @ x)[..., 0]
    for b, n in enumerate(lengths):
        want = [float(x[b, n - 1 - i, 0]) for i in range(n)]
        assert got[b, :n].tolist() == want, (
            f"sequence {b} (length {n}): weights @ x gives {got[b, :n].tolist()} at the real positions, "
            f"expected {want}: real query i must attend to key length-1-i, not max_len-1-i")
        assert (weights[b, n:] == 0).all(), f"sequence {b}: the padding queries (rows {n}..) must be all zero"
        assert torch.allclose(weights[b, :n].sum(-1).float(), torch.ones(n)), (
            f"sequence {b}: each real query's weights must sum to 1")
