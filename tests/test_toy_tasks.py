"""course_utils.layers.toy_tasks: the data generator against plain-Python references, the held-out
split, the model's shapes, masking and equivariance, the accuracies against hand counts,
and a short training run that learns far above chance."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_utils.layers import toy_tasks
from course_utils.layers.toy_tasks import IGNORE_INDEX, ToyEncoder, make_sequences, make_split, pad_id


def reference_target(row: list[int], task: str, pad: int) -> list[int]:
    """The task's answer for one padded row, written with Python lists."""
    real = [t for t in row if t != pad]
    answer = real[::-1] if task == "reverse" else sorted(real)
    return answer + [IGNORE_INDEX] * (len(row) - len(real))


# ----------------------------------------------------------------------------- the generator


@pytest.mark.parametrize("task", ["reverse", "sort"])
@pytest.mark.parametrize("min_length", [None, 1, 3])
def test_targets_match_a_python_reference(task, min_length):
    inputs, targets = make_sequences(200, 7, num_symbols=5, task=task, min_length=min_length, seed=3)
    assert inputs.shape == targets.shape == (200, 7)
    assert inputs.dtype == targets.dtype == torch.int64
    for row, target in zip(inputs.tolist(), targets.tolist()):
        assert target == reference_target(row, task, pad=5)


def test_padding_only_on_the_right_and_lengths_in_range():
    inputs, _ = make_sequences(2000, 9, num_symbols=10, min_length=2, seed=0)
    pad = pad_id(10)
    assert pad == 10
    real = inputs != pad
    lengths = real.sum(dim=1)
    assert torch.equal(real, torch.arange(9)[None, :] < lengths[:, None])  # no padding before a real token
    assert int(lengths.min()) == 2 and int(lengths.max()) == 9  # both ends occur in 2000 draws
    assert set(inputs[real].unique().tolist()) == set(range(10))  # every symbol occurs


def test_fixed_length_has_no_padding():
    inputs, targets = make_sequences(50, 6, num_symbols=3, seed=1)
    assert int(inputs.max()) < 3 and int(inputs.min()) >= 0
    assert (targets != IGNORE_INDEX).all()


def test_same_seed_same_data_other_seed_other_data():
    a, _ = make_sequences(20, 8, seed=5, min_length=2)
    b, _ = make_sequences(20, 8, seed=5, min_length=2)
    c, _ = make_sequences(20, 8, seed=6, min_length=2)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_split_is_distinct_and_held_out():
    split = make_split(3000, 500, length=6, min_length=3, num_symbols=6, seed=0)
    train = [tuple(r) for r in split.train_inputs.tolist()]
    test = [tuple(r) for r in split.test_inputs.tolist()]
    assert len(train) == 3000 and len(test) == 500
    assert len(set(train)) == 3000 and len(set(test)) == 500  # no duplicates anywhere
    assert not set(train) & set(test)  # no test sequence in training
    for row, target in zip(split.test_inputs.tolist(), split.test_targets.tolist()):
        assert target == reference_target(row, "reverse", pad=6)
    assert split.length == 6 and split.pad_id == 6 and split.task == "reverse"


def test_split_refuses_more_sequences_than_exist():
    with pytest.raises(ValueError, match=r"only 12 different sequences exist, too few to draw 10 distinct ones"):
        make_split(8, 2, length=3, min_length=2, num_symbols=2)  # 2**2 + 2**3 = 12 < 2 * 10


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(task="shuffle"), r"task must be one of \('reverse', 'sort'\), got 'shuffle'"),
        (dict(min_length=9), r"min_length must be an integer in 1..length=8, got 9"),
        (dict(min_length=0), r"min_length must be an integer in 1..length=8, got 0"),
        (dict(num_symbols=0), r"num_symbols must be a positive integer, got 0"),
    ],
)
def test_bad_generator_arguments_say_what_to_change(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_sequences(**{"num_sequences": 4, "length": 8, **kwargs})


# ----------------------------------------------------------------------------- the model


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rope", "none"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_forward_shapes(positions, norm_first):
    model = ToyEncoder(
        num_symbols=7,
        max_len=12,
        d_model=16,
        num_heads=2,
        d_ff=32,
        num_layers=2,
        positions=positions,
        norm_first=norm_first,
    )
    tokens, _ = make_sequences(3, 12, num_symbols=7, min_length=4, seed=0)
    logits = model(tokens)
    assert logits.shape == (3, 12, 7)
    assert model(tokens[:, :5]).shape == (3, 5, 7)  # shorter than max_len is fine


def test_padding_does_not_change_real_positions():
    """Extra padding keys are masked: the real positions' logits stay the same."""
    torch.manual_seed(0)
    model = ToyEncoder(num_symbols=10, max_len=16, d_model=16, num_heads=2, d_ff=32).eval()
    short, _ = make_sequences(4, 8, min_length=3, seed=2)
    longer = torch.cat([short, torch.full((4, 8), pad_id(10))], dim=1)
    real = short != pad_id(10)
    with torch.no_grad():
        a, b = model(short), model(longer)[:, :8]
    assert torch.allclose(a[real], b[real], atol=1e-5)


def test_without_positions_the_model_is_permutation_equivariant():
    torch.manual_seed(1)
    tokens, _ = make_sequences(2, 10, seed=4)
    perm = torch.randperm(10)
    for positions, equivariant in (("none", True), ("learned", False), ("sinusoidal", False), ("rope", False)):
        torch.manual_seed(2)
        model = ToyEncoder(max_len=10, d_model=16, num_heads=2, d_ff=32, positions=positions).eval()
        with torch.no_grad():
            diff = (model(tokens[:, perm]) - model(tokens)[:, perm]).abs().max().item()
        assert (diff < 1e-5) == equivariant, f"positions={positions}: diff {diff}"


@pytest.mark.parametrize(
    "tokens, message",
    [
        (torch.zeros(2, 5), r"tokens must be a \(batch, length\) int64 tensor, got torch.float32 \(2, 5\)"),
        (torch.zeros(5, dtype=torch.long), r"tokens must be a \(batch, length\) int64 tensor, got torch.int64 \(5,\)"),
        (torch.zeros(1, 9, dtype=torch.long), r"sequence length 9 > max_len=8: build the model with max_len >= 9"),
        (torch.tensor([[0, 11]]), r"tokens must lie in 0..9 \(or be the padding id 10\), got values 0..11"),
        (torch.tensor([[-1, 2]]), r"tokens must lie in 0..9 \(or be the padding id 10\), got values -1..2"),
    ],
)
def test_bad_tokens_say_what_is_wrong(tokens, message):
    model = ToyEncoder(max_len=8, d_model=8, num_heads=2, d_ff=16)
    with pytest.raises(ValueError, match=message):
        model(tokens)


def test_unknown_positions_kind():
    with pytest.raises(
        ValueError,
        match=r"positions must be one of \('learned', 'sinusoidal', 'rope', 'none'\), "
        r"got 'alibi'",
    ):
        ToyEncoder(positions="alibi")


def test_rope_model_adds_nothing_to_the_embeddings_and_rotates_in_every_layer():
    from course_utils.layers.positions import RotaryMultiHeadAttention

    model = ToyEncoder(max_len=8, d_model=16, num_heads=2, d_ff=32, num_layers=3, positions="rope")
    assert isinstance(model.position, nn.Identity)
    assert all(isinstance(layer.self_attn, RotaryMultiHeadAttention) for layer in model.encoder.layers)
    learned = ToyEncoder(max_len=8, d_model=16, num_heads=2, d_ff=32, num_layers=3, positions="learned")

    def n_params(m):
        return sum(p.numel() for p in m.parameters())

    assert n_params(learned) - n_params(model) == 8 * 16  # only the position table is gone


# ----------------------------------------------------------------------------- the position-blind optimum


def brute_force_blind_accuracy(num_symbols: int, length: int) -> float:
    """Expected reversal accuracy of the best function of (own symbol, bag of symbols), found by
    enumerating every sequence: for each view, the guess right most often."""
    import itertools
    from collections import Counter

    hits_by_view: dict = {}
    for seq in itertools.product(range(num_symbols), repeat=length):
        for i, symbol in enumerate(seq):
            hits_by_view.setdefault((symbol, tuple(sorted(seq))), Counter())[seq[length - 1 - i]] += 1
    return sum(max(c.values()) for c in hits_by_view.values()) / (length * num_symbols**length)


@pytest.mark.parametrize("num_symbols, length", [(2, 1), (2, 2), (2, 3), (3, 3), (3, 4), (3, 5), (4, 5), (2, 6)])
def test_best_position_blind_guess_reaches_the_brute_force_optimum(num_symbols, length):
    import itertools

    rows = torch.tensor(list(itertools.product(range(num_symbols), repeat=length)))
    padded = torch.cat([rows, torch.full((rows.shape[0], 2), pad_id(num_symbols))], dim=1)  # and padding
    targets = toy_tasks.target_for(padded, "reverse", num_symbols)
    guesses = toy_tasks.best_position_blind_guess(padded, num_symbols)
    real = targets != IGNORE_INDEX
    assert torch.equal(guesses == IGNORE_INDEX, ~real)
    accuracy = ((guesses == targets) & real).sum().item() / real.sum().item()
    assert accuracy == pytest.approx(brute_force_blind_accuracy(num_symbols, length))


def test_best_position_blind_guess_is_a_function_of_own_symbol_and_bag():
    torch.manual_seed(0)
    inputs, _ = make_sequences(50, 9, min_length=3, seed=5)
    lengths = (inputs != pad_id(10)).sum(1)
    for row, length in zip(inputs, lengths):
        shuffled = row.clone()
        shuffled[:length] = row[:length][torch.randperm(int(length))]
        a, b = toy_tasks.best_position_blind_guess(torch.stack([row, shuffled]))
        for symbol in row[:length].unique():  # the same own symbol and bag -> the same guess
            assert len(set(a[row == symbol].tolist()) | set(b[shuffled == symbol].tolist())) == 1


def test_best_position_blind_guess_refuses_floats():
    with pytest.raises(ValueError, match=r"inputs must be a \(N, L\) int64 tensor"):
        toy_tasks.best_position_blind_guess(torch.zeros(2, 3))


# ----------------------------------------------------------------------------- evaluation and training


class FixedGuess(nn.Module):
    """Predicts a given (N, L) tensor of tokens, whatever the input."""

    def __init__(self, guesses: torch.Tensor, num_symbols: int = 10):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.guesses, self.num_symbols, self.seen = guesses, num_symbols, 0

    def forward(self, tokens):
        batch = self.guesses[self.seen : self.seen + tokens.shape[0]]
        self.seen += tokens.shape[0]
        return nn.functional.one_hot(batch, self.num_symbols).float()


def test_accuracies_match_hand_counts():
    inputs = torch.tensor([[1, 2, 3, 10], [4, 5, 10, 10], [6, 7, 8, 9]])
    targets = toy_tasks.target_for(inputs, "reverse")  # [3 2 1 -], [5 4 - -], [9 8 7 6]
    guesses = torch.tensor([[3, 2, 0, 0], [5, 4, 7, 7], [9, 0, 7, 6]])
    # right: 2 of 3, 2 of 2 (padding guesses ignored), 3 of 4 -> 7 of 9 tokens; one sequence fully right
    scores = toy_tasks.evaluate(FixedGuess(guesses), inputs, targets, batch_size=2)
    assert scores["token_accuracy"] == pytest.approx(7 / 9)
    assert scores["sequence_accuracy"] == pytest.approx(1 / 3)


def test_short_training_run_learns_far_above_chance():
    torch.manual_seed(0)
    split = make_split(2000, 300, length=6, num_symbols=10, seed=0)
    model = ToyEncoder(max_len=6, d_model=32, num_heads=2, d_ff=64, num_layers=1)
    before = toy_tasks.evaluate(model, split.test_inputs, split.test_targets)["token_accuracy"]
    history = toy_tasks.train(model, split, steps=150, batch_size=32, lr=3e-3, warmup=10, eval_every=50, progress=False)
    after = toy_tasks.evaluate(model, split.test_inputs, split.test_targets)
    losses = history.values("loss")
    assert len(losses) == 150 and history.steps("eval_token_accuracy") == [50, 100, 150]
    assert history.last("eval_token_accuracy") == pytest.approx(after["token_accuracy"])
    assert history.last("eval_sequence_accuracy") == pytest.approx(after["sequence_accuracy"])
    assert before < 0.25  # chance is 0.1
    assert after["token_accuracy"] > 0.6, after
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])


@pytest.mark.parametrize("warmup, optimizer", [(5, "adam"), (0, "adam"), (3, "radam")])
def test_train_is_the_plain_loop_bit_for_bit(warmup, optimizer):
    """toy_tasks.train runs the course's one loop (training.train); it gives exactly the weights, losses
    and accuracies of the plain loop written out here with torch alone (dropout on: the global RNG is
    drawn in the same order)."""
    import math

    split = make_split(300, 40, length=6, seed=1)
    steps, batch, lr, every = 12, 16, 3e-3, 5
    torch.manual_seed(3)
    model = ToyEncoder(max_len=6, d_model=16, num_heads=2, d_ff=32, dropout=0.1)
    twin = ToyEncoder(max_len=6, d_model=16, num_heads=2, d_ff=32, dropout=0.1)
    twin.load_state_dict(model.state_dict())

    torch.manual_seed(7)
    history = toy_tasks.train(
        model,
        split,
        steps,
        batch_size=batch,
        lr=lr,
        warmup=warmup,
        eval_every=every,
        seed=2,
        progress=False,
        optimizer=optimizer,
    )

    def factor(step):  # warm-up from lr / warmup, then cosine to 0 (the schedule the chapter states)
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))

    torch.manual_seed(7)
    adam = {"adam": torch.optim.Adam, "radam": torch.optim.RAdam}[optimizer](twin.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(adam, factor)
    generator = torch.Generator().manual_seed(2)
    losses, accuracies = [], []
    twin.train()
    for step in range(1, steps + 1):
        index = torch.randint(split.train_inputs.shape[0], (batch,), generator=generator)
        logits = twin(split.train_inputs[index])
        loss = nn.functional.cross_entropy(
            logits.reshape(-1, 10), split.train_targets[index].reshape(-1), ignore_index=IGNORE_INDEX
        )
        adam.zero_grad()
        loss.backward()
        adam.step()
        schedule.step()
        losses.append(loss.item())
        if step % every == 0 or step == steps:
            twin.eval()
            with torch.no_grad():
                predicted = twin(split.test_inputs).argmax(-1)
            real = split.test_targets != IGNORE_INDEX
            accuracies.append(((predicted == split.test_targets) & real).sum().item() / real.sum().item())
            twin.train()

    assert history.values("loss") == losses
    assert history.steps("eval_token_accuracy") == [5, 10, 12]
    assert history.values("eval_token_accuracy") == pytest.approx(accuracies, abs=1e-12)
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"warmup": -1}, r"warmup must be a whole number of steps >= 0 \(0: no warm-up\), got -1"),
        ({"optimizer": "sgd"}, r"optimizer must be one of \['adam', 'radam'\], got 'sgd'"),
    ],
)
def test_train_refuses_bad_warmup_or_optimizer(kwargs, message):
    split = make_split(20, 5, length=4)
    with pytest.raises(ValueError, match=message):
        toy_tasks.train(ToyEncoder(max_len=4, d_model=8, num_heads=2, d_ff=8), split, steps=2, progress=False, **kwargs)


def test_no_warmup_starts_at_the_peak_rate_and_radam_is_torchs():
    split = make_split(200, 20, length=4)
    for optimizer, torch_class in (("adam", torch.optim.Adam), ("radam", torch.optim.RAdam)):
        torch.manual_seed(0)
        model = ToyEncoder(max_len=4, d_model=8, num_heads=2, d_ff=8)
        start = [p.detach().clone() for p in model.parameters()]
        toy_tasks.train(model, split, steps=1, batch_size=8, lr=0.1, warmup=0, progress=False, optimizer=optimizer)
        torch.manual_seed(0)  # the same step by hand: the first batch of train's generator, torch's optimizer
        twin = ToyEncoder(max_len=4, d_model=8, num_heads=2, d_ff=8)
        index = torch.randint(split.train_inputs.shape[0], (8,), generator=torch.Generator().manual_seed(0))
        logits = twin(split.train_inputs[index])
        nn.functional.cross_entropy(
            logits.reshape(-1, 10), split.train_targets[index].reshape(-1), ignore_index=IGNORE_INDEX
        ).backward()
        torch_class(twin.parameters(), lr=0.1).step()
        for p, q, s in zip(model.parameters(), twin.parameters(), start):
            assert torch.allclose(p, q, atol=1e-6)
        assert any(not torch.equal(p, s) for p, s in zip(model.parameters(), start))


def test_train_rejects_zero_steps():
    split = make_split(20, 5, length=4)
    with pytest.raises(ValueError, match="steps must be a positive integer, got 0"):
        toy_tasks.train(ToyEncoder(max_len=4, d_model=8, num_heads=2, d_ff=8), split, steps=0, progress=False)
