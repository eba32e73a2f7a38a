"""Chapter 09's models: every fusion's shapes, late fusion = the average of probabilities, the gate's
extremes = one modality, cross-attention = torch's MultiheadAttention and SDPA, modality dropout,
macro-F1 = scikit-learn, save -> load in a fresh process, predict_sentiment and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_utils.vision import sentiment as st
from course_utils.vision import sentiment_predict, sentiment_training
from course_utils.vision import sentiment_data as sd

SMALL = {"d_model": 16, "heads": 2, "layers": 1, "channels": 8, "dropout": 0.0}
TOK = st.build_tokenizer()
POSTS = sd.generate(24, seed=0)


def small(fusion: str, seed: int = 0) -> st.SentimentModel:
    torch.manual_seed(seed)
    return st.SentimentModel({**SMALL, "fusion": fusion}, TOK).eval()


@pytest.mark.parametrize("fusion", st.FUSIONS)
def test_every_fusion_gives_two_logits(fusion):
    logits = small(fusion)(POSTS.texts[:5], POSTS.images[:5])
    assert logits.shape == (5, 2) and torch.isfinite(logits).all()


def test_tokenizer_reads_every_post_and_splits_chinese_into_characters():
    posts = sd.generate(400, seed=1)
    for text, lang in zip(posts.texts, posts.languages):
        tokens = TOK.tokenize(text)
        assert "[UNK]" not in tokens, text
        if lang == "zh":  # one token per character, punctuation included
            assert tokens == [c for c in text if not c.isspace()], (text, tokens)


def test_text_encoder_runs_once_per_distinct_sentence_and_matches_one_by_one():
    model = small("text")
    texts = ["i love this", "我不喜欢这个", "i love this", "看看这个"]
    calls = []
    hook = model.text.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    with torch.no_grad():
        states, mask = model.encode_texts(texts)
    hook.remove()
    assert calls == [3]  # three distinct sentences, one BERT call
    for i, t in enumerate(texts):
        ids = torch.tensor([TOK(t)["input_ids"]])
        with torch.no_grad():
            alone = model.text(ids).last_hidden_state[0]
        assert torch.allclose(states[i, : ids.shape[1]], alone, atol=1e-5) and mask[i].sum() == ids.shape[1]


def test_late_fusion_is_the_average_of_the_two_probabilities():
    text_model, image_model = small("text", 1), small("image", 2)
    late = st.LateFusion(text_model, image_model)
    with torch.no_grad():
        expected = (
            F.softmax(text_model(POSTS.texts, POSTS.images), -1) + F.softmax(image_model(POSTS.texts, POSTS.images), -1)
        ) / 2
        got = late.probabilities(POSTS.texts, POSTS.images)
    assert torch.allclose(got, expected, atol=1e-6) and torch.allclose(got.sum(-1), torch.ones(len(POSTS)))


def test_gate_extremes_reduce_to_one_modality():
    torch.manual_seed(0)
    gmu = st.GatedFusion(6, 10, 4)
    t, i, other_i, other_t = torch.randn(3, 6), torch.randn(3, 10), torch.randn(3, 10), torch.randn(3, 6)
    with torch.no_grad():
        gmu.gate.weight.zero_()
        gmu.gate.bias.fill_(60.0)  # z = 1: text only
        only_text = torch.tanh(t @ gmu.text_proj.weight.T + gmu.text_proj.bias)
        assert torch.allclose(gmu(t, i), only_text) and torch.allclose(gmu(t, other_i), only_text)
        gmu.gate.bias.fill_(-60.0)  # z = 0: image only
        only_image = torch.tanh(i @ gmu.image_proj.weight.T + gmu.image_proj.bias)
        assert torch.allclose(gmu(t, i), only_image) and torch.allclose(gmu(other_t, i), only_image)
        gmu.gate.bias.fill_(0.0)  # z = 1/2: the mean
        assert torch.allclose(gmu(t, i), (only_text + only_image) / 2, atol=1e-6)


def test_cross_attention_block_equals_torch_multihead_attention_and_sdpa():
    torch.manual_seed(0)
    d, heads = 16, 4
    block = st.CrossAttentionBlock(d, heads).eval()
    ref = nn.MultiheadAttention(d, heads, batch_first=True).eval()
    a = block.attn
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
        ref.out_proj.weight.copy_(a.out_proj.weight)
        ref.out_proj.bias.copy_(a.out_proj.bias)
        q, patches = torch.randn(3, 7, d), torch.randn(3, 16, d)
        out = block(q, patches)
        x = block.norm_q(q)
        attended, weights = ref(x, patches, patches, need_weights=True, average_attn_weights=False)
        expected = q + attended
        expected = expected + block.ff(block.norm_ff(expected))
        assert torch.allclose(out, expected, atol=1e-5)
        assert torch.allclose(block.last_attention, weights, atol=1e-6)
        assert torch.allclose(block.last_attention.sum(-1), torch.ones(3, heads, 7))
        # and the heads' outputs = torch's fused scaled_dot_product_attention
        split = lambda z: z.view(3, -1, heads, d // heads).transpose(1, 2)  # noqa: E731
        sdpa = F.scaled_dot_product_attention(split(a.q_proj(x)), split(a.k_proj(patches)), split(a.v_proj(patches)))
        assert torch.allclose(a.out_proj(sdpa.transpose(1, 2).reshape(3, 7, d)), attended, atol=1e-5)


def test_modality_dropout_drops_what_it_says():
    posts = sd.generate(400, seed=2)
    g = torch.Generator().manual_seed(0)
    texts, images, no_text, no_image = sentiment_training.drop_modalities(posts.texts, posts.images, 0.5, g)
    assert not (no_text & no_image).any()
    for i in range(len(posts)):
        assert texts[i] == ("" if no_text[i] else posts.texts[i])
        assert torch.equal(images[i], sd.blank_image() if no_image[i] else posts.images[i])
    assert 0.15 < no_text.float().mean() < 0.35 and 0.15 < no_image.float().mean() < 0.35
    texts, images, no_text, no_image = sentiment_training.drop_modalities(posts.texts, posts.images, 0.0, g)
    assert texts == posts.texts and torch.equal(images, posts.images) and not no_text.any() and not no_image.any()
    _, _, no_text, no_image = sentiment_training.drop_modalities(posts.texts, posts.images, 1.0, g)
    assert (no_text ^ no_image).all()
    with pytest.raises(ValueError, match="probability"):
        sentiment_training.drop_modalities(posts.texts, posts.images, 1.5, g)


def test_macro_f1_equals_scikit_learn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for _ in range(20):
        gold, pred = rng.integers(2, size=30), rng.integers(2, size=30)
        assert sentiment_training.macro_f1(pred, gold) == pytest.approx(
            f1_score(gold, pred, average="macro", labels=[0, 1], zero_division=0)
        )
    ones = np.ones(5, dtype=int)
    assert sentiment_training.macro_f1(ones, ones) == pytest.approx(
        f1_score(ones, ones, average="macro", labels=[0, 1], zero_division=0)
    )


def test_training_steps_lower_the_loss_and_evaluate_reports_every_slice():
    model = small("early")
    losses = sentiment_training.train_model(model, sd.generate(64, seed=4), steps=8, batch_size=16, progress=False)
    assert len(losses) == 8 and np.mean(losses[-3:]) < np.mean(losses[:3])
    report = sentiment_training.evaluate(model, POSTS)
    assert set(report) == {"all", *sd.SLICES} and all(0 <= a <= 1 and 0 <= f <= 1 for a, f in report.values())


LOAD_AND_PREDICT = """
import sys, torch
from safetensors.torch import save_file
from course_utils.vision import sentiment as st, sentiment_data as sd
model = st.load_model(sys.argv[1])
posts = sd.generate(24, seed=0)
with torch.no_grad():
    save_file({"p": model.probabilities(posts.texts, posts.images)}, sys.argv[2])
"""


def test_save_then_load_in_a_fresh_process_predicts_the_same(tmp_path):
    model = small("cross")
    sentiment_training.train_model(
        model, sd.generate(32, seed=5), steps=2, batch_size=16, progress=False
    )  # batch-norm statistics move
    st.save_model(model, tmp_path / "model")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (tmp_path / "model").iterdir()}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, str(tmp_path / "model"), str(tmp_path / "p.safetensors")],
        check=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        timeout=300,
    )
    with torch.no_grad():
        expected = model.probabilities(POSTS.texts, POSTS.images)
    from safetensors.torch import load_file

    assert torch.equal(load_file(tmp_path / "p.safetensors")["p"], expected)


def test_load_errors_are_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        st.load_model(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        st.load_model(tmp_path)
    st.save_model(small("text"), tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{broken", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        st.load_model(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps({"model_type": "bert"}), encoding="utf-8")
    with pytest.raises(ValueError, match="not a multimodal sentiment"):
        st.load_model(tmp_path / "m")
    with pytest.raises(TypeError, match="LateFusion"):
        st.save_model(st.LateFusion(small("text"), small("image")), tmp_path / "late")


def test_predict_sentiment_answers_and_names_the_driver():
    cross = small("cross")
    answer = sentiment_predict.predict_sentiment(cross, "太好了，又下雨了", POSTS.images[0])
    assert answer["label"] in sd.LABELS and 0.5 <= answer["probability"] <= 1
    assert answer["attention"].shape == (16,) and float(answer["attention"].sum()) == pytest.approx(1.0, abs=1e-5)
    # a model that never reads the text is driven by the image, and the other way round
    assert sentiment_predict.predict_sentiment(small("image"), "i love this", POSTS.images[0])["driver"] == "image"
    assert sentiment_predict.predict_sentiment(small("text"), "i love this", POSTS.images[0])["driver"] == "text"
    # channels-last arrays are accepted
    hwc = POSTS.images[0].permute(1, 2, 0).numpy()
    assert sentiment_predict.predict_sentiment(cross, "look at this", hwc)["positive"] == pytest.approx(
        sentiment_predict.predict_sentiment(cross, "look at this", POSTS.images[0])["positive"]
    )


@pytest.mark.parametrize(
    "text, image, error, match",
    [
        ("", POSTS.images[0], ValueError, "empty"),
        ("   ", POSTS.images[0], ValueError, "empty"),
        ("好" * 40, POSTS.images[0], ValueError, "positions"),
        ("i love this", torch.zeros(3, 32, 32, dtype=torch.uint8), ValueError, "shape"),
        ("i love this", POSTS.images[0].float() / 255, TypeError, "uint8"),
        ("i love this", [[0]], TypeError, "uint8 tensor"),
        (None, POSTS.images[0], TypeError, "string"),
    ],
)
def test_bad_input_is_one_line(text, image, error, match):
    with pytest.raises(error, match=match) as info:
        sentiment_predict.predict_sentiment(small("cross"), text, image)
    assert "\n" not in str(info.value)


def test_bad_batches():
    model = small("early")
    with pytest.raises(ValueError, match="batch"):
        model(POSTS.texts[:1], POSTS.images[0])
    with pytest.raises(TypeError, match="list of strings"):
        model("i love this", POSTS.images[:1])
    with pytest.raises(ValueError, match="one text per image"):
        model(POSTS.texts[:2], POSTS.images[:3])
    with pytest.raises(ValueError, match="unknown fusion"):
        st.SentimentModel({"fusion": "late"}, TOK)


def test_widget_callback_explains_and_reports_bad_input_in_one_line():
    model = small("cross")
    summary, fig = sentiment_predict.explain(model, "太好了，又下雨了", POSTS.images[1])
    answer = sentiment_predict.predict_sentiment(model, "太好了，又下雨了", POSTS.images[1])
    assert summary.startswith(f"{answer['label']} (") and f"driven by the {answer['driver']}" in summary
    overlay = fig.axes[0].images[1].get_array()
    assert overlay.shape == (sd.IMAGE_SIZE, sd.IMAGE_SIZE)
    assert np.allclose(overlay[: st.CELL, : st.CELL], float(answer["attention"][0]))
    summary, fig = sentiment_predict.explain(model, "", POSTS.images[1])
    assert fig is None and "empty" in summary and "\n" not in summary
    summary, fig = sentiment_predict.explain(small("early"), "i love this", POSTS.images[1])
    assert len(fig.axes[0].images) == 1  # no attention to draw


@pytest.mark.parametrize("modality_dropout", [0.0, 0.5])
def test_train_model_is_the_plain_loop_bit_for_bit(modality_dropout):
    """train_model runs the course's one loop (training.train); it gives exactly the losses and weights of the
    plain loop written out here: AdamW, 5% warm-up times a cosine, no clipping, one generator for the rows and
    the dropped modalities."""
    import math

    posts = sd.generate(48, seed=6)
    steps, batch, lr = 6, 8, 2e-3
    model, twin = small("cross", seed=1), small("cross", seed=1)
    torch.manual_seed(4)
    losses = sentiment_training.train_model(
        model, posts, steps, batch_size=batch, lr=lr, modality_dropout=modality_dropout, seed=2, progress=False
    )

    torch.manual_seed(4)
    g = torch.Generator().manual_seed(2)
    opt = torch.optim.AdamW(twin.parameters(), lr=lr, weight_decay=0.01)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    expected = []
    twin.train()
    for _ in range(steps):
        rows = torch.randint(len(posts), (batch,), generator=g)
        texts, images = [posts.texts[i] for i in rows.tolist()], posts.images[rows]
        if modality_dropout:
            texts, images, _, _ = sentiment_training.drop_modalities(texts, images, modality_dropout, g)
        loss = F.cross_entropy(twin(texts, images), posts.labels[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        expected.append(loss.item())
    assert losses == expected
    assert not model.training
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)
