"""Chapter 04 exercises: sub-word labels, BIO spans, entity F1, weight decay groups, freezing.

Every check compares the learner's answer with an independent reference (seqeval for
entities and F1, a tokenizer's own word ids, a real BERT's parameter names), on inputs
where the usual mistakes show.
"""
from __future__ import annotations

import random

from . import exercise

# ----------------------------------------------------------------------------- 04.first_subtoken_labels


def _first_subtoken_reference(word_ids, word_label_ids):
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(-100)
        elif word != previous:
            labels.append(word_label_ids[word])
        else:
            labels.append(-100)
        previous = word
    return labels


def _first_subtoken_wrong():
    def every_piece(word_ids, word_label_ids):
        return [-100 if w is None else word_label_ids[w] for w in word_ids]

    def last_piece(word_ids, word_label_ids):
        out = []
        for i, w in enumerate(word_ids):
            nxt = word_ids[i + 1] if i + 1 < len(word_ids) else None
            out.append(word_label_ids[w] if w is not None and nxt != w else -100)
        return out

    def specials_as_zero(word_ids, word_label_ids):
        return [0 if l == -100 and w is None else l
                for w, l in zip(word_ids, _first_subtoken_reference(word_ids, word_label_ids))]

    def by_position(word_ids, word_label_ids):  # forgets that tokens and words do not line up
        return [-100 if w is None else (word_label_ids[i - 1] if 0 < i <= len(word_label_ids) else -100)
                for i, w in enumerate(word_ids)]

    return [every_piece, last_piece, specials_as_zero, by_position]


@exercise(
    "04.first_subtoken_labels", "Give each word's label to its first sub-token",
    "Write align(word_ids, word_label_ids): word_ids is the tokenizer's list mapping each token to its "
    "word index (None for [CLS], [SEP]); word_label_ids holds one label id per word. Return one label per "
    "token: the word's label at the first token of each word, -100 at every later piece of the same word "
    "and at the special tokens.",
    reference=_first_subtoken_reference, wrong=_first_subtoken_wrong)
def check_first_subtoken_labels(fn) -> None:
    cases = [
        ([None, 0, 1, 1, 1, 1, 2, 3, None], [3, 4, 0, 1]),         # [CLS] Arnold Schw ##arz ##en ##egger flew Lyon [SEP]
        ([None, 0, 0, 1, 2, 2, 2, None, None], [1, 0, 5]),          # with padding at the end
        ([None, 0, 1, 2, None], [2, 2, 0]),                         # no word split at all
    ]
    for word_ids, word_labels in cases:
        got = list(fn(list(word_ids), list(word_labels)))
        want = _first_subtoken_reference(word_ids, word_labels)
        assert len(got) == len(word_ids), f"return one label per token: {len(word_ids)} tokens, got {len(got)} labels"
        assert got == want, (f"align({word_ids}, {word_labels}) = {got}, expected {want}: the first piece of a "
                             "word gets its label, later pieces and special tokens (None) get -100")


# ----------------------------------------------------------------------------- 04.bio_spans

def _bio_spans_reference(tags):
    spans, kind, start = [], None, 0
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, new_kind = (tag[0], tag[2:]) if tag != "O" else ("O", None)
        if kind is not None and (prefix in ("O", "B") or new_kind != kind):
            spans.append((kind, start, i))
            kind = None
        if prefix in ("B", "I") and kind is None:
            kind, start = new_kind, i
    return spans


def _bio_spans_wrong():
    def inclusive_end(tags):
        return [(k, a, b - 1) for k, a, b in _bio_spans_reference(tags)]

    def only_b_starts(tags):  # an I- after O is dropped
        spans, kind, start = [], None, 0
        for i, tag in enumerate(list(tags) + ["O"]):
            if kind is not None and not (tag.startswith("I-") and tag[2:] == kind):
                spans.append((kind, start, i))
                kind = None
            if tag.startswith("B-"):
                kind, start = tag[2:], i
        return spans

    def ignores_type_change(tags):
        spans, kind, start = [], None, 0
        for i, tag in enumerate(list(tags) + ["O"]):
            if kind is not None and tag[0] in "OB":
                spans.append((kind, start, i))
                kind = None
            if tag[0] in "BI" and kind is None:
                kind, start = tag[2:], i
        return spans

    def b_does_not_split(tags):  # B-PER B-PER read as one entity
        spans, kind, start = [], None, 0
        for i, tag in enumerate(list(tags) + ["O"]):
            new_kind = tag[2:] if tag != "O" else None
            if kind is not None and new_kind != kind:
                spans.append((kind, start, i))
                kind = None
            if new_kind is not None and kind is None:
                kind, start = new_kind, i
        return spans

    return [inclusive_end, only_b_starts, ignores_type_change, b_does_not_split]


@exercise(
    "04.bio_spans", "Entities from BIO tags",
    "Write spans(tags) returning the entities of a list of BIO tags as (type, start, end) tuples, end "
    "exclusive, in order. Read tags as seqeval does: an entity starts at B-X, or at an I-X that does not "
    "continue an entity of type X; it ends at O, at the next start, or where the type changes. "
    "Example: spans(['B-PER', 'I-PER', 'O', 'I-LOC']) == [('PER', 0, 2), ('LOC', 3, 4)].",
    reference=_bio_spans_reference, wrong=_bio_spans_wrong)
def check_bio_spans(fn) -> None:
    from seqeval.metrics.sequence_labeling import get_entities

    rng = random.Random(4)
    pool = ["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG"]
    cases = [["B-PER", "B-PER"], ["I-LOC", "I-LOC", "O"], ["B-PER", "I-LOC"], ["B-ORG", "I-ORG", "I-ORG"]]
    cases += [[rng.choice(pool) for _ in range(rng.randint(0, 9))] for _ in range(200)]
    for tags in cases:
        want = [(k, a, b + 1) for k, a, b in get_entities(list(tags))]
        got = [tuple(s) for s in fn(list(tags))]
        assert got == want, f"spans({tags}) = {got}, seqeval reads {want} (end exclusive)"


# ----------------------------------------------------------------------------- 04.entity_f1

def _entity_f1_reference(gold, pred):
    from course_utils.ner import entity_spans

    g = {(i, *s) for i, tags in enumerate(gold) for s in entity_spans(tags)}
    p = {(i, *s) for i, tags in enumerate(pred) for s in entity_spans(tags)}
    correct = len(g & p)
    if correct == 0:
        return 0.0
    precision, recall = correct / len(p), correct / len(g)
    return 2 * precision * recall / (precision + recall)


def _entity_f1_wrong():
    def token_accuracy(gold, pred):
        pairs = [(a, b) for g, p in zip(gold, pred) for a, b in zip(g, p)]
        return sum(a == b for a, b in pairs) / len(pairs)

    def non_o_token_f1(gold, pred):
        g = {(i, j, t) for i, tags in enumerate(gold) for j, t in enumerate(tags) if t != "O"}
        p = {(i, j, t) for i, tags in enumerate(pred) for j, t in enumerate(tags) if t != "O"}
        c = len(g & p)
        return 0.0 if c == 0 else 2 * c / (len(g) + len(p))

    def ignores_type(gold, pred):
        from course_utils.ner import entity_spans

        g = {(i, a, b) for i, tags in enumerate(gold) for _, a, b in entity_spans(tags)}
        p = {(i, a, b) for i, tags in enumerate(pred) for _, a, b in entity_spans(tags)}
        c = len(g & p)
        return 0.0 if c == 0 else 2 * c / (len(g) + len(p))

    def mean_per_sentence(gold, pred):
        scores = [_entity_f1_reference([g], [p]) for g, p in zip(gold, pred)]
        return sum(scores) / len(scores)

    return [token_accuracy, non_o_token_f1, ignores_type, mean_per_sentence]


@exercise(
    "04.entity_f1", "Entity-level F1",
    "Write entity_f1(gold, pred): gold and pred are lists of tag sequences (one list of BIO tags per "
    "sentence). Return the micro-averaged entity F1 that seqeval.metrics.f1_score computes: an entity is "
    "correct only if its type, first and last word all match; precision = correct / predicted entities, "
    "recall = correct / gold entities, F1 their harmonic mean (0 when nothing is correct). "
    "ner.entity_spans may help.",
    reference=_entity_f1_reference, wrong=_entity_f1_wrong)
def check_entity_f1(fn) -> None:
    from seqeval.metrics import f1_score

    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "O", "B-MISC"], ["O", "O"],
            ["B-LOC", "O", "B-PER"]]
    preds = [
        [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "O", "B-MISC"], ["O", "O"], ["B-LOC", "O", "B-PER"]],
        [["B-PER", "O", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "O", "O"], ["O", "B-PER"], ["B-ORG", "O", "B-PER"]],
        [["O"] * 4, ["O"] * 5, ["O"] * 2, ["O"] * 3],
        [["B-PER", "I-PER", "O", "B-PER"], ["O", "B-LOC", "I-LOC", "O", "B-MISC"], ["O", "O"], ["B-LOC", "O", "O"]],
    ]
    for pred in preds:
        want = f1_score(gold, pred)
        got = float(fn(gold, pred))
        assert abs(got - want) < 1e-9, (f"entity_f1 = {got:.4f}, seqeval says {want:.4f} for predictions {pred}: "
                                        "count whole entities (type and exact words), summed over all sentences")


# ----------------------------------------------------------------------------- 04.no_decay

def _no_decay_reference(model):
    import torch

    names = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if name == "bias" or isinstance(module, torch.nn.LayerNorm):
                names.add(f"{module_name}.{name}" if module_name else name)
    return names


def _no_decay_wrong():
    def biases_only(model):
        return {n for n, _ in model.named_parameters() if n.endswith("bias")}

    def by_name_layernorm(model):  # misses every norm not called "LayerNorm"
        return {n for n, _ in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n}

    def nothing(model):
        return set()

    def vectors_and_embeddings(model):
        return {n for n, p in model.named_parameters() if p.ndim < 2 or "embeddings" in n}

    return [biases_only, by_name_layernorm, nothing, vectors_and_embeddings]


@exercise(
    "04.no_decay", "Which parameters get no weight decay?",
    "Write no_decay(model) returning the set of parameter names (as in model.named_parameters()) that "
    "AdamW should not decay: every bias, and both the weight and the bias of every torch.nn.LayerNorm "
    "module, whatever the module is called. Everything else (weight matrices, embedding tables) is decayed.",
    reference=_no_decay_reference, wrong=_no_decay_wrong)
def check_no_decay(fn) -> None:
    import torch
    from transformers import BertConfig

    from course_utils.bert import BertForTokenClassification

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=20, num_labels=5)
    model = BertForTokenClassification(config)
    want = _no_decay_reference(model)
    got = set(fn(model))
    names = {n for n, _ in model.named_parameters()}
    assert got <= names, f"these are not parameter names of the model: {sorted(got - names)[:3]}"
    missing, extra = sorted(want - got), sorted(got - want)
    assert not missing, f"{len(missing)} parameters should not be decayed but are, e.g. {missing[:3]}"
    assert not extra, f"{len(extra)} parameters should be decayed but are not, e.g. {extra[:3]}"
    layer_norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert layer_norms  # the check means something only if the model has LayerNorms


# ----------------------------------------------------------------------------- 04.freeze_top

def _freeze_top_reference(model, k):
    for p in model.bert.parameters():
        p.requires_grad = False
    if k > 0:
        for layer in model.bert.encoder.layers[-k:]:
            for p in layer.parameters():
                p.requires_grad = True
    for p in model.classifier.parameters():
        p.requires_grad = True
    return model


def _freeze_top_wrong():
    def bottom_layers(model, k):
        _freeze_top_reference(model, 0)
        for layer in model.bert.encoder.layers[:k]:
            for p in layer.parameters():
                p.requires_grad = True
        return model

    def head_frozen_too(model, k):
        _freeze_top_reference(model, k)
        for p in model.classifier.parameters():
            p.requires_grad = False
        return model

    def embeddings_left_trainable(model, k):
        for layer in model.bert.encoder.layers[:len(model.bert.encoder.layers) - k]:
            for p in layer.parameters():
                p.requires_grad = False
        return model

    def minus_zero_slice(model, k):  # layers[-0:] is every layer
        for p in model.bert.parameters():
            p.requires_grad = False
        for layer in model.bert.encoder.layers[-k:]:
            for p in layer.parameters():
                p.requires_grad = True
        return model

    return [bottom_layers, head_frozen_too, embeddings_left_trainable, minus_zero_slice]


@exercise(
    "04.freeze_top", "Freeze all but the top k layers",
    "Write freeze_top(model, k) for a course_utils.bert.BertForTokenClassification: set requires_grad so "
    "that only the classifier head and the last k encoder layers (model.bert.encoder.layers) are trained; "
    "the embeddings and all lower layers are frozen. k may be 0 (head only). Return the model.",
    reference=_freeze_top_reference, wrong=_freeze_top_wrong)
def check_freeze_top(fn) -> None:
    from transformers import BertConfig

    from course_utils.bert import BertForTokenClassification

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=20, num_labels=5)
    for k in (0, 1, 2, 3):
        model = BertForTokenClassification(config)
        expected = _freeze_top_reference(BertForTokenClassification(config), k)
        want = {n for n, p in expected.named_parameters() if p.requires_grad}
        result = fn(model, k)
        model = result if result is not None else model
        got = {n for n, p in model.named_parameters() if p.requires_grad}
        missing, extra = sorted(want - got), sorted(got - want)
        assert not missing, f"freeze_top(model, {k}) froze what should train, e.g. {missing[:2]}"
        assert not extra, f"freeze_top(model, {k}) left trainable what should be frozen, e.g. {extra[:2]}"
