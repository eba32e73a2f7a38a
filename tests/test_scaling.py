"""Chapter 08's techniques leave the mathematics unchanged; references are plain torch computations:
the big-batch gradient, fp32, the un-checkpointed model, chapter 01's attention and torch's SDPA,
and tensor sizes computed from shapes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers

from course_utils.layers import attention
from course_utils.text import bert
from course_utils.scale import launch, scaling


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _big_batch_grads(model, sequences):
    model.zero_grad()
    batch = scaling.collate_tokens(sequences)
    logits = model(batch["input_ids"])
    F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100).backward()
    return scaling.gradients(model)


# ----------------------------------------------------------------------------- accumulation


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_token_normalised_accumulation_equals_big_batch(k):
    sequences = scaling.make_token_data(10, seed=k)
    model = scaling.TinyTokenModel()
    want = _big_batch_grads(model, sequences)
    model.zero_grad()
    micro = [scaling.collate_tokens(mb) for mb in scaling.split_batch(sequences, k)]
    scaling.accumulate_gradients(model, micro, normalize="tokens")
    assert scaling.max_abs_diff(want, scaling.gradients(model)) < 1e-6


def test_mean_of_means_fails_on_unequal_lengths_and_passes_on_equal():
    sequences = scaling.make_token_data(12, min_len=2, max_len=30, seed=3)
    model = scaling.TinyTokenModel()
    want = _big_batch_grads(model, sequences)
    model.zero_grad()
    scaling.accumulate_gradients(
        model, [scaling.collate_tokens(mb) for mb in scaling.split_batch(sequences, 4)], normalize="mean_of_means"
    )
    assert scaling.max_abs_diff(want, scaling.gradients(model)) > 1e-4
    equal = [s[:6] for s in scaling.make_token_data(8, min_len=6, max_len=6, seed=4)]
    want = _big_batch_grads(model, equal)
    model.zero_grad()
    scaling.accumulate_gradients(
        model, [scaling.collate_tokens(mb) for mb in scaling.split_batch(equal, 4)], normalize="mean_of_means"
    )
    assert scaling.max_abs_diff(want, scaling.gradients(model)) < 1e-6


def test_logged_accumulated_loss_is_the_big_batch_loss():
    sequences = scaling.make_token_data(9, seed=5)
    model = scaling.TinyTokenModel()
    batch = scaling.collate_tokens(sequences)
    want = F.cross_entropy(model(batch["input_ids"]).flatten(0, 1), batch["labels"].flatten()).item()
    got = scaling.accumulate_gradients(model, [scaling.collate_tokens(mb) for mb in scaling.split_batch(sequences, 3)])
    assert got == pytest.approx(want, abs=1e-6)


def test_train_token_model_with_micro_batches_equals_one_batch():
    batches = scaling.chunks(scaling.make_token_data(12, seed=6), 6)
    one, many = scaling.TinyTokenModel(), scaling.TinyTokenModel()
    many.load_state_dict(one.state_dict())
    scaling.train_token_model(one, batches, lr=0.5)
    scaling.train_token_model(many, batches, lr=0.5, micro_batches=3)
    assert scaling.max_abs_diff(dict(one.named_parameters()), dict(many.named_parameters())) < 1e-6


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="normalize must be one of"):
        scaling.accumulate_gradients(scaling.TinyTokenModel(), [scaling.collate_tokens([[1, 2]])], normalize="mean")
    with pytest.raises(ValueError, match="cannot split 2 sequences into 3"):
        scaling.split_batch([[1, 2], [3, 4]], 3)
    with pytest.raises(ValueError, match="min_len"):
        scaling.make_token_data(3, min_len=5, max_len=2)
    with pytest.raises(ValueError, match="empty list"):
        scaling.collate_tokens([])


# ----------------------------------------------------------------------------- mixed precision


def _tiny_bert(dropout=0.0, layers=1):
    config = transformers.BertConfig(
        vocab_size=300,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return bert.BertForPreTraining(config)


def _bert_batch(batch=4, length=16, vocab=300):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab, (batch, length), generator=g)
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.3, ids, -100)
    labels[:, 1] = ids[:, 1]
    return ids, labels, torch.randint(0, 2, (batch,), generator=g)


def test_bf16_autocast_runs_matmuls_in_bf16_and_the_loss_in_fp32():
    model = _tiny_bert()
    ids, labels, nsp = _bert_batch()

    def loss():
        return model(ids, labels=labels, next_sentence_label=nsp, masked_only=True).loss

    ops = scaling.autocast_op_dtypes(loss)
    assert ops["addmm"] == {torch.bfloat16}
    assert ops["nll_loss_forward"] == {torch.float32}
    modules = scaling.autocast_output_dtypes(model, loss)
    assert modules["Linear"] == {torch.bfloat16} and modules["Embedding"] == {torch.float32}
    fp32 = loss().item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = loss().item()
    assert abs(bf16 - fp32) / fp32 < 1e-2


def test_grad_scaler_skips_a_step_with_inf_gradients():
    model = scaling.TinyTokenModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    batch = scaling.collate_tokens(scaling.make_token_data(4, seed=2))

    def loss_fn(m):
        total, count = scaling.token_loss_sum(m, batch)
        return total / count

    before = {k: v.clone() for k, v in model.state_dict().items()}
    _, stepped = scaling.amp_step(model, loss_fn, optimizer, "cpu", None, scaler)
    assert stepped and any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _, stepped = scaling.amp_step(model, lambda m: loss_fn(m) * float("inf"), optimizer, "cpu", None, scaler)
    assert not stepped and scaler.get_scale() == 4.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ----------------------------------------------------------------------------- checkpointing


def _grads_with(model, ids, labels, nsp, seed=7):
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    model(ids, labels=labels, next_sentence_label=nsp, masked_only=True).loss.backward()
    return scaling.gradients(model)


def test_checkpointing_gives_identical_gradients_with_dropout():
    model = _tiny_bert(dropout=0.2, layers=2).train()
    ids, labels, nsp = _bert_batch()
    plain = _grads_with(model, ids, labels, nsp)
    assert scaling.checkpoint_layers(model.bert.encoder.layers) == 2
    names = [n for n, _ in model.named_parameters()]
    checkpointed = _grads_with(model, ids, labels, nsp)
    assert [n for n, _ in model.named_parameters()] == names  # weights keep their names
    assert scaling.max_abs_diff(plain, checkpointed) < 1e-6
    scaling.checkpoint_layers(model.bert.encoder.layers, enabled=False)
    scaling.checkpoint_layers(model.bert.encoder.layers, preserve_rng_state=False)
    assert scaling.max_abs_diff(plain, _grads_with(model, ids, labels, nsp)) > 1e-4  # new dropout masks
    scaling.checkpoint_layers(model.bert.encoder.layers, enabled=False)
    assert "forward" not in model.bert.encoder.layers[0].__dict__


def test_checkpointing_saves_fewer_tensors_and_lowers_peak_memory():
    model = _tiny_bert(layers=3).train()
    ids, labels, nsp = _bert_batch(batch=8, length=32)
    counts, peaks = {}, {}
    for enabled in (False, True):
        scaling.checkpoint_layers(model.bert.encoder.layers, enabled=enabled)
        with scaling.SavedTensors(model) as saved:
            loss = model(ids, labels=labels, next_sentence_label=nsp, masked_only=True).loss
        counts[enabled] = (saved.count, saved.bytes)
        del loss

        def step():
            model.zero_grad(set_to_none=True)
            model(ids, labels=labels, next_sentence_label=nsp, masked_only=True).loss.backward()

        peaks[enabled] = scaling.peak_memory(step)
    assert counts[True][0] < counts[False][0] and counts[True][1] < counts[False][1]
    assert peaks[True] < peaks[False]


def test_saved_tensors_counts_what_autograd_keeps():
    x = torch.randn(10, 20, requires_grad=True)
    with scaling.SavedTensors() as saved:
        y = torch.exp(x)  # exp saves its output
        z = (y * 3).sum()  # mul by a python number saves nothing
    assert saved.count == 1 and saved.bytes == 10 * 20 * 4
    del z


def test_checkpoint_layers_rejects_non_modules():
    with pytest.raises(TypeError, match="nn.Modules"):
        scaling.checkpoint_layers([lambda x: x])


# ----------------------------------------------------------------------------- memory tracker


def test_memory_tracker_counts_allocations_and_frees():
    a = torch.randn(100)
    with scaling.MemoryTracker() as tracker:
        b = a * 2  # 400 bytes
        c = b + 1  # 400 more: peak 800
        del b  # freed
        d = c.exp()  # 400: alive c, d -> 800
        c.add_(1)  # in place: nothing new
        e = d.view(10, 10)  # a view: nothing new
    assert tracker.peak == 800 and tracker.allocated == 1200 and tracker.current == 800
    del c, d, e
    assert tracker.current == 0


def test_memory_tracker_sees_the_score_matrix():
    q = torch.randn(1, 2, 256, 16)
    with torch.no_grad():
        peak = scaling.peak_memory(lambda: attention.scaled_dot_product_attention(q, q, q)[0])
    scores = 2 * 256 * 256 * 4
    assert 2 * scores <= peak < 3 * scores  # scores and weights alive together, plus the output


# ----------------------------------------------------------------------------- tiled attention

MASKS = {
    "none": lambda b, lq, lk: None,
    "padding": lambda b, lq, lk: attention.padding_mask(torch.randint(1, lk + 1, (b,)), lk),
    "causal": lambda b, lq, lk: torch.ones(lq, lk, dtype=torch.bool).tril(),
    "random with empty rows": lambda b, lq, lk: torch.rand(b, 1, lq, lk) > 0.9,
    "key vector": lambda b, lq, lk: torch.rand(lk) > 0.5,
}


@pytest.mark.parametrize("mask_name", MASKS)
@pytest.mark.parametrize("block", [3, 16, 100])
def test_tiled_attention_equals_chapter_01(mask_name, block):
    b, h, lq, lk, d, dv = 3, 2, 33, 41, 8, 5
    q, k, v = torch.randn(b, h, lq, d), torch.randn(b, h, lk, d), torch.randn(b, h, lk, dv)
    mask = MASKS[mask_name](b, lq, lk)
    want, _ = attention.scaled_dot_product_attention(q, k, v, mask=mask)
    got = scaling.tiled_attention(q, k, v, mask=mask, block_size=block)
    assert got.shape == want.shape and (got - want).abs().max().item() < 1e-5


def test_tiled_attention_equals_torch_sdpa():
    q, k, v = (torch.randn(2, 4, 130, 16) for _ in range(3))
    mask = attention.causal_mask(130)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert (scaling.tiled_attention(q, k, v, mask=mask, block_size=32) - want).abs().max().item() < 1e-5


def test_tiled_attention_memory_grows_linearly_plain_quadratically():
    def peaks(fn):
        out = []
        for length in (256, 512):
            q = torch.randn(1, 2, length, 16)
            with torch.no_grad():
                out.append(scaling.peak_memory(lambda q=q: fn(q)))
        return out[1] / out[0]

    plain = peaks(lambda q: attention.scaled_dot_product_attention(q, q, q)[0])
    tiled = peaks(lambda q: scaling.tiled_attention(q, q, q, block_size=64))
    assert plain > 3.5 and tiled < 2.5


def test_tiled_attention_bad_input():
    q = torch.randn(1, 4, 8)
    with pytest.raises(ValueError, match="block_size"):
        scaling.tiled_attention(q, q, q, block_size=0)
    with pytest.raises(TypeError, match="boolean mask"):
        scaling.tiled_attention(q, q, q, mask=torch.ones(4, 4))
    with pytest.raises(attention.AttentionShapeError):
        scaling.tiled_attention(q, q, q, mask=torch.ones(3, 4, dtype=torch.bool))


# ----------------------------------------------------------------------------- launcher (no torchrun needed)


def test_launcher_turns_a_failing_module_into_one_line(tmp_path):
    with pytest.raises(launch.LaunchError) as err:
        launch.torchrun("course_utils.scale.scripts.ddp_check", [], nproc=1, log_file=tmp_path / "log.txt", timeout=120)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "log.txt") in message and "--out" in message


def test_launcher_stops_a_run_that_takes_too_long(tmp_path):
    with pytest.raises(launch.LaunchError, match="did not finish within 1 s"):
        launch.torchrun(
            "course_utils.scale.scripts.ddp_check",
            ["--out", tmp_path],
            nproc=1,
            log_file=tmp_path / "log.txt",
            timeout=1,
        )


def test_launcher_bad_arguments():
    with pytest.raises(ValueError, match="nproc"):
        launch.torchrun("x", nproc=0)
    with pytest.raises(ValueError, match="timeout"):
        launch.torchrun("x", timeout=0)
