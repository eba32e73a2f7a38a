"""Chapter 06 exercises: the initial loss of a language model, temperature, top-p's kept set, the
causal mask with a cache, a KV cache that forgets its position offset, why beam search without a
length penalty prefers short outputs, and whether beam search always beats greedy.

Every check compares with a reference written here from the definitions (a softmax written out,
positions counted by hand, a full forward pass as the ground truth of a cached one).
"""

from __future__ import annotations

import math

import torch

from . import Mistake, choice, exercise, expect_same, numeric

# ----------------------------------------------------------------------------- predict: the initial loss


def _initial_loss() -> float:
    # logits all (nearly) equal -> every token has probability 1/V -> loss = -ln(1/V) = ln V
    return math.log(2000)


numeric(
    "06.initial_loss",
    "The loss of a language model before training",
    "Our GPT starts with small random weights, so its logits are all close to 0. With a vocabulary of "
    "V = 2000 tokens, what next-token cross-entropy loss (in nats, as torch's cross_entropy gives it) do you "
    "expect before the first training step? Answer with a number.",
    reference=_initial_loss,
    tolerance=0.05,
    mistakes=lambda: [
        Mistake(2000.0, "2000 is the perplexity (e to the loss), not the loss: the loss is the log of V"),
        Mistake(math.log2(2000), "that is log base 2 (bits); torch's cross_entropy uses the natural log (nats)"),
        Mistake(1 / 2000, "1/V is the probability each token gets; the loss is minus its log"),
    ],
    hint="each of the V tokens gets probability 1/V; the loss is -log of the right token's probability",
    section="5. Training on Python's documentation",
    minutes=3,
    explanation="Equal logits give every token probability 1/V, so the loss is -ln(1/V) = ln V = 7.60; the "
    "notebook checks its real initial loss against this number.",
)


# ----------------------------------------------------------------------------- predict: temperature


def _temperature_probability() -> float:
    logits, t = [2.0, 1.0, 0.0], 0.5
    e = [math.exp(x / t) for x in logits]
    return e[0] / sum(e)


numeric(
    "06.temperature",
    "What temperature does to a distribution",
    "Three tokens have logits [2, 1, 0]. Sampling with temperature 0.5 divides the logits by the temperature "
    "before the softmax. What probability does the first token get? (Work it out by hand: e^4, e^2, e^0.)",
    reference=_temperature_probability,
    tolerance=0.005,
    mistakes=lambda: [
        Mistake(
            math.exp(2) / (math.exp(2) + math.exp(1) + 1),
            "that is the probability at temperature 1: divide the logits by 0.5 first",
        ),
        Mistake(
            math.exp(1) / (math.exp(1) + math.exp(0.5) + 1),
            "you multiplied the logits by the temperature; "
            "they are divided by it (a temperature below 1 sharpens the distribution)",
        ),
        Mistake(math.exp(4), "e^4 = 54.6 is not a probability yet: divide it by the sum e^4 + e^2 + e^0"),
    ],
    hint="softmax(logits / temperature): exponentiate 4, 2 and 0, then normalise",
    section="9. Sampling: temperature, top-k, top-p",
    minutes=4,
    explanation="logits / 0.5 = [4, 2, 0]; e^4 / (e^4 + e^2 + 1) = 54.6 / 63.0 = 0.867, up from 0.665 at "
    "temperature 1: a low temperature moves probability to the favourite.",
)


# ----------------------------------------------------------------------------- predict: top-p by hand

_TOP_P_PROBS = [0.42, 0.25, 0.13, 0.09, 0.06, 0.05]


def _top_p_count() -> int:
    kept, mass = 0, 0.0
    for p in sorted(_TOP_P_PROBS, reverse=True):  # the smallest set of the most likely tokens reaching top_p
        kept += 1
        mass += p
        if mass >= 0.75:
            return kept
    return kept


numeric(
    "06.top_p_kept",
    "Nucleus (top-p) sampling by hand",
    f"The next-token probabilities are {_TOP_P_PROBS} (already sorted). Nucleus sampling with top_p = 0.75 "
    "keeps the smallest set of the most likely tokens whose probabilities add up to at least 0.75, and samples "
    "among them. How many tokens does it keep?",
    reference=_top_p_count,
    tolerance=0.0,
    mistakes=lambda: [
        Mistake(
            2,
            "0.42 + 0.25 = 0.67 has not reached 0.75 yet: keep adding tokens until the mass is at least "
            "top_p (the token that crosses the line is kept)",
        ),
        Mistake(6, "top-p does not keep every token: it stops as soon as the kept mass reaches top_p"),
        Mistake(1, "that is greedy decoding (or top-k with k = 1); top-p keeps tokens until their mass reaches 0.75"),
    ],
    hint="add the probabilities from the top until the sum is at least 0.75",
    section="9. Sampling: temperature, top-k, top-p",
    minutes=3,
    explanation="0.42 + 0.25 = 0.67 < 0.75, + 0.13 = 0.80 >= 0.75: three tokens, renormalised to 0.42/0.80, "
    "0.25/0.80 and 0.13/0.80. The notebook's top_p_mask computes the same set.",
)


# ----------------------------------------------------------------------------- modify: the causal mask with a cache


def _cache_mask_reference(new_length: int, past_length: int) -> torch.Tensor:
    total = past_length + new_length
    query_position = torch.arange(past_length, total)[:, None]  # where the new tokens sit
    key_position = torch.arange(total)[None, :]
    return key_position <= query_position


def _cache_mask_mistakes():
    return [
        Mistake(
            lambda n, p: torch.ones(n, p + n, dtype=torch.bool).tril(),
            "the new queries sit at positions past_length .. past_length + new_length - 1: shift the diagonal "
            "right by past_length (tril(diagonal=past_length)), or the new tokens cannot see the cached ones",
        ),
        Mistake(
            lambda n, p: torch.ones(n, p + n, dtype=torch.bool),
            "with more than one new token, the first new token must not see the later new ones: causal",
        ),
        Mistake(
            lambda n, p: torch.ones(n, p + n, dtype=torch.bool).triu(diagonal=p),
            "that lets each token see the FUTURE: keep the lower triangle (keys at or before the query)",
        ),
        Mistake(
            lambda n, p: torch.ones(n, n, dtype=torch.bool).tril(),
            "the mask must cover the cached keys too: its shape is (new_length, past_length + new_length)",
        ),
    ]


@exercise(
    "06.cache_mask",
    "The causal mask when a cache holds the past",
    "Chapter 01's causal mask is square: query i may attend to keys 0..i. With a KV cache, new_length new "
    "tokens attend to past_length cached keys plus their own. Write cache_mask(new_length, past_length) "
    "returning the boolean (new_length, past_length + new_length) mask, True = may attend.",
    reference=_cache_mask_reference,
    mistakes=_cache_mask_mistakes,
    kind="modify",
    section="11. The KV cache: exact, then fast",
    minutes=6,
)
def check_cache_mask(fn) -> None:
    cases = [(1, 0), (1, 5), (3, 0), (3, 4), (4, 2), (2, 7)]
    for new_length, past_length in cases:
        got = fn(new_length, past_length)
        assert isinstance(got, torch.Tensor) and got.dtype == torch.bool, (
            f"cache_mask({new_length}, {past_length}) should be a boolean tensor, got {type(got).__name__}"
            + (f" of {got.dtype}" if isinstance(got, torch.Tensor) else "")
        )
        expect_same(fn, _cache_mask_reference, new_length, past_length, what=f"cache_mask({new_length}, {past_length})")


# ----------------------------------------------------------------------------- debug: a cache that forgets the offset

_GIVEN_INCREMENTAL = '''
def incremental_logits(model, ids, split):
    """Logits of ids (B, L): the first `split` tokens in one call that fills the cache,
    then the remaining tokens one at a time, each with the cache."""
    out = model(ids[:, :split], use_cache=True)
    pieces, cache = [out.logits], out.past_key_values
    for t in range(split, ids.shape[1]):
        position = torch.tensor([[t - split]])          # where does token t sit?
        out = model(ids[:, t:t + 1], past_key_values=cache, use_cache=True, position_ids=position)
        pieces.append(out.logits)
        cache = out.past_key_values
    return torch.cat(pieces, dim=1)
'''


def _incremental_reference(model, ids, split):
    out = model(ids[:, :split], use_cache=True)
    pieces, cache = [out.logits], out.past_key_values
    for t in range(split, ids.shape[1]):
        out = model(ids[:, t : t + 1], past_key_values=cache, use_cache=True, position_ids=torch.tensor([[t]]))
        pieces.append(out.logits)
        cache = out.past_key_values
    return torch.cat(pieces, dim=1)


def _incremental_mistakes():
    from . import given_function

    given = given_function(_GIVEN_INCREMENTAL, "incremental_logits", "06.cache_offset")

    def no_cache(model, ids, split):
        pieces = [model(ids[:, :split]).logits]
        for t in range(split, ids.shape[1]):
            pieces.append(model(ids[:, t : t + 1], position_ids=torch.tensor([[t]])).logits)
        return torch.cat(pieces, dim=1)

    def off_by_one(model, ids, split):
        out = model(ids[:, :split], use_cache=True)
        pieces, cache = [out.logits], out.past_key_values
        for t in range(split, ids.shape[1]):
            out = model(ids[:, t : t + 1], past_key_values=cache, use_cache=True, position_ids=torch.tensor([[t + 1]]))
            pieces.append(out.logits)
            cache = out.past_key_values
        return torch.cat(pieces, dim=1)

    return [
        Mistake(
            given,
            "the new token's position restarts at 0 after the cache: token t sits at position t "
            "(the cache length plus its place among the new tokens), not t - split",
        ),
        Mistake(no_cache, "without past_key_values the new token attends only to itself: pass the cache back in"),
        Mistake(off_by_one, "positions count from 0: token t sits at position t, not t + 1"),
    ]


class _Recording(torch.nn.Module):
    """The model the check passes: it records every call so the check can tell a cache was used."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, input_ids, **kwargs):
        self.calls.append((input_ids.shape[1], kwargs.get("past_key_values") is not None))
        return self.model(input_ids, **kwargs)


def _small_gpt(seed: int):
    from course_utils.text.decoder import GPTModel, tiny_config

    torch.manual_seed(seed)
    model = GPTModel(tiny_config(vocab_size=40, n_positions=24, n_embd=16, n_layer=2, n_head=2)).eval()
    with torch.no_grad():  # sharper than the initialisation, so wrong positions change the logits clearly
        for p in model.parameters():
            p.mul_(5)
    return model


@exercise(
    "06.cache_offset",
    "Debug a KV cache that forgets the position offset",
    "incremental_logits(model, ids, split) should give the same logits as model(ids).logits, computing the "
    "first `split` tokens in one call and then one token at a time with the cache; it does not. Fix it "
    "(keep using the cache: after the first call, feed only the new token).",
    reference=_incremental_reference,
    mistakes=_incremental_mistakes,
    kind="debug",
    given=_GIVEN_INCREMENTAL,
    section="11. The KV cache: exact, then fast",
    minutes=8,
)
def check_cache_offset(fn) -> None:
    for seed, (batch, length, split) in enumerate([(1, 10, 4), (2, 12, 1), (1, 8, 7)]):
        model = _small_gpt(seed)
        ids = torch.randint(0, 40, (batch, length), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            want = model(ids).logits
            recorder = _Recording(model)
            got = fn(recorder, ids, split)
        assert isinstance(got, torch.Tensor) and got.shape == want.shape, (
            f"incremental_logits should return logits of shape {tuple(want.shape)}, got "
            + (str(tuple(got.shape)) if isinstance(got, torch.Tensor) else type(got).__name__)
        )
        assert all(n == 1 for n, _ in recorder.calls[1:]) and recorder.calls[0][0] == split, (
            "after the first call (the first `split` tokens), feed one new token per call: that is what the cache is for"
        )
        with torch.no_grad():
            expect_same(
                lambda m, i, s: got,
                lambda m, i, s: want,
                model,
                ids,
                split,
                what=f"incremental_logits with split={split}",
                atol=1e-4,
                hint="compare with model(ids).logits: which positions are wrong?",
            )


# ----------------------------------------------------------------------------- conceptual: short beams

choice(
    "06.beam_short",
    "Why beam search without a length penalty returns short outputs",
    "With length_penalty = 0 (no length normalisation), beam search on our GPT often returns a hypothesis that "
    "ends with the end-of-text token after a few words, while length_penalty = 1 returns longer ones. Which "
    "hypothesis explains it?",
    options={
        "a": "Every token multiplies the sequence's probability by a number below 1, so its log-probability only "
        "falls as it grows; a hypothesis that ends early has fewer terms and outranks longer ones",
        "b": "The end-of-text token is the most likely token at every step of a trained model",
        "c": "Beam search drops long hypotheses to save memory once the beam is full",
        "d": "The length penalty adds a fixed bonus for each generated token, independent of the model",
    },
    correct="a",
    why="The score of a finished hypothesis is the sum of its tokens' log-probabilities, each below 0: more "
    "tokens, lower score. Dividing by length ** length_penalty (1: the mean log-probability per token) "
    "removes that bias; the notebook measures the lengths for several penalties.",
    why_not={
        "b": "if EOS were the most likely token at every step, greedy decoding would stop at once too; it is "
        "the SUM of log-probabilities that favours short hypotheses, not one step's choice",
        "c": "the beam keeps num_beams hypotheses whatever their length; nothing is dropped for memory",
        "d": "the penalty divides the log-probability sum by length ** length_penalty; it adds nothing per token",
    },
    section="10. Beam search",
    minutes=3,
)


# ----------------------------------------------------------------------------- conceptual: beam vs greedy

choice(
    "06.beam_vs_greedy",
    "Does a wider beam always beat greedy?",
    "Fixed-length generation, no EOS. Is the sequence beam search (width 4) returns always at least as "
    "probable as the greedy one?",
    options={
        "a": "Yes: the greedy path is one of the paths the beam looks at, so the beam keeps it if it is the best",
        "b": "No: at some step the greedy prefix can rank below four other prefixes and leave the beam; the "
        "beam never sees how well it would have ended",
        "c": "Yes, as long as length_penalty = 0",
        "d": "No, because beam search samples its candidates at random",
    },
    correct="b",
    why="Beam search keeps only the num_beams best PREFIXES at each step. A prefix that is worse now can lead to "
    "a much better sequence later (a confident continuation); once pruned, it is gone. The notebook builds "
    "a small table model where width 2 loses to greedy, and counts how often it happens on our GPT.",
    why_not={
        "a": "the beam compares prefixes, not whole sequences: the greedy prefix can be pruned before its "
        "confident continuation is seen",
        "c": "with equal lengths the length penalty divides every score by the same number: it changes no ranking",
        "d": "beam search (do_sample=False) is deterministic: it keeps the top-scoring candidates",
    },
    section="10. Beam search",
    minutes=3,
)
