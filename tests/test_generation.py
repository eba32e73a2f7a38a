"""course_utils.text.generation against transformers' generate: the token ids to match come from transformers.

What the equality tests prove, with the transformers version printed by test_transformers_version
(proven with 5.24.0): on the same weights, our greedy decoding and our beam search return the
ids of ``model.generate(..., do_sample=False, num_beams=n, length_penalty=lp, early_stopping=True,
num_return_sequences=1)``: transformers 5.x's vectorised beam search, where each step keeps
2 * num_beams candidates, only those ranked in the first num_beams may finish, a finished
hypothesis scores sum(log p) / (new tokens incl. EOS) ** length_penalty, an example stops when it
holds num_beams finished hypotheses, and at the length limit the running beams finish. transformers
4.x before the refactor normalised differently; these tests say nothing about it.
"""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import numpy as np
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from course_utils.text.decoder import GPTModel, tiny_config  # noqa: E402
from course_utils.text.generation import (  # noqa: E402
    GenerationInputError,
    beam_search,
    filter_logits,
    generate,
    reorder_cache,
    sequence_log_prob,
    top_p_mask,
)

PROVEN_WITH = "5.24.0"
SAME_SEMANTICS = transformers.__version__.split(".")[0] == "5"
needs_v5 = pytest.mark.skipif(
    not SAME_SEMANTICS,
    reason=f"beam-search semantics proven for transformers 5.x ({PROVEN_WITH}); installed {transformers.__version__}",
)
PAD = 1  # a pad id that is neither 0 (transformers treats a pad tensor 0 as unset when filling) nor EOS


def models(vocab=23, positions=40, seed=0, sharpen=8.0, **extra):
    """transformers' GPT-2 with sharp (non-uniform) distributions, and our copy of it."""
    torch.manual_seed(seed)
    config = tiny_config(vocab_size=vocab, n_positions=positions, n_embd=16, n_layer=2, n_head=2, **extra)
    theirs = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in theirs.parameters():
            p.mul_(sharpen)
    return theirs, GPTModel.from_hf(theirs).eval()


@pytest.fixture(scope="module")
def pair():
    return models()


def hf_generate(model, ids, max_new_tokens, mask=None, **kw):
    mask = torch.ones_like(ids) if mask is None else mask
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=kw.pop("do_sample", False),
            pad_token_id=kw.pop("pad_token_id", PAD),
            **kw,
        )


def prompts(vocab, batch, length, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, vocab - 1, (batch, length), generator=g)


def test_transformers_version():
    print(f"transformers {transformers.__version__}; generation equality proven with {PROVEN_WITH}")
    assert transformers.__version__.split(".")[0] in ("4", "5")


# ----------------------------------------------------------------------------- greedy


@pytest.mark.parametrize("eos", [None, 5, 9])
@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_equals_transformers(pair, eos, use_cache):
    theirs, ours = pair
    for seed in range(4):
        ids = prompts(23, 3, 4 + seed, seed)
        want = hf_generate(theirs, ids, 12, eos_token_id=eos)
        assert torch.equal(generate(ours, ids, 12, eos_token_id=eos, pad_token_id=PAD, use_cache=use_cache), want)
        # and our generate drives transformers' model too
        assert torch.equal(generate(theirs, ids, 12, eos_token_id=eos, pad_token_id=PAD, use_cache=use_cache), want)


def test_greedy_with_left_padding_equals_transformers(pair):
    theirs, ours = pair
    ids = prompts(23, 3, 7, 3)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    mask[2, :5] = 0
    ids = ids.masked_fill(mask == 0, PAD)
    want = hf_generate(theirs, ids, 10, mask=mask, eos_token_id=9)
    assert torch.equal(generate(ours, ids, 10, eos_token_id=9, pad_token_id=PAD, attention_mask=mask), want)
    # the mask is found from the pad id when not given (pad != eos), as transformers does
    assert torch.equal(generate(ours, ids, 10, eos_token_id=9, pad_token_id=PAD), want)


# ----------------------------------------------------------------------------- beam search


@needs_v5
@pytest.mark.parametrize("num_beams,length_penalty", [(2, 1.0), (3, 0.0), (4, -1.0), (5, 2.0), (3, 1.0)])
@pytest.mark.parametrize("eos", [None, 5])
def test_beam_search_equals_transformers(pair, num_beams, length_penalty, eos):
    theirs, ours = pair
    for seed in range(3):
        ids = prompts(23, 2, 3 + seed, seed)
        want = hf_generate(
            theirs,
            ids,
            12,
            num_beams=num_beams,
            length_penalty=length_penalty,
            early_stopping=True,
            eos_token_id=eos,
            num_return_sequences=1,
        )
        for use_cache in (True, False):
            got = generate(
                ours,
                ids,
                12,
                num_beams=num_beams,
                length_penalty=length_penalty,
                eos_token_id=eos,
                pad_token_id=PAD,
                use_cache=use_cache,
            )
            assert torch.equal(got, want), f"seed {seed}, cache {use_cache}:\n{got}\n!=\n{want}"
        assert torch.equal(
            generate(
                theirs, ids, 12, num_beams=num_beams, length_penalty=length_penalty, eos_token_id=eos, pad_token_id=PAD
            ),
            want,
        )


@needs_v5
def test_beam_search_with_an_early_eos_equals_transformers():
    """A model that likes EOS: hypotheses finish at different lengths and the finished set fills up early."""
    theirs, ours = models(seed=3, sharpen=10.0)
    hits = 0
    for seed, eos in itertools.product(range(6), (2, 4, 6, 8)):
        ids = prompts(23, 1, 3, seed)
        want = hf_generate(theirs, ids, 10, num_beams=3, length_penalty=1.0, early_stopping=True, eos_token_id=eos)
        got = generate(ours, ids, 10, num_beams=3, eos_token_id=eos, pad_token_id=PAD)
        assert torch.equal(got, want)
        hits += int(got.shape[1] < ids.shape[1] + 10)
    assert hits > 0, "no hypothesis ended early: the test would not exercise EOS handling"


def test_beam_width_one_is_greedy(pair):
    _, ours = pair
    for seed, eos in itertools.product(range(4), (None, 5)):
        ids = prompts(23, 2, 4, seed)
        assert torch.equal(
            generate(ours, ids, 10, num_beams=1, eos_token_id=eos),
            beam_search(ours, ids, 10, num_beams=1, eos_token_id=eos).sequences,
        )


def _brute_force_best(model, prompt, max_new, eos, length_penalty):
    """Every continuation (stopping at EOS or at max_new tokens), scored from full forward passes."""
    vocab = model.config.vocab_size
    best, best_score = None, -math.inf
    for n in range(1, max_new + 1):
        for tokens in itertools.product(range(vocab), repeat=n):
            if eos in tokens[:-1] or (n < max_new and tokens[-1] != eos):
                continue  # a sequence ends at its first EOS, or at the length limit
            seq = torch.tensor([list(prompt) + list(tokens)])
            with torch.no_grad():
                logp = F.log_softmax(model(seq).logits[0, :-1].double(), -1)
            total = sum(logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(tokens))
            score = total / n**length_penalty
            if score > best_score:
                best, best_score = list(prompt) + list(tokens), score
    return best, best_score


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_a_wide_beam_finds_the_brute_force_best(length_penalty):
    _, ours = models(vocab=4, seed=5, sharpen=6.0)
    eos, max_new, prompt = 3, 3, [1, 2]
    want, want_score = _brute_force_best(ours, prompt, max_new, eos, length_penalty)
    # at least as many beams as complete sequences: nothing is ever pruned
    out = beam_search(
        ours, torch.tensor([prompt]), max_new, num_beams=4**max_new, length_penalty=length_penalty, eos_token_id=eos
    )
    got = [t for t in out.sequences[0].tolist()]
    assert got == want, (got, want)
    assert abs(out.scores[0].item() - want_score) < 1e-4


def test_beam_scores_are_length_penalised_log_probs(pair):
    _, ours = pair
    ids = prompts(23, 2, 4, 1)
    out = beam_search(ours, ids, 8, num_beams=3, length_penalty=1.5, eos_token_id=5, pad_token_id=PAD)
    logp = sequence_log_prob(ours, out.sequences, ids.shape[1], eos_token_id=5)
    lengths = torch.tensor(
        [
            (row[4:] == 5).long().argmax().item() + 1 if (row[4:] == 5).any() else row.shape[0] - 4
            for row in out.sequences
        ]
    )
    assert torch.allclose(out.scores, logp / lengths.float() ** 1.5, atol=1e-4)


# ----------------------------------------------------------------------------- the cache


def test_cached_and_uncached_give_the_same_tokens_and_logits(pair):
    _, ours = pair
    ids = prompts(23, 2, 5, 7)
    for kw in ({}, {"num_beams": 3}, {"num_beams": 4, "eos_token_id": 5, "length_penalty": 0.5}):
        cached = generate(ours, ids, 15, use_cache=True, pad_token_id=PAD, **kw)
        assert torch.equal(cached, generate(ours, ids, 15, use_cache=False, pad_token_id=PAD, **kw))
    # logits step by step with the cache vs one full forward of the generated sequence (a model of
    # ordinary scale: with logits near 10, float32 rounding alone differs by ~1e-5 * 10)
    _, ours = models(seed=4, sharpen=2.0)
    seq = generate(ours, ids, 15)
    with torch.no_grad():
        full = ours(seq).logits
        out = ours(seq[:, :5], use_cache=True)
        steps = [out.logits]
        for t in range(5, seq.shape[1]):
            out = ours(seq[:, t : t + 1], past_key_values=out.past_key_values, use_cache=True)
            steps.append(out.logits)
    assert (torch.cat(steps, 1) - full).abs().max().item() <= 1e-5
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_reordered_cache_continues_the_reordered_beams(pair):
    _, ours = pair
    ids = prompts(23, 4, 6, 2)
    beam_idx = torch.tensor([2, 2, 0, 3])
    with torch.no_grad():
        cache = ours(ids, use_cache=True).past_key_values
        nxt = torch.tensor([[3], [4], [5], [6]])
        step = ours(nxt, past_key_values=reorder_cache(ours, cache, beam_idx)).logits
        full = ours(torch.cat([ids[beam_idx], nxt], 1)).logits[:, -1:]
    assert (step - full).abs().max().item() <= 1e-5


class _Plugged(torch.nn.Module):
    """A model of another shape (as chapter 07's captioner): extra input, its own reorder_cache, max_positions."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.reorders, self.max_positions = inner, 0, 12

    def forward(self, input_ids, attention_mask=None, past_key_values=None, use_cache=False, bias=None):
        out = self.inner(input_ids, attention_mask=attention_mask, past_key_values=past_key_values, use_cache=use_cache)
        return out.logits + bias[:, None, :], out.past_key_values

    def reorder_cache(self, cache, beam_idx):
        self.reorders += 1
        return tuple(tuple(t[beam_idx] for t in layer) for layer in cache)


def test_another_model_plugs_in(pair):
    _, ours = pair
    plugged = _Plugged(ours).eval()
    ids = prompts(23, 2, 4, 4)
    bias = torch.zeros(2, 23)
    bias[1, 7] = 50.0  # the second example is pushed to say 7
    with pytest.warns(UserWarning, match="stops after 9 new tokens"):
        out = generate(plugged, ids, 20, num_beams=3, model_kwargs={"bias": bias})
    assert out.shape == (2, 13) and plugged.reorders > 0
    assert (out[1, 4:] == 7).all() and not (out[0, 4:] == 7).all()
    with pytest.warns(UserWarning):
        assert torch.equal(out, generate(plugged, ids, 20, num_beams=3, use_cache=False, model_kwargs={"bias": bias}))


# ----------------------------------------------------------------------------- sampling


def test_filter_logits_equals_transformers_warpers():
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 50, generator=g) * 3
    for temperature, top_k, top_p in [
        (0.7, None, None),
        (1.0, 5, None),
        (1.3, None, 0.9),
        (0.5, 10, 0.5),
        (1.0, 1, None),
        (2.0, None, 0.01),
        (1.0, 50, 1.0),
    ]:
        want = TemperatureLogitsWarper(temperature)(None, logits.clone())
        if top_k is not None:
            want = TopKLogitsWarper(top_k)(None, want)
        if top_p is not None and top_p < 1:
            want = TopPLogitsWarper(top_p)(None, want)
        got = filter_logits(logits, temperature, top_k, top_p)
        assert torch.equal(torch.isinf(got), torch.isinf(want)), (temperature, top_k, top_p)
        assert torch.allclose(got[~torch.isinf(got)], want[~torch.isinf(want)])


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    assert top_p_mask(logits, 0.5).tolist() == [[True, False, False, False]]
    assert top_p_mask(logits, 0.79).tolist() == [[True, True, False, False]]
    assert top_p_mask(logits, 0.81).tolist() == [[True, True, True, False]]
    assert top_p_mask(logits, 0.01).tolist() == [[True, False, False, False]]  # the best token always stays


def test_sampling_equals_transformers_with_the_same_seed(pair):
    theirs, ours = pair
    ids = prompts(23, 3, 4, 0)
    for kw in ({"temperature": 0.8}, {"top_k": 4}, {"top_p": 0.7, "temperature": 1.5}):  # top_k=0 below: no default 50
        torch.manual_seed(123)
        want = hf_generate(theirs, ids, 10, do_sample=True, **{"top_k": 0, **kw})
        torch.manual_seed(123)
        assert torch.equal(generate(ours, ids, 10, do_sample=True, pad_token_id=PAD, **kw), want), kw


def test_sampling_is_repeatable_and_stays_in_the_kept_set(pair):
    _, ours = pair
    ids = prompts(23, 4, 3, 1)
    run = lambda: generate(ours, ids, 12, do_sample=True, top_k=3, generator=torch.Generator().manual_seed(9))  # noqa: E731
    first = run()
    assert torch.equal(first, run())
    assert torch.equal(generate(ours, ids, 12, do_sample=True, top_k=1), generate(ours, ids, 12))
    with torch.no_grad():  # every sampled token was among the top 3 of its step
        logits = ours(first[:, :-1]).logits[:, ids.shape[1] - 1 :]
    top3 = logits.topk(3, dim=-1).indices
    assert (top3 == first[:, ids.shape[1] :, None]).any(-1).all()


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_get_one_line_errors(pair):
    _, ours = pair
    ids = prompts(23, 1, 4, 0)
    cases = [
        (dict(input_ids=torch.zeros(1, 0, dtype=torch.long)), "the prompt is empty"),
        (dict(input_ids=torch.zeros(1, 41, dtype=torch.long)), "has only 40 positions: keep the last 39"),
        (dict(top_p=0.0, do_sample=True), r"top_p must be in \(0, 1\]"),
        (dict(top_p=1.5, do_sample=True), r"top_p must be in \(0, 1\]"),
        (dict(temperature=0.0, do_sample=True), r"use greedy decoding \(do_sample=False\)"),
        (dict(temperature=0, do_sample=False), r"use greedy decoding"),
        (dict(top_k=0, do_sample=True), "top_k must be a positive integer"),
        (dict(num_beams=0), "num_beams must be a positive integer"),
        (dict(num_beams=2, do_sample=True), "sampling inside beam search is not supported"),
        (dict(max_new_tokens=0), "max_new_tokens must be a positive integer"),
        (dict(input_ids=torch.zeros(4, dtype=torch.long)), r"unsqueeze\(0\)"),
        (dict(input_ids=torch.zeros(1, 4)), "LongTensor"),
        (dict(eos_token_id=-1), "eos_token_id must be a non-negative integer"),
    ]
    for overrides, message in cases:
        kwargs = dict(input_ids=ids, max_new_tokens=5) | overrides
        with pytest.raises(GenerationInputError, match=message):
            generate(ours, kwargs.pop("input_ids"), kwargs.pop("max_new_tokens"), **kwargs)
    with pytest.raises(GenerationInputError) as err:
        generate(ours, ids, 5, top_p=2.0, do_sample=True)
    assert "\n" not in str(err.value)  # one line


def test_generation_past_the_positions_stops_with_a_warning(pair):
    _, ours = pair  # 40 positions
    ids = prompts(23, 2, 35, 0)
    for kw in ({}, {"num_beams": 3}, {"do_sample": True}):
        with pytest.warns(UserWarning, match="generation stops after 6 new tokens instead of 20: the model has 40"):
            out = generate(ours, ids, 20, **kw)
        assert out.shape == (2, 41)  # the last token is predicted from 40, never read back


def test_training_mode_warns(pair):
    _, ours = pair
    ours.train()
    try:
        with pytest.warns(UserWarning, match="model.eval"):
            generate(ours, prompts(23, 1, 3, 0), 2)
    finally:
        ours.eval()


# ----------------------------------------------------------------------------- fuzz: any small setting, same ids


@needs_v5
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=st.integers(1, 3),
    length=st.integers(1, 6),
    new=st.integers(1, 8),
    beams=st.integers(1, 4),
    eos=st.sampled_from([None, 4, 8]),
    lp=st.sampled_from([-1.0, 0.0, 1.0, 2.5]),
    use_cache=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_fuzz_generation_equals_transformers(pair, batch, length, new, beams, eos, lp, use_cache, seed):
    theirs, ours = pair
    ids = prompts(23, batch, length, seed)
    kw = dict(num_beams=beams, length_penalty=lp, early_stopping=True) if beams > 1 else {}
    want = hf_generate(theirs, ids, new, eos_token_id=eos, **kw)
    kw.pop("early_stopping", None)
    got = generate(ours, ids, new, eos_token_id=eos, pad_token_id=PAD, use_cache=use_cache, **kw)
    assert torch.equal(got, want)
    assert torch.equal(got[:, :length], ids) and got.shape[1] <= length + new


# ----------------------------------------------------------------------------- the widget


def _widget_setup():
    from tokenizers import Tokenizer, decoders, models as tok_models, pre_tokenizers, trainers

    tok = Tokenizer(tok_models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=280,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["the cat sat on the mat and the dog sat on the log"] * 10, trainer=trainer)
    eos = tok.token_to_id("<|endoftext|>")
    torch.manual_seed(0)
    config = tiny_config(
        vocab_size=tok.get_vocab_size(),
        n_positions=48,
        n_embd=16,
        n_layer=2,
        n_head=2,
        eos_token_id=eos,
        bos_token_id=eos,
    )
    model = GPTModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(6)
    return model, tok, eos


def test_widget_shows_what_generate_gives_and_redraws_on_every_control():
    from course_utils.text import generation_viz

    model, tok, eos = _widget_setup()
    box = generation_viz.generation_explorer(model, tok, "the cat", eos_token_id=eos, max_new_tokens=8)
    explorer = box.explorer
    prompt = torch.tensor([tok.encode("the cat").ids])
    want = generate(model, prompt, 8, eos_token_id=eos)[0, prompt.shape[1] :].tolist()
    assert explorer.found["new_ids"] == want and explorer.last_text == tok.decode(want)
    assert explorer.last_png.startswith(b"\x89PNG") and "course-generation-explorer" in explorer.output._dom_classes
    seen = {explorer.last_png}
    for control, value in (
        (explorer.mode, "sample"),
        (explorer.temperature, 0.5),
        (explorer.top_k, 3),
        (explorer.top_p, 0.5),
        (explorer.seed, 4),
        (explorer.mode, "beam"),
        (explorer.num_beams, 4),
        (explorer.layer, 0),
        (explorer.head, 1),
        (explorer.prompt, "the dog"),
        (explorer.max_new_tokens, 12),
    ):
        control.value = value
        assert explorer.last_png not in seen, f"no new picture after changing {control.description}"
        seen.add(explorer.last_png)
    # beam mode shows beam search's answer; the attention is the chosen head's, causal
    prompt = torch.tensor([tok.encode("the dog").ids])
    want = generate(model, prompt, 12, num_beams=4, eos_token_id=eos)[0].tolist()
    assert explorer.found["ids"] == want
    with torch.no_grad():
        attention = model(torch.tensor([want]), output_attentions=True).attentions[0][0, 1]
    assert np.allclose(explorer.found["attention"], attention.numpy())
    assert np.allclose(np.triu(explorer.found["attention"], 1), 0)


def test_widget_sampling_bars_mark_what_top_k_and_top_p_cut():
    from course_utils.text import generation_viz

    model, tok, eos = _widget_setup()
    explorer = generation_viz.generation_explorer(
        model, tok, "the", eos_token_id=eos, mode="sample", top_k=2, top_p=1.0, temperature=0.7
    ).explorer
    assert explorer.found["kept"] == [True, True] + [False] * (len(explorer.found["kept"]) - 2)
    with torch.no_grad():
        logits = model(torch.tensor([tok.encode("the").ids])).logits[0, -1]
    probs = torch.softmax(logits / 0.7, -1)
    assert np.allclose(explorer.found["probabilities"], probs.sort(descending=True).values[:12].numpy(), atol=1e-6)
    # the same sampled continuation as generate with the widget's seed
    want = generate(
        model,
        torch.tensor([tok.encode("the").ids]),
        20,
        do_sample=True,
        temperature=0.7,
        top_k=2,
        top_p=1.0,
        eos_token_id=eos,
        generator=torch.Generator().manual_seed(0),
    )[0].tolist()
    assert explorer.found["ids"] == want


def test_widget_starts_an_empty_prompt_from_eos_and_names_a_missing_one():
    from course_utils.text import generation_viz

    model, tok, eos = _widget_setup()
    explorer = generation_viz.generation_explorer(model, tok, "", eos_token_id=eos, max_new_tokens=5).explorer
    assert explorer.found["prompt_ids"] == [eos]
    explorer = generation_viz.generation_explorer(model, tok, "", max_new_tokens=5).explorer
    assert "the prompt is empty" in explorer.text.value
