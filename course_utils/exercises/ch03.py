"""Chapter 03 exercises: segment ids, the 80/10/10 rule, the MLM loss, warm-up, BERT's size.

Every check compares the learner's answer with an independent reference (transformers'
schedule and model, torch's cross-entropy), on inputs where the usual mistakes show.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import exercise

# ----------------------------------------------------------------------------- 03.segment_ids


def _segment_ids_reference(len_a: int, len_b: int) -> list[int]:
    return [0] * (len_a + 2) + [1] * (len_b + 1)  # [CLS] A [SEP] -> 0, B [SEP] -> 1


def _segment_ids_wrong():
    return [
        lambda a, b: [0] * (a + 1) + [1] * (b + 2),   # the first [SEP] put in segment B
        lambda a, b: [0] * (a + 2) + [1] * b + [0],   # the final [SEP] left in segment A
        lambda a, b: [0] * (a + b + 3),               # one segment for everything
        lambda a, b: [0] * (a + 2) + [1] * b,         # forgot the final [SEP]
    ]


@exercise(
    "03.segment_ids", "Segment ids of a sentence pair",
    "BERT reads a pair as [CLS] A [SEP] B [SEP]. Write segment_ids(len_a, len_b) returning the list "
    "of token type ids for that sequence, where len_a and len_b are the numbers of word pieces in A "
    "and B: 0 for [CLS], A and the first [SEP]; 1 for B and the last [SEP].",
    reference=_segment_ids_reference, wrong=_segment_ids_wrong)
def check_segment_ids(fn) -> None:
    for len_a, len_b in [(1, 1), (3, 5), (7, 2)]:
        got = list(fn(len_a, len_b))
        want = _segment_ids_reference(len_a, len_b)
        assert len(got) == len_a + len_b + 3, (
            f"segment_ids({len_a}, {len_b}) has {len(got)} entries; [CLS] A [SEP] B [SEP] has {len_a + len_b + 3}")
        assert got == want, f"segment_ids({len_a}, {len_b}) = {got}, expected {want}: which segment is each [SEP] in?"


# ----------------------------------------------------------------------------- 03.mask_80_10_10

def _mask_80_10_10_reference(input_ids, chosen, u, random_ids, mask_id):
    out = input_ids.clone()
    out[chosen & (u < 0.8)] = mask_id
    replace = chosen & (u >= 0.8) & (u < 0.9)
    out[replace] = random_ids[replace]
    return out


def _mask_80_10_10_wrong():
    return [
        lambda ids, c, u, r, m: torch.where(c, torch.full_like(ids, m), ids),                    # always [MASK]
        lambda ids, c, u, r, m: torch.where(u < 0.8, torch.full_like(ids, m),
                                            torch.where(u < 0.9, r, ids)),                          # ignores `chosen`
        lambda ids, c, u, r, m: torch.where(c & (u < 0.8), torch.full_like(ids, m),
                                            torch.where(c & (u >= 0.9), r, ids)),                   # random for the last 10%
        lambda ids, c, u, r, m: torch.where(c & (u < 0.1), r,
                                            torch.where(c & (u < 0.9), torch.full_like(ids, m), ids)),  # 10/80/10 order
    ]


@exercise(
    "03.mask_80_10_10", "BERT's 80/10/10 replacement rule",
    "Write mask_80_10_10(input_ids, chosen, u, random_ids, mask_id): input_ids (L,) token ids, chosen (L,) "
    "booleans (the 15% picked as targets), u (L,) uniform draws in [0, 1), random_ids (L,) random tokens. "
    "Return a new tensor where each chosen token becomes mask_id if u < 0.8, random_ids[i] if 0.8 <= u < 0.9, "
    "and stays itself if u >= 0.9; tokens not chosen never change.",
    reference=_mask_80_10_10_reference, wrong=_mask_80_10_10_wrong)
def check_mask_80_10_10(fn) -> None:
    ids = torch.arange(10, 30)
    chosen = torch.tensor([True, False] * 10)
    u = torch.linspace(0.0, 0.99, 20)
    u = torch.cat([u[::2], u[1::2]])  # chosen and not-chosen positions both span [0, 1)
    random_ids = torch.arange(100, 120)
    got = fn(ids.clone(), chosen, u, random_ids, 4)
    want = _mask_80_10_10_reference(ids, chosen, u, random_ids, 4)
    assert isinstance(got, torch.Tensor) and got.shape == ids.shape, "return a tensor shaped like input_ids"
    assert torch.equal(got[~chosen], ids[~chosen]), "a token that was not chosen was changed"
    assert torch.equal(got, want), (
        f"got {got.tolist()}, expected {want.tolist()}: [MASK] for u < 0.8, a random token for 0.8 <= u < 0.9, "
        "unchanged for u >= 0.9")


# ----------------------------------------------------------------------------- 03.mlm_loss

def _mlm_loss_reference(logits, labels):
    keep = labels != -100
    log_probs = logits[keep].log_softmax(dim=-1)
    return -log_probs.gather(1, labels[keep][:, None]).mean()


def _mlm_loss_wrong():
    return [
        lambda lg, lb: F.cross_entropy(lg.reshape(-1, lg.shape[-1]), lb.reshape(-1).clamp(min=0)),  # scores every position
        lambda lg, lb: -lg.log_softmax(-1).gather(-1, lb.clamp(min=0)[..., None]).squeeze(-1)
        .mul(lb != -100).sum() / lb.numel(),                                                       # averages over all
        lambda lg, lb: -lg[lb != -100].gather(1, lb[lb != -100][:, None]).mean(),                 # no log-softmax
    ]


@exercise(
    "03.mlm_loss", "The masked-language-model loss",
    "Write mlm_loss(logits, labels): logits (B, L, V) scores, labels (B, L) with the original token id at "
    "the masked positions and -100 everywhere else. Return the mean cross-entropy over the labelled "
    "positions only (log-softmax over the vocabulary, minus the log-probability of the true token), "
    "without calling F.cross_entropy.",
    reference=_mlm_loss_reference, wrong=_mlm_loss_wrong)
def check_mlm_loss(fn) -> None:
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 6, 11, generator=generator) * 2
    labels = torch.full((2, 6), -100)
    labels[0, 1], labels[0, 4], labels[1, 2] = 3, 7, 10
    got = fn(logits, labels)
    want = F.cross_entropy(logits.reshape(-1, 11), labels.reshape(-1), ignore_index=-100)
    assert isinstance(got, torch.Tensor) and got.dim() == 0, "return a scalar tensor"
    diff = abs(float(got) - float(want))
    assert diff < 1e-5, (f"mlm_loss = {float(got):.4f}, expected {float(want):.4f}: average only over labels != -100, "
                         "and take log-softmax over the vocabulary")


# ----------------------------------------------------------------------------- 03.warmup_lr

def _warmup_lr_reference(step: int, peak_lr: float, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return peak_lr * step / warmup_steps
    return peak_lr * max(0.0, (total_steps - step) / (total_steps - warmup_steps))


def _warmup_lr_wrong():
    return [
        lambda s, p, w, t: p * min(1.0, s / w),                                    # no decay
        lambda s, p, w, t: p * min((s + 1) / w, 1.0) * max(0.0, (t - s) / t),     # warm-up off by one
        lambda s, p, w, t: p * s / w if s < w else p * max(0.0, (t - s) / t),      # decays over the whole run
    ]


@exercise(
    "03.warmup_lr", "Linear warm-up and decay",
    "Write warmup_lr(step, peak_lr, warmup_steps, total_steps): the learning rate at optimizer step "
    "`step` (0, 1, 2, ...) that rises linearly from 0 to peak_lr during the first warmup_steps steps, "
    "then falls linearly to 0 at total_steps (and stays 0 after).",
    reference=_warmup_lr_reference, wrong=_warmup_lr_wrong)
def check_warmup_lr(fn) -> None:
    from torch import nn
    from transformers import get_linear_schedule_with_warmup

    peak, warmup, total = 0.01, 5, 40
    optimizer = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=peak)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total)
    for step in range(total + 3):
        want = optimizer.param_groups[0]["lr"]
        got = float(fn(step, peak, warmup, total))
        assert abs(got - want) < 1e-9, (
            f"warmup_lr({step}, {peak}, {warmup}, {total}) = {got:.6g}, expected {want:.6g} "
            "(the value transformers.get_linear_schedule_with_warmup gives)")
        optimizer.step()
        scheduler.step()


# ----------------------------------------------------------------------------- 03.bert_parameters

def _bert_parameters_reference(vocab_size, hidden, layers, intermediate, max_positions, type_vocab=2):
    embeddings = (vocab_size + max_positions + type_vocab) * hidden + 2 * hidden   # 3 tables + LayerNorm
    attention = 4 * (hidden * hidden + hidden) + 2 * hidden                         # Q, K, V, output + LayerNorm
    feed_forward = hidden * intermediate + intermediate + intermediate * hidden + hidden + 2 * hidden
    pooler = hidden * hidden + hidden
    return embeddings + layers * (attention + feed_forward) + pooler


def _bert_parameters_wrong():
    ref = _bert_parameters_reference
    return [
        lambda v, h, n, i, p, t=2: ref(v, h, n, i, p, t) - (h * h + h),     # forgot the pooler
        lambda v, h, n, i, p, t=2: ref(v, h, n, i, p, t) - t * h,           # forgot the segment embeddings
        lambda v, h, n, i, p, t=2: ref(v, h, n, i, p, t) - n * 4 * h,       # forgot the LayerNorms in the layers
        lambda v, h, n, i, p, t=2: ref(v, h, n, i, p, t) - n * 4 * h * h // 2,  # Q, K, V, O counted as 2 matrices
    ]


@exercise(
    "03.bert_parameters", "How many parameters has a BERT?",
    "Write count_bert_parameters(vocab_size, hidden, layers, intermediate, max_positions, type_vocab=2) "
    "returning the number of parameters of transformers.BertModel (embeddings, encoder layers, pooler) "
    "for that configuration. Count every weight and bias, and both parameters of every LayerNorm.",
    reference=_bert_parameters_reference, wrong=_bert_parameters_wrong)
def check_bert_parameters(fn) -> None:
    from transformers import BertConfig, BertModel

    for vocab, hidden, layers, inter, positions in [(100, 16, 1, 32, 20), (4000, 128, 2, 512, 128)]:
        config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                            intermediate_size=inter, max_position_embeddings=positions)
        want = sum(p.numel() for p in BertModel(config).parameters())
        got = fn(vocab, hidden, layers, inter, positions, 2)
        assert got == want, (f"count_bert_parameters({vocab}, {hidden}, {layers}, {inter}, {positions}) = {got}, "
                             f"transformers.BertModel has {want} (difference {want - got}): embeddings (3 tables + "
                             "LayerNorm), per layer attention (4 linears + LayerNorm) and feed-forward "
                             "(2 linears + LayerNorm), pooler")
