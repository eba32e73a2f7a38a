"""Chapter 01 exercises: softmax with temperature, the two masks, merging heads, masked attention.

Every check compares the learner's answer with an independent reference computed here
(torch's own softmax and SDPA), on inputs chosen so that the usual mistakes show.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import exercise


def _close(got, want, what: str, atol: float = 1e-5) -> None:
    assert isinstance(got, torch.Tensor), f"{what} should be a torch.Tensor, got {type(got).__name__}"
    assert got.shape == want.shape, f"{what} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    assert not torch.isnan(got).any(), (
        f"{what} contains NaN: is a softmax overflowing (subtract the row maximum first) "
        "or running over a row that is all -inf?")
    diff = (got.float() - want.float()).abs().max().item()
    assert diff <= atol, f"{what} is off by up to {diff:.3g} from the expected values"


# ----------------------------------------------------------------------------- 01.softmax_temperature

def _softmax_temperature_reference(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    scaled = scores / temperature
    scaled = scaled - scaled.max(dim=-1, keepdim=True).values  # same result, and exp cannot overflow
    e = scaled.exp()
    return e / e.sum(dim=-1, keepdim=True)


def _softmax_temperature_wrong():
    return [
        lambda s, t: torch.softmax(s, dim=-1),                              # temperature ignored
        lambda s, t: torch.softmax(s * t, dim=-1),                          # multiplied instead of divided
        lambda s, t: torch.softmax(s / t, dim=0),                           # over the wrong axis
        lambda s, t: (s / t).exp() / (s / t).exp().sum(-1, keepdim=True),  # overflows for big scores
    ]


@exercise(
    "01.softmax_temperature", "A numerically stable softmax with a temperature",
    "Write softmax_with_temperature(scores, temperature) that returns softmax(scores / temperature) "
    "over the LAST axis, using only exp, max and sum (not torch.softmax). It must work for scores "
    "as large as 1000 without producing NaN: subtract each row's maximum before exp.",
    reference=_softmax_temperature_reference, wrong=_softmax_temperature_wrong)
def check_softmax_temperature(fn) -> None:
    generator = torch.Generator().manual_seed(1)
    scores = torch.randn(3, 5, generator=generator) * 3
    for temperature in (0.5, 1.0, 4.0):
        _close(fn(scores, temperature), torch.softmax(scores / temperature, dim=-1),
               f"softmax_with_temperature(scores, {temperature})")
    rows = fn(torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]]), 1.0)
    _close(rows.sum(dim=-1), torch.ones(2), "the sum of each row (it should be 1)")
    big = torch.tensor([[1000.0, 1001.0, 999.0]])
    _close(fn(big, 1.0), torch.softmax(big, dim=-1), "softmax_with_temperature of scores near 1000")


# ----------------------------------------------------------------------------- 01.causal_mask

def _causal_mask_reference(length: int) -> torch.Tensor:
    return torch.ones(length, length, dtype=torch.bool).tril()


def _causal_mask_wrong():
    return [
        lambda n: torch.ones(n, n, dtype=torch.bool).triu(),     # the future instead of the past
        lambda n: torch.ones(n, n, dtype=torch.bool).tril(-1),   # a token may not see itself
        lambda n: torch.ones(n, n).tril(),                       # float, not boolean
        lambda n: ~torch.ones(n, n, dtype=torch.bool).tril(),    # True = masked (the opposite convention)
    ]


@exercise(
    "01.causal_mask", "The causal mask",
    "Write causal_mask(length) returning a boolean (length, length) tensor where entry [i, j] is True "
    "exactly when query i may attend to key j in a left-to-right model: j <= i.",
    reference=_causal_mask_reference, wrong=_causal_mask_wrong)
def check_causal_mask(fn) -> None:
    for n in (1, 4, 7):
        mask = fn(n)
        assert isinstance(mask, torch.Tensor), f"causal_mask({n}) should return a tensor, got {type(mask).__name__}"
        assert mask.dtype == torch.bool, (
            f"causal_mask({n}) has dtype {mask.dtype}; attention masks here are boolean (True = may attend)")
        assert mask.shape == (n, n), f"causal_mask({n}) has shape {tuple(mask.shape)}, expected ({n}, {n})"
        i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        if n > 1:
            assert not mask[0, 1], "query 0 may attend to key 1: that is the future (mask[i, j] must be False for j > i)"
        if n > 1:
            assert mask[n - 1, 0], ("the last query may not attend to the first key: here True means "
                                    "'may attend' (torch SDPA's convention), not 'masked'")
        assert mask.diagonal().all(), "a token must be able to attend to itself (the diagonal must be True)"
        assert torch.equal(mask, j <= i), f"causal_mask({n}) differs from 'key j <= query i' somewhere"


# ----------------------------------------------------------------------------- 01.padding_mask

def _padding_mask_reference(lengths: list[int], max_len: int) -> torch.Tensor:
    positions = torch.arange(max_len)                           # (max_len,)
    real = positions[None, :] < torch.tensor(lengths)[:, None]  # (batch, max_len), True at real tokens
    return real[:, None, None, :]                               # (batch, 1, 1, max_len)


def _padding_mask_wrong():
    return [
        lambda lengths, n: (torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]),       # (batch, L)
        lambda lengths, n: (torch.arange(n)[None, :] >= torch.tensor(lengths)[:, None])[:, None, None, :],  # padding True
        lambda lengths, n: (torch.arange(n)[None, :] <= torch.tensor(lengths)[:, None])[:, None, None, :],  # one too many
    ]


@exercise(
    "01.padding_mask", "The padding mask",
    "Write padding_mask(lengths, max_len): lengths is a list with the number of real tokens of each "
    "sequence in a batch padded to max_len. Return a boolean tensor of shape (batch, 1, 1, max_len), "
    "True at the real tokens, so that it broadcasts over heads and queries of (batch, heads, L_q, L_k) scores.",
    reference=_padding_mask_reference, wrong=_padding_mask_wrong)
def check_padding_mask(fn) -> None:
    lengths, max_len = [3, 1, 5], 5
    mask = fn(lengths, max_len)
    assert isinstance(mask, torch.Tensor) and mask.dtype == torch.bool, "return a boolean torch tensor"
    assert mask.shape == (3, 1, 1, 5), (
        f"shape {tuple(mask.shape)}; expected (batch, 1, 1, max_len) = (3, 1, 1, 5) so it broadcasts "
        "over heads and queries (index with [:, None, None, :])")
    assert mask[0, 0, 0, :3].all(), "the 3 real tokens of sequence 0 must be True (True = may attend)"
    assert not mask[0, 0, 0, 3:].any(), "the padding positions of sequence 0 (3 and 4) must be False"
    want = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask[:, 0, 0], want), "some sequence has the wrong number of True positions"


# ----------------------------------------------------------------------------- 01.merge_heads

def _merge_heads_reference(x: torch.Tensor) -> torch.Tensor:
    batch, heads, length, d_head = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * d_head)


def _merge_heads_wrong():
    return [
        lambda x: x.reshape(x.shape[0], x.shape[2], -1),                    # heads and positions mixed up
        lambda x: x.permute(0, 2, 3, 1).reshape(x.shape[0], x.shape[2], -1),  # features interleaved by head
        lambda x: x.transpose(1, 2),                                        # heads not concatenated
    ]


@exercise(
    "01.merge_heads", "Merging the heads",
    "Write merge_heads(x) taking x of shape (batch, heads, length, d_head) and returning "
    "(batch, length, heads * d_head), where features [h * d_head : (h + 1) * d_head] of position t "
    "are head h's output at position t. Careful: a plain reshape without moving the heads axis "
    "first mixes positions.",
    reference=_merge_heads_reference, wrong=_merge_heads_wrong)
def check_merge_heads(fn) -> None:
    batch, heads, length, d_head = 2, 3, 4, 5
    x = torch.arange(batch * heads * length * d_head, dtype=torch.float32).view(batch, heads, length, d_head)
    merged = fn(x)
    assert isinstance(merged, torch.Tensor), f"merge_heads should return a tensor, got {type(merged).__name__}"
    assert merged.shape == (batch, length, heads * d_head), (
        f"shape {tuple(merged.shape)}; expected (batch, length, heads * d_head) = {(batch, length, heads * d_head)}")
    for h in range(heads):
        got = merged[:, :, h * d_head:(h + 1) * d_head]
        assert torch.equal(got, x[:, h]), (
            f"features {h * d_head}:{(h + 1) * d_head} should be head {h}'s output at every position; "
            "move the heads axis next to the features (transpose(1, 2)) before reshaping")


# ----------------------------------------------------------------------------- 01.masked_attention

def _masked_attention_reference(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:
        weights = weights.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)  # fully masked row: zeros, not NaN
    return weights @ v, weights


def _masked_attention_wrong():
    def no_scaling(q, k, v, mask=None):
        w = torch.softmax((q @ k.transpose(-2, -1)).masked_fill(~mask, float("-inf")), -1).nan_to_num(0.0)
        return w @ v, w

    def zero_fill(q, k, v, mask=None):  # a masked score of 0 still gets weight exp(0)
        s = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~mask, 0.0)
        w = torch.softmax(s, -1)
        return w @ v, w

    def nan_rows(q, k, v, mask=None):
        s = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~mask, float("-inf"))
        w = torch.softmax(s, -1)
        return w @ v, w

    return [no_scaling, zero_fill, nan_rows]


@exercise(
    "01.masked_attention", "Masked attention that survives empty rows",
    "Write attention(q, k, v, mask) returning (output, weights) = (softmax(q k^T / sqrt(d_k)) v, weights) "
    "where mask is boolean, broadcastable to (..., L_q, L_k), True = may attend. Masked keys must get "
    "weight exactly 0, and a query whose row is all False must get all-zero weights and output "
    "(not NaN), like torch.nn.functional.scaled_dot_product_attention.",
    reference=_masked_attention_reference, wrong=_masked_attention_wrong)
def check_masked_attention(fn) -> None:
    generator = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 2, 4, 8, generator=generator) for _ in range(3))
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    padding = (torch.arange(4)[None, :] < torch.tensor([4, 2])[:, None])[:, None, None, :]
    empty_row = causal.clone()
    empty_row[2] = False
    for name, mask in (("causal", causal), ("padding", padding), ("causal and padding", causal & padding),
                       ("a mask with an all-False row", empty_row)):
        out, weights = fn(q, k, v, mask)
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        assert isinstance(weights, torch.Tensor) and weights.shape == (2, 2, 4, 4), (
            "return (output, weights) with weights of shape (..., L_q, L_k)")
        assert not torch.isnan(weights).any(), (
            f"with {name}, the weights contain NaN: a row that is all -inf softmaxes to NaN; "
            "set the weights of rows with no allowed key to 0 (mask.any(dim=-1, keepdim=True))")
        assert (weights.masked_select(~mask.expand_as(weights)) == 0).all(), (
            f"with {name}, some masked key got a non-zero weight: fill masked scores with -inf, not 0")
        _close(out, want, f"the output with {name}")
