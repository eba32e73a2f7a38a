"""course_utils.layers.attention against torch: every expected number comes from
torch.nn.functional.scaled_dot_product_attention or torch.nn.MultiheadAttention.

Property tests draw shapes (batch/head axes, L_q != L_k, d_k != d_v), dtypes and
boolean masks (padding, causal, both, random, rows with nothing to attend to)."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings, strategies as st
from torch import nn

from course_utils.layers.attention import (
    AttentionShapeError,
    MultiHeadAttention,
    causal_mask,
    padding_mask,
    scaled_dot_product_attention,
)

# derandomize: CI sees the same examples every run; 40 examples keep the file in seconds.
PROPERTY = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
MASK_KINDS = ["none", "padding", "causal", "padding+causal", "random", "fully_masked_rows", "broadcast"]
TOLERANCE = {  # (rtol, atol) per dtype, own vs torch
    torch.float64: (1e-9, 1e-10),
    torch.float32: (1e-5, 2e-6),
    torch.bfloat16: (2e-2, 2e-2),
}


def make_mask(kind: str, batch_shape: tuple, l_q: int, l_k: int, gen: torch.Generator) -> torch.Tensor | None:
    """A boolean mask (True = may attend) broadcastable to (*batch_shape, l_q, l_k)."""
    if kind == "none":
        return None
    lengths = torch.randint(1, l_k + 1, batch_shape, generator=gen)
    padding = (torch.arange(l_k) < lengths[..., None])[..., None, :]  # (*batch, 1, l_k)
    causal = torch.tensor([[j <= i for j in range(l_k)] for i in range(l_q)])
    random = torch.rand(*batch_shape, l_q, l_k, generator=gen) < 0.6
    if kind == "padding":
        return padding
    if kind == "causal":
        return causal
    if kind == "padding+causal":
        return padding & causal
    if kind == "random":
        return random
    if kind == "fully_masked_rows":
        row_off = torch.rand(*batch_shape, l_q, 1, generator=gen) < 0.4
        return random & ~row_off
    if kind == "broadcast":  # singleton leading axes, as a per-batch mask shared by heads
        shape = [1 if torch.rand(1, generator=gen).item() < 0.5 else n for n in batch_shape]
        return torch.rand(*shape, l_q, l_k, generator=gen) < 0.6
    raise ValueError(kind)


@st.composite
def attention_cases(draw, dtypes=(torch.float32, torch.float64)):
    batch_shape = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    l_q, l_k = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    d_k, d_v = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    dtype = draw(st.sampled_from(dtypes))
    kind = draw(st.sampled_from(MASK_KINDS))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    q = torch.randn(*batch_shape, l_q, d_k, generator=gen).to(dtype)
    k = torch.randn(*batch_shape, l_k, d_k, generator=gen).to(dtype)
    v = torch.randn(*batch_shape, l_k, d_v, generator=gen).to(dtype)
    return q, k, v, make_mask(kind, batch_shape, l_q, l_k, gen)


def assert_close(actual, expected, dtype=None):
    rtol, atol = TOLERANCE[dtype or expected.dtype]
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


# ---------------------------------------------------------------- scaled_dot_product_attention
@PROPERTY
@given(attention_cases())
def test_output_equals_torch_sdpa(case):
    q, k, v, mask = case
    output, _ = scaled_dot_product_attention(q, k, v, mask)
    assert output.shape == (*q.shape[:-1], v.shape[-1])
    assert_close(output, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


@PROPERTY
@given(attention_cases())
def test_weights_equal_torch_and_rows_sum_to_one(case):
    q, k, v, mask = case
    _, weights = scaled_dot_product_attention(q, k, v, mask)
    # torch's weights: attend to the identity matrix, so each output row is a weight row
    identity = torch.eye(k.shape[-2], dtype=q.dtype).expand(*k.shape[:-1], k.shape[-2])
    assert_close(weights, F.scaled_dot_product_attention(q, k, identity, attn_mask=mask))
    anything_allowed = torch.ones(weights.shape[:-1], dtype=torch.bool)
    if mask is not None:
        anything_allowed = mask.any(dim=-1).expand(weights.shape[:-1])
        assert (weights[~mask.expand(weights.shape)] == 0).all(), "a masked key got weight"
    assert_close(weights.sum(dim=-1), anything_allowed.to(q.dtype))


@PROPERTY
@given(attention_cases())
def test_gradients_equal_torch_sdpa(case):
    q, k, v, mask = case
    cotangent = torch.randn(*q.shape[:-1], v.shape[-1], generator=torch.Generator().manual_seed(0)).to(q.dtype)
    grads = []
    for attend in (
        lambda *a: scaled_dot_product_attention(*a, mask)[0],
        lambda *a: F.scaled_dot_product_attention(*a, attn_mask=mask),
    ):
        inputs = [t.clone().requires_grad_() for t in (q, k, v)]
        grads.append(torch.autograd.grad((attend(*inputs) * cotangent).sum(), inputs))
    rtol, atol = {torch.float64: (1e-8, 1e-9), torch.float32: (1e-4, 1e-5)}[q.dtype]
    for name, own, ref in zip("qkv", *grads):
        assert torch.isfinite(own).all(), f"NaN/inf in the gradient of {name}"
        torch.testing.assert_close(own, ref, rtol=rtol, atol=atol, msg=lambda m: f"grad of {name}: {m}")


@settings(max_examples=15, deadline=None, derandomize=True)
@given(attention_cases(dtypes=(torch.bfloat16,)))
def test_bfloat16_output_close_to_torch(case):
    q, k, v, mask = case
    output, weights = scaled_dot_product_attention(q, k, v, mask)
    assert output.dtype == weights.dtype == torch.bfloat16
    assert_close(output.float(), F.scaled_dot_product_attention(q, k, v, attn_mask=mask).float(), dtype=torch.bfloat16)


def test_hand_checkable_example():
    # d_k = 2: q.k1 = 2*sqrt(2), divided by sqrt(2) gives 2, so the weights are softmax([0, 2])
    q = torch.tensor([[1.0, 1.0]])
    k = torch.tensor([[0.0, 0.0], [1.0, 1.0]]) * 2**0.5
    v = torch.tensor([[10.0], [20.0]])
    output, weights = scaled_dot_product_attention(q, k, v)
    expected = torch.softmax(torch.tensor([0.0, 2.0]), dim=0)
    torch.testing.assert_close(weights[0], expected)
    torch.testing.assert_close(output[0, 0], 10 * expected[0] + 20 * expected[1])


def test_explicit_scale_equals_torch():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=gen) for _ in range(3))
    output, _ = scaled_dot_product_attention(q, k, v, scale=0.3)
    torch.testing.assert_close(output, F.scaled_dot_product_attention(q, k, v, scale=0.3))


def test_dropout_zeroes_weights_only_in_its_argument():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(4, 6, 8, generator=gen) for _ in range(3))
    torch.manual_seed(0)
    _, dropped = scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    _, kept = scaled_dot_product_attention(q, k, v)
    zeroed = dropped == 0
    assert zeroed.any() and (~zeroed).any()
    torch.testing.assert_close(dropped[~zeroed], kept[~zeroed] * 2)  # survivors scaled by 1/(1-p)


# ---------------------------------------------------------------- masks
@pytest.mark.parametrize("length", [1, 2, 5])
def test_causal_mask(length):
    mask = causal_mask(length)
    assert mask.shape == (length, length) and mask.dtype == torch.bool
    for i in range(length):
        for j in range(length):
            assert mask[i, j].item() == (j <= i), (i, j)


def test_padding_mask():
    mask = padding_mask([2, 0, 3], max_len=4)
    assert mask.shape == (3, 1, 1, 4) and mask.dtype == torch.bool
    expected = [[True, True, False, False], [False] * 4, [True, True, True, False]]
    assert mask[:, 0, 0].tolist() == expected
    assert padding_mask(torch.tensor([1, 3])).shape == (2, 1, 1, 3)  # max_len from the lengths


def test_padding_mask_broadcasts_over_heads_and_queries():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(3, 2, 5, 4, generator=gen)  # (batch, heads, L, d)
    mask = padding_mask([5, 2, 4])
    output, weights = scaled_dot_product_attention(q, q, q, mask)
    torch.testing.assert_close(output, F.scaled_dot_product_attention(q, q, q, attn_mask=mask))
    assert (weights[1, :, :, 2:] == 0).all()


# ---------------------------------------------------------------- MultiHeadAttention
@st.composite
def mha_cases(draw):
    num_heads, d_head = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    batch, l_q = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    cross = draw(st.booleans())
    l_k = draw(st.integers(1, 6)) if cross else l_q
    return dict(
        num_heads=num_heads,
        d_model=num_heads * d_head,
        batch=batch,
        l_q=l_q,
        l_k=l_k,
        cross=cross,
        bias=draw(st.booleans()),
        use_padding=draw(st.booleans()),
        attn=draw(st.sampled_from(["none", "causal", "random2d", "random_per_head"])),
        dtype=draw(st.sampled_from([torch.float32, torch.float64])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def build_mha_case(c):
    """torch's module, ours copied from it, inputs, and the masks in both conventions."""
    torch.manual_seed(c["seed"])
    theirs = nn.MultiheadAttention(c["d_model"], c["num_heads"], bias=c["bias"], batch_first=True)
    theirs = theirs.to(c["dtype"]).eval()
    ours = MultiHeadAttention.from_torch(theirs).eval()
    b, l_q, l_k, h = c["batch"], c["l_q"], c["l_k"], c["num_heads"]
    query = torch.randn(b, l_q, c["d_model"], dtype=c["dtype"])
    key = torch.randn(b, l_k, c["d_model"], dtype=c["dtype"]) if c["cross"] else query
    value = torch.randn(b, l_k, c["d_model"], dtype=c["dtype"]) if c["cross"] else query
    keys_real = None
    if c["use_padding"]:
        lengths = torch.randint(1, l_k + 1, (b,))
        keys_real = torch.arange(l_k)[None, :] < lengths[:, None]  # ours: True at real keys
    ours_mask = theirs_mask = None
    if c["attn"] == "causal":
        ours_mask = torch.ones(l_q, l_k, dtype=torch.bool).tril()
        theirs_mask = ~ours_mask
    elif c["attn"] == "random2d":
        ours_mask = torch.rand(l_q, l_k) < 0.7
        theirs_mask = ~ours_mask
    elif c["attn"] == "random_per_head":  # torch wants (batch * heads, L_q, L_k)
        ours_mask = torch.rand(b, h, l_q, l_k) < 0.7
        theirs_mask = ~ours_mask.reshape(b * h, l_q, l_k)
    kpm_theirs = None if keys_real is None else ~keys_real
    return ours, theirs, (query, key, value), (ours_mask, keys_real), (theirs_mask, kpm_theirs)


def allowed_rows(ours_mask, keys_real, shape):
    """(B, H, L_q): True where a query has at least one key it may attend to."""
    allowed = torch.ones(shape, dtype=torch.bool)
    if ours_mask is not None:
        allowed = allowed & ours_mask
    if keys_real is not None:
        allowed = allowed & keys_real[:, None, None, :]
    return allowed.any(dim=-1)


@PROPERTY
@given(mha_cases())
def test_mha_from_torch_equals_torch(c):
    ours, theirs, (query, key, value), (mask, keys_real), (attn_mask, kpm) = build_mha_case(c)
    out, weights = ours(query, key, value, mask=mask, key_padding_mask=keys_real)
    # torch's fused path (need_weights=False) gives zeros for a query with nothing to attend to, as ours does
    ref_out, _ = theirs(query, key, value, key_padding_mask=kpm, attn_mask=attn_mask, need_weights=False)
    assert_close(out, ref_out)
    # torch's weights path returns NaN rows there, so compare weights on the other rows only
    _, ref_weights = theirs(
        query, key, value, key_padding_mask=kpm, attn_mask=attn_mask, need_weights=True, average_attn_weights=False
    )
    assert weights.shape == (c["batch"], c["num_heads"], c["l_q"], c["l_k"])
    rows = allowed_rows(mask, keys_real, weights.shape)
    assert_close(weights[rows], ref_weights[rows])
    assert (weights[~rows] == 0).all()


@PROPERTY
@given(mha_cases())
def test_mha_fused_path_equals_weights_path(c):
    ours, _, (query, key, value), (mask, keys_real), _ = build_mha_case(c)
    with_weights, _ = ours(query, key, value, mask=mask, key_padding_mask=keys_real)
    fused, no_weights = ours(query, key, value, mask=mask, key_padding_mask=keys_real, need_weights=False)
    assert no_weights is None
    assert_close(fused, with_weights)


@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_gradients_equal_torch(need_weights):
    torch.manual_seed(0)
    theirs = nn.MultiheadAttention(12, 3, batch_first=True, dtype=torch.float64)
    ours = MultiHeadAttention.from_torch(theirs)
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    keys_real = torch.tensor([[True] * 5, [True, True, True, False, False]])
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    out, _ = ours(x, x, x, mask=causal, key_padding_mask=keys_real, need_weights=need_weights)
    ref, _ = theirs(x, x, x, attn_mask=~causal, key_padding_mask=~keys_real, need_weights=False)
    cotangent = torch.randn_like(out)
    (out * cotangent).sum().backward()
    (ref * cotangent).sum().backward()
    own_in_grad = torch.cat([p.weight.grad for p in (ours.q_proj, ours.k_proj, ours.v_proj)])
    torch.testing.assert_close(own_in_grad, theirs.in_proj_weight.grad)
    own_in_bias_grad = torch.cat([p.bias.grad for p in (ours.q_proj, ours.k_proj, ours.v_proj)])
    torch.testing.assert_close(own_in_bias_grad, theirs.in_proj_bias.grad)
    torch.testing.assert_close(ours.out_proj.weight.grad, theirs.out_proj.weight.grad)


def test_mha_dropout_is_copied_and_off_in_eval():
    torch.manual_seed(0)
    theirs = nn.MultiheadAttention(8, 2, dropout=0.3, batch_first=True).eval()
    ours = MultiHeadAttention.from_torch(theirs).eval()
    assert ours.dropout == 0.3
    x = torch.randn(2, 4, 8)
    torch.testing.assert_close(ours(x, x, x)[0], theirs(x, x, x)[0])


@pytest.mark.parametrize("num_heads,d_head", [(1, 4), (3, 2), (4, 5)])
def test_split_and_merge_heads(num_heads, d_head):
    mha = MultiHeadAttention(num_heads * d_head, num_heads)
    x = torch.randn(2, 7, num_heads * d_head)
    heads = mha.split_heads(x)
    assert heads.shape == (2, num_heads, 7, d_head)
    for h in range(num_heads):  # head h sees features h*d_head .. (h+1)*d_head
        torch.testing.assert_close(heads[:, h], x[..., h * d_head : (h + 1) * d_head])
    torch.testing.assert_close(mha.merge_heads(heads), x)


# ---------------------------------------------------------------- bad input: the message says the problem
def test_bad_rank():
    with pytest.raises(AttentionShapeError, match=r"q has shape \(4,\); attention needs at least 2 dimensions"):
        scaled_dot_product_attention(torch.randn(4), torch.randn(3, 4), torch.randn(3, 4))


def test_not_a_tensor():
    with pytest.raises(TypeError, match="k must be a torch.Tensor, got list"):
        scaled_dot_product_attention(torch.randn(2, 4), [[1.0] * 4], torch.randn(1, 4))


def test_mismatched_d_k():
    with pytest.raises(AttentionShapeError, match="q has 4 features per position but k has 5"):
        scaled_dot_product_attention(torch.randn(2, 3, 4), torch.randn(2, 6, 5), torch.randn(2, 6, 5))


def test_key_value_length_mismatch():
    with pytest.raises(AttentionShapeError, match="k has 6 positions but v has 7"):
        scaled_dot_product_attention(torch.randn(3, 4), torch.randn(6, 4), torch.randn(7, 4))


def test_batch_dims_do_not_broadcast():
    with pytest.raises(AttentionShapeError, match=r"leading \(batch/head\) dimensions .* do not broadcast"):
        scaled_dot_product_attention(torch.randn(2, 3, 4), torch.randn(3, 3, 4), torch.randn(3, 3, 4))


def test_mask_does_not_broadcast():
    mask = torch.ones(4, 3, dtype=torch.bool)  # (L_k, L_q): transposed by mistake
    with pytest.raises(
        AttentionShapeError,
        match=re.escape("mask of shape (4, 3) does not broadcast to the attention scores (2, 3, 4)"),
    ):
        scaled_dot_product_attention(torch.randn(2, 3, 8), torch.randn(2, 4, 8), torch.randn(2, 4, 8), mask)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.uint8])
def test_mask_not_boolean(dtype):
    mask = torch.ones(3, 4, dtype=dtype)
    with pytest.raises(TypeError, match=f"mask has dtype {dtype}; use a boolean mask"):
        scaled_dot_product_attention(torch.randn(3, 8), torch.randn(4, 8), torch.randn(4, 8), mask)


def test_d_model_not_divisible_by_heads():
    with pytest.raises(
        ValueError, match=r"d_model=10 is not divisible by num_heads=4.*Try num_heads in \[1, 2, 5, 10\]"
    ):
        MultiHeadAttention(10, 4)


@pytest.mark.parametrize("d_model,num_heads", [(0, 1), (8, 0), (-4, 2)])
def test_non_positive_sizes(d_model, num_heads):
    with pytest.raises(ValueError, match="d_model and num_heads must be positive"):
        MultiHeadAttention(d_model, num_heads)


@pytest.mark.parametrize(
    "bad",
    [torch.ones(2, 4, dtype=torch.bool), torch.ones(2, 5), torch.ones(5, dtype=torch.bool)],
    ids=["wrong length", "not boolean", "missing batch axis"],
)
def test_wrong_key_padding_mask(bad):
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(2, 5, 8)
    with pytest.raises(
        AttentionShapeError, match=r"key_padding_mask must be boolean of shape \(batch, L_k\) = \(2, 5\)"
    ):
        mha(x, x, x, key_padding_mask=bad)


@pytest.mark.parametrize("shape", [(5, 8), (2, 5, 6)], ids=["no batch axis", "wrong d_model"])
def test_mha_wrong_input_shape(shape):
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(*shape)
    with pytest.raises(
        AttentionShapeError, match=r"query has shape .*expects \(batch, length, d_model=8\), batch first"
    ):
        mha(x, x, x)


def test_from_torch_rejects_other_modules():
    with pytest.raises(TypeError, match="from_torch expects torch.nn.MultiheadAttention, got Linear"):
        MultiHeadAttention.from_torch(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="kdim == vdim == embed_dim"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(8, 2, kdim=4, vdim=4))
    with pytest.raises(ValueError, match="add_bias_kv or add_zero_attn"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(8, 2, add_bias_kv=True))


def test_padding_mask_bad_lengths():
    with pytest.raises(AttentionShapeError, match="a length 5 is longer than max_len=3"):
        padding_mask([2, 5], max_len=3)
    with pytest.raises(AttentionShapeError, match=r"lengths must be 1-D .* got shape \(2, 1\)"):
        padding_mask([[2], [3]])


# The fused (need_weights=False) path checks its mask like the weights path.
def test_fused_path_rejects_float_mask():
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(2, 5, 8)
    with pytest.raises(TypeError, match="mask has dtype torch.float32; use a boolean mask"):
        mha(x, x, x, mask=torch.ones(5, 5), need_weights=False)


def test_fused_path_names_a_bad_mask_shape():
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(2, 5, 8)
    with pytest.raises(AttentionShapeError, match="does not broadcast to the attention scores"):
        mha(x, x, x, mask=torch.ones(3, 3, dtype=torch.bool), need_weights=False)
