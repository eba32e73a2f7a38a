"""Training helpers: schedule vs transformers, parameter groups, the loop, early stopping,
safetensors checkpoints, and the errors of load_or_pretrain."""

import json

import pytest
import torch
import transformers
from safetensors import safe_open
from torch import nn

from course_utils.text import bert, pretraining_run
from course_utils import training


def tiny_bert_config():
    return transformers.BertConfig(
        vocab_size=60,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )


# --------------------------------------------------------------------------------------------- schedule


@pytest.mark.parametrize("warmup, total", [(6, 100), (0, 20), (20, 20), (1, 3)])
def test_schedule_equals_transformers_linear_warmup(warmup, total):
    def lrs(make_scheduler):
        model = nn.Linear(3, 2)
        optimizer = training.make_optimizer(model, lr=1e-3)
        scheduler = make_scheduler(optimizer)
        values = []
        for _ in range(total + 2):
            values += [g["lr"] for g in optimizer.param_groups]
            optimizer.step()
            scheduler.step()
        return values

    mine = lrs(lambda opt: training.linear_warmup_schedule(opt, warmup, total))
    reference = lrs(lambda opt: transformers.get_linear_schedule_with_warmup(opt, warmup, total))
    assert mine == pytest.approx(reference, abs=1e-12)
    if 0 < warmup < total:
        assert mine[:2] == [0.0, 0.0] and max(mine) == pytest.approx(1e-3)
    assert mine[2 * total :] == [0.0] * 4


def test_schedule_rejects_impossible_lengths():
    optimizer = training.make_optimizer(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="0 <= warmup_steps <= total_steps"):
        training.linear_warmup_schedule(optimizer, 10, 5)


# --------------------------------------------------------------------------------------------- parameter groups


def test_no_decay_on_biases_and_layernorm_matches_the_transformers_convention():
    model = transformers.BertForPreTraining(tiny_bert_config())
    names = [n for n, _ in model.named_parameters()]
    # The convention of transformers' examples and the BERT paper's code: skip "bias" and "LayerNorm.weight".
    reference = {n for n in names if n.endswith("bias") or "LayerNorm.weight" in n}
    assert set(training.no_decay_names(model)) & set(names) == reference
    groups = training.param_groups(model, weight_decay=0.01)
    decayed = {id(p) for p in groups[0]["params"]}
    kept = {id(p) for p in groups[1]["params"]}
    by_name = dict(model.named_parameters())
    assert kept == {id(by_name[n]) for n in reference}
    assert decayed == {id(by_name[n]) for n in names if n not in reference}
    assert (groups[0]["weight_decay"], groups[1]["weight_decay"]) == (0.01, 0.0)


def test_own_bert_groups_cover_every_parameter_once_and_skip_frozen_ones():
    model = bert.BertForPreTraining(tiny_bert_config())
    for p in model.bert.embeddings.parameters():
        p.requires_grad_(False)
    groups = training.param_groups(model)
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(ids) == sorted(trainable) and len(ids) == len(set(ids))
    for module in model.modules():
        if isinstance(module, nn.LayerNorm) and module.weight.requires_grad:
            assert id(module.weight) in {id(p) for p in groups[1]["params"]}
        if (
            isinstance(module, nn.Linear) and module.weight.requires_grad
        ):  # the decoder is tied to the frozen embeddings
            assert id(module.weight) in {id(p) for p in groups[0]["params"]}


def test_bad_optimizer_settings_are_refused():
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        training.param_groups(frozen)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        training.param_groups(nn.Linear(2, 2), weight_decay=-1)
    with pytest.raises(ValueError, match="lr must be positive"):
        training.make_optimizer(nn.Linear(2, 2), lr=0)


# --------------------------------------------------------------------------------------------- loop


def regression_batches(n=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    true_w = torch.tensor([[2.0, -1.0, 0.5]])
    batches = []
    for _ in range(n):
        x = torch.randn(16, 3, generator=generator)
        batches.append((x, x @ true_w.T))
    return batches


def mse_step(model, batch):
    x, y = batch
    loss = nn.functional.mse_loss(model(x), y)
    return {"loss": loss, "doubled": 2 * loss.item()}


def test_loop_equals_a_plain_torch_loop_and_logs_every_step():
    def run(use_helper):
        torch.manual_seed(0)
        model = nn.Linear(3, 1)
        optimizer = training.make_optimizer(model, lr=0.1, weight_decay=0.01)
        scheduler = training.linear_warmup_schedule(optimizer, 4, 40)
        batches = regression_batches()
        if use_helper:
            history = training.train(
                model, batches, mse_step, optimizer, scheduler, epochs=5, max_grad_norm=1.0, progress=False
            )
            return model, history
        for _ in range(5):
            for x, y in batches:
                loss = nn.functional.mse_loss(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
        return model, None

    model, history = run(True)
    reference, _ = run(False)
    assert torch.equal(model.weight, reference.weight) and torch.equal(model.bias, reference.bias)
    assert history.steps_done == 40 and history.steps("loss") == list(range(1, 41))
    assert history.mean("loss", last=5) < 0.2 * history.values("loss")[0]
    assert history.values("doubled") == pytest.approx([2 * v for v in history.values("loss")])
    expected_lr = [0.1 * training.warmup_factor(s, 4, 40) for s in range(40)]
    assert history.values("lr") == pytest.approx(expected_lr)
    assert history.seconds > 0 and "grad_norm" in history


def test_gradient_clipping_limits_the_update():
    model = nn.Linear(3, 1)
    start = model.weight.detach().clone(), model.bias.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    big = [(torch.full((4, 3), 100.0), torch.zeros(4, 1))]
    history = training.train(model, big, mse_step, optimizer, steps=1, max_grad_norm=0.5, progress=False)
    step = torch.cat([(model.weight - start[0]).flatten(), model.bias - start[1]])
    assert float(step.detach().norm()) == pytest.approx(0.5, rel=1e-4)
    assert history.last("grad_norm") > 100  # logged before clipping


def test_history_reports_unknown_metric_clearly():
    history = training.History()
    history.log(1, loss=2.0)
    assert history.curve("loss") == ([1], [2.0])
    with pytest.raises(KeyError, match="no metric 'accuracy'"):
        history.values("accuracy")


def test_loop_needs_steps_for_an_endless_stream():
    def endless():
        while True:
            yield regression_batches(1)[0]

    model = nn.Linear(3, 1)
    with pytest.raises(ValueError, match="give steps="):
        training.train(model, endless(), mse_step, training.make_optimizer(model), progress=False)
    history = training.train(model, endless(), mse_step, training.make_optimizer(model), steps=3, progress=False)
    assert history.steps_done == 3


# --------------------------------------------------------------------------------------------- early stopping


def test_early_stopping_keeps_the_best_weights_and_stops_after_patience():
    model = nn.Linear(2, 1)
    stopper = training.EarlyStopping(patience=2, mode="max")
    weights_at = {}
    for step, score in enumerate([0.1, 0.4, 0.3, 0.35, 0.9], start=1):
        with torch.no_grad():
            model.weight.fill_(float(step))
        weights_at[step] = model.weight.detach().clone()
        stopper.update(score, model, step)
        if stopper.should_stop:
            break
    assert step == 4 and stopper.best == 0.4 and stopper.best_step == 2
    stopper.restore(model)
    assert torch.equal(model.weight, weights_at[2])


def test_early_stopping_in_the_loop_restores_the_best_model():
    model = nn.Linear(3, 1)
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.66, 0.9])
    snapshots = []

    def evaluate(m):
        snapshots.append(m.weight.detach().clone())
        return {"f1": next(scores)}

    stopper = training.EarlyStopping(patience=2, mode="max", monitor="f1")
    history = training.train(
        model,
        regression_batches(),
        mse_step,
        training.make_optimizer(model, lr=0.1),
        steps=40,
        eval_fn=evaluate,
        eval_every=5,
        early_stopping=stopper,
        progress=False,
    )
    assert history.steps("eval_f1") == [5, 10, 15, 20]
    assert stopper.best_step == 10 and torch.equal(model.weight, snapshots[1])


def test_early_stopping_min_mode_and_errors():
    stopper = training.EarlyStopping(patience=1, mode="min", min_delta=0.01)
    assert stopper.update(1.0) and not stopper.update(0.995) and stopper.should_stop
    with pytest.raises(ValueError, match="mode must be 'max'"):
        training.EarlyStopping(mode="best")
    with pytest.raises(ValueError, match="patience must be"):
        training.EarlyStopping(patience=0)
    with pytest.raises(RuntimeError, match="no best weights kept yet"):
        training.EarlyStopping().restore(nn.Linear(1, 1))
    model = nn.Linear(3, 1)
    with pytest.raises(ValueError, match="early stopping needs eval_fn"):
        training.train(
            model,
            regression_batches(),
            mse_step,
            training.make_optimizer(model),
            steps=2,
            early_stopping=training.EarlyStopping(),
            progress=False,
        )


# --------------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_with_tied_weights(tmp_path):
    torch.manual_seed(0)
    model = bert.BertForPreTraining(tiny_bert_config())
    path = training.save_checkpoint(model, tmp_path / "ckpt.safetensors", {"step": 7, "f1": 0.5})
    with safe_open(str(path), framework="pt") as f:
        assert len(list(f.keys())) > 0  # a real safetensors file
    fresh = bert.BertForPreTraining(tiny_bert_config())
    metadata = training.load_checkpoint(fresh, path)
    assert metadata == {"step": 7, "f1": 0.5} == training.read_checkpoint_metadata(path)
    for (name, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), name
    assert fresh.cls.predictions.decoder.weight is fresh.bert.embeddings.word_embeddings.weight


def test_checkpoint_errors_say_the_fix(tmp_path):
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="end in .safetensors"):
        training.save_checkpoint(model, tmp_path / "model.pt")
    with pytest.raises(FileNotFoundError, match="save one with save_checkpoint"):
        training.load_checkpoint(model, tmp_path / "missing.safetensors")
    path = training.save_checkpoint(model, tmp_path / "linear.safetensors")
    with pytest.raises(ValueError, match="does not fit this model"):
        training.load_checkpoint(nn.Linear(2, 2, bias=False), path)


# --------------------------------------------------------------------------------------------- load_or_pretrain


def save_tiny_bert(directory):
    tokenizer = transformers.BertTokenizerFast(
        vocab={
            t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *[f"w{i}" for i in range(55)]])
        }
    )
    pretraining_run.save_bert(bert.BertForPreTraining(tiny_bert_config()), tokenizer, directory)
    return directory


def test_load_or_pretrain_accepts_a_bert_directory(tmp_path):
    directory = save_tiny_bert(tmp_path / "bert")
    assert pretraining_run.load_or_pretrain(directory) == directory
    assert pretraining_run.is_bert_dir(directory)
    loaded = transformers.AutoModelForMaskedLM.from_pretrained(directory)
    assert loaded.config.hidden_size == 16


def test_load_or_pretrain_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist: point pretrained_model to a folder"):
        pretraining_run.load_or_pretrain(tmp_path / "nowhere")
    file = tmp_path / "weights.bin"
    file.write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="is a file, not a model folder"):
        pretraining_run.load_or_pretrain(file)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="it has no config.json"):
        pretraining_run.load_or_pretrain(empty)
    gpt = save_tiny_bert(tmp_path / "gpt")
    config = json.loads((gpt / "config.json").read_text())
    (gpt / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(ValueError, match="holds a 'gpt2' model, not a BERT"):
        pretraining_run.load_or_pretrain(gpt)
    no_weights = save_tiny_bert(tmp_path / "no_weights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="no model.safetensors"):
        pretraining_run.load_or_pretrain(no_weights)
    no_tokenizer = save_tiny_bert(tmp_path / "no_tokenizer")
    for name in ("tokenizer.json", "vocab.txt"):
        (no_tokenizer / name).unlink(missing_ok=True)
    with pytest.raises(ValueError, match="has no tokenizer"):
        pretraining_run.load_or_pretrain(no_tokenizer)


def test_load_or_pretrain_trains_chapter_03_model_when_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path / "runs"))
    calls = []

    def quick_pretrain(directory, settings, progress=True, mode=None):
        calls.append((settings, mode))
        save_tiny_bert(directory)

    monkeypatch.setattr(pretraining_run, "pretrain", quick_pretrain)
    directory = pretraining_run.load_or_pretrain(None, fast=True)
    assert directory == tmp_path / "runs" / "ch03_bert" == pretraining_run.default_bert_dir()
    assert calls == [(pretraining_run.FAST_SETTINGS, "fast")]
    message = capsys.readouterr().out
    assert message.count("\n") == 1 and "pretraining a small one now" in message
    assert pretraining_run.load_or_pretrain(None, fast=True) == directory and len(calls) == 1  # found, not retrained


def test_checkpoint_of_another_size_or_damaged_is_one_line(tmp_path):
    path = training.save_checkpoint(nn.Linear(4, 3), tmp_path / "linear.safetensors")
    with pytest.raises(ValueError, match=r"another size \(weight: file \(3, 4\), model \(5, 4\)") as err:
        training.load_checkpoint(nn.Linear(4, 5), path)
    assert "\n" not in str(err.value)
    path.write_bytes(path.read_bytes()[:20])  # truncated: safetensors' own error would not name the file
    with pytest.raises(Exception, match="linear.safetensors") as err:
        training.load_checkpoint(nn.Linear(4, 3), path)
    assert "\n" not in str(err.value)
