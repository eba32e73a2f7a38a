"""course_utils.text.decoder against transformers' GPT2LMHeadModel: the numbers to match come from transformers.

Weights move both ways (from_hf / to_hf, GPT-2's Conv1D layout transposed), logits and losses
agree to 1e-5 with and without padding; causality holds bit for bit; the KV cache gives the
same logits as recomputing; saved directories load in transformers and its pipeline.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

transformers = pytest.importorskip("transformers")

from course_utils.text.decoder import DecoderBlock, DecoderInputError, GPTModel, position_ids_from_mask, tiny_config  # noqa: E402

ATOL = 1e-5
ACTIVATIONS = ["gelu_new", "gelu", "relu", "gelu_pytorch_tanh"]


def random_config(seed: int, **extra):
    """A tiny GPT-2 whose every size is drawn at random (seeded)."""
    rng = random.Random(seed)
    heads = rng.choice([1, 2, 3, 4])
    sizes = dict(
        vocab_size=rng.randint(20, 90),
        n_positions=rng.choice([16, 24, 33]),
        n_embd=heads * rng.choice([4, 8, 12]),
        n_layer=rng.randint(1, 3),
        n_head=heads,
        n_inner=rng.choice([None, 24, 50]),
        activation_function=ACTIVATIONS[seed % len(ACTIVATIONS)],
        layer_norm_epsilon=rng.choice([1e-5, 1e-6]),
        scale_attn_by_inverse_layer_idx=rng.random() < 0.3,
    )
    sizes.update(extra)
    return tiny_config(**sizes)


def hf_model(config, seed=0, sharpen=1.0):
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(config).eval()
    if sharpen != 1.0:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(sharpen)
    return model


def padded_batch(vocab, batch, length, seed, side="left"):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    for b in range(1, batch):
        n_pad = (b * 2) % (length - 1)
        if side == "left":
            mask[b, :n_pad] = 0
        else:
            mask[b, length - n_pad :] = 0
    return ids, mask


def _max_diff_real(a, b, mask):
    return ((a - b).abs() * mask[..., None]).max().item()


# ----------------------------------------------------------------------------- equality with transformers


@pytest.mark.parametrize("seed", range(6))
def test_from_hf_gives_transformers_logits(seed):
    config = random_config(seed)
    theirs = hf_model(config, seed, sharpen=4.0)
    ours = GPTModel.from_hf(theirs)
    ids, _ = padded_batch(config.vocab_size, 3, min(11, config.n_positions), seed)
    with torch.no_grad():
        diff = (ours(ids).logits - theirs(ids).logits).abs().max().item()
    assert diff <= ATOL, f"logits differ by {diff:.3g}"


@pytest.mark.parametrize("seed", range(4))
def test_to_hf_gives_our_logits_and_ties_the_head(seed):
    config = random_config(seed + 10)
    torch.manual_seed(seed)
    ours = GPTModel(config).eval()
    theirs = ours.to_hf()
    assert theirs.lm_head.weight.data_ptr() == theirs.transformer.wte.weight.data_ptr()
    assert ours.lm_head.weight is ours.token_embedding.weight
    assert ours.num_parameters() == theirs.num_parameters()
    ids, _ = padded_batch(config.vocab_size, 2, 9, seed)
    with torch.no_grad():
        assert (ours(ids).logits - theirs(ids).logits).abs().max().item() <= ATOL
    # and back again: the round trip is exact
    again = GPTModel.from_hf(theirs)
    for (name, a), b in zip(ours.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("seed", range(3))
def test_padding_matches_transformers(side, seed):
    config = random_config(seed + 20)
    theirs = hf_model(config, seed, sharpen=4.0)
    ours = GPTModel.from_hf(theirs)
    ids, mask = padded_batch(config.vocab_size, 4, 10, seed, side)
    with torch.no_grad():
        # the positions transformers' generate gives a padded prompt (cumsum of the mask - 1)
        positions = position_ids_from_mask(mask)
        a = ours(ids, attention_mask=mask, position_ids=positions).logits
        b = theirs(ids, attention_mask=mask, position_ids=positions).logits
        assert _max_diff_real(a, b, mask) <= ATOL
        # and the plain forward, positions 0..L-1 whatever the mask (transformers' forward default)
        a = ours(ids, attention_mask=mask).logits
        b = theirs(ids, attention_mask=mask).logits
        assert _max_diff_real(a, b, mask) <= ATOL
    # the hand-made positions are transformers' own rule
    gen = getattr(transformers.GPT2LMHeadModel, "_prepare_position_ids_for_generation", None)  # transformers 5.x
    if gen is not None:
        assert torch.equal(positions, gen(theirs, ids, {"attention_mask": mask}))


def test_loss_matches_transformers_labels_loss_and_gradients():
    config = random_config(3, resid_pdrop=0.0)
    theirs = hf_model(config, 3, sharpen=3.0)
    ours = GPTModel.from_hf(theirs)
    ids, mask = padded_batch(config.vocab_size, 3, 10, 3, "right")
    labels = ids.masked_fill(mask == 0, -100)
    ref = theirs(ids, attention_mask=mask, labels=labels).loss
    got = ours.loss(ids, attention_mask=mask)
    assert abs(got.item() - ref.item()) <= ATOL
    ref.backward()
    got.backward()
    grad_ours = ours.blocks[0].self_attn.q_proj.weight.grad
    grad_theirs = theirs.transformer.h[0].attn.c_attn.weight.grad[:, : config.n_embd].T
    assert (grad_ours - grad_theirs).abs().max().item() <= ATOL
    assert (ours.token_embedding.weight.grad - theirs.transformer.wte.weight.grad).abs().max().item() <= ATOL


def test_attention_weights_are_transformers_eager_attentions():
    config = random_config(5)
    theirs = hf_model(config, 5, sharpen=3.0)
    theirs.config._attn_implementation = "eager"
    ours = GPTModel.from_hf(theirs)
    ids, _ = padded_batch(config.vocab_size, 2, 8, 5)
    with torch.no_grad():
        mine = ours(ids, output_attentions=True).attentions
        ref = theirs(ids, output_attentions=True).attentions
    assert len(mine) == config.n_layer
    for a, b in zip(mine, ref):
        assert (a - b).abs().max().item() <= ATOL


def test_initial_loss_is_about_ln_vocab():
    config = tiny_config(vocab_size=500, n_positions=64, n_embd=64, n_layer=2, n_head=4)
    torch.manual_seed(0)
    model = GPTModel(config)
    ids = torch.randint(0, 500, (8, 64))
    with torch.no_grad():
        loss = model.loss(ids).item()
    assert abs(loss - math.log(500)) < 0.1, (loss, math.log(500))


# ----------------------------------------------------------------------------- causality and the cache


@pytest.mark.parametrize("output_attentions", [False, True])
@pytest.mark.parametrize("train", [False, True])
def test_causality_is_bit_exact(output_attentions, train):
    """Changing the tokens after position t leaves the logits at 0..t bit-identical (eval and train mode,
    with dropout configured: eval switches it off; in train mode dropout is off here so the bits can match)."""
    config = random_config(
        7, resid_pdrop=0.0 if train else 0.1, attn_pdrop=0.0 if train else 0.1, embd_pdrop=0.0 if train else 0.1
    )
    torch.manual_seed(7)
    model = GPTModel(config).train(train)
    ids = torch.randint(0, config.vocab_size, (2, 12))
    for t in (0, 4, 10):
        changed = ids.clone()
        changed[:, t + 1 :] = torch.randint(0, config.vocab_size, (2, 12 - t - 1))
        with torch.no_grad():
            a = model(ids, output_attentions=output_attentions).logits[:, : t + 1]
            b = model(changed, output_attentions=output_attentions).logits[:, : t + 1]
        assert torch.equal(a, b), f"logits up to position {t} changed when later tokens changed"


@pytest.mark.parametrize("padded", [False, True])
def test_cache_gives_the_logits_of_a_full_forward(padded):
    config = random_config(8, n_positions=24)
    torch.manual_seed(8)
    model = GPTModel(config).eval()
    ids, mask = padded_batch(config.vocab_size, 3, 14, 8, "left")
    if not padded:
        mask = torch.ones_like(mask)
    positions = position_ids_from_mask(mask)
    with torch.no_grad():
        full = model(ids, attention_mask=mask, position_ids=positions).logits
        out = model(ids[:, :6], attention_mask=mask[:, :6], position_ids=positions[:, :6], use_cache=True)
        pieces, cache = [out.logits], out.past_key_values
        for t in range(6, 14):  # one token at a time, as generation does
            out = model(
                ids[:, t : t + 1],
                attention_mask=mask[:, : t + 1],
                position_ids=positions[:, t : t + 1],
                past_key_values=cache,
                use_cache=True,
            )
            pieces.append(out.logits)
            cache = out.past_key_values
    cached = torch.cat(pieces, dim=1)
    assert _max_diff_real(cached, full, mask) <= ATOL
    assert len(cache) == config.n_layer and cache[0][0].shape == (3, config.n_head, 14, config.n_embd // config.n_head)


def test_cache_positions_are_offset_by_the_cache_length():
    """Without position_ids, the new tokens after a cache sit at positions T_past.. (not 0..)."""
    config = random_config(9)
    model = GPTModel(config).eval()
    ids = torch.randint(0, config.vocab_size, (1, 8))
    with torch.no_grad():
        out = model(ids[:, :5], use_cache=True)
        step = model(ids[:, 5:], past_key_values=out.past_key_values).logits
        assert (step - model(ids).logits[:, 5:]).abs().max() <= ATOL


def test_decoder_block_is_a_pre_ln_residual_block():
    torch.manual_seed(0)
    block = DecoderBlock(8, 2, 16).eval()
    x = torch.randn(2, 5, 8)
    out, (k, v), weights = block(x, need_weights=True)
    attended, _, _ = block.self_attn(block.norm1(x))
    h = x + attended
    assert torch.allclose(out, h + block.mlp(block.norm2(h)), atol=1e-6)
    assert k.shape == (2, 2, 5, 4) and weights.shape == (2, 2, 5, 5)
    assert torch.equal(weights.triu(1), torch.zeros_like(weights))  # nothing attends to the future


# ----------------------------------------------------------------------------- saving and loading


def _byte_level_tokenizer(vocab_size=300):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["the model reads the text and writes the next word"] * 20, trainer=trainer)
    return tok


def test_saved_directory_loads_in_transformers_and_its_pipeline(tmp_path):
    tok = _byte_level_tokenizer()
    vocab = tok.get_vocab_size()
    eos = tok.token_to_id("<|endoftext|>")
    config = tiny_config(
        vocab_size=vocab, n_positions=32, n_embd=16, n_layer=2, n_head=2, bos_token_id=eos, eos_token_id=eos
    )
    torch.manual_seed(0)
    ours = GPTModel(config).eval()
    directory = ours.save_pretrained(tmp_path / "gpt", tokenizer=tok)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in directory.iterdir()}
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(directory)).eval()
    assert type(loaded).__name__ == "GPT2LMHeadModel"
    ids = torch.randint(0, vocab, (2, 7))
    with torch.no_grad():
        assert (loaded(ids).logits - ours(ids).logits).abs().max().item() <= ATOL
        assert (GPTModel.from_pretrained(directory)(ids).logits - ours(ids).logits).abs().max().item() == 0
    pipe = transformers.pipeline("text-generation", model=str(directory))
    text = pipe("the model", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    assert text.startswith("the model") and isinstance(text, str)


def test_save_refuses_a_tokenizer_of_another_size(tmp_path):
    model = GPTModel(tiny_config(vocab_size=40))
    with pytest.raises(ValueError, match="the tokenizer has .* tokens but the model's vocab_size is 40"):
        model.save_pretrained(tmp_path / "x", tokenizer=_byte_level_tokenizer())


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_are_named():
    model = GPTModel(tiny_config(vocab_size=30, n_positions=8)).eval()
    with pytest.raises(DecoderInputError, match="do not fit the position table of 8: truncate"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(DecoderInputError, match=r"token ids must be in 0..29"):
        model(torch.tensor([[3, 30]]))
    with pytest.raises(DecoderInputError, match="is empty"):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(DecoderInputError, match="unsqueeze"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(DecoderInputError, match="integer tensor"):
        model(torch.zeros(1, 3))
    with pytest.raises(DecoderInputError, match="attention_mask has shape"):
        model(torch.zeros(1, 3, dtype=torch.long), attention_mask=torch.ones(1, 4))
    with pytest.raises(TypeError, match="GPT2Config"):
        GPTModel(transformers.BertConfig())
    with pytest.raises(ValueError, match="chapter 07"):
        GPTModel(tiny_config(add_cross_attention=True))
    with pytest.raises(TypeError, match="GPT2LMHeadModel"):
        GPTModel.from_hf(torch.nn.Linear(2, 2))
