"""Chapter 01's exercises against the shortcuts a learner looking for one would try, beyond the
typical mistakes each exercise lists (those are proven rejected by tests/test_exercises.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torch.nn.functional as nnf

from course_utils import exercises


def _softmax_by_getattr(s, t):
    return getattr(torch, "soft" + "max")(s / t, dim=-1)  # invisible to a reading of the code


def _softmax_by_alias(s, t):
    return nnf.softmax(s / t, dim=-1)


def _softmax_by_special(s, t):
    return torch.special.softmax(s / t, -1)


def _softmax_by_module(s, t):
    return torch.nn.Softmax(dim=-1)(s / t)


def _softmax_by_categorical(s, t):
    return torch.distributions.Categorical(logits=s / t).probs  # calls a softmax inside


def _softmax_by_logsumexp(s, t):
    return (s / t - (s / t).logsumexp(dim=-1, keepdim=True)).exp()


@pytest.mark.parametrize(
    "shortcut",
    [
        _softmax_by_getattr,
        _softmax_by_alias,
        _softmax_by_special,
        _softmax_by_module,
        _softmax_by_categorical,
        _softmax_by_logsumexp,
    ],
)
def test_softmax_temperature_rejects_every_library_softmax(shortcut):
    passed, message = exercises.verdict("01.softmax_temperature", shortcut)
    assert not passed and "rule broken: write the softmax yourself" in message, message


def test_softmax_temperature_accepts_an_in_place_answer_that_keeps_the_rule():
    def in_place(s, t):
        s = s / t
        s -= s.max(dim=-1, keepdim=True).values
        s.exp_()
        return s / s.sum(dim=-1, keepdim=True)

    assert exercises.verdict("01.softmax_temperature", in_place) == (True, "correct!")


def _attention(q, k, v, mask):
    scores = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return weights @ v, weights


def test_masked_attention_compares_the_weights_not_only_the_output():
    for weights_of, says in (
        (lambda w: None, "the weights should be a tensor of shape (2, 2, 4, 4)"),
        (lambda w: w * 1.1, "the weights differ by up to"),
        (lambda w: w.transpose(-2, -1), "the weights differ by up to"),
    ):

        def answer(q, k, v, mask, weights_of=weights_of):
            output, weights = _attention(q, k, v, mask)
            return output, weights_of(weights)

        passed, message = exercises.verdict("01.masked_attention", answer)
        assert not passed and says in message, message
    assert exercises.verdict("01.masked_attention", _attention) == (True, "correct!")


def test_masked_attention_rejects_torch_attention_reached_through_a_name_bound_elsewhere():
    sdpa = F.scaled_dot_product_attention

    def answer(q, k, v, mask):
        _, weights = _attention(q, k, v, mask)
        return sdpa(q, k, v, attn_mask=mask).nan_to_num(0.0), weights

    passed, message = exercises.verdict("01.masked_attention", answer)
    assert not passed and "rule broken: fix the function itself" in message, message


def test_the_broken_functions_shown_to_the_learner_fail_with_their_diagnosis():
    for key, name in (("01.merge_heads", "merge_heads"), ("01.masked_attention", "my_attention")):
        namespace = {"math": math, "torch": torch}
        exec(exercises.get(key).given, namespace)  # what the learner starts from, as shown
        passed, message = exercises.verdict(key, namespace[name])
        assert not passed and ("broken function unchanged" in message or "function as given" in message), message


def test_causal_mask_offset_matches_torch_is_causal_only_when_square():
    """The exercise's reference is bottom-right aligned; torch's is_causal is top-left (checked here)."""
    reference = exercises.reference_answer("01.causal_mask")
    q, k, v = torch.randn(1, 2, 4), torch.randn(1, 5, 4), torch.randn(1, 5, 4)
    top_left = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(
        top_left, F.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(2, 5).tril().bool())
    )
    assert not torch.allclose(top_left, F.scaled_dot_product_attention(q, k, v, attn_mask=reference(2, 5)))
    assert torch.equal(reference(4, 4), torch.ones(4, 4).tril().bool())


@pytest.mark.parametrize(
    "key, answer, passes",
    [
        ("01.uniform_entropy", 3, True),
        ("01.uniform_entropy", torch.tensor(3.0), True),
        ("01.uniform_entropy", "3", False),
        ("01.score_variance", 64, True),
        ("01.score_memory", 512, True),
        ("01.diagonal_cause", "(C)", True),
        ("01.diagonal_cause", "e", False),
        ("01.dropout_row_sums", " c ", True),
    ],
)
def test_numbers_and_letters_are_read_leniently_but_checked(key, answer, passes):
    assert exercises.verdict(key, answer)[0] is passes


def test_predicted_numbers_come_from_first_principles():
    assert exercises.reference_answer("01.uniform_entropy") == pytest.approx(math.log2(8))
    assert exercises.reference_answer("01.score_memory") == pytest.approx(32 * (4096 / 1024) ** 2)
    q, k = torch.randn(2, 200_000, 64, generator=torch.Generator().manual_seed(0)).unbind(0)
    assert (q * k).sum(-1).var().item() == pytest.approx(exercises.reference_answer("01.score_variance"), rel=0.02)
