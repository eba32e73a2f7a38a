"""The captioning decoder, proven against torch and transformers; the captioner's KV cache with
cross-attention against the uncached model; bad input named in one line."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers
from torch import nn

from course_utils.vision import bert_decoder, cross_attention
from course_utils.vision import captioning as K
from course_utils.vision import captions as C
from course_utils.vision import shapes
from course_utils.layers.attention import causal_mask
from course_utils.text.bert import CheckpointError
from course_utils.text.generation import generate

TOL = 1e-5


# ---------------------------------------------------------------- the textbook layer == torch's


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_decoder_layer_equals_torch(norm_first, activation):
    torch.manual_seed(0)
    ref = nn.TransformerDecoderLayer(
        16, 4, 40, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
    ).eval()
    ours = cross_attention.CrossAttentionDecoderLayer.from_torch(ref).eval()
    x, memory = torch.randn(3, 7, 16), torch.randn(3, 5, 16)
    memory_real = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    tgt_real = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 6 + [0]], dtype=torch.bool)
    expected = ref(
        x, memory, tgt_mask=~causal_mask(7), memory_key_padding_mask=~memory_real, tgt_key_padding_mask=~tgt_real
    )
    got = ours(x, memory, tgt_mask=causal_mask(7), memory_key_padding_mask=memory_real, tgt_key_padding_mask=tgt_real)
    assert (expected - got).abs().max().item() < TOL
    # gradients too: the same function, not only the same numbers
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref(x1, memory, tgt_mask=~causal_mask(7), memory_key_padding_mask=~memory_real).pow(2).sum().backward()
    ours(x2, memory, tgt_mask=causal_mask(7), memory_key_padding_mask=memory_real).pow(2).sum().backward()
    assert (x1.grad - x2.grad).abs().max().item() < 1e-4


def test_decoder_layer_is_causal_and_keeps_cross_attention():
    torch.manual_seed(1)
    layer = cross_attention.CrossAttentionDecoderLayer(16, 2, 32).eval()
    x, memory = torch.randn(1, 6, 16), torch.randn(1, 4, 16)
    out = layer(x, memory, tgt_mask=causal_mask(6))
    x2 = x.clone()
    x2[:, 4:] = torch.randn(1, 2, 16)  # change only the future
    out2 = layer(x2, memory, tgt_mask=causal_mask(6))
    assert torch.equal(out[:, :4], out2[:, :4])
    layer.keep_attention = True
    layer(x, memory, memory_key_padding_mask=torch.tensor([[True, True, False, True]]))
    w = layer.last_cross_attention
    assert w.shape == (1, 2, 6, 4) and torch.all(w[..., 2] == 0)
    assert torch.allclose(w.sum(-1), torch.ones(1, 2, 6))


def test_cross_attention_with_precomputed_keys_equals_forward():
    torch.manual_seed(2)
    attn = cross_attention.CrossAttention(16, 4).eval()
    q, memory = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    real = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    expected, w = attn(q, memory, memory, key_padding_mask=real)
    got, w2 = attn.attend(q, attn.memory_kv(memory), real, need_weights=True)
    assert (expected - got).abs().max().item() < TOL and torch.allclose(w, w2)
    fused, _ = attn.attend(q, attn.memory_kv(memory), real)
    assert (expected - fused).abs().max().item() < TOL


# ---------------------------------------------------------------- BERT layers as a decoder == transformers

CONFIGS = [
    {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 32},
    {
        "hidden_size": 24,
        "num_hidden_layers": 1,
        "num_attention_heads": 3,
        "intermediate_size": 20,
        "hidden_act": "relu",
    },
]


def _bert_config(**kw):
    config = transformers.BertConfig(
        vocab_size=37,
        max_position_embeddings=16,
        is_decoder=True,
        add_cross_attention=True,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **kw,
    )
    config._attn_implementation = "eager"
    return config


def _bert_inputs(hidden, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 37, (3, 9), generator=g)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 6:] = 0  # right padding
    memory = torch.randn(3, 5, hidden, generator=g)
    memory_mask = torch.ones(3, 5, dtype=torch.long)
    memory_mask[2, 3:] = 0
    return ids, mask, memory, memory_mask


@pytest.mark.parametrize("kw", CONFIGS, ids=["gelu-16", "relu-24"])
def test_bert_decoder_equals_transformers_both_ways(kw):
    torch.manual_seed(0)
    hf = transformers.BertLMHeadModel(_bert_config(**kw)).eval()
    with torch.no_grad():  # non-trivial LayerNorms and biases everywhere
        for name, p in hf.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    ours = bert_decoder.BertDecoder.from_hf(hf).eval()
    ids, mask, memory, memory_mask = _bert_inputs(kw["hidden_size"])
    expected = hf(
        input_ids=ids, attention_mask=mask, encoder_hidden_states=memory, encoder_attention_mask=memory_mask
    ).logits
    got = ours(ids, memory, mask, memory_mask)
    assert (expected - got).abs().max().item() < TOL
    # and back: our weights into a fresh transformers model
    torch.manual_seed(5)
    fresh = bert_decoder.BertDecoder(_bert_config(**kw)).eval()
    back = fresh.to_hf().eval()
    assert isinstance(back, transformers.BertLMHeadModel)
    expected = back(
        input_ids=ids, attention_mask=mask, encoder_hidden_states=memory, encoder_attention_mask=memory_mask
    ).logits
    assert (expected - fresh(ids, memory, mask, memory_mask)).abs().max().item() < TOL
    assert back.cls.predictions.decoder.weight.data_ptr() == back.bert.embeddings.word_embeddings.weight.data_ptr()


def test_bert_decoder_refuses_an_encoder_config():
    with pytest.raises(ValueError, match="is_decoder=True"):
        bert_decoder.BertDecoder(
            transformers.BertConfig(hidden_size=16, num_attention_heads=2, intermediate_size=8, num_hidden_layers=1)
        )


# ---------------------------------------------------------------- the captioner and its cache

TOK = C.CaptionTokenizer()


def _captioner(max_positions=40, seed=0, image_matters=True):
    torch.manual_seed(seed)
    config = K.CaptionerConfig(
        vocab_size=len(TOK), d_image=10, d_model=32, num_heads=4, num_layers=2, d_ff=64, max_positions=max_positions
    )
    model = K.Captioner(config).eval()
    with torch.no_grad():  # a random model whose words depend on the image
        for block in model.blocks if image_matters else []:
            block.cross_attn.v_proj.weight.mul_(10)
            block.cross_attn.out_proj.weight.mul_(10)
    return model


def test_cached_logits_equal_the_full_forward():
    model = _captioner()
    feats = torch.randn(2, 25, 10)
    ids = torch.randint(3, len(TOK), (2, 12))
    full = model(ids, memory=model.encode(feats))[0]
    bound = model.bind(feats)
    cache, steps = None, []
    for t in range(ids.shape[1]):
        logits, cache = bound(ids[:, t : t + 1], past_key_values=cache, use_cache=True)
        steps.append(logits)
    assert bound.cross_computations == 1  # image keys/values computed once
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generation_with_cache_equals_without(num_beams):
    model = _captioner()
    feats = torch.randn(3, 25, 10)
    prompt = torch.full((3, 1), TOK.BOS)
    cached, plain = model.bind(feats), model.bind(feats)
    a = generate(cached, prompt, 30, num_beams=num_beams, eos_token_id=TOK.EOS, pad_token_id=TOK.PAD, use_cache=True)
    b = generate(plain, prompt, 30, num_beams=num_beams, eos_token_id=TOK.EOS, pad_token_id=TOK.PAD, use_cache=False)
    assert torch.equal(a, b)
    assert cached.cross_computations == 1 and plain.cross_computations > 1
    # the captions differ between images: the decoder does read the memory
    assert len({tuple(r.tolist()) for r in a}) > 1


def test_reorder_cache_moves_only_what_must_move():
    model = _captioner()
    bound = model.bind(torch.randn(2, 25, 10))
    _, cache = bound(torch.full((4, 1), TOK.BOS), use_cache=True)  # 2 images x 2 beams
    within = bound.reorder_cache(cache, torch.tensor([1, 1, 2, 3]))
    assert within[0][2] is cache[0][2] and within[0][3] is cache[0][3]  # image keys/values untouched
    assert torch.equal(within[0][0], cache[0][0][[1, 1, 2, 3]])
    across = bound.reorder_cache(cache, torch.tensor([2, 3, 0, 1]))
    assert torch.equal(across[0][2], cache[0][2][[2, 3, 0, 1]])


def test_teacher_forced_loss_equals_a_per_caption_reference():
    model = _captioner()
    feats = torch.randn(3, 25, 10)
    caps = [
        "a red square is in the centre.",
        "the blue circle is in the top left. a gray square is in the centre.",
        "in the bottom right there is a green circle.",
    ]
    ids, mask = TOK.batch(caps)
    for smoothing in (0.0, 0.1):
        got = K.teacher_forced_loss(model, feats, ids, mask, label_smoothing=smoothing)
        total, count = 0.0, 0
        for i, cap in enumerate(caps):  # each caption alone, no padding at all
            one = torch.tensor([TOK.encode(cap)])
            logits = model(one[:, :-1], memory=model.encode(feats[i : i + 1]))[0][0]
            total = total + F.cross_entropy(logits, one[0, 1:], label_smoothing=smoothing, reduction="sum")
            count += one.shape[1] - 1
        assert abs(got.item() - total.item() / count) < 1e-5


def test_training_lowers_the_loss():
    data = shapes.generate(32, seed=0)
    feats = torch.randn(32, 25, 10)
    ids, mask = TOK.batch([C.canonical_caption(C.scene_of(data, i)) for i in range(32)])
    model = _captioner(max_positions=ids.shape[1], image_matters=False)
    losses = K.train_captioner(model, feats, ids, mask, steps=40, batch_size=8, lr=3e-3, progress=False)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert not model.training


def test_save_and_load(tmp_path):
    model = _captioner()
    path = model.save(tmp_path / "captioner.safetensors")
    again = K.Captioner.load(path, expected=model.config)
    feats, ids = torch.randn(2, 25, 10), torch.randint(0, len(TOK), (2, 5))
    assert torch.equal(model(ids, memory=model.encode(feats))[0], again(ids, memory=again.encode(feats))[0])
    assert again.lm_head.weight is again.token_embedding.weight


# ---------------------------------------------------------------- bad input, one line each


def test_bad_input_is_named(tmp_path):
    model = _captioner(max_positions=10)
    images = shapes.generate(2, seed=0).images
    with pytest.raises(cross_attention.CaptionerInputError, match="dtype"):
        K.check_uint8_images(images.float() / 255)
    with pytest.raises(ValueError, match=r"\(batch, 3, 75, 75\)"):
        K.check_uint8_images(images[:, :, :64, :64])
    with pytest.raises(cross_attention.CaptionerInputError, match="batch axis"):
        K.check_uint8_images(images[0])
    with pytest.raises(cross_attention.CaptionerInputError, match="built for"):
        model.encode(torch.randn(2, 6, 10))
    with pytest.raises(cross_attention.CaptionerInputError, match="float"):
        model.encode(torch.zeros(2, 25, 10, dtype=torch.long))
    with pytest.raises(cross_attention.CaptionerInputError, match="tokenizer"):
        model(torch.full((1, 3), len(TOK)), memory=model.encode(torch.randn(1, 25, 10)))
    with pytest.raises(cross_attention.CaptionerInputError, match="position table"):
        model(torch.zeros(1, 11, dtype=torch.long), memory=model.encode(torch.randn(1, 25, 10)))
    with pytest.raises(cross_attention.CaptionerInputError, match="multiple"):
        model.bind(torch.randn(2, 25, 10))(torch.zeros(3, 1, dtype=torch.long))
    # a checkpoint of another size
    path = model.save(tmp_path / "small.safetensors")
    with pytest.raises(CheckpointError, match="another size"):
        K.Captioner.load(path, expected=_captioner(max_positions=40).config)
    with pytest.raises(FileNotFoundError, match="no captioner checkpoint"):
        K.Captioner.load(tmp_path / "missing.safetensors")
    # generation past the position table stops with a warning
    with pytest.warns(UserWarning, match="positions"):
        out = generate(model.bind(torch.randn(1, 25, 10)), torch.full((1, 1), TOK.BOS), 50)
    assert 10 <= out.shape[1] <= 11  # the last token predicted is never read back, so it needs no position


def test_left_padded_prompts_generate_what_each_prompt_gives_alone():
    model = _captioner()
    feats = torch.randn(3, 25, 10)
    prompts = [
        "a red square is in the centre.",
        "a red circle is in the top left.",
        "a red circle is in the middle right.",
    ]
    rows = [TOK.encode(p)[:-1] for p in prompts]
    width = max(map(len, rows))
    ids = torch.tensor([[TOK.PAD] * (width - len(r)) + r for r in rows])
    mask = (ids != TOK.PAD).long()
    together = generate(model.bind(feats), ids, 12, attention_mask=mask, eos_token_id=TOK.EOS, pad_token_id=TOK.PAD)
    for i, r in enumerate(rows):
        alone = generate(
            model.bind(feats[i : i + 1]), torch.tensor([r]), 12, eos_token_id=TOK.EOS, pad_token_id=TOK.PAD
        )
        n_new = alone.shape[1] - len(r)
        assert torch.equal(together[i, width : width + n_new], alone[0, len(r) :])


def test_end_to_end_from_pixels_trains_the_cnn_through_the_captions():
    from course_utils.vision.patch_cnn import PatchCNN, describe_patches

    data = shapes.generate(8, seed=0)
    ids, mask = TOK.batch([C.canonical_caption(C.scene_of(data, i)) for i in range(8)])
    model = _captioner(max_positions=ids.shape[1], image_matters=False)
    torch.manual_seed(0)
    cnn = PatchCNN(channels=8).requires_grad_(False)
    before = {n: p.clone() for n, p in cnn.named_parameters()}
    with pytest.raises(ValueError, match="uint8"):  # end to end reads the images, not cached features
        K.train_captioner(model, data.images.float(), ids, mask, steps=1, batch_size=4, progress=False, cnn=cnn)
    losses = K.train_captioner(model, data.images, ids, mask, steps=3, batch_size=4, lr=1e-2, progress=False, cnn=cnn)
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    moved = [n for n, p in cnn.named_parameters() if not torch.equal(p, before[n])]
    assert (
        moved and "head.weight" in moved and any(n.startswith("body") for n in moved)
    )  # the gradient reached the pixels' layers
    assert not cnn.training and not any(p.requires_grad for p in cnn.parameters())  # frozen again, ready to cache
    # what the captioner reads during that training is the CNN's description, with the gradient attached
    feats = describe_patches(cnn(data.images[:2]), cnn.coords)
    assert feats.shape == (2, 25, 10)


@pytest.mark.parametrize("end_to_end", [False, True])
def test_train_captioner_is_the_plain_loop_bit_for_bit(end_to_end):
    """train_captioner runs the course's one loop (training.train); it gives exactly the losses and weights of
    the plain loop written out here: AdamW (no decay on biases, norms, embeddings), warm-up then cosine to 10%,
    gradients clipped to norm 1 over everything that trains (the CNN too, end to end)."""
    import math

    from course_utils.vision.patch_cnn import PatchCNN, describe_patches

    data = shapes.generate(12, seed=1)
    ids, mask = TOK.batch([C.canonical_caption(C.scene_of(data, i)) for i in range(12)])
    steps, batch, lr = 6, 4, 3e-3

    def fresh():
        model = _captioner(max_positions=ids.shape[1], image_matters=False)
        torch.manual_seed(5)
        return model, PatchCNN(channels=8)

    feats = torch.randn(12, 25, 10, generator=torch.Generator().manual_seed(2))
    model, cnn = fresh()
    torch.manual_seed(9)
    losses = K.train_captioner(
        model,
        data.images if end_to_end else feats,
        ids,
        mask,
        steps=steps,
        batch_size=batch,
        lr=lr,
        progress=False,
        seed=3,
        cnn=cnn if end_to_end else None,
    )

    twin, twin_cnn = fresh()
    torch.manual_seed(9)
    named = list(twin.named_parameters()) + (
        [("cnn." + n, p) for n, p in twin_cnn.named_parameters()] if end_to_end else []
    )
    decays = [p for n, p in named if p.dim() >= 2 and "embedding" not in n]
    rest = [p for n, p in named if not (p.dim() >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decays, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}], lr=lr)
    warm = max(1, int(steps * 0.05))

    def factor(s):
        if s < warm:
            return (s + 1) / warm
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    g = torch.Generator().manual_seed(3)
    expected = []
    twin.train()
    twin_cnn.train()
    for _ in range(steps):
        idx = torch.randint(12, (batch,), generator=g)
        length = int(mask[idx].sum(1).max())
        memory = describe_patches(twin_cnn(data.images[idx]), twin_cnn.coords) if end_to_end else feats[idx]
        loss = K.teacher_forced_loss(twin, memory, ids[idx, :length], mask[idx, :length], 0.0)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in named], 1.0)
        opt.step()
        sched.step()
        expected.append(loss.item())
    assert losses == expected
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)
    if end_to_end:
        for p, q in zip(cnn.parameters(), twin_cnn.parameters()):
            assert torch.equal(p, q)
