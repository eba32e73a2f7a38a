"""Property-based fuzzing of tensor inputs (issue 16): right or refused in one line, never silently wrong.

* :class:`MultiHeadAttention` on random shapes, some of them wrong (key and value of different
  lengths, different batch sizes, a d_model that differs), and random masks: the weights path
  and the fused path both refuse the same inputs with the same one-line error, and on valid
  inputs both equal ``torch.nn.MultiheadAttention``. (This found that a query batch of 1 with
  keys of batch 2 was silently broadcast to a batch of 2 on both paths; torch refuses it, and
  so does the course now.)
* ``scaled_dot_product_attention`` on shapes with empty axes (d_k = 0, no key): the package's own
  error or torch's ``F.scaled_dot_product_attention``;
* BERT on random ids of every integer dtype, lengths and ranges, masks and segment ids: the
  package's one-line :class:`BertInputError` or transformers' BertModel output;
* masking invariants of :func:`mask_tokens` on random batches;
* :class:`TextEmbedder` and :func:`contrastive_loss` on random ids and temperatures.

Derandomized, so CI sees the same examples every run.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings, strategies as st
from torch import nn

from course_utils.vision import contrastive
from course_utils.text import pretraining
from course_utils.layers.attention import AttentionShapeError, MultiHeadAttention, scaled_dot_product_attention

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def one_line(err: Exception) -> str:
    text = str(err)
    assert text and "\n" not in text, repr(text)
    return text


def outcome(call):
    """("ok", value) or ("error", exception type, message)."""
    try:
        return ("ok", call())
    except (ValueError, TypeError) as err:
        return ("error", type(err), one_line(err))


# ---------------------------------------------------------------- multi-head attention, both paths

D_MODEL, HEADS = 8, 2


@pytest.fixture(scope="module")
def attention_pair():
    torch.manual_seed(0)
    reference = nn.MultiheadAttention(D_MODEL, HEADS, batch_first=True).double().eval()
    return MultiHeadAttention.from_torch(reference).eval(), reference


@st.composite
def mha_cases(draw):
    """Mostly valid shapes, with one thing wrong now and then."""
    batch = draw(st.integers(1, 3))
    l_q, l_k = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    l_v = draw(st.sampled_from([l_k, l_k, l_k, draw(st.integers(1, 5))]))
    b_k = draw(st.sampled_from([batch, batch, batch, 1, batch + 1]))
    d_k = draw(st.sampled_from([D_MODEL] * 6 + [D_MODEL - 2, D_MODEL + 2]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    query = torch.randn(batch, l_q, D_MODEL, generator=g, dtype=torch.float64)
    key = torch.randn(b_k, l_k, d_k, generator=g, dtype=torch.float64)
    value = torch.randn(b_k, l_v, D_MODEL, generator=g, dtype=torch.float64)
    padding = None
    if draw(st.booleans()):
        lengths = torch.randint(0 if draw(st.booleans()) else 1, l_k + 1, (b_k,), generator=g)
        padding = torch.arange(l_k)[None, :] < lengths[:, None]  # True at real keys; a row may be all False
    causal = draw(st.booleans()) and torch.ones(l_q, l_k, dtype=torch.bool).tril()
    return query, key, value, padding, causal if causal is not False else None


@given(case=mha_cases())
@FUZZ
def test_mha_paths_agree_with_each_other_and_with_torch(attention_pair, case):
    ours, reference = attention_pair
    query, key, value, padding, causal = case
    with torch.no_grad():
        weights_path = outcome(lambda: ours(query, key, value, mask=causal, key_padding_mask=padding)[0])
        fused_path = outcome(
            lambda: ours(query, key, value, mask=causal, key_padding_mask=padding, need_weights=False)[0]
        )
    assert weights_path[0] == fused_path[0], (weights_path, fused_path)
    if weights_path[0] == "error":
        assert weights_path[1:] == fused_path[1:]  # the same error, word for word
        return
    valid = key.shape[-1] == D_MODEL and key.shape[:2] == value.shape[:2] and key.shape[0] == query.shape[0]
    assert valid, "an invalid shape was not refused"
    # torch's convention is the opposite (True = ignore); a query with nothing to attend to gives NaN there
    torch_mask = None if causal is None else ~causal
    with torch.no_grad():
        expected = reference(
            query,
            key,
            value,
            attn_mask=torch_mask,
            key_padding_mask=None if padding is None else ~padding,
            need_weights=False,
        )[0]
    allowed = torch.ones(query.shape[0], query.shape[1], key.shape[1], dtype=torch.bool)
    if causal is not None:
        allowed = allowed & causal
    if padding is not None:
        allowed = allowed & padding[:, None, :]
    rows = allowed.any(-1)  # queries that can attend to something: there the two must agree
    torch.testing.assert_close(weights_path[1], fused_path[1], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(weights_path[1][rows], expected[rows], rtol=1e-9, atol=1e-10)
    assert torch.isfinite(weights_path[1]).all()


@given(
    batch=st.integers(1, 2), l_q=st.integers(0, 3), l_k=st.integers(0, 3), d_k=st.integers(0, 3), d_v=st.integers(0, 3)
)
@FUZZ
def test_sdpa_on_empty_axes(batch, l_q, l_k, d_k, d_v):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(batch, l_q, d_k, generator=g), torch.randn(batch, l_k, d_k, generator=g)
    v = torch.randn(batch, l_k, d_v, generator=g)
    got = outcome(lambda: scaled_dot_product_attention(q, k, v)[0])
    if d_k == 0:
        assert got[0] == "error" and got[1] is AttentionShapeError and "0 features" in got[2]
        return
    assert got[0] == "ok"
    if l_k == 0:  # nothing to attend to: zeros (a softmax over no key is NaN in torch), as for a masked row
        assert torch.equal(got[1], torch.zeros(batch, l_q, d_v))
    else:
        torch.testing.assert_close(got[1], F.scaled_dot_product_attention(q, k, v))


# ---------------------------------------------------------------- BERT's entrance

transformers = pytest.importorskip("transformers")
from course_utils.text import bert  # noqa: E402  (needs transformers)
from course_utils.text.bert_inputs import BertInputError  # noqa: E402

VOCAB, POSITIONS, TYPES = 30, 12, 2


@pytest.fixture(scope="module")
def bert_pair():
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=POSITIONS,
        type_vocab_size=TYPES,
    )
    ours = bert.BertModel(config).double().eval()
    return ours, ours.to_hf(attn_implementation="eager").eval()


@st.composite
def bert_inputs(draw):
    dtype = draw(st.sampled_from([torch.long] * 4 + [torch.int32, torch.uint8, torch.int16, torch.float32, torch.bool]))
    batch = draw(st.integers(0 if draw(st.booleans()) else 1, 3))
    length = draw(st.integers(1, POSITIONS + 2))
    high = draw(st.sampled_from([VOCAB, VOCAB, VOCAB + 5]))
    low = draw(st.sampled_from([0, 0, 0, -3]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    ids = torch.randint(low, high, (batch, length), generator=g)
    ids = ids.clamp(min=0).to(dtype) if dtype in (torch.uint8, torch.bool) else ids.to(dtype)
    mask = None
    if draw(st.booleans()):
        lengths = torch.randint(1, length + 1, (batch,), generator=g)
        mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
        mask = draw(st.sampled_from([mask, mask.bool(), mask.float(), mask * 2, mask[:, :-1]]))
    types = None
    if draw(st.booleans()):
        types = torch.randint(0, draw(st.sampled_from([TYPES, TYPES + 1])), (batch, length), generator=g)
    return ids, mask, types


@given(case=bert_inputs())
@FUZZ
def test_bert_input_is_refused_in_one_line_or_equals_transformers(bert_pair, case):
    ours, hf = bert_pair
    ids, mask, types = case
    with torch.no_grad():
        got = outcome(lambda: ours(ids, attention_mask=mask, token_type_ids=types).last_hidden_state)
    if got[0] == "error":
        assert issubclass(got[1], BertInputError), got
        return
    # only well-formed input gets through
    assert ids.dtype in (torch.long, torch.int32) and ids.numel() > 0 and ids.shape[1] <= POSITIONS
    assert 0 <= int(ids.min()) and int(ids.max()) < VOCAB
    with torch.no_grad():
        expected = hf(
            input_ids=ids.long(), attention_mask=None if mask is None else mask.long(), token_type_ids=types
        ).last_hidden_state
    keep = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
    torch.testing.assert_close(got[1][keep], expected[keep], rtol=1e-7, atol=1e-8)


# ---------------------------------------------------------------- masking invariants


@given(batch=st.integers(1, 4), length=st.integers(1, 40), p=st.floats(0.01, 0.99), seed=st.integers(0, 2**31 - 1))
@FUZZ
def test_masking_invariants(batch, length, p, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 50, (batch, length), generator=g)
    special = torch.rand(batch, length, generator=g) < 0.3
    candidates = torch.arange(5, 50)
    masked, labels = pretraining.mask_tokens(ids, special, 4, candidates, p, generator=g)
    chosen = labels != -100
    assert not (chosen & special).any(), "a special token or padding was chosen"
    assert torch.equal(labels[chosen], ids[chosen])  # the target is the original token
    assert torch.equal(masked[~chosen], ids[~chosen])  # nothing else changes
    changed = masked[chosen]
    assert ((changed == 4) | torch.isin(changed, candidates)).all()


# ---------------------------------------------------------------- text embedder and contrastive loss


@pytest.fixture(scope="module")
def embedder():
    torch.manual_seed(0)
    return contrastive.TextEmbedder(vocab_size=10, d_embed=8, d_model=8, num_heads=2, max_len=16).eval()


@given(
    batch=st.integers(1, 3),
    length=st.integers(1, 20),
    high=st.sampled_from([10, 10, 12]),
    dtype=st.sampled_from([torch.long, torch.long, torch.int32, torch.float32]),
    pad_rows=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
@FUZZ
def test_text_embedder_refuses_in_one_line_or_gives_unit_vectors(embedder, batch, length, high, dtype, pad_rows, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, high, (batch, length), generator=g)
    if pad_rows:
        ids[0] = 0
    with torch.no_grad():
        got = outcome(lambda: embedder(ids.to(dtype)))
    if got[0] == "error":
        return
    assert dtype != torch.float32 and length <= 16 and int(ids.max()) < 10 and (ids != 0).any(1).all()
    assert torch.isfinite(got[1]).all()
    torch.testing.assert_close(got[1].norm(dim=-1), torch.ones(batch))


@given(
    temperature=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True, width=32), st.sampled_from([0.0, -0.0, 1e-30, 0.07])
    ),
    as_tensor=st.booleans(),
    n=st.integers(1, 5),
)
@FUZZ
def test_contrastive_loss_is_finite_or_refused(temperature, as_tensor, n):
    x = F.normalize(torch.randn(n, 4, generator=torch.Generator().manual_seed(n)), dim=-1)
    t = torch.tensor(temperature) if as_tensor else temperature
    got = outcome(lambda: contrastive.contrastive_loss(x, x.flip(0), t))
    if not (temperature > 0 and math.isfinite(temperature)):
        assert got[0] == "error" and "temperature" in got[2]
        return
    assert got[0] == "ok"
    logits = x @ x.flip(0).T / temperature  # CLIP's symmetric loss, from the paper's pseudo-code
    labels = torch.arange(n)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    if torch.isfinite(expected):
        torch.testing.assert_close(got[1], expected)
