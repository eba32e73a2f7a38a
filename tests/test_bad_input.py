"""Bad input never loses data and never gives a silent wrong answer (issue 16, items 1-10).

Each test names the item it covers. Every test failed on the code before the fix (commit
4fda43e~1: 62 of 67 cases), except five guards, marked "guard", that pin behaviour which already
held and must stay (a valid odd round trip, blank lines of spaces/tabs and CRLF, a wrong
key_padding_mask on both attention paths, a good sharded index). Expected numbers come from references: torch (a loss summed over no position is 0, cross-entropy of the
NSP head), transformers / tokenizers (vocabulary sizes), never from the code under test.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_utils.vision import contrastive, multimodal, patch_cnn, shapes
from course_utils import glossary
from course_utils.text import ner, ner_models, pretraining, pretraining_run
from course_utils.layers.attention import AttentionShapeError, MultiHeadAttention, scaled_dot_product_attention

transformers = pytest.importorskip("transformers")
from course_utils.text import bert, bert_inputs, bert_tasks, bert_weights  # noqa: E402  (needs transformers)

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "Maria", "Lopez", "flew", "to", "Lyon", "New", "York"]
LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def make_tokenizer(vocab=VOCAB):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    ids = {v: i for i, v in enumerate(vocab)}
    raw = Tokenizer(models.WordPiece(ids, unk_token="[UNK]"))
    raw.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    raw.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    return transformers.BertTokenizerFast(tokenizer_object=raw, do_lower_case=False)


def tiny_config(**overrides):
    values = dict(
        vocab_size=len(VOCAB),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    values.update(overrides)
    return transformers.BertConfig(**values)


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_bert")
    bert_tasks.BertForTokenClassification(tiny_config()).save_pretrained(folder, tokenizer=tokenizer)
    return folder


def copy_dir(source, tmp_path, name="copy"):
    target = tmp_path / name
    shutil.copytree(source, target)
    return target


def one_line(excinfo) -> str:
    """The error's message, checked to be one line (no deep traceback text)."""
    text = str(excinfo.value)
    assert "\n" not in text.strip(), text
    return text


# ---------------------------------------------------------------- item 1: write_conll never empties a file


def test_item1_unencodable_token_keeps_the_existing_file(tmp_path):
    path = ner.write_conll([(["Paris"], ["B-LOC"])], tmp_path / "x.conll")
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"sentence 1, token 0.*UTF-8") as err:
        ner.write_conll([(["fine"], ["O"]), (["x\udc80"], ["O"])], path)
    one_line(err)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.conll"]  # no temporary file left behind


def test_item1_a_failed_write_keeps_the_existing_file(tmp_path, monkeypatch):
    path = ner.write_conll([(["Paris"], ["B-LOC"])], tmp_path / "x.conll")
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        ner.write_conll([(["Lyon"], ["B-LOC"])], path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.conll"]


# ---------------------------------------------------------------- item 2: write accepts only what reads back the same


@pytest.mark.parametrize(
    "sentences, message",
    [
        ([(["-DOCSTART-"], ["O"])], r"sentence 0, token 0: '-DOCSTART-'.*document boundary"),
        (
            [(["Maria", "Paris"], ["B-PER", "B-LOC\n"])],
            r"sentence 0, token 1: tag 'B-LOC\\n' is not O, B-TYPE or I-TYPE",
        ),
        ([], r"no sentences to write"),
        ([(["\ufeffEU"], ["B-ORG"])], r"sentence 0, token 0.*U\+FEFF"),
        ([("ab", "OO")], r"sentence 0: tokens and tags must be lists"),
        ([(["a", 5], ["O", "O"])], r"sentence 0, token 1: 5 is not a string"),
    ],
)
def test_item2_write_refuses_what_would_not_read_back(tmp_path, sentences, message):
    with pytest.raises((ValueError, TypeError), match=message) as err:
        ner.write_conll(sentences, tmp_path / "x.conll")
    one_line(err)
    assert not (tmp_path / "x.conll").exists()


def test_item2_odd_but_valid_tokens_round_trip(tmp_path):  # guard
    data = [
        (
            ["-DOCSTART-x", "O", "B-PER", "東京", "e\u0301", "\u200b", "🙂", "a-b"],
            ["O", "O", "O", "B-LOC", "O", "O", "O", "B-MISC"],
        ),
        (["x"], ["I-PER"]),
    ]  # an entity starting with I- comes back as written with bio="keep"
    path = ner.write_conll(data, tmp_path / "x.conll")
    with pytest.warns(UserWarning, match="kept as they are"):
        assert ner.read_conll(path, bio="keep") == data


# ---------------------------------------------------------------- item 3: BOM, non-ASCII whitespace, line ends


def test_item3_byte_order_mark_is_stripped(tmp_path):
    path = tmp_path / "bom.conll"
    path.write_bytes("\ufeff-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n".encode("utf-8"))
    assert ner.read_conll(path) == [(["EU", "rejects"], ["B-ORG", "O"])]
    path.write_bytes("\ufeffEU B-ORG\n".encode("utf-8"))
    assert ner.read_conll(path) == [(["EU"], ["B-ORG"])]


@pytest.mark.parametrize("char", ["\u00a0", "\u2028", "\u3000", "\x0c", "\x85"])
def test_item3_non_ascii_whitespace_in_a_line_is_an_error(tmp_path, char):
    path = tmp_path / "nbsp.conll"
    path.write_text(f"Maria B-PER\n\nNew{char}York B-LOC\n", encoding="utf-8")
    code = f"U+{ord(char):04X}"
    with pytest.raises(ner.ConllFormatError, match=rf"line 3: .*{code.replace('+', '[+]')}") as err:
        ner.read_conll(path)
    one_line(err)


def test_item3_blank_lines_of_spaces_tabs_and_crlf_separate_sentences(tmp_path):  # guard
    path = tmp_path / "x.conll"
    path.write_bytes(b"a O\r\nb B-LOC\r\n \t \r\nc O\r\n\t\r\nd\tB-PER\r\n")
    assert ner.read_conll(path) == [(["a", "b"], ["O", "B-LOC"]), (["c"], ["O"]), (["d"], ["B-PER"])]


# ---------------------------------------------------------------- item 4: tokenizer and model must match


@pytest.fixture(scope="module")
def mismatched_dir(tmp_path_factory, bert_dir):
    """The tiny BERT with another model's (bigger) tokenizer saved over its own."""
    folder = tmp_path_factory.mktemp("mismatch") / "bert"
    shutil.copytree(bert_dir, folder)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    make_tokenizer(VOCAB + ["Paris", "Berlin", "Rome"]).save_pretrained(str(folder))
    return folder


def test_item4_a_foreign_tokenizer_is_refused_at_load(mismatched_dir, bert_dir):
    n_tok = len(transformers.AutoTokenizer.from_pretrained(str(mismatched_dir)))  # reference: transformers
    n_model = transformers.BertConfig.from_pretrained(str(bert_dir)).vocab_size
    assert n_tok != n_model
    pattern = rf"{n_tok} tokens.*vocab_size is {n_model}"
    for load in (
        ner_models.check_bert_dir,
        ner_models.load_tokenizer,
        bert.load_tokenizer,
        pretraining_run.check_bert_dir,
        lambda d: ner_models.token_classifier(d, LABELS),
    ):
        with pytest.raises(ValueError, match=pattern) as err:
            load(mismatched_dir)
        one_line(err)


def test_item4_predict_entities_refuses_a_foreign_tokenizer(bert_dir):
    model = ner_models.token_classifier(bert_dir, LABELS)
    other = make_tokenizer(VOCAB + ["Paris"])
    with pytest.raises(ValueError, match=rf"{len(other)} tokens.*vocab_size is {len(VOCAB)}") as err:
        ner.predict_entities(model, other, "Maria flew to Lyon")
    one_line(err)
    with pytest.raises(ValueError, match=rf"{len(other)} tokens"):
        ner.predict_tags(model, other, [(["Maria"], ["B-PER"])])


def test_item4_question_encoder_refuses_a_foreign_tokenizer():
    model = bert.BertModel(tiny_config())
    other = make_tokenizer(VOCAB + ["Paris"])
    with pytest.raises(ValueError, match=rf"{len(other)} tokens.*vocab_size is {len(VOCAB)}") as err:
        multimodal.BertQuestionEncoder(model, other, d_model=8)
    one_line(err)
    assert multimodal.BertQuestionEncoder(model, make_tokenizer(), d_model=8).tokenizer is not None


def test_item4_tokenizer_config_alone_is_refused(tmp_path, bert_dir):
    folder = copy_dir(bert_dir, tmp_path)
    for name in ("tokenizer.json", "vocab.txt", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    n_model = transformers.BertConfig.from_pretrained(str(folder)).vocab_size
    with pytest.raises(ValueError, match=rf"tokens but the model's vocab_size is {n_model}") as err:
        bert.load_tokenizer(folder)
    one_line(err)


def test_item4_same_size_but_other_special_ids_is_refused(tmp_path, bert_dir):
    folder = copy_dir(bert_dir, tmp_path)
    swapped = ["[UNK]", "[PAD]"] + VOCAB[2:]  # same size, [PAD] is id 1 instead of the model's 0
    make_tokenizer(swapped).save_pretrained(str(folder))
    with pytest.raises(ValueError, match=r"pad.* 1 .*pad_token_id.* 0") as err:
        ner_models.load_tokenizer(folder)
    one_line(err)


# ---------------------------------------------------------------- item 5: both attention paths check shapes


@pytest.mark.parametrize("need_weights", [True, False])
def test_item5_key_and_value_lengths_must_agree_on_both_paths(need_weights):
    mha = MultiHeadAttention(8, 2)
    q, k, v = torch.randn(2, 3, 8), torch.randn(2, 5, 8), torch.randn(2, 7, 8)
    with pytest.raises(AttentionShapeError, match=r"key has 5 positions but value has 7") as err:
        mha(q, k, v, need_weights=need_weights)
    one_line(err)


@pytest.mark.parametrize("need_weights", [True, False])
def test_item5_a_wrong_mask_is_refused_on_both_paths(need_weights):  # guard
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(2, 4, 8)
    with pytest.raises(AttentionShapeError, match="key_padding_mask"):
        mha(x, x, x, key_padding_mask=torch.ones(2, 3, dtype=torch.bool), need_weights=need_weights)


# ---------------------------------------------------------------- item 6: no NaN from an empty loss or a bad divisor


def test_item6_pretraining_batch_without_a_masked_position():
    torch.manual_seed(0)
    model = bert.BertForPreTraining(tiny_config())
    ids = torch.tensor([[2, 6, 7, 3, 8, 9, 3], [2, 10, 3, 11, 12, 3, 0]])
    mask = (ids != 0).long()
    labels = torch.full_like(ids, -100)
    nsl = torch.tensor([0, 1])
    for masked_only in (False, True):
        with pytest.warns(UserWarning, match="no masked position"):
            out = model(ids, mask, labels=labels, next_sentence_label=nsl, masked_only=masked_only)
        reference = F.cross_entropy(out.seq_relationship_logits, nsl)  # torch: NSP alone
        assert out.mlm_loss.item() == 0.0
        torch.testing.assert_close(out.loss, reference)
        model.zero_grad()
        out.loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_item6_token_labels_all_ignored():
    torch.manual_seed(0)
    model = bert_tasks.BertForTokenClassification(tiny_config())
    ids = torch.tensor([[2, 6, 7, 3]])
    labels = torch.full_like(ids, -100)
    with pytest.warns(UserWarning, match="every label is -100"):
        out = model(ids, labels=labels)
    # torch: a cross-entropy summed over no position is 0
    expected = F.cross_entropy(out.logits.view(-1, len(LABELS)), labels.view(-1), reduction="sum")
    assert out.loss.item() == expected.item() == 0.0
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_item6_text_embedder_refuses_a_text_of_padding_only():
    torch.manual_seed(0)
    embedder = contrastive.TextEmbedder(vocab_size=10, d_embed=8, d_model=8, num_heads=2, max_len=8)
    ids = torch.tensor([[3, 4, 5], [0, 0, 0]])
    with pytest.raises(ValueError, match=r"row 1 .*only padding") as err:
        embedder(ids)
    one_line(err)


@pytest.mark.parametrize("temperature", [0.0, -0.07, float("nan"), float("inf"), torch.tensor(0.0)])
def test_item6_contrastive_temperature_must_be_positive(temperature):
    x = F.normalize(torch.randn(4, 8), dim=-1)
    with pytest.raises(ValueError, match="temperature must be a positive") as err:
        contrastive.contrastive_loss(x, x, temperature)
    one_line(err)


# ---------------------------------------------------------------- item 7: SortOfClevr indexes like a sequence


def test_item7_sort_of_clevr_indexing():
    data = shapes.generate(3, seed=0)
    assert torch.equal(data[-1].images, data.images[2:3])
    assert data[-1].question_text == data.question_text[2:3]
    assert torch.equal(data[-3].answers, data.answers[0:1])
    for bad in (3, 10, -4):
        with pytest.raises(IndexError, match=rf"index {bad} is out of range for 3 images"):
            data[bad]
    assert torch.equal(data[np.int64(1)].images, data.images[1:2])
    assert torch.equal(data[torch.tensor(2)].centers, data.centers[2:3])
    assert len(data[[0, 2]]) == 2 and len(data[1:]) == 2


# ---------------------------------------------------------------- item 8: broken checkpoint files, one line each


def corrupt(folder, name, content: bytes):
    (folder / name).write_bytes(content)
    return folder


SAFETENSORS_CORRUPTIONS = {
    "zero bytes": lambda good: b"",
    "truncated": lambda good: good[: len(good) // 2],
    "random bytes": lambda good: np.random.default_rng(0).bytes(len(good)),
    "header only": lambda good: good[:8],
}


@pytest.mark.parametrize("kind", SAFETENSORS_CORRUPTIONS)
def test_item8_corrupted_safetensors_is_named(tmp_path, bert_dir, kind):
    folder = copy_dir(bert_dir, tmp_path)
    good = (bert_dir / "model.safetensors").read_bytes()
    corrupt(folder, "model.safetensors", SAFETENSORS_CORRUPTIONS[kind](good))
    for load in (
        ner_models.check_bert_dir,
        pretraining_run.check_bert_dir,
        bert_weights.load_state_dict_file,
        bert_tasks.BertForTokenClassification.from_pretrained,
    ):
        with pytest.raises(bert.CheckpointError, match=r"model\.safetensors.*(save|download|copy)") as err:
            load(folder)
        one_line(err)


CONFIG_CORRUPTIONS = {
    "not JSON": (b'{"model_type": "bert",', "not valid JSON"),
    "a list": (b'["bert"]', "not a JSON object"),
    "not UTF-8": ('{"model_type": "bert", "name": "é"}'.encode("latin-1"), "not UTF-8"),
}


@pytest.mark.parametrize("kind", CONFIG_CORRUPTIONS)
def test_item8_bad_config_json_is_named(tmp_path, bert_dir, kind):
    content, message = CONFIG_CORRUPTIONS[kind]
    folder = corrupt(copy_dir(bert_dir, tmp_path), "config.json", content)
    for load in (
        ner_models.check_bert_dir,
        pretraining_run.check_bert_dir,
        bert.BertModel.from_pretrained,
        bert.load_tokenizer,
        ner_models.load_tokenizer,
    ):
        with pytest.raises(ValueError, match=rf"config\.json.*{message}") as err:
            load(folder)
        one_line(err)


@pytest.mark.parametrize("content", [b'{"version": "1.0", "model": ', b'{"version": "1.0"}', b"[]"])
def test_item8_broken_tokenizer_json_is_named(tmp_path, bert_dir, content):
    folder = corrupt(copy_dir(bert_dir, tmp_path), "tokenizer.json", content)
    for load in (
        ner_models.check_bert_dir,
        pretraining_run.check_bert_dir,
        ner_models.load_tokenizer,
        bert.load_tokenizer,
    ):
        with pytest.raises(ValueError, match=r"tokenizer\.json.*(save|re-save)") as err:
            load(folder)
        one_line(err)


def test_item8_checkpoint_of_another_size_is_named(tmp_path, bert_dir):
    folder = copy_dir(bert_dir, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["hidden_size"] = 16  # the weights were saved with 8
    (folder / "config.json").write_text(json.dumps(config))
    for load in (ner_models.check_bert_dir, lambda d: bert_tasks.BertForTokenClassification.from_pretrained(d)):
        with pytest.raises(bert.CheckpointError, match=r"(8\).*16|16.*8\))") as err:
            load(folder)
        one_line(err)


def sharded(tmp_path, bert_dir, index):
    folder = copy_dir(bert_dir, tmp_path)
    (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


@pytest.mark.parametrize(
    "index, message",
    [
        ({"metadata": {}}, "has no weight_map"),
        ({"weight_map": {"a": "../outside.safetensors"}}, "outside the model directory"),
        ({"weight_map": {"a": "/etc/passwd"}}, "outside the model directory"),
        ({"weight_map": {"a": "missing-00001.safetensors"}}, "missing-00001.safetensors does not exist"),
        ({"weight_map": ["model-00001-of-00001.safetensors"]}, "weight_map must map"),
    ],
)
def test_item8_bad_sharded_index_is_named(tmp_path, bert_dir, index, message):
    folder = sharded(tmp_path, bert_dir, index)
    (tmp_path / "outside.safetensors").write_bytes((folder / "model-00001-of-00001.safetensors").read_bytes())
    for load in (bert_weights.load_state_dict_file, ner_models.check_bert_dir):
        with pytest.raises(bert.CheckpointError, match=rf"model\.safetensors\.index\.json.*{message}") as err:
            load(folder)
        one_line(err)


def test_item8_good_sharded_index_still_loads(tmp_path, bert_dir):  # guard
    keys = list(bert_weights.load_state_dict_file(bert_dir))
    folder = sharded(tmp_path, bert_dir, {"weight_map": {k: "model-00001-of-00001.safetensors" for k in keys}})
    assert ner_models.check_bert_dir(folder) == folder
    assert sorted(bert_weights.load_state_dict_file(folder)) == sorted(keys)


# ---------------------------------------------------------------- item 9: dtype and length at the entrance


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16])
def test_item9_bert_takes_long_or_int_ids_only(dtype):
    model = bert.BertModel(tiny_config())
    ids = torch.tensor([[2, 6, 7, 3]], dtype=dtype)
    with pytest.raises(bert_inputs.BertInputError, match=rf"input_ids must be torch.long.*{dtype}") as err:
        model(ids)
    one_line(err)
    with pytest.raises(bert_inputs.BertInputError, match=rf"token_type_ids must be torch.long.*{dtype}"):
        model(ids.long(), token_type_ids=torch.zeros(1, 4, dtype=dtype))
    assert model(ids.int()).last_hidden_state.shape == (1, 4, 8)  # int32 works, as in nn.Embedding


@pytest.mark.parametrize("dtype, message", [(torch.float64, "float64.*float32"), (torch.int64, "int64.*uint8")])
def test_item9_patch_cnn_checks_the_image_dtype(dtype, message):
    cnn = patch_cnn.PatchCNN(channels=4)
    images = shapes.generate(2).images
    images = patch_cnn.to_float(images).to(dtype) if dtype.is_floating_point else images.to(dtype)
    with pytest.raises((TypeError, ValueError), match=message) as err:
        cnn(images)
    one_line(err)


def test_item9_patch_cnn_refuses_float_pixels_in_0_255():
    cnn = patch_cnn.PatchCNN(channels=4)
    with pytest.raises(ValueError, match=r"0\.\.255") as err:
        cnn(shapes.generate(2).images.float())
    one_line(err)


def test_item9_text_embedder_checks_length_and_ids():
    embedder = contrastive.TextEmbedder(vocab_size=10, d_embed=8, d_model=8, num_heads=2, max_len=64)
    with pytest.raises(ValueError, match=r"70 words but the embedder has 64 positions") as err:
        embedder(torch.ones(2, 70, dtype=torch.long))
    one_line(err)
    with pytest.raises(ValueError, match=r"id 10 is outside the vocabulary \(0\.\.9\)") as err:
        embedder(torch.tensor([[1, 10]]))
    one_line(err)
    with pytest.raises(TypeError, match=r"ids must be integer word ids"):
        embedder(torch.ones(1, 3))


# ---------------------------------------------------------------- item 10: one-line errors for the small ones


def test_item10_encode_checks_lengths_and_tags(tokenizer):
    label2id = {label: i for i, label in enumerate(LABELS)}
    with pytest.raises(ValueError, match=r"sentence 1 has 3 tokens but 2 tags") as err:
        ner.encode(tokenizer, [(["Maria"], ["B-PER"]), (["Maria", "Lopez", "flew"], ["B-PER", "I-PER"])], label2id, 16)
    one_line(err)
    no_inside = {"O": 0, "B-PER": 1}
    with pytest.raises(ValueError, match=r"'I-PER'.*label_all_subtokens") as err:
        ner.encode(tokenizer, [(["Maria"], ["B-PER"])], no_inside, 16, label_all_subtokens=True)
    one_line(err)
    with pytest.raises(ValueError, match=r"'B-LOC'.*not in the label set"):
        ner.align_labels([None, 0, None], ["B-LOC"], no_inside)


@pytest.mark.parametrize("last", ["", "\u200b"])
def test_item10_no_false_truncation_warning(tokenizer, last):
    label2id = {label: i for i, label in enumerate(LABELS)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        features = ner.encode(tokenizer, [(["Maria", "flew", last], ["B-PER", "O", "O"])], label2id, 16)
    assert features[0]["word_ids"] == [None, 0, 1, None]
    with pytest.warns(UserWarning, match="truncated"):  # a real truncation still warns
        ner.encode(tokenizer, [(["Maria"] * 20, ["B-PER"] * 20)], label2id, 8)


def test_item10_collate_of_nothing():
    with pytest.raises(ValueError, match="no features to collate") as err:
        ner.collate([])
    one_line(err)


def test_item10_predict_entities_max_length(bert_dir, tokenizer):
    model = ner_models.token_classifier(bert_dir, LABELS)
    positions = transformers.BertConfig.from_pretrained(str(bert_dir)).max_position_embeddings
    for bad in (-5, 0, positions + 1):
        with pytest.raises(ValueError, match=rf"max_length={bad}.*between 2 and {positions}") as err:
            ner.predict_entities(model, tokenizer, "Maria flew to Lyon", max_length=bad)
        one_line(err)


def test_item10_attention_with_no_features():
    q = torch.randn(2, 3, 0)
    with pytest.raises(AttentionShapeError, match="0 features") as err:
        scaled_dot_product_attention(q, q, torch.randn(2, 3, 4))
    one_line(err)


def test_item10_glossary_lookup_of_a_non_string():
    for bad in (None, 3):
        with pytest.raises(TypeError, match="glossary.lookup takes a term as a string") as err:
            glossary.lookup(bad)
        one_line(err)


def test_item10_tokenize_scenes_of_nothing():
    with pytest.raises(ValueError, match="no scene descriptions") as err:
        contrastive.tokenize_scenes([])
    one_line(err)


def test_item10_collator_next_sentence_label_on_some_examples(tokenizer):
    collator = pretraining.Collator(tokenizer, mask=False)
    with_label = {"input_ids": [2, 6, 3, 7, 3], "token_type_ids": [0, 0, 0, 1, 1], "next_sentence_label": 0}
    without = {"input_ids": [2, 8, 3, 9, 3], "token_type_ids": [0, 0, 0, 1, 1]}
    for batch in ([with_label, without], [without, with_label]):
        with pytest.raises(ValueError, match=r"next_sentence_label on 1 of 2 examples") as err:
            collator(batch)
        one_line(err)
    assert collator([with_label, with_label])["next_sentence_label"].tolist() == [0, 0]
    assert "next_sentence_label" not in collator([without, without])
