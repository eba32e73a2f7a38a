"""course_utils.text.ner and ner_data: CoNLL files, BIO tags, sub-word alignment, predictions, offline data.

References: seqeval (entities, metrics), the tokenizers library (word boundaries and offsets),
transformers (the saved model's logits, the token-classification pipeline).
"""

from __future__ import annotations

import calendar
import json
import re

import pytest
import torch
from hypothesis import given, settings, strategies as st
from seqeval.metrics import f1_score
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import IOB2, Entities

from course_utils.text import bio_tags, ner, ner_data, ner_models

transformers = pytest.importorskip("transformers")

# ---------------------------------------------------------------- fixtures: a tiny cased BERT with a hand-made vocabulary

VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    ".",
    ",",
    "(",
    ")",
    "-",
    "Maria",
    "Lopez",
    "flew",
    "to",
    "Lyon",
    "on",
    "Monday",
    "the",
    "in",
    "said",
    "Arnold",
    "Schw",
    "##arz",
    "##en",
    "##egger",
    "New",
    "York",
    "visited",
    "San",
    "Francisco",
    "A",
    "B",
    "C",
    "L",
    "##y",
    "##on",
    "a",
    "b",
    "c",
    "paris",
    "london",
    "berlin",
]


@pytest.fixture(scope="module")
def tokenizer():
    """A cased WordPiece tokenizer over VOCAB (BERT's normalizer, pre-tokenizer and [CLS] ... [SEP])."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    raw = Tokenizer(models.WordPiece({v: i for i, v in enumerate(VOCAB)}, unk_token="[UNK]"))
    raw.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    raw.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return transformers.BertTokenizerFast(tokenizer_object=raw, do_lower_case=False)


LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
LABEL2ID = {label: i for i, label in enumerate(LABELS)}


def tiny_model(tokenizer, seed=0, max_positions=32):
    from course_utils.text.bert_tasks import BertForTokenClassification

    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=max_positions,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id=LABEL2ID,
    )
    return BertForTokenClassification(config).eval()


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("tiny_bert")
    tiny_model(tokenizer).save_pretrained(folder, tokenizer=tokenizer)
    return folder


def write(tmp_path, text, name="data.conll"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- reading and writing CoNLL


def test_read_conll_four_columns_docstart_and_blank_lines(tmp_path):
    text = (
        "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n\n\n"
        "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n\n-DOCSTART- -X- -X- O\n\nBRUSSELS NNP B-NP B-LOC"
    )
    sentences = ner.read_conll(write(tmp_path, text))
    assert sentences == [
        (["EU", "rejects", "German"], ["B-ORG", "O", "B-MISC"]),
        (["Peter", "Blackburn"], ["B-PER", "I-PER"]),
        (["BRUSSELS"], ["B-LOC"]),
    ]


def test_read_conll_two_and_three_columns_with_tabs(tmp_path):
    assert ner.read_conll(write(tmp_path, "Maria\tB-PER\nLopez\tI-PER\n")) == [(["Maria", "Lopez"], ["B-PER", "I-PER"])]
    assert ner.read_conll(write(tmp_path, "Lyon NNP B-LOC\n. . O\n", "b.conll")) == [(["Lyon", "."], ["B-LOC", "O"])]


def test_malformed_line_names_file_line_and_expectation(tmp_path):
    path = write(tmp_path, "Maria B-PER\nLopez\n")
    with pytest.raises(ner.ConllFormatError, match=r"data\.conll, line 2: expected 2 to 4 columns.*found 1"):
        ner.read_conll(path)
    path = write(tmp_path, "Maria B-PER\n\nNew York B-LOC I-LOC\nis x y O\n", "c.conll")
    with pytest.raises(ner.ConllFormatError, match=r"line 3: expected 2 columns like line 1, found 4"):
        ner.read_conll(path)
    with pytest.raises(ner.ConllFormatError, match=r"line 1: expected 2 to 4 columns.*found 5"):
        ner.read_conll(write(tmp_path, "a b c d B-PER\n", "d.conll"))


@pytest.mark.parametrize("text", ["", "\n\n", "-DOCSTART- O\n\n"])
def test_empty_file_is_refused(tmp_path, text):
    with pytest.raises(ner.ConllFormatError, match="holds no sentences"):
        ner.read_conll(write(tmp_path, text))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ner.read_conll(tmp_path / "nope.conll")
    with pytest.raises(ner.ConllFormatError, match="is a directory"):
        ner.read_conll(tmp_path)


@pytest.mark.parametrize("tag", ["PER", "B_PER", "b-per", "S-PER", "B-", "X"])
def test_tag_outside_bio_is_refused(tmp_path, tag):
    with pytest.raises(bio_tags.BioTagError, match=rf"line 2: tag '{tag}' is not a BIO tag"):
        ner.read_conll(write(tmp_path, f"Maria O\nLopez {tag}\n"))


def test_i_after_o_is_repaired_reported_or_refused(tmp_path):
    path = write(tmp_path, "the O\nMaria I-PER\nLopez I-PER\nin O\nLyon I-LOC\n")
    with pytest.warns(UserWarning, match=r"2 entities started with I- .*first at line 2: I-PER after O.*repaired"):
        repaired = ner.read_conll(path)
    assert repaired[0][1] == ["O", "B-PER", "I-PER", "O", "B-LOC"]
    with pytest.warns(UserWarning, match="kept as they are"):
        assert ner.read_conll(path, bio="keep")[0][1] == ["O", "I-PER", "I-PER", "O", "I-LOC"]
    with pytest.raises(bio_tags.BioTagError, match=r"2 entities start with I- instead of B- \(first at line 2"):
        ner.read_conll(path, bio="error")


def test_write_then_read_gives_the_same_sentences(tmp_path):
    data = ner_data.generate(3, {"train": 50, "dev": 0, "test": 0, "test_seen": 0, "test_new_templates": 0})["train"]
    path = ner.write_conll(data, tmp_path / "sub" / "x.conll")
    assert ner.read_conll(path) == data


def test_write_conll_refuses_what_it_cannot_write(tmp_path):
    with pytest.raises(ValueError, match="contains whitespace"):
        ner.write_conll([(["New York"], ["B-LOC"])], tmp_path / "x.conll")
    with pytest.raises(ValueError, match="2 tokens but 1 tags"):
        ner.write_conll([(["a", "b"], ["O"])], tmp_path / "x.conll")
    with pytest.raises(bio_tags.BioTagError, match="'LOC' is not O, B-TYPE or I-TYPE"):
        ner.write_conll([(["Lyon"], ["LOC"])], tmp_path / "x.conll")


# ---------------------------------------------------------------- BIO tags against seqeval

tag_sequences = st.lists(st.sampled_from(["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]), max_size=20)


@given(tag_sequences)
@settings(max_examples=300, deadline=None)
def test_entity_spans_agree_with_seqeval(tags):
    expected = [(kind, start, end + 1) for kind, start, end in get_entities(list(tags))]
    assert bio_tags.entity_spans(tags) == expected


@given(tag_sequences)
@settings(max_examples=300, deadline=None)
def test_repair_bio_gives_valid_bio_with_the_same_entities(tags):
    fixed = bio_tags.repair_bio(tags)
    assert bio_tags.bio_problems(fixed) == []
    # seqeval's strict IOB2 mode only accepts proper BIO; after repair it finds what the lenient mode found
    strict = sorted((e.tag, e.start, e.end) for e in Entities([fixed], IOB2).entities[0])
    assert strict == sorted(bio_tags.entity_spans(tags))


def test_label_list_comes_from_the_data():
    data = [(["a", "b"], ["B-ZZZ", "O"]), (["c"], ["I-AAA"])]
    assert bio_tags.label_list(data) == ["O", "B-AAA", "I-AAA", "B-ZZZ", "I-ZZZ"]
    with pytest.raises(ValueError, match="no entity at all"):
        bio_tags.label_list([(["a"], ["O"])])


# ---------------------------------------------------------------- sub-word alignment


def test_align_labels_on_a_tricky_word(tokenizer):
    words = ["Arnold", "Schwarzenegger", "flew", "to", "Lyon", "."]
    tags = ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]
    enc = tokenizer(words, is_split_into_words=True)
    assert enc.tokens() == ["[CLS]", "Arnold", "Schw", "##arz", "##en", "##egger", "flew", "to", "Lyon", ".", "[SEP]"]
    first = ner.align_labels(enc.word_ids(), tags, LABEL2ID)
    every = ner.align_labels(enc.word_ids(), tags, LABEL2ID, label_all_subtokens=True)
    per_b, per_i, loc_b, o = LABEL2ID["B-PER"], LABEL2ID["I-PER"], LABEL2ID["B-LOC"], LABEL2ID["O"]
    assert first == [-100, per_b, per_i, -100, -100, -100, o, o, loc_b, o, -100]
    assert every == [-100, per_b, per_i, per_i, per_i, per_i, o, o, loc_b, o, -100]
    # a B- word split into pieces: only the first piece begins the entity
    enc = tokenizer(["Schwarzenegger"], is_split_into_words=True)
    assert ner.align_labels(enc.word_ids(), ["B-PER"], LABEL2ID, True) == [-100, per_b, per_i, per_i, per_i, -100]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Maria", "Schwarzenegger", "Lyon", "to", ".", "Lopez", "xq"]), st.sampled_from(LABELS)
        ),
        min_size=1,
        max_size=12,
    )
)
@settings(max_examples=100, deadline=None)
def test_alignment_round_trips_to_word_tags(tokenizer, pairs):
    words = [w for w, _ in pairs]
    tags = bio_tags.repair_bio([t for _, t in pairs])
    enc = tokenizer(words, is_split_into_words=True)
    word_ids = enc.word_ids()
    first = ner.align_labels(word_ids, tags, LABEL2ID)
    every = ner.align_labels(word_ids, tags, LABEL2ID, label_all_subtokens=True)
    assert sum(label != -100 for label in first) == len(words)  # one label per word
    assert sum(label != -100 for label in every) == sum(w is not None for w in word_ids)  # one per sub-token
    id2label = dict(enumerate(LABELS))
    for labels in (first, every):
        assert ner.word_predictions(word_ids, [max(i, 0) for i in labels], id2label, len(words)) == tags
    # labelling every sub-token keeps the same entities when read token by token
    token_tags = [id2label[i] for i in every if i != -100]
    assert len(bio_tags.entity_spans(token_tags)) == len(bio_tags.entity_spans(tags))


def test_long_sentence_is_truncated_with_a_warning(tokenizer):
    words = ["Maria"] * 40
    with pytest.warns(UserWarning, match=r"1 sentence\(s\) are longer than the model's 10 positions.*8 of 40 words"):
        features = ner.encode(tokenizer, [(words, ["B-PER"] + ["I-PER"] * 39)], LABEL2ID, max_length=10)
    assert len(features[0]["input_ids"]) == 10
    tags = ner.word_predictions(features[0]["word_ids"], [LABEL2ID["B-PER"]] * 10, dict(enumerate(LABELS)), 40)
    assert tags[:8] == ["B-PER"] * 8 and tags[8:] == ["O"] * 32


def test_encode_refuses_tags_outside_the_label_set(tokenizer):
    with pytest.raises(ValueError, match=r"tags \['B-ORG'\] are not in the label set"):
        ner.encode(tokenizer, [(["Maria"], ["B-ORG"])], LABEL2ID, max_length=16)


def test_collate_pads_labels_with_ignore_index(tokenizer):
    feats = ner.encode(
        tokenizer,
        [(["Maria"], ["B-PER"]), (["Maria", "flew", "to", "Lyon"], ["B-PER", "O", "O", "B-LOC"])],
        LABEL2ID,
        max_length=16,
    )
    batch = ner.collate(feats, tokenizer.pad_token_id)
    assert batch["input_ids"].shape == (2, 6)
    assert batch["labels"][0].tolist() == [-100, LABEL2ID["B-PER"], -100, -100, -100, -100]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0, 0]


# ---------------------------------------------------------------- predictions


def rigged(tokenizer, label):
    """A model that predicts ``label`` everywhere (zero classifier weights, a large bias)."""
    model = tiny_model(tokenizer)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.fill_(-10.0)
        model.classifier.bias[LABEL2ID[label]] = 10.0
    return model


def test_predict_entities_offsets_are_the_words_of_the_text(tokenizer):
    text = "Arnold Schwarzenegger  flew to Lyon, on Monday."
    words = tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)  # reference word boundaries
    entities = ner.predict_entities(rigged(tokenizer, "B-PER"), tokenizer, text)
    assert [(e["start"], e["end"]) for e in entities] == [span for _, span in words]
    assert all(text[e["start"] : e["end"]] == e["text"] for e in entities)
    assert entities[1]["text"] == "Schwarzenegger" and all(e["type"] == "PER" for e in entities)
    whole = ner.predict_entities(rigged(tokenizer, "I-LOC"), tokenizer, text)
    assert [(e["type"], e["start"], e["end"]) for e in whole] == [("LOC", 0, len(text))]
    assert ner.predict_entities(rigged(tokenizer, "O"), tokenizer, text) == []


def test_predict_entities_matches_transformers_pipeline(tokenizer, bert_dir):
    """Word-level grouping equals transformers' pipeline with aggregation_strategy='first'."""
    hf_model = transformers.AutoModelForTokenClassification.from_pretrained(str(bert_dir))
    ours = ner_models.token_classifier(bert_dir, LABELS)
    pipe = transformers.pipeline(
        "token-classification", model=hf_model, tokenizer=tokenizer, aggregation_strategy="first", device="cpu"
    )
    for text in [
        "Maria Lopez flew to Lyon on Monday",
        "the New York in San Francisco said Arnold Schwarzenegger",
        "A B C visited paris london berlin",
    ]:
        expected = [(e["entity_group"], e["start"], e["end"]) for e in pipe(text)]
        got = [(e["type"], e["start"], e["end"]) for e in ner.predict_entities(ours, tokenizer, text)]
        assert got == expected, text


def test_predict_entities_truncates_long_text_with_a_warning(tokenizer):
    model = rigged(tokenizer, "B-PER")
    text = " ".join(["Maria"] * 50)
    with pytest.warns(UserWarning, match="the text has 52 tokens but the model takes 32: it was truncated"):
        entities = ner.predict_entities(model, tokenizer, text)
    assert len(entities) == 30  # 32 positions minus [CLS] and [SEP]


def test_predict_tags_and_seqeval(tokenizer):
    model = rigged(tokenizer, "B-LOC")
    sentences = [(["Lyon", "Maria"], ["B-LOC", "B-PER"]), (["to"], ["O"])]
    pred = ner.predict_tags(model, tokenizer, sentences)
    assert pred == [["B-LOC", "B-LOC"], ["B-LOC"]]
    assert f1_score([t for _, t in sentences], pred) == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))


def test_saved_model_loads_in_transformers_with_the_same_logits(tokenizer, bert_dir):
    ours = ner_models.token_classifier(bert_dir, LABELS)
    theirs = transformers.BertForTokenClassification.from_pretrained(str(bert_dir)).eval()
    batch = tokenizer(["Maria flew to Lyon", "Arnold Schwarzenegger"], padding=True, return_tensors="pt")
    with torch.no_grad():
        a = ours(**batch).logits
        b = theirs(**batch).logits
    keep = batch["attention_mask"].bool()
    assert torch.allclose(a[keep], b[keep], atol=1e-5)
    assert theirs.config.id2label == dict(enumerate(LABELS))


def test_token_classifier_random_init_differs_from_pretrained(bert_dir):
    pretrained = ner_models.token_classifier(bert_dir, LABELS)
    random_init = ner_models.token_classifier(bert_dir, LABELS, init="random")
    saved = transformers.BertForTokenClassification.from_pretrained(str(bert_dir))
    w = saved.bert.embeddings.word_embeddings.weight
    assert torch.equal(pretrained.bert.embeddings.word_embeddings.weight, w)
    assert not torch.equal(random_init.bert.embeddings.word_embeddings.weight, w)
    with pytest.raises(ValueError, match="init must be 'pretrained' or 'random'"):
        ner_models.token_classifier(bert_dir, LABELS, init="minilm")


# ---------------------------------------------------------------- checkpoint directories


def test_check_bert_dir_errors(tmp_path, bert_dir):
    with pytest.raises(FileNotFoundError, match="does not exist.*None for chapter 03's model"):
        ner_models.check_bert_dir(tmp_path / "missing")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="is a file"):
        ner_models.check_bert_dir(tmp_path / "file.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="has no config.json"):
        ner_models.check_bert_dir(empty)
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="holds a 'gpt2' model, not BERT"):
        ner_models.check_bert_dir(gpt)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((bert_dir / "config.json").read_text())
    with pytest.raises(ValueError, match="has no model.safetensors"):
        ner_models.check_bert_dir(no_weights)
    (no_weights / "model.safetensors").write_bytes((bert_dir / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="has no tokenizer"):
        ner_models.check_bert_dir(no_weights)
    assert ner_models.check_bert_dir(bert_dir) == bert_dir


def test_tokenizer_casing_is_read_from_the_tokenizer(tokenizer):
    from course_utils.text.bert import minilm_path

    assert ner_models.tokenizer_lowercases(tokenizer) is False
    assert ner_models.tokenizer_lowercases(transformers.AutoTokenizer.from_pretrained(str(minilm_path()))) is True


# ---------------------------------------------------------------- evaluation helpers


def test_type_confusion_counts_by_exact_span():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "O"]]
    pred = [["B-LOC", "I-LOC", "O", "B-LOC"], ["B-ORG", "I-ORG", "B-PER"]]
    names, counts = bio_tags.type_confusion(gold, pred)
    assert names == ["LOC", "ORG", "PER", "none"]
    table = {(g, p): counts[names.index(g)][names.index(p)] for g in names for p in names}
    assert table[("PER", "LOC")] == 1 and table[("LOC", "LOC")] == 1
    assert table[("ORG", "none")] == 1  # wrong boundary: missed ...
    assert table[("none", "ORG")] == 1 and table[("none", "PER")] == 1  # ... and spurious
    assert sum(map(sum, counts)) == 5


def test_format_entities():
    assert (
        bio_tags.format_entities(["Maria", "Lopez", "flew", "to", "Lyon"], ["B-PER", "I-PER", "O", "O", "B-LOC"])
        == "[Maria Lopez]PER flew to [Lyon]LOC"
    )


# ---------------------------------------------------------------- the offline data set


@pytest.fixture(scope="module")
def offline():
    return ner_data.generate(0)


def names_of(sentences):
    return {" ".join(tokens[a:b]).lower() for tokens, tags in sentences for _, a, b in bio_tags.entity_spans(tags)}


def test_generator_is_deterministic_and_shipped_files_match():
    small = {"train": 30, "dev": 10, "test": 10, "test_seen": 5, "test_new_templates": 10}
    assert ner_data.generate(7, small) == ner_data.generate(7, small)
    assert ner_data.generate(7, small) != ner_data.generate(8, small)
    assert ner.offline_data(0) == ner_data.generate(0)  # data/ner/*.conll are the seed-0 sentences


def test_dev_and_test_names_never_occur_in_training(offline):
    train = names_of(offline["train"])
    assert names_of(offline["test"]).isdisjoint(train)
    assert names_of(offline["dev"]).isdisjoint(train)
    assert names_of(offline["test_new_templates"]).isdisjoint(train)
    train_words = {w for name in train for w in name.split()}
    seen_words = {w for name in names_of(offline["test_seen"]) for w in name.split()}
    # test_seen: new sentences with the training pools' names (a few words only appear disguised in training)
    assert len(seen_words & train_words) >= 0.95 * len(seen_words)
    # not even a single word of a test name is a word of a training name, except shared name parts
    shared = {w.lower() for w in ner_data.ORG_SUFFIXES + ner_data.CLUB_SUFFIXES} | {
        "&",
        "of",
        "university",
        "institute",
        "football",
        "tennis",
        "olympic",
        "federation",
        "marathon",
        "open",
        "film",
        "festival",
        "book",
        "fair",
        "grand",
        "prix",
        "cup",
        "masters",
        "trophy",
        "new",
        "san",
        "de",
        "south",
    }
    test_words = {w for name in names_of(offline["test"]) for w in name.split()}
    assert (test_words & train_words) <= shared


def made_up_share(sentences):
    """Share of the entity names with a word that is in no real name pool (a made-up name)."""
    shared = {
        w.lower()
        for w in ner_data.ORG_SUFFIXES
        + ner_data.CLUB_SUFFIXES
        + ["&", "of", "University", "Institute", "Football", "Tennis", "Olympic", "Federation"]
    } | {w.lower() for p in ner_data.EVENT_PATTERNS for w in p.split() if "{" not in w}
    names = [n for n in names_of(sentences)]
    odd = [
        n
        for n in names
        if any(
            w not in ner_data.REAL_NAME_WORDS and w not in shared and not (len(w) == 3 and w.isalpha())
            for w in n.split()
        )
    ]
    return len(odd) / len(names)


def test_made_up_names_are_in_training_only(offline):
    assert made_up_share(offline["train"]) > 0.2
    for split in ("dev", "test", "test_seen", "test_new_templates"):
        assert made_up_share(offline[split]) == 0, split
    plain = ner_data.generate(
        0, {"train": 300, "dev": 0, "test": 0, "test_seen": 0, "test_new_templates": 0}, made_up=0.0
    )
    assert made_up_share(plain["train"]) == 0
    rng = __import__("random").Random(5)
    for _ in range(50):
        word = ner_data.made_up_word(rng)
        assert word.lower() not in ner_data.REAL_NAME_WORDS and word[0].isupper() and word[1:].islower()


def test_offline_data_is_valid_bio_with_every_type_and_plain_sentences(offline):
    for split, sentences in offline.items():
        assert len(sentences) == ner_data.DEFAULT_SIZES[split]
        for tokens, tags in sentences:
            assert len(tokens) == len(tags) and all(bio_tags.is_bio_tag(t) for t in tags)
            assert bio_tags.bio_problems(tags) == []
        kinds = {k for _, tags in sentences for k, _, _ in bio_tags.entity_spans(tags)}
        assert kinds == {"PER", "ORG", "LOC", "MISC"}
        assert sum(all(t == "O" for t in tags) for _, tags in sentences) > 0.05 * len(sentences)
        assert any(len(tokens) > 1 and all(t.isupper() for t in tokens if t.isalpha()) for tokens, _ in sentences)
        multi = sum(b - a > 1 for _, tags in sentences for _, a, b in bio_tags.entity_spans(tags))
        assert multi > 0.2 * sum(len(bio_tags.entity_spans(tags)) for _, tags in sentences)


# A sentence's frame, derived without the generator: every entity span (read by seqeval) becomes
# <TYPE>, numbers, scores and dates become <num>, day and month names <date>, all lower-cased.
NUMBER = re.compile(r"^\d[\d.\-]*(st|nd|rd|th)?$")
CALENDAR_WORDS = {d.lower() for d in calendar.day_name} | {m.lower() for m in calendar.month_name if m}


def frame(tokens, tags):
    from seqeval.metrics.sequence_labeling import get_entities

    starts = {a: (kind, b + 1) for kind, a, b in get_entities(list(tags))}
    words, i = [], 0
    while i < len(tokens):
        if i in starts:
            kind, i = starts[i]
            words.append(f"<{kind}>")
            continue
        word = tokens[i].lower()
        word = "<num>" if NUMBER.match(word) else "<date>" if word in CALENDAR_WORDS else word
        if not (word == "<num>" and words and words[-1] == "<num>"):  # "6-3 7-5" is one score
            words.append(word)
        i += 1
    return " ".join(words)


def test_frame_of_a_sentence():
    tokens = ["Maria", "Lopez", "won", "6-3", "7-5", "in", "Lyon", "on", "Monday", "."]
    tags = ["B-PER", "I-PER", "O", "O", "O", "O", "B-LOC", "O", "O", "O"]
    assert frame(tokens, tags) == "<PER> won <num> in <LOC> on <date> ."


def test_no_sentence_frame_of_the_held_out_split_occurs_in_any_other_split(offline):
    frames = {split: {frame(*s) for s in sentences} for split, sentences in offline.items()}
    held_out = frames["test_new_templates"]
    for split in ("train", "dev", "test", "test_seen"):
        assert held_out.isdisjoint(frames[split]), split
    # the frames find shared templates when there are some: every test frame is a training frame
    train = frames["train"]
    assert sum(frame(*s) in train for s in offline["test"]) == len(offline["test"])
    # and they are the generator's templates, one frame each (72 seen, 17 held out with seed 0)
    seen, held = ner_data.template_split(0)
    assert len(held_out) == sum(map(len, held)) >= 10 and len(train) == sum(map(len, seen))
    assert ner.offline_data(0)["test_new_templates"] == offline["test_new_templates"]  # the shipped file


def test_template_split_is_seeded_and_keeps_every_kind():
    seen, held = ner_data.template_split(0)
    assert (seen, held) == ner_data.template_split(0) and held != ner_data.template_split(1)[1]
    for (family, _), s, h in zip(ner_data.KINDS, seen, held):
        assert set(s) | set(h) == set(family) and not set(s) & set(h) and h and s


def test_ambiguous_names_are_people_and_places_in_the_test_split(offline):
    ambiguous = {a.lower() for a in ner_data.AMBIGUOUS}
    kinds = {}
    for tokens, tags in offline["test"]:
        for kind, a, b in bio_tags.entity_spans(tags):
            for w in tokens[a:b]:
                if w.lower() in ambiguous:
                    kinds.setdefault(w.lower(), set()).add(kind)
    assert sum(k >= {"PER", "LOC"} for k in kinds.values()) >= 2


def test_load_ner_data_with_files_and_conll2003_fallback(tmp_path, capsys):
    path = ner.write_conll([(["Maria"], ["B-PER"])], tmp_path / "mine.conll")
    data, source = ner.load_ner_data(train_file=path)
    assert data["train"] == [(["Maria"], ["B-PER"])] and "test_seen" not in data and "test_new_templates" not in data
    assert f"train = {path}" in source and len(data["test"]) == ner_data.DEFAULT_SIZES["test"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ner.load_ner_data(dev_file=tmp_path / "nope.conll")
    import os

    if os.environ.get("HF_DATASETS_OFFLINE") == "1":  # conftest sets it: the online path must fall back
        data, source = ner.load_ner_data(use_conll2003=True)
        out = capsys.readouterr().out.strip().splitlines()
        assert len(out) == 1 and "using the offline data instead" in out[0]
        assert source.startswith("offline")


# ---------------------------------------------------------------- the chapter's inline code equals the package


@pytest.fixture(scope="module")
def inline():
    from notebook_code import inline_namespace

    return inline_namespace("04_bert_ner_finetuning.ipynb")


def test_inline_defines_the_taught_pieces(inline):
    for name in ("bio_problems", "repair_bio", "entity_spans", "align_labels"):
        assert callable(inline.get(name)), f"chapter 04 should define {name} in a cell tagged inline"


@given(tag_sequences)
@settings(max_examples=200, deadline=None)
def test_inline_bio_code_equals_package(inline, tags):
    assert inline["bio_problems"](tags) == bio_tags.bio_problems(tags)
    assert inline["repair_bio"](tags) == bio_tags.repair_bio(tags)
    assert inline["entity_spans"](tags) == bio_tags.entity_spans(tags)


@given(st.lists(st.integers(1, 3), min_size=1, max_size=8), st.data(), st.booleans())
@settings(max_examples=200, deadline=None)
def test_inline_align_labels_equals_package(inline, pieces_per_word, draw, label_all):
    word_ids = [None] + [w for w, n in enumerate(pieces_per_word) for _ in range(n)] + [None, None]
    tags = bio_tags.repair_bio(
        draw.draw(st.lists(st.sampled_from(LABELS), min_size=len(pieces_per_word), max_size=len(pieces_per_word)))
    )
    assert inline["align_labels"](word_ids, tags, LABEL2ID, label_all) == ner.align_labels(
        word_ids, tags, LABEL2ID, label_all
    )
