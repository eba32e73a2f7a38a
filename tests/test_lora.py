"""LoRA from scratch (course_utils.text.lora) proven equal to the `peft` library on the same weights.

Every reference number comes from peft (or transformers / torch): the same tiny random
transformers BertForTokenClassification is copied into the course's BERT (``from_hf``), peft's
LoraConfig is applied to the transformers model and the course's add_lora to the copy, with the
same A and B, and the two are compared before training, after AdamW steps, after merging, and in
their trainable parameter counts.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

from course_utils.text.bert_tasks import BertForTokenClassification  # noqa: E402
from course_utils.text.lora import (  # noqa: E402
    LoRAError,
    LoRALinear,
    add_lora,
    has_lora,
    load_lora,
    lora_state_dict,
    merge_lora,
    save_lora,
    trainable_parameters,
)

# peft's module names (transformers' BertSelfAttention) -> the course's
PEFT_TO_OURS = {"query": "q_proj", "key": "k_proj", "value": "v_proj"}


def tiny_config(dropout: float = 0.0, **overrides):
    return transformers.BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=5,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        **overrides,
    )


def batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 40, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # padding in one row: the mask must be honoured by both
    mask[2, 3:] = 0
    labels = torch.randint(0, 5, (3, 7), generator=g)
    labels[mask == 0] = -100
    labels[0, 0] = -100
    return ids, mask, labels


def pair(
    r=4, alpha=8, target=("query", "value"), head=False, lora_dropout=0.0, seed=0, nonzero_b=True, our_target=None
):
    """(peft model, course model with LoRA) built from one transformers model, holding the same A and B."""
    torch.manual_seed(seed)
    hf = transformers.BertForTokenClassification(tiny_config())
    ours = BertForTokenClassification.from_hf(hf)  # copy first: get_peft_model changes hf in place
    save = ["classifier"] if head else None
    config = peft.LoraConfig(
        r=r, lora_alpha=alpha, target_modules=list(target), lora_dropout=lora_dropout, modules_to_save=save
    )
    reference = peft.get_peft_model(hf, config)
    add_lora(ours, r=r, alpha=alpha, target=our_target or target, dropout=lora_dropout, modules_to_save=save or ())
    g = torch.Generator().manual_seed(seed + 100)
    copied = 0
    with torch.no_grad():
        for name, module in reference.named_modules():
            if (
                isinstance(module, peft.tuners.lora.LoraLayer)
                and hasattr(module, "lora_A")
                and "default" in module.lora_A
            ):
                index = int(name.split("encoder.layer.")[1].split(".")[0])
                mine = getattr(ours.bert.encoder.layers[index].self_attn, PEFT_TO_OURS[name.rsplit(".", 1)[1]])
                if nonzero_b:  # B starts at zero; a random B makes the LoRA path visible from step 0
                    module.lora_B["default"].weight.copy_(
                        torch.randn(module.lora_B["default"].weight.shape, generator=g)
                    )
                mine.lora_A.copy_(module.lora_A["default"].weight)
                mine.lora_B.copy_(module.lora_B["default"].weight)
                copied += 1
    assert copied == len(target) * 2  # every adapted projection of both layers
    return reference, ours


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


# ---------------------------------------------------------------- one layer


def test_lora_a_init_is_nn_linear_init_and_b_is_zero():
    base = nn.Linear(12, 6)
    torch.manual_seed(3)
    layer = LoRALinear(base, r=4, alpha=8)
    torch.manual_seed(3)
    reference = nn.Linear(12, 4).weight  # torch's own Kaiming-uniform(a=sqrt(5)) on an (r, in) matrix, as peft
    assert torch.equal(layer.lora_A.detach(), reference.detach())
    assert torch.count_nonzero(layer.lora_B) == 0
    x = torch.randn(2, 3, 12)
    assert torch.equal(layer(x), base(x))  # B = 0: the wrapped layer starts as the base layer exactly
    assert layer.scale == 2.0 and not base.weight.requires_grad and not base.bias.requires_grad


def test_lora_linear_matches_peft_linear_forward_and_gradients():
    torch.manual_seed(0)
    outer = nn.Sequential()
    outer.add_module("proj", nn.Linear(10, 7))
    ours = LoRALinear(nn.Linear(10, 7), r=3, alpha=5)
    ours.base.load_state_dict(outer.proj.state_dict())
    reference = peft.get_peft_model(outer, peft.LoraConfig(r=3, lora_alpha=5, target_modules=["proj"]))
    layer = reference.base_model.model.proj
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_()
        ours.lora_A.copy_(layer.lora_A["default"].weight)
        ours.lora_B.copy_(layer.lora_B["default"].weight)
    x = torch.randn(4, 10)
    out_ref, out = reference(x), ours(x)
    assert max_diff(out, out_ref) < 1e-6
    out_ref.square().sum().backward()
    out.square().sum().backward()
    assert max_diff(ours.lora_A.grad, layer.lora_A["default"].weight.grad) < 1e-5
    assert max_diff(ours.lora_B.grad, layer.lora_B["default"].weight.grad) < 1e-5
    assert ours.base.weight.grad is None  # the frozen base gets no gradient
    assert max_diff(ours.delta_weight(), layer.get_delta_weight("default")) < 1e-6


# ---------------------------------------------------------------- the whole model against peft


@pytest.mark.parametrize("head", [False, True], ids=["lora-only", "lora+head"])
def test_forward_and_adamw_training_match_peft(head):
    reference, ours = pair(head=head)
    ids, mask, labels = batch()
    reference.eval(), ours.eval()
    with torch.no_grad():
        before = max_diff(ours(ids, mask).logits, reference(input_ids=ids, attention_mask=mask).logits)
    assert before < 1e-5
    trained = [p for p in ours.parameters() if p.requires_grad]
    trained_ref = [p for p in reference.parameters() if p.requires_grad]
    assert sum(map(torch.numel, trained)) == sum(map(torch.numel, trained_ref))
    opt = torch.optim.AdamW(trained, lr=1e-2)
    opt_ref = torch.optim.AdamW(trained_ref, lr=1e-2)
    reference.train(), ours.train()  # the config's dropout is 0, so training mode is deterministic
    frozen_before = {n: p.detach().clone() for n, p in ours.named_parameters() if not p.requires_grad}
    head_before = ours.classifier.weight.detach().clone()
    for _ in range(4):
        loss = ours(ids, mask, labels=labels).loss
        loss_ref = reference(input_ids=ids, attention_mask=mask, labels=labels).loss
        assert abs(loss.item() - loss_ref.item()) < 1e-5
        for o in (opt, opt_ref):
            o.zero_grad()
        loss.backward()
        loss_ref.backward()
        opt.step()
        opt_ref.step()
    reference.eval(), ours.eval()
    with torch.no_grad():
        after_ref = reference(input_ids=ids, attention_mask=mask).logits
        after = max_diff(ours(ids, mask).logits, after_ref)
    assert after < 1e-5
    assert all(torch.equal(p, frozen_before[n]) for n, p in ours.named_parameters() if not p.requires_grad)
    head_ref = reference.base_model.model.classifier
    head_now = head_ref.modules_to_save["default"] if head else head_ref
    assert max_diff(ours.classifier.weight, head_now.weight) < 1e-5
    assert torch.equal(ours.classifier.weight, head_before) != head  # the head trains only when named


def test_lora_dropout_matches_peft_in_training_mode():
    """Dropout on the LoRA input path draws the same masks as peft's, in the same order, given one seed."""
    reference, ours = pair(lora_dropout=0.3)
    ids, mask, _ = batch()
    reference.train(), ours.train()
    torch.manual_seed(7)
    out_ref = reference(input_ids=ids, attention_mask=mask).logits
    torch.manual_seed(7)
    out = ours(ids, mask).logits
    assert max_diff(out, out_ref) < 1e-5
    with torch.no_grad():
        torch.manual_seed(8)
        other = ours(ids, mask).logits
    assert max_diff(other, out_ref) > 1e-3  # the dropout really acts: another seed, other outputs
    reference.eval(), ours.eval()
    with torch.no_grad():
        assert max_diff(ours(ids, mask).logits, reference(input_ids=ids, attention_mask=mask).logits) < 1e-5


@pytest.mark.parametrize("head", [False, True], ids=["lora-only", "lora+head"])
def test_merge_matches_peft_merge_and_unload(head):
    reference, ours = pair(head=head, target=("query", "key", "value"))
    ids, mask, _ = batch()
    reference.eval(), ours.eval()
    with torch.no_grad():
        with_lora = ours(ids, mask).logits
        merged = merge_lora(ours)
        merged_logits = merged(ids, mask).logits
        hf_merged = reference.merge_and_unload()
        ref_logits = hf_merged(input_ids=ids, attention_mask=mask).logits
    assert merged is ours and not has_lora(ours)
    assert max_diff(merged_logits, with_lora) < 1e-6  # merging changes no output
    assert max_diff(merged_logits, ref_logits) < 1e-5
    ref_state = hf_merged.state_dict()
    for key, value in ours.hf_state_dict().items():
        assert max_diff(value, ref_state[key]) < 1e-6, key
    # a plain model again: the original classes, parameter names, trainable, convertible
    fresh = BertForTokenClassification(ours.config)
    assert ours.state_dict().keys() == fresh.state_dict().keys()
    assert all(type(m) is nn.Linear for m in ours.modules() if isinstance(m, (nn.Linear, LoRALinear)))
    assert all(p.requires_grad for p in ours.parameters())
    with torch.no_grad():
        assert max_diff(ours.to_hf().eval()(input_ids=ids, attention_mask=mask).logits, ref_logits) < 1e-5


@pytest.mark.parametrize(
    "r,target,head",
    [
        (1, ("query", "value"), False),
        (4, ("query", "value"), True),
        (8, ("query", "key", "value"), False),
        (2, ("key",), True),
    ],
)
def test_trainable_parameter_counts_match_peft(r, target, head):
    reference, ours = pair(r=r, target=target, head=head, nonzero_b=False)
    trainable_ref, total_ref = reference.get_nb_trainable_parameters()
    count = trainable_parameters(ours)
    assert count.trainable == trainable_ref
    # peft keeps the original head next to its trainable copy (ModulesToSaveWrapper): counted twice in its total
    head_size = sum(p.numel() for p in ours.classifier.parameters()) if head else 0
    assert count.total == total_ref - head_size
    assert f"{count.trainable:,}" in str(count) and 0 < count.fraction < 1


def test_course_names_and_peft_names_choose_the_same_layers():
    _, by_peft_names = pair(target=("query", "value"), nonzero_b=False)
    _, by_course_names = pair(our_target=("q_proj", "v_proj"), nonzero_b=False)
    wrapped = [n for n, m in by_peft_names.named_modules() if isinstance(m, LoRALinear)]
    assert wrapped == [n for n, m in by_course_names.named_modules() if isinstance(m, LoRALinear)]
    assert wrapped == [f"bert.encoder.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]


def test_adapter_file_holds_only_the_adapter_and_loads_back(tmp_path):
    reference, ours = pair(head=True)
    ids, mask, _ = batch()
    path = save_lora(ours, tmp_path / "adapter.safetensors")
    from safetensors.torch import load_file

    stored = load_file(str(path))
    assert set(stored) == set(lora_state_dict(ours))
    assert all(k.endswith((".lora_A", ".lora_B")) or k.startswith("classifier.") for k in stored)
    assert sum(v.numel() for v in stored.values()) == trainable_parameters(ours).trainable
    # the same base weights, no adapter yet: load_lora adds LoRA as saved and fills it in
    torch.manual_seed(0)
    fresh = BertForTokenClassification.from_hf(transformers.BertForTokenClassification(tiny_config()))
    load_lora(fresh, path)
    ours.eval(), fresh.eval(), reference.eval()
    with torch.no_grad():
        ref_logits = reference(input_ids=ids, attention_mask=mask).logits
        assert max_diff(fresh(ids, mask).logits, ref_logits) < 1e-5
    assert trainable_parameters(fresh) == trainable_parameters(ours)


# ---------------------------------------------------------------- bad input: one line, naming the fix


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def model():
    torch.manual_seed(0)
    return BertForTokenClassification(tiny_config())


@pytest.mark.parametrize("r", [0, -2, 2.0, True])
def test_bad_rank(r):
    with pytest.raises(LoRAError) as excinfo:
        add_lora(model(), r=r)
    assert "r (the rank)" in one_line(excinfo)


def test_bad_alpha_and_dropout():
    with pytest.raises(LoRAError, match="alpha"):
        add_lora(model(), r=4, alpha=float("nan"))
    with pytest.raises(LoRAError, match="dropout"):
        add_lora(model(), r=4, dropout=1.0)


def test_target_that_matches_nothing_lists_what_exists():
    with pytest.raises(LoRAError) as excinfo:
        add_lora(model(), r=4, target=("query", "qkv"))
    message = one_line(excinfo)
    assert "'qkv' matches no module" in message
    for name in ("q_proj", "v_proj", "out_proj", "linear1", "classifier"):
        assert name in message


def test_target_that_is_not_linear():
    with pytest.raises(LoRAError) as excinfo:
        add_lora(model(), r=4, target="self_attn")
    assert "not an nn.Linear" in one_line(excinfo)


def test_modules_to_save_that_matches_nothing():
    with pytest.raises(LoRAError) as excinfo:
        add_lora(model(), r=4, modules_to_save="head")
    assert "'head' matches no module" in one_line(excinfo)


def test_lora_applied_twice():
    m = add_lora(model(), r=4)
    with pytest.raises(LoRAError) as excinfo:
        add_lora(m, r=4)
    assert "applied twice" in one_line(excinfo)


@pytest.mark.parametrize("call", [merge_lora, lora_state_dict], ids=["merge", "state_dict"])
def test_no_lora_to_merge_or_save(call):
    with pytest.raises(LoRAError) as excinfo:
        call(model())
    assert "has no LoRA layers" in one_line(excinfo) and "add_lora" in one_line(excinfo)


def test_not_a_module():
    with pytest.raises(TypeError, match="nn.Module"):
        add_lora({"weights": 1}, r=4)


def test_add_lora_refuses_before_changing_anything():
    m = model()
    with pytest.raises(LoRAError):
        add_lora(m, r=4, target=("query", "nothing"))
    assert not has_lora(m) and all(p.requires_grad for p in m.parameters())
    assert math.isclose(trainable_parameters(m).fraction, 1.0)


def test_load_lora_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_lora"):
        load_lora(model(), tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(LoRAError) as excinfo:
        load_lora(model(), tmp_path / "other.safetensors")
    assert "not an adapter written by save_lora" in one_line(excinfo)
    path = save_lora(add_lora(model(), r=4), tmp_path / "r4.safetensors")
    with pytest.raises(LoRAError) as excinfo:  # an adapter of another rank
        load_lora(add_lora(model(), r=2), path)
    assert "does not fit this model" in one_line(excinfo)


def test_saving_a_model_with_lora_says_merge_first():
    from course_utils.text.bert import CheckpointError

    m = add_lora(model(), r=4)
    with pytest.raises(CheckpointError) as excinfo:
        m.hf_state_dict()
    assert "merge_lora(model) first" in one_line(excinfo)
    merge_lora(m)
    assert "classifier.weight" in m.hf_state_dict()  # merged: a plain model again
