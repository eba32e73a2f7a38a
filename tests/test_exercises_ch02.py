"""Chapter 02's exercises beyond the generic suite (tests/test_exercises.py): the mix of kinds,
the rules (a module built and counted, torch's attention handed the job) caught however they
are written, the shortcuts a learner would try, and right answers in other spellings."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from course_utils import exercises
from course_utils.exercises import ch02, ch02_attention

KEYS = exercises.keys("02")


def verdict(key, answer):
    return exercises.verdict(key, answer)


def test_the_chapter_has_enough_exercises_of_the_right_kinds():
    kinds = [exercises.get(k).kind for k in KEYS]
    assert len(KEYS) >= 5
    assert sum(kind != "retype" for kind in kinds) >= len(KEYS) / 2, kinds
    assert sum(kind in ("predict", "conceptual") for kind in kinds) >= 2, kinds
    assert {"predict", "modify", "debug", "conceptual"} <= set(kinds)


@pytest.mark.parametrize("key", KEYS)
def test_every_exercise_says_its_section_and_time(key):
    ex = exercises.get(key)
    assert ex.section and ex.section[0].isdigit(), f"{key}: name the chapter section it draws on"
    assert 1 <= ex.minutes <= 20


def test_page_lists_every_exercise_and_the_total_time(capsys):
    exercises.page("02")
    out = capsys.readouterr().out
    total = sum(exercises.get(k).minutes for k in KEYS)
    assert f"{len(KEYS)} exercises, about {total} minutes" in out
    assert all(k in out for k in KEYS)


# ----------------------------------------------------------------------------- 02.encoder_layer_parameters


def formula(d, h, f):
    return 4 * (d * d + d) + (d * f + f) + (f * d + d) + 4 * d


def counts_torch_layer(d, h, f):
    return sum(p.numel() for p in nn.TransformerEncoderLayer(d, h, f).parameters())


def counts_course_layer(d, h, f):
    from course_utils.layers.transformer import TransformerEncoderLayer

    return sum(p.numel() for p in TransformerEncoderLayer(d, h, f).parameters())


def counts_linears(d, h, f):
    linears = [nn.Linear(d, d) for _ in range(4)] + [nn.Linear(d, f), nn.Linear(f, d)]
    return sum(p.numel() for m in linears for p in m.parameters()) + 4 * d


def counts_via_getattr(d, h, f):  # no forbidden name in the code: only the run-time watch can see it
    layer_class = getattr(nn, "Transformer" + "EncoderLayer")
    return sum(t.numel() for t in layer_class(d, h, f).state_dict().values())


def _build_helper(d, h, f):
    return nn.MultiheadAttention(d, h)


def counts_through_a_helper(d, h, f):
    attention = _build_helper(d, h, f)
    return sum(p.numel() for p in attention.parameters()) + (d * f + f) + (f * d + d) + 4 * d


@pytest.mark.parametrize(
    "answer", [counts_torch_layer, counts_course_layer, counts_linears, counts_via_getattr, counts_through_a_helper]
)
def test_counting_a_built_module_breaks_the_rule(answer):
    passed, message = verdict("02.encoder_layer_parameters", answer)
    assert not passed and "rule broken" in message and "build no module" in message, message


def test_the_formula_passes_in_any_spelling():
    assert verdict("02.encoder_layer_parameters", formula) == (True, "correct!")
    assert verdict("02.encoder_layer_parameters", lambda d, h, f: 2 * d * f + 4 * d * d + f + 9 * d)[0]


def test_a_count_returned_as_float_or_tensor_is_refused_with_a_reason():
    for answer in (lambda d, h, f: float(formula(d, h, f)), lambda d, h, f: torch.tensor(formula(d, h, f))):
        passed, message = verdict("02.encoder_layer_parameters", answer)
        assert not passed and "whole number (int)" in message


def test_a_count_right_only_for_one_configuration_fails():
    passed, message = verdict("02.encoder_layer_parameters", lambda d, h, f: formula(8, 2, 16))
    assert not passed and "count_parameters(64, 4, 256)" in message


# ----------------------------------------------------------------------------- 02.fix_multi_head


def test_handing_the_job_to_torch_breaks_the_rule():
    import torch.nn.functional as F

    def sdpa(x, w_q, w_k, w_v, w_o, h):
        b, n, d = x.shape

        def split(t):
            return t.reshape(b, n, h, d // h).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(x @ w_q), split(x @ w_k), split(x @ w_v))
        return out.transpose(1, 2).reshape(b, n, d) @ w_o

    passed, message = verdict("02.fix_multi_head", sdpa)
    assert not passed and "rule broken" in message and "do not hand the job to torch's attention" in message


def test_the_broken_function_passes_with_one_head_only():
    """The bugs are invisible with one head, which is why the check uses several."""
    broken = exercises.given_function(ch02_attention.FIX_MULTI_HEAD_GIVEN, "multi_head", "02.fix_multi_head")
    torch.manual_seed(0)
    x, ws = torch.randn(2, 5, 8), [torch.randn(8, 8) for _ in range(4)]
    assert torch.allclose(broken(x, *ws, 1), ch02_attention._multi_head_reference(x, *ws, 1), atol=1e-5)
    assert not torch.allclose(broken(x, *ws, 2), ch02_attention._multi_head_reference(x, *ws, 2), atol=1e-3)
    passed, message = verdict("02.fix_multi_head", broken)
    assert not passed and "the function as given" in message


def test_the_learners_own_error_is_reported_as_theirs():
    def crashes(x, w_q, w_k, w_v, w_o, num_heads):
        q = (x @ w_q).view(x.shape[0], num_heads, -1)
        raise ValueError(f"my own check failed for {tuple(q.shape)}")

    passed, message = verdict("02.fix_multi_head", crashes)
    assert not passed and message.startswith("your answer raised ValueError: my own check failed")
    assert "line" in message or "at " in message


# ----------------------------------------------------------------------------- 02.reversal_mask


def test_a_mask_that_reverses_only_full_sequences_is_diagnosed():
    passed, message = verdict(
        "02.reversal_mask",
        lambda lengths, n: torch.eye(n, dtype=torch.bool).flip(-1).expand(len(lengths), n, n).clone(),
    )
    assert not passed and "each sequence's own length" in message


def test_the_reference_mask_makes_torchs_attention_reverse_whatever_its_weights():
    lengths, n = [6, 3], 6
    mask = ch02_attention._reversal_mask_reference(lengths, n)
    for seed in range(3):
        torch.manual_seed(seed)
        mha = nn.MultiheadAttention(4, 1, batch_first=True).eval()
        x = torch.randn(2, n, 4)
        with torch.no_grad():
            out, _ = mha(x, x, x, attn_mask=~mask)
            reversed_out, _ = mha(x.flip(1), x.flip(1), x.flip(1), attn_mask=~torch.eye(n, dtype=torch.bool))
        assert torch.allclose(out[0], reversed_out[0], atol=1e-5)  # full length: the plain reversal


# ----------------------------------------------------------------------------- 02.blind_two_digits


def test_blind_two_digits_is_one_by_brute_force():
    assert ch02._blind_two_digits_reference() == 1.0


@pytest.mark.parametrize("answer", [1, 1.0, 0.999, torch.tensor(1.0)])
def test_blind_two_digits_right_answers(answer):
    assert verdict("02.blind_two_digits", answer)[0]


@pytest.mark.parametrize(
    "answer, says", [(0.1, "better than chance"), (0.5, "WHICH of the two"), (100, "too high"), ("1", "give a number")]
)
def test_blind_two_digits_wrong_answers_are_diagnosed(answer, says):
    passed, message = verdict("02.blind_two_digits", answer)
    assert not passed and says in message, message


# ----------------------------------------------------------------------------- 02.why_post_ln_failed


@pytest.mark.parametrize("answer", ["b", "B", " (b) "])
def test_the_right_letter_in_any_spelling(answer):
    passed, message = verdict("02.why_post_ln_failed", answer)
    assert passed and "Liu et al." in message


@pytest.mark.parametrize(
    "letter, says", [("a", "whatever the gradient's size"), ("c", "the very same rate"), ("d", "it has fewer")]
)
def test_each_wrong_hypothesis_gets_its_explanation(letter, says):
    passed, message = verdict("02.why_post_ln_failed", letter)
    assert not passed and says in message


def test_the_fewer_parameters_claim_of_option_d_is_true():
    from course_utils.layers.transformer import TransformerEncoder

    def count(m):
        return sum(p.numel() for p in m.parameters())

    assert count(TransformerEncoder(2, 16, 2, 32, norm_first=True)) - count(TransformerEncoder(2, 16, 2, 32)) == 2 * 16


def test_placeholders_are_not_tried():
    for key in KEYS:
        assert verdict(key, None)[1].startswith("not tried yet")
    assert math.isfinite(ch02._count_reference(768, 12, 3072))


def test_the_packages_own_answers_are_shortcuts_that_break_the_rules():
    from course_utils.layers import transformer
    from course_utils.layers.attention import MultiHeadAttention

    table = transformer.sinusoidal_positions  # an alias bound before the check
    passed, message = verdict("02.sinusoidal_positions", lambda n, d: table(n, d))
    assert not passed and "rule broken" in message

    def course_module(x, w_q, w_k, w_v, w_o, h):
        mha = MultiHeadAttention(x.shape[-1], h, bias=False)
        with torch.no_grad():
            for proj, w in zip((mha.q_proj, mha.k_proj, mha.v_proj, mha.out_proj), (w_q, w_k, w_v, w_o)):
                proj.weight.copy_(w.T)
        return mha(x, x, x)[0]

    passed, message = verdict("02.fix_multi_head", course_module)
    assert not passed and "rule broken" in message
