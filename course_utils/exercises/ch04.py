"""Chapter 04 exercises: predict what alignment and seqeval do, debug span reading, F1, weight
decay and freezing.

The exercises on tags (alignment, seqeval, BIO spans, entity F1, sub-word tags) come first on the
chapter's page and live in :mod:`course_utils.exercises.ch04_tags`, imported here first so they
are registered before this module's own. Here: debug which parameters skip weight decay, and
freezing all but the top layers.

Every check compares with an independent reference (a real BERT's parameters), and names the
misconception behind each typical mistake; the tests prove each one is rejected with its message.
"""

from __future__ import annotations

from . import ch04_tags  # noqa: F401 - registers the chapter's first exercises, before this module's
from . import Mistake, exercise, expect_same, given_function

# ----------------------------------------------------------------------------- 04.no_decay

NO_DECAY_GIVEN = """
def no_decay(model):
    return {name for name, _ in model.named_parameters() if name.endswith("bias") or "LayerNorm" in name}
"""


def _no_decay_reference(model):
    import torch

    names = set()
    for module_name, module in model.named_modules():
        for name, _ in module.named_parameters(recurse=False):
            if name == "bias" or isinstance(module, torch.nn.LayerNorm):
                names.add(f"{module_name}.{name}" if module_name else name)
    return names


def _no_decay_mistakes():
    def biases_only(model):
        return {n for n, _ in model.named_parameters() if n.endswith("bias")}

    def nothing(model):
        return set()

    def vectors(model):  # the common shortcut: every 1-d parameter
        return {n for n, p in model.named_parameters() if p.ndim < 2}

    def vectors_and_embeddings(model):
        return {n for n, p in model.named_parameters() if p.ndim < 2 or "embeddings" in n}

    return [
        Mistake(
            given_function(NO_DECAY_GIVEN, "no_decay", "04.no_decay"),
            "a LayerNorm is found by its type, not "
            "its name: course_utils.text.bert calls them "
            "norm1 and norm2; test isinstance(module, "
            "nn.LayerNorm) over model.named_modules()",
        ),
        Mistake(biases_only, "LayerNorm weights are not decayed either, only biases are in your set"),
        Mistake(nothing, "biases and LayerNorm parameters are not decayed: return their names"),
        Mistake(
            vectors,
            "a 1-d parameter is not always a bias or a LayerNorm: a learned scale vector is decayed "
            "like any other weight",
        ),
        Mistake(vectors_and_embeddings, "embedding tables are decayed like the other weight matrices"),
    ]


def _no_decay_models():
    import torch
    from torch import nn
    from transformers import BertConfig

    from course_utils.text.bert_tasks import BertForTokenClassification

    class Scaled(nn.Module):  # a LayerNorm without bias, a Linear without bias, a learned 1-d scale
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4, bias=False)
            self.ln_f = nn.LayerNorm(4, bias=False)
            self.scale = nn.Parameter(torch.ones(4))
            self.head = nn.Linear(4, 2)

    bert = BertForTokenClassification(
        BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=20,
            num_labels=5,
        )
    )
    return [bert, Scaled()]


@exercise(
    "04.no_decay",
    "Debug: which parameters get no weight decay?",
    "no_decay(model) should return the set of parameter names (as model.named_parameters() gives them) that "
    "AdamW must not decay: every bias, and every parameter of every torch.nn.LayerNorm module, whatever the "
    "module is called; everything else (weight matrices, embedding tables, other learned vectors) is decayed. "
    "The given version works on transformers' BERT. Try it on course_utils.text.bert's, find what it misses, fix it.",
    reference=_no_decay_reference,
    mistakes=_no_decay_mistakes,
    kind="debug",
    given=NO_DECAY_GIVEN,
    section="5. Fine-tuning: AdamW, warm-up, early stopping",
    minutes=6,
)
def check_no_decay(fn) -> None:
    for model in _no_decay_models():
        names = {n for n, _ in model.named_parameters()}
        got = set(fn(model))
        assert got <= names, f"these are not parameter names of the model: {sorted(got - names)[:3]}"
    expect_same(
        lambda m: set(fn(m)),
        _no_decay_reference,
        cases=[(m,) for m in _no_decay_models()],
        what="no_decay(model)",
        hint="every bias, and the parameters of every nn.LayerNorm (by type)",
    )


# ----------------------------------------------------------------------------- 04.freeze_top

FREEZE_GIVEN = """
def freeze_top(model, k):
    for p in model.bert.parameters():
        p.requires_grad = False
    for layer in model.bert.encoder.layers[-k:]:
        for p in layer.parameters():
            p.requires_grad = True
    return model
"""


def _freeze_top_reference(model, k):
    for p in model.bert.parameters():
        p.requires_grad = False
    top = model.bert.encoder.layers[len(model.bert.encoder.layers) - k :]  # k = 0: none (layers[-0:] is all)
    for layer in top:
        for p in layer.parameters():
            p.requires_grad = True
    for p in model.classifier.parameters():
        p.requires_grad = True
    return model


def _freeze_top_mistakes():
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
        for layer in model.bert.encoder.layers[: len(model.bert.encoder.layers) - k]:
            for p in layer.parameters():
                p.requires_grad = False
        return model

    return [
        Mistake(given_function(FREEZE_GIVEN, "freeze_top", "04.freeze_top"), "layers[-0:] is the whole list"),
        Mistake(bottom_layers, "the top layers are the last k"),
        Mistake(head_frozen_too, "the classifier head must train"),
        Mistake(embeddings_left_trainable, "the embeddings are left trainable"),
    ]


@exercise(
    "04.freeze_top",
    "Debug: freeze all but the top k layers",
    "freeze_top(model, k), for a course_utils.text.bert_tasks.BertForTokenClassification, should leave trainable only the "
    "classifier head and the last k encoder layers (model.bert.encoder.layers); embeddings and lower layers are "
    "frozen; k = 0 means the head only (section 7's 'head only'). It works for k = 1, 2, 3 but not for every k. "
    "Find the case and fix it.",
    reference=_freeze_top_reference,
    mistakes=_freeze_top_mistakes,
    kind="debug",
    given=FREEZE_GIVEN,
    section="7. Freezing strategies",
    minutes=5,
)
def check_freeze_top(fn) -> None:
    from transformers import BertConfig

    from course_utils.text.bert_tasks import BertForTokenClassification

    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=20,
        num_labels=5,
    )
    for k in (1, 0, 2, 3):
        model = BertForTokenClassification(config)
        expected = _freeze_top_reference(BertForTokenClassification(config), k)
        want = {n for n, p in expected.named_parameters() if p.requires_grad}
        result = fn(model, k)
        model = result if result is not None else model
        got = {n for n, p in model.named_parameters() if p.requires_grad}
        if got == want:
            continue
        layers = {int(n.split(".")[3]) for n in got if n.startswith("bert.encoder.layers.")}
        assert not any(n.startswith("classifier.") for n in want - got), (
            f"freeze_top(model, {k}) froze the classifier head: the classifier head must train, it is new"
        )
        assert not any(n.startswith("bert.embeddings.") for n in got), (
            f"freeze_top(model, {k}): the embeddings are left trainable; freeze all of model.bert first"
        )
        if k == 0 and layers == {0, 1, 2}:
            raise AssertionError(
                "freeze_top(model, 0) trains every encoder layer: layers[-0:] is the whole list "
                "(-0 == 0), not an empty one; handle k = 0, or slice from len(layers) - k"
            )
        if layers == set(range(k)):
            raise AssertionError(
                f"freeze_top(model, {k}) trains layers {sorted(layers)}, the bottom ones: the top "
                "layers are the last k, layers[-k:]"
            )
        missing, extra = sorted(want - got), sorted(got - want)
        raise AssertionError(
            f"freeze_top(model, {k}): should train but is frozen: {missing[:2]}; "
            f"should be frozen but trains: {extra[:2]}"
        )
