"""Chapter 03 exercises: predict BERT's numbers, debug its masking and its loss.

Every check compares with an independent reference (torch's cross-entropy, transformers'
BertModel and schedule, statistics of many draws), and names the misconception behind each
typical mistake; the tests prove each one is rejected with its message.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import Mistake, choice, exercise, expect_same, forbid, given_function, numeric

# ----------------------------------------------------------------------------- 03.initial_loss

BERT_BASE_VOCAB = 30_522


def _initial_loss_reference() -> float:
    # untrained: near-uniform over V tokens, so L_MLM = -ln(1/V) = ln V; NSP a coin flip, ln 2
    return math.log(BERT_BASE_VOCAB) + math.log(2)


numeric(
    "03.initial_loss",
    "Predict: the loss of an untrained BERT",
    f"A freshly initialised BertForPreTraining with bert-base's vocabulary (V = {BERT_BASE_VOCAB:,} tokens) reads a "
    "batch with masked tokens and next-sentence labels. Before running anything, predict its total loss "
    "L = L_MLM + L_NSP (to within 0.1).",
    reference=_initial_loss_reference,
    tolerance=0.1,
    mistakes=[
        Mistake(math.log(BERT_BASE_VOCAB), "that is L_MLM alone: L adds L_NSP, about ln 2 for coin-flip guesses"),
        Mistake(math.log2(BERT_BASE_VOCAB) + 1, "bits: the loss uses the natural logarithm (ln, not log2)"),
        Mistake(math.log2(BERT_BASE_VOCAB), "that is log2 V: the loss uses the natural logarithm, and L adds L_NSP"),
        Mistake(math.log(2), "that is L_NSP alone: L_MLM, about ln V, is most of the loss"),
        Mistake(float(BERT_BASE_VOCAB), "that is V itself: the loss is -log of the probability, about 1/V"),
    ],
    hint="an untrained model's guesses are nearly uniform; what is -log of a uniform probability, for each loss?",
    section="7. The model and its two losses",
    minutes=3,
    explanation="Near-uniform MLM guesses give -ln(1/V) = ln V ≈ 10.33, coin-flip NSP guesses ln 2 ≈ 0.69: "
    "L ≈ 11.02. Seeing that number at step 0 tells you the loss and the labels are wired right.",
)


# ----------------------------------------------------------------------------- 03.target_share


def _target_share_reference() -> float:
    # chosen: 15%; of those, 10% keep their token: 200,000 * 0.15 * 0.10 (random draws equal to the
    # original add about 1 in the vocabulary size of the random 10%: negligible)
    return 200_000 * 0.15 * 0.10


numeric(
    "03.target_share",
    "Predict: targets hidden in plain sight",
    "mask_tokens (section 5) runs over 200,000 ordinary tokens with mlm_probability=0.15. At about how many "
    "positions does the model see the ORIGINAL token in its input AND have to predict it (its label is not "
    "-100)? (Within 10%.)",
    reference=_target_share_reference,
    tolerance=0.1,
    relative=True,
    mistakes=[
        Mistake(
            30_000,
            "that is every target: 80% of them show [MASK] and 10% a random token; only the last 10% show the original",
        ),
        Mistake(
            24_000,
            "about 24,000 positions show [MASK]; the question is about targets whose input is the original token",
        ),
        Mistake(170_000, "170,000 positions show the original token but are not targets: their label is -100"),
        Mistake(20_000, "the 10% is of the targets, not of all tokens"),
        Mistake(
            6_000,
            "a random replacement is (almost never) the original token: only the unchanged 10% of the targets show it",
        ),
    ],
    hint="15% are targets; what happens to each tenth of them?",
    section="5. Masked-language modelling: the 80/10/10 rule",
    minutes=3,
    explanation="15% of 200,000 are targets (30,000); 10% of those stay unchanged: about 3,000 positions show "
    "the true token and still count in the loss, which is why the model must keep a good guess "
    "for every token, not only at [MASK].",
)


# ----------------------------------------------------------------------------- 03.mask_tokens

MASK_TOKENS_GIVEN = """
def mask_tokens(input_ids, special_mask, mask_id, candidate_ids, mlm_probability=0.15, generator=None):
    chosen = torch.rand(input_ids.shape, generator=generator) < mlm_probability
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    to_mask = chosen & (torch.rand(input_ids.shape, generator=generator) < 0.8)
    to_random = chosen & (torch.rand(input_ids.shape, generator=generator) < 0.1)
    random_ids = candidate_ids[torch.randint(len(candidate_ids), input_ids.shape, generator=generator)]
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    masked = torch.where(to_random, random_ids, masked)
    return masked, labels
"""


def _mask_tokens_reference(input_ids, special_mask, mask_id, candidate_ids, mlm_probability=0.15, generator=None):
    chosen = (torch.rand(input_ids.shape, generator=generator) < mlm_probability) & ~special_mask
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    u = torch.rand(input_ids.shape, generator=generator)  # ONE draw decides 80/10/10
    random_ids = candidate_ids[torch.randint(len(candidate_ids), input_ids.shape, generator=generator)]
    masked = torch.where(chosen & (u < 0.8), torch.full_like(input_ids, mask_id), input_ids)
    return torch.where(chosen & (u >= 0.8) & (u < 0.9), random_ids, masked), labels


def _mask_tokens_mistakes():
    def independent_draws(ids, special, mask_id, candidates, p=0.15, generator=None):
        chosen = (torch.rand(ids.shape, generator=generator) < p) & ~special
        labels = torch.where(chosen, ids, torch.full_like(ids, -100))
        to_mask = chosen & (torch.rand(ids.shape, generator=generator) < 0.8)
        to_random = chosen & (torch.rand(ids.shape, generator=generator) < 0.1)
        random_ids = candidates[torch.randint(len(candidates), ids.shape, generator=generator)]
        masked = torch.where(to_mask, torch.full_like(ids, mask_id), ids)
        return torch.where(to_random, random_ids, masked), labels

    def labels_everywhere(ids, special, mask_id, candidates, p=0.15, generator=None):
        masked, _ = _mask_tokens_reference(ids, special, mask_id, candidates, p, generator)
        return masked, ids.clone()

    def global_generator(ids, special, mask_id, candidates, p=0.15, generator=None):
        return _mask_tokens_reference(ids, special, mask_id, candidates, p, None)

    def fixed_probability(ids, special, mask_id, candidates, p=0.15, generator=None):
        return _mask_tokens_reference(ids, special, mask_id, candidates, 0.15, generator)

    return [
        Mistake(given_function(MASK_TOKENS_GIVEN, "mask_tokens", "03.mask_tokens"), "a special token was chosen"),
        Mistake(independent_draws, "two independent draws overlap"),
        Mistake(labels_everywhere, "labels are -100 at every token not chosen"),
        Mistake(global_generator, "draw every random number from `generator`"),
        Mistake(fixed_probability, "mlm_probability"),
    ]


def _masking_inputs(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 2000, (n,), generator=g)
    special = torch.zeros(n, dtype=torch.bool)
    special[::10] = True  # [CLS], [SEP], [PAD] and the like
    ids[special] = torch.randint(0, 5, (int(special.sum()),), generator=g)
    return ids, special, 4, torch.arange(5, 2000)


def _shares(fn, p: float, seed: int):
    ids, special, mask_id, candidates = _masking_inputs(100_000, seed)
    out = fn(ids.clone(), special.clone(), mask_id, candidates.clone(), p, torch.Generator().manual_seed(seed))
    assert isinstance(out, tuple) and len(out) == 2, "return a pair (masked_input_ids, labels)"
    masked, labels = out
    assert isinstance(masked, torch.Tensor) and isinstance(labels, torch.Tensor), "return two tensors"
    assert masked.shape == ids.shape and labels.shape == ids.shape, "both tensors are shaped like input_ids"
    return ids, special, mask_id, candidates, masked, labels


@exercise(
    "03.mask_tokens",
    "Debug: BERT's masking",
    "This mask_tokens should do what section 5 describes: choose 15% (mlm_probability) of the ordinary tokens as "
    "targets, never a special one (special_mask True); of the targets 80% become [MASK], 10% a random token "
    "from candidate_ids, 10% stay; labels hold the original id at targets, -100 elsewhere; every random number "
    "comes from `generator`. Measure its shares on many tokens (as section 5 does) and fix it.",
    reference=_mask_tokens_reference,
    mistakes=_mask_tokens_mistakes,
    kind="debug",
    given=MASK_TOKENS_GIVEN,
    section="5. Masked-language modelling: the 80/10/10 rule",
    minutes=10,
)
def check_mask_tokens(fn) -> None:
    ids, special, mask_id, candidates, masked, labels = _shares(fn, 0.15, seed=1)
    again = fn(ids.clone(), special.clone(), mask_id, candidates.clone(), 0.15, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], masked) and torch.equal(again[1], labels), (
        "two calls with generators seeded alike gave different results: draw every random number from "
        "`generator` (torch.rand(..., generator=generator)), so a seeded run repeats"
    )
    labelled = (labels != -100).float().mean().item()
    assert labelled < 0.5, (
        f"{labelled:.0%} of the tokens have a label; about 15% should: labels are -100 at every "
        "token not chosen (the loss ignores -100)"
    )
    assert (labels[special] == -100).all() and torch.equal(masked[special], ids[special]), (
        "a special token was chosen as a target (or changed): [CLS], [SEP] and [PAD] are never targets; "
        "leave out the positions where special_mask is True"
    )
    assert ((labels == -100) | (labels == ids)).all(), "a label must be the original token id (or -100)"
    target = labels != -100
    share = target[~special].float().mean().item()
    assert abs(share - 0.15) < 0.008, (
        f"{share:.1%} of the ordinary tokens are targets; mlm_probability=0.15 asks for 15%"
    )
    assert torch.equal(masked[~target], ids[~target]), "a token that was not chosen was changed"
    to_mask = (masked[target] == mask_id).float().mean().item()
    same = (masked[target] == ids[target]).float().mean().item()
    replaced = 1 - to_mask - same
    if abs(to_mask - 0.72) < 0.015 and abs(same - 0.18) < 0.015:
        raise AssertionError(
            f"among the targets {to_mask:.1%} are [MASK], {replaced:.1%} random, {same:.1%} unchanged: two "
            "independent draws overlap (a random replacement overwrites some [MASK]s, and 0.9 x 0.2 of the "
            "targets are left alone). Let ONE uniform draw u per token decide: u < 0.8 [MASK], u < 0.9 random"
        )
    assert abs(to_mask - 0.8) < 0.015 and abs(replaced - 0.1) < 0.012 and abs(same - 0.1) < 0.012, (
        f"among the targets {to_mask:.1%} are [MASK], {replaced:.1%} random, {same:.1%} unchanged; "
        "BERT's rule is 80/10/10"
    )
    swapped = target & (masked != mask_id) & (masked != ids)
    assert torch.isin(masked[swapped], candidates).all(), "random replacements must come from candidate_ids"
    _, special_half, _, _, _, labels_half = _shares(fn, 0.5, seed=2)
    half = (labels_half != -100)[~special_half].float().mean().item()
    assert abs(half - 0.5) < 0.01, f"with mlm_probability=0.5, {half:.1%} are targets: use mlm_probability"
    only_special = torch.arange(5)
    out = fn(only_special.clone(), torch.ones(5, dtype=torch.bool), 4, candidates, 0.15, torch.Generator())
    assert (out[1] == -100).all(), "a sequence of special tokens only has no target at all"


# ----------------------------------------------------------------------------- 03.mlm_loss

MLM_LOSS_GIVEN = '''
def mlm_loss(logits, labels):
    """logits (B, L, V): scores over the vocabulary; labels (B, L): the true id at targets, -100 elsewhere."""
    log_probs = logits.log_softmax(dim=1)
    picked = log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -picked.mean()
'''


def _mlm_loss_reference(logits, labels):
    target = labels != -100
    log_probs = logits[target].log_softmax(dim=-1)  # (targets, V): over the vocabulary
    return -log_probs.gather(1, labels[target][:, None]).mean()  # mean over the targets only


def _mlm_loss_by_torch(logits, labels):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def _mlm_loss_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(3)
    cases = []
    for (b, length, v), scale, n_targets in [
        ((2, 6, 11), 2.0, 3),
        ((1, 1, 5), 1.0, 1),
        ((3, 4, 7), 1.0, 12),
        ((2, 5, 9), 50.0, 4),
    ]:
        logits = torch.randn(b, length, v, generator=g) * scale
        labels = torch.full((b, length), -100)
        where = torch.randperm(b * length, generator=g)[:n_targets]
        if scale > 10:  # large scores, the true token the least likely: log(softmax) fails
            labels.view(-1)[where] = logits.view(-1, v)[where].argmin(-1)
        else:
            labels.view(-1)[where] = torch.randint(0, v, (n_targets,), generator=g)
            labels.view(-1)[where[0]] = v - 1  # the last vocabulary id
        cases.append((logits, labels))
    return cases


def _mlm_loss_mistakes():
    def over_all_positions(logits, labels):
        picked = logits.log_softmax(-1).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
        return -picked.mean()

    def over_positions_axis(logits, labels):
        target = labels != -100
        return -logits.log_softmax(dim=1)[target].gather(1, labels[target][:, None]).mean()

    def summed(logits, labels):
        target = labels != -100
        return -logits[target].log_softmax(-1).gather(1, labels[target][:, None]).sum()

    def no_log_softmax(logits, labels):
        target = labels != -100
        return -logits[target].gather(1, labels[target][:, None]).mean()

    def log_of_softmax(logits, labels):
        target = labels != -100
        return -logits[target].softmax(-1).log().gather(1, labels[target][:, None]).mean()

    return [
        Mistake(
            given_function(MLM_LOSS_GIVEN, "mlm_loss", "03.mlm_loss"),
            "two bugs: log_softmax must run over the vocabulary (dim=-1), and the mean over the targets only",
        ),
        Mistake(
            over_all_positions, "the mean runs over every position: only the targets (labels != -100) are in the loss"
        ),
        Mistake(
            over_positions_axis,
            "log_softmax over dim=1 normalises over the positions of a sentence: the "
            "distribution is over the vocabulary, dim=-1",
        ),
        Mistake(summed, "the loss is the mean over the targets, not their sum"),
        Mistake(no_log_softmax, "raw scores are not log-probabilities: take log_softmax over the vocabulary first"),
        Mistake(
            log_of_softmax,
            "softmax(...).log() underflows to log(0) = -inf when scores are large: log_softmax "
            "computes the same stably",
        ),
        Mistake(_mlm_loss_by_torch, "rule broken"),
        Mistake(lambda lg, lb: F.nll_loss(lg.log_softmax(-1).flatten(0, 1), lb.flatten()), "rule broken"),
    ]


@exercise(
    "03.mlm_loss",
    "Debug: the masked-language-model loss",
    "mlm_loss(logits, labels) should return L_MLM of section 7: the mean, over the target positions only "
    "(labels != -100), of minus the log-probability the model gives the true token, the probabilities being a "
    "softmax over the vocabulary. It returns a number, but the wrong one. Fix it, without torch's ready-made "
    "losses.",
    reference=_mlm_loss_reference,
    mistakes=_mlm_loss_mistakes,
    kind="debug",
    given=MLM_LOSS_GIVEN,
    rules=[
        forbid(
            "torch.nn.functional.cross_entropy",
            "torch.nn.functional.nll_loss",
            "torch.nn.CrossEntropyLoss",
            "torch.nn.NLLLoss",
            says="write the loss from log_softmax yourself: F.cross_entropy, F.nll_loss "
            "and their nn classes are not allowed",
        )
    ],
    section="7. The model and its two losses",
    minutes=8,
)
def check_mlm_loss(fn) -> None:
    results = expect_same(
        fn,
        _mlm_loss_by_torch,
        cases=_mlm_loss_cases(),
        atol=1e-4,
        rtol=1e-5,
        what="mlm_loss(logits, labels)",
        hint="log_softmax over the vocabulary, pick the true token's entry, mean over labels != -100",
    )
    assert all(isinstance(r, torch.Tensor) and r.dim() == 0 for r in results), "return a scalar tensor"


# ----------------------------------------------------------------------------- 03.bert_parameters


def _bert_parameters_reference(vocab_size, hidden, layers, intermediate, max_positions, type_vocab=2):
    embeddings = (vocab_size + max_positions + type_vocab) * hidden + 2 * hidden  # 3 tables + LayerNorm
    attention = 4 * (hidden * hidden + hidden) + 2 * hidden  # Q, K, V, output + LayerNorm
    feed_forward = hidden * intermediate + intermediate + intermediate * hidden + hidden + 2 * hidden
    pooler = hidden * hidden + hidden
    return embeddings + layers * (attention + feed_forward) + pooler


def _bert_parameters_mistakes():
    ref = _bert_parameters_reference

    def weights_only(v, h, n, i, p, t=2):  # matrices and tables, no bias, no LayerNorm
        return (v + p + t) * h + n * (4 * h * h + 2 * h * i) + h * h

    def embeddings_built(v, h, n, i, p, t=2):  # a shortcut: build the tables and count them
        from torch import nn

        tables = nn.ModuleList([nn.Embedding(v, h), nn.Embedding(p, h), nn.Embedding(t, h), nn.LayerNorm(h)])
        return sum(q.numel() for q in tables.parameters()) + ref(v, h, n, i, p, t) - (v + p + t + 2) * h

    return [
        Mistake(
            lambda v, h, n, i, p, t=2: ref(v, h, n, i, p, t) - (h * h + h),
            "you left out the pooler: a dense layer on [CLS], a hidden x hidden weight and a bias",
        ),
        Mistake(
            lambda v, h, n, i, p, t=2: ref(v, h, n, i, p, t) - t * h,
            "you left out the segment (token type) embeddings: a type_vocab x hidden table",
        ),
        Mistake(
            lambda v, h, n, i, p, t=2: ref(v, h, n, i, p, t) - n * 4 * h,
            "you left out the two LayerNorms of every encoder layer (a weight and a bias each)",
        ),
        Mistake(
            lambda v, h, n, i, p, t=2: ref(v, h, n, i, p, t) - n * 2 * (h * h + h),
            "attention has four projections (Q, K, V and the output), each hidden x hidden plus a bias",
        ),
        Mistake(
            weights_only,
            "you counted only matrices and tables: every bias and every LayerNorm (weight and bias) counts too",
        ),
        Mistake(
            lambda v, h, n, i, p, t=2: sum(
                q.numel()
                for q in __import__("transformers")
                .BertModel(
                    __import__("transformers").BertConfig(
                        vocab_size=v,
                        hidden_size=h,
                        num_hidden_layers=n,
                        num_attention_heads=1,
                        intermediate_size=i,
                        max_position_embeddings=p,
                        type_vocab_size=t,
                    )
                )
                .parameters()
            ),
            "rule broken",
        ),
        Mistake(embeddings_built, "rule broken"),
    ]


_BERT_CONFIGS = [(100, 16, 1, 32, 20, 2), (4000, 128, 2, 512, 128, 2), (30, 8, 0, 16, 4, 1), (50, 12, 3, 20, 10, 3)]


def _bert_parameters_by_transformers(vocab, hidden, layers, inter, positions, types):
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=inter,
        max_position_embeddings=positions,
        type_vocab_size=types,
    )
    return sum(p.numel() for p in BertModel(config).parameters())


@exercise(
    "03.bert_parameters",
    "Predict: how many parameters has a BERT?",
    "Write count_bert_parameters(vocab_size, hidden, layers, intermediate, max_positions, type_vocab=2) returning "
    "the number of parameters of transformers.BertModel for that configuration (embeddings, encoder layers, "
    "pooler; every weight and bias, both parameters of every LayerNorm), by arithmetic from the architecture of "
    "section 7. Then try it on bert-base: 30522, 768, 12, 3072, 512.",
    reference=_bert_parameters_reference,
    mistakes=_bert_parameters_mistakes,
    kind="predict",
    given="def count_bert_parameters(vocab_size, hidden, layers, intermediate, max_positions, type_vocab=2):\n"
    "    ...   # your arithmetic\n",
    rules=[
        forbid(
            "transformers.PreTrainedModel",
            "course_utils.text.bert",
            "torch.nn.Module",
            says="count with arithmetic: building a model (transformers', course_utils.text.bert's or any "
            "torch.nn.Module) to count its parameters is not allowed",
        )
    ],
    section="7. The model and its two losses",
    minutes=10,
)
def check_bert_parameters(fn) -> None:
    results = expect_same(
        fn,
        _bert_parameters_by_transformers,
        cases=_BERT_CONFIGS,
        atol=0,
        what="count_bert_parameters(...)",
        hint="embeddings (3 tables + LayerNorm), per layer attention (4 linears + LayerNorm) "
        "and feed-forward (2 linears + LayerNorm), pooler (1 linear)",
    )
    assert all(isinstance(r, int) for r in results), "return an int"


# ----------------------------------------------------------------------------- 03.warmup_lr


def _warmup_lr_reference() -> float:
    peak, total, warmup = 1e-3, 1000, int(0.06 * 1000)  # 60 warm-up steps
    return peak * (total - 530) / (total - warmup)  # decay from the end of the warm-up: 470 / 940


numeric(
    "03.warmup_lr",
    "Predict: the learning rate after the warm-up",
    "Section 8's schedule with peak learning rate 1e-3, 1,000 steps and 6% warm-up "
    "(training.linear_warmup_schedule): what is the learning rate at step 530?",
    reference=_warmup_lr_reference,
    tolerance=2e-6,
    mistakes=[
        Mistake(
            1e-3 * 470 / 1000, "the decay runs from the end of the warm-up: over 940 steps, from step 60 to step 1,000"
        ),
        Mistake(1e-3, "after the warm-up the rate falls linearly, to 0 at step 1,000"),
        Mistake(1e-3 * 530 / 60, "the warm-up ends at step 60; after that the rate decays"),
    ],
    hint="rise from 0 to the peak over 60 steps, then a straight line from the peak down to 0 at step 1,000",
    section="8. Training: AdamW, warm-up, linear decay",
    minutes=3,
)


# ----------------------------------------------------------------------------- 03.masked_only

choice(
    "03.masked_only",
    "Why is computing the MLM head only at the targets exact?",
    "Section 7 computes the MLM head's scores only at the target positions (masked_only=True) and gets exactly the "
    "same loss as computing them at every position. Why exactly the same?",
    options={
        "a": "The predictions at the other positions are nearly uniform, so what they would add is negligible.",
        "b": "The loss averages only over positions whose label is not -100; the scores at every other position "
        "never enter it, so not computing them changes nothing.",
        "c": "Self-attention has already mixed every position into the targets, so the other positions are redundant.",
        "d": "Weight tying makes the head's output matrix the embedding matrix, so the scores at unmasked "
        "positions are known in advance.",
    },
    correct="b",
    why="L_MLM is a mean over the targets only; a score at a position labelled -100 is computed and then "
    "ignored. Skipping it is the same arithmetic, minus the waste.",
    why_not={
        "a": "nothing is neglected: the other positions are not in the loss at all (label -100), so the result is "
        "exactly equal, not approximately, and after training their predictions are far from uniform.",
        "c": "attention still runs over every position in both versions; only the head (hidden x vocabulary "
        "product) is skipped, and what it would compute at other positions is never used by the loss.",
        "d": "tying shares one matrix between input and output; it does not make any score known without "
        "computing it. The saving comes from the labels, not from the weights.",
    },
    section="7. The model and its two losses",
    minutes=3,
)
