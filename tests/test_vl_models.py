"""Single-stream and co-attention fusions, image-text matching and zero-shot retrieval (chapter 05),
against transformers' BertModel, torch's nn.MultiheadAttention, the scenes' own text and brute force."""

import pytest
import torch
import torch.nn.functional as F

from course_utils.vision import multimodal as mm
from course_utils.vision import vqa_training
from course_utils.vision import contrastive
from course_utils.vision import shapes
from course_utils.vision import vl_models as vl
from course_utils.vision import vl_retrieval as vr
from test_multimodal import encoding  # the question encodings chapter 05's fusion tests use

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def data():
    return shapes.generate(40, seed=3)


def scene_sentences(data, i):
    """The sentences of the generator's own scene description of image i, without full stops."""
    return {s.strip() for s in data.scene_text(i).split(".") if s.strip()}


def sentences(text):
    return [s.strip() for s in text.split(".") if s.strip()]


# ---------------------------------------------------------------- single stream


def test_single_stream_encoder_equals_transformers_bert_given_inputs_embeds():
    config = vl.bert_config(hidden=32, layers=2, heads=4, max_positions=16)
    torch.manual_seed(0)
    reference = transformers.BertModel(config).eval()  # transformers' own initialisation
    ours = vl.SingleStreamEncoder(config).eval()
    ours.bert.load_hf_state_dict(reference.state_dict())
    g = torch.Generator().manual_seed(1)
    text, image = torch.randn(3, 5, 32, generator=g), torch.randn(3, 4, 32, generator=g)
    text_mask = torch.ones(3, 5, dtype=torch.bool)
    text_mask[1, 3:] = False  # a shorter question in row 1
    inputs = ours.embed_inputs(text, text_mask, image)
    # the sequence is [CLS; text; image] with segments 0 / 1 and positions 0..T, then 0 for the image
    assert inputs["token_type_ids"][0].tolist() == [0] * 6 + [1] * 4
    assert inputs["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 5, 0, 0, 0, 0]
    assert inputs["attention_mask"][1].tolist() == [1, 1, 1, 1, 0, 0, 1, 1, 1, 1]
    assert torch.equal(inputs["inputs_embeds"][:, 1:6], text) and torch.equal(inputs["inputs_embeds"][:, 6:], image)
    hidden, pooled = ours.encode(**inputs)
    with torch.no_grad():
        expected = reference(**inputs)
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(hidden[real], expected.last_hidden_state[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled, expected.pooler_output, atol=1e-5, rtol=1e-5)


def test_single_stream_fusion_blind_to_element_order_and_padding():
    torch.manual_seed(0)
    fusion = vl.make_fusion("single_stream", 10, 6, 16, hidden=32).eval()
    elements = torch.randn(2, 6, 10)
    question = encoding(2, 16, tokens=4, pad_last=2)
    with torch.no_grad():
        logits = fusion(elements, question)
        shuffled = fusion(elements[:, torch.tensor([3, 0, 5, 1, 4, 2])], question)
        garbage = question.tokens.clone()
        garbage[1, 2:] = 100.0  # what sits under padding must not matter
        padded = fusion(elements, mm.QuestionEncoding(question.vector, garbage, question.mask))
        other_image = fusion(torch.randn(2, 6, 10), question)
    assert logits.shape == (2, mm.N_ANSWERS)
    torch.testing.assert_close(shuffled, logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded, logits, atol=1e-5, rtol=1e-5)
    assert not torch.equal(other_image, logits)  # the answer does read the image


# ---------------------------------------------------------------- co-attention


def copy_torch_mha(ours, reference, d):
    with torch.no_grad():
        ours.q_proj.weight.copy_(reference.in_proj_weight[:d])
        ours.k_proj.weight.copy_(reference.in_proj_weight[d : 2 * d])
        ours.v_proj.weight.copy_(reference.in_proj_weight[2 * d :])
        ours.q_proj.bias.copy_(reference.in_proj_bias[:d])
        ours.k_proj.bias.copy_(reference.in_proj_bias[d : 2 * d])
        ours.v_proj.bias.copy_(reference.in_proj_bias[2 * d :])
        ours.out_proj.load_state_dict(reference.out_proj.state_dict())


def test_each_co_attention_direction_equals_torch_multihead_attention():
    d = 16
    torch.manual_seed(0)
    layer = vl.CoAttentionLayer(d, 4).eval()
    text_ref = torch.nn.MultiheadAttention(d, 4, batch_first=True).eval()
    image_ref = torch.nn.MultiheadAttention(d, 4, batch_first=True).eval()
    copy_torch_mha(layer.text_from_image, text_ref, d)
    copy_torch_mha(layer.image_from_text, image_ref, d)
    with torch.no_grad():
        for norm in (layer.norm_text, layer.norm_image):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    g = torch.Generator().manual_seed(1)
    text, image = torch.randn(2, 5, d, generator=g), torch.randn(2, 7, d, generator=g)
    text_mask = torch.ones(2, 5, dtype=torch.bool)
    text_mask[0, 3:] = False
    image_mask = torch.ones(2, 7, dtype=torch.bool)
    image_mask[1, 6:] = False
    t = F.layer_norm(text, (d,), layer.norm_text.weight, layer.norm_text.bias)
    i = F.layer_norm(image, (d,), layer.norm_image.weight, layer.norm_image.bias)
    with torch.no_grad():
        to_text, to_image = layer.cross(text, text_mask, image, image_mask)
        # torch's masks say True = ignore
        expected_text = text_ref(t, i, i, key_padding_mask=~image_mask)[0]
        expected_image = image_ref(i, t, t, key_padding_mask=~text_mask)[0]
    torch.testing.assert_close(to_text, expected_text, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(to_image, expected_image, atol=1e-5, rtol=1e-5)


def test_swapping_the_roles_gives_the_other_direction():
    d = 16
    torch.manual_seed(0)
    layer = vl.CoAttentionLayer(d, 4).eval()
    layer.image_from_text.load_state_dict(layer.text_from_image.state_dict())  # one attention, both ways
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(2, 5, d, generator=g), torch.randn(2, 7, d, generator=g)
    mask_a, mask_b = torch.ones(2, 5, dtype=torch.bool), torch.ones(2, 7, dtype=torch.bool)
    mask_a[1, 4:] = False
    with torch.no_grad():
        a_reads_b, _ = layer.cross(a, mask_a, b, mask_b)
        _, a_reads_b_swapped = layer.cross(b, mask_b, a, mask_a)
    torch.testing.assert_close(a_reads_b_swapped, a_reads_b, atol=1e-6, rtol=1e-6)


def test_co_attention_fusion_blind_to_element_order_and_padding():
    torch.manual_seed(0)
    fusion = vl.make_fusion("co_attention", 10, 6, 16, d_model=32).eval()
    elements = torch.randn(2, 6, 10)
    question = encoding(2, 16, tokens=4, pad_last=1)
    with torch.no_grad():
        logits = fusion(elements, question)
        shuffled = fusion(elements[:, torch.tensor([5, 4, 3, 2, 1, 0])], question)
        garbage = question.tokens.clone()
        garbage[1, 3] = -50.0
        padded = fusion(elements, mm.QuestionEncoding(question.vector, garbage, question.mask))
    torch.testing.assert_close(shuffled, logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded, logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", vl.FUSIONS)
def test_fusions_train_in_vqa_model_deterministically(data, name):
    objects = data.object_descriptions(seed=0)
    questions = vqa_training.QuestionSet.from_data(data, objects)

    def run():
        torch.manual_seed(0)
        model = mm.VQAModel(
            mm.VectorQuestionEncoder(16),
            vl.make_fusion(name, 10, 6, 16, **{"single_stream": {"hidden": 32}, "co_attention": {"d_model": 32}}[name]),
        )
        history = vqa_training.train_vqa(model, questions, questions, steps=3, batch_size=8, progress=False)
        return history.losses, vqa_training.predict(model, questions)

    (losses, predictions), (again, predictions_again) = run(), run()
    assert losses == again and torch.equal(predictions, predictions_again)
    assert predictions.shape == (len(questions),)


# ---------------------------------------------------------------- descriptions and matching


def test_regions_and_object_words_say_what_scene_text_says(data):
    region = vl.regions(data)
    for i in range(len(data)):
        k = torch.arange(shapes.N_OBJECTS)
        ids = vl.object_words(k, data.shapes[i], region[i]).flatten()
        assert vl.decode(ids) == data.scene_text(i)  # the generator's own description
        assert torch.equal(contrastive.tokenize_scenes([data.scene_text(i)])[0], ids)


@pytest.mark.parametrize("objects", [3, 6])
def test_matching_pairs_are_what_they_claim(data, objects):
    g = torch.Generator().manual_seed(0)
    rows = torch.arange(len(data)).repeat(5)
    kinds = torch.arange(-1, 4).repeat_interleave(len(data))
    ids, true = vl.matching_batch(data, rows, kinds, g, objects)
    assert ids.shape == (len(rows), 5 * objects)
    for row, kind, text_ids, claimed in zip(rows.tolist(), kinds.tolist(), ids, true.tolist()):
        text = vl.decode(text_ids)
        truth = scene_sentences(data, row)
        said = sentences(text)
        assert len(said) == objects and len({s.split()[0] for s in said}) == objects  # each colour once
        assert claimed == all(s in truth for s in said)  # the label is read from the scene text
        wrong = [s for s in said if s not in truth]
        by_colour = {s.split()[0]: s.split() for s in truth}
        if kind == -1:
            assert not wrong
        elif kind == 1:  # two colour words exchanged
            assert len(wrong) == 2 or not wrong
            for s in wrong:
                assert s.split()[1:] != by_colour[s.split()[0]][1:]
        elif kind == 2:  # one shape flipped, nothing else
            assert len(wrong) == 1
            w = wrong[0].split()
            assert w[1] != by_colour[w[0]][1] and w[2:] == by_colour[w[0]][2:]
        elif kind == 3:  # one object moved, nothing else
            assert len(wrong) == 1
            w = wrong[0].split()
            assert w[1] == by_colour[w[0]][1] and w[2:] != by_colour[w[0]][2:]
        if kind in (1, 2, 3):
            assert not claimed
        assert torch.equal(contrastive.tokenize_scenes([text])[0], text_ids)


def test_matcher_outputs_and_training_are_deterministic(data):
    objects = data.object_descriptions(seed=0)

    def run():
        torch.manual_seed(0)
        model = vl.ImageTextMatcher(10, hidden=32)
        history = vl.train_matching(model, objects, data, steps=3, objects=3, batch_size=8, progress=False)
        return history, vl.matching_accuracy(model, objects, data, objects=3)

    (first, acc), (second, acc_again) = run(), run()
    assert first["losses"] == second["losses"] and acc == acc_again
    assert set(acc) == {"true description", *vl.NEGATIVES, *(f"vs {k}" for k in vl.NEGATIVES)}
    for name in vl.NEGATIVES:
        assert acc[f"vs {name}"] == pytest.approx((acc["true description"] + acc[name]) / 2)


# ---------------------------------------------------------------- zero-shot retrieval


def query(colour, shape, region):
    return (
        f"{shapes.COLORS[colour]} {shapes.SHAPES[shape]} {shapes.VERTICAL[region // 3]} {shapes.HORIZONTAL[region % 3]}"
    )


def test_held_out_queries_never_occur_in_training_captions():
    train = shapes.generate(600, seed=5)
    g = torch.Generator().manual_seed(0)
    seen, words = set(), set()
    for _ in range(10):  # ten draws of every image's caption
        ids, _ = vr.caption_batch(train, torch.arange(len(train)), g)
        for i, row in enumerate(ids):
            said = sentences(vl.decode(row))
            assert said and all(s in scene_sentences(train, i) for s in said)  # captions are true
            seen.update(said)
            words.update(w for s in said for w in s.split())
    held_out = {query(*t) for t in vr.HELD_OUT}
    assert len(held_out) == 12 and not held_out & seen
    assert {vr.query_text(*t) for t in vr.HELD_OUT} == {q + "." for q in held_out}
    # ...but each held-out query is made of words and attribute pairs that training captions use
    pairs = {
        (a, b)
        for s in seen
        for a, b in [
            (s.split()[0], s.split()[1]),
            (s.split()[0], " ".join(s.split()[2:])),
            (s.split()[1], " ".join(s.split()[2:])),
        ]
    }
    for q in held_out:
        c, s_, *region = q.split()
        assert {c, s_, *region} <= words
        assert {(c, s_), (c, " ".join(region)), (s_, " ".join(region))} <= pairs
    # and the images do hold such objects (they are seen, only never captioned so)
    assert all(any(q in scene_sentences(train, i) for i in range(len(train))) for q in held_out)


def test_match_matrix_against_scene_text(data):
    g = torch.Generator().manual_seed(1)
    rows = torch.arange(12)
    ids, codes = vr.caption_batch(data, rows, g, max_objects=2)
    match = vr.match_matrix(vr.scene_codes(data)[rows], codes)
    for i in range(12):
        for j in range(12):
            expected = all(s in scene_sentences(data, i) for s in sentences(vl.decode(ids[j])))
            assert bool(match[i, j]) == expected


def test_multi_positive_loss_against_torch():
    g = torch.Generator().manual_seed(0)
    image, text = (
        F.normalize(torch.randn(5, 8, generator=g), dim=-1),
        F.normalize(torch.randn(5, 8, generator=g), dim=-1),
    )
    logits = image @ text.T / 0.1
    clip = (F.cross_entropy(logits, torch.arange(5)) + F.cross_entropy(logits.T, torch.arange(5))) / 2
    torch.testing.assert_close(vr.multi_positive_loss(image, text, 0.1, torch.eye(5, dtype=torch.bool)), clip)
    match = torch.eye(5, dtype=torch.bool)
    match[0, 3] = match[2, 3] = True
    rows = -(logits.log_softmax(1) * match / match.sum(1, keepdim=True)).sum(1).mean()
    cols = -(logits.T.log_softmax(1) * match.T / match.T.sum(1, keepdim=True)).sum(1).mean()
    torch.testing.assert_close(vr.multi_positive_loss(image, text, 0.1, match), (rows + cols) / 2)


def test_retrieval_scores_against_brute_force():
    g = torch.Generator().manual_seed(0)
    similarity = torch.randn(6, 30, generator=g)
    relevant = torch.rand(6, 30, generator=g) < 0.2
    relevant[2] = False  # a query nothing matches is left out
    scores = vr.retrieval_scores(similarity, relevant, k=5)
    expected_p, expected_r = [], []
    for q in range(6):
        if not relevant[q].any():
            continue
        ranked = sorted(range(30), key=lambda j: -float(similarity[q, j]))[:5]
        hits = sum(bool(relevant[q, j]) for j in ranked)
        expected_p.append(hits / 5)
        expected_r.append(hits / int(relevant[q].sum()))
    assert scores["precision"].tolist() == pytest.approx(expected_p)
    assert scores["recall"].tolist() == pytest.approx(expected_r)
    assert scores["chance_recall"].tolist() == pytest.approx([5 / 30] * 5)


def test_zero_shot_training_is_deterministic_and_reports_both_splits(data):
    elements = data.object_descriptions(shuffle=False)

    def run():
        torch.manual_seed(0)
        model = contrastive.ContrastiveModel(d_image=10, n_elements=6)
        history = vr.train_zero_shot(model, elements, data, steps=3, batch_size=16, progress=False)
        return history["losses"], vr.zero_shot_report(model, elements, data, k=5)

    (losses, report), (again, report_again) = run(), run()
    assert losses == again and report == report_again
    assert report["held out"]["queries"] <= 12 and report["seen"]["queries"] <= 96
    assert report["seen"]["chance recall"] == pytest.approx(5 / len(data))


# ---------------------------------------------------------------- bad input


def one_line(excinfo):
    return "\n" not in str(excinfo.value)


@pytest.mark.parametrize(
    "call",
    [
        lambda: vl.make_fusion("nope", 10, 6, 16),
        lambda: vl.bert_config(hidden=30, heads=4),
        lambda: vl.bert_config(layers=0),
        lambda: vl.make_fusion("single_stream", 10, 6, 16)(torch.randn(2, 6, 9), encoding(2, 16, 1)),
        lambda: vl.make_fusion("co_attention", 10, 6, 16)(torch.randn(2, 6, 10), encoding(2, 12, 1)),
        lambda: vl.ImageTextMatcher(10)(torch.randn(2, 6, 10), torch.zeros(2, 15)),
        lambda: vl.ImageTextMatcher(10)(torch.randn(2, 6, 10), torch.full((2, 15), 99)),
        lambda: vl.matching_batch(shapes.generate(3), torch.arange(3), torch.tensor([-1, 0, 7]), torch.Generator()),
        lambda: vl.matching_batch(shapes.generate(3), torch.arange(3), torch.tensor([1, 1, 1]), torch.Generator(), 1),
        lambda: vl.train_matching(vl.ImageTextMatcher(10), torch.randn(2, 6, 10), shapes.generate(3), steps=1),
        lambda: vl.train_matching(vl.ImageTextMatcher(10), torch.randn(3, 6, 10), shapes.generate(3), steps=0),
        lambda: vr.caption_batch(shapes.generate(3), torch.arange(3), torch.Generator(), max_objects=0),
        lambda: vr.retrieval_scores(torch.randn(2, 4), torch.ones(2, 4, dtype=torch.bool), k=0),
        lambda: vr.multi_positive_loss(torch.randn(2, 4), torch.randn(2, 4), 0.1, torch.zeros(2, 2, dtype=torch.bool)),
        lambda: vr.search(contrastive.ContrastiveModel(10, 6), torch.randn(3, 6, 10), "a red circle on the left"),
        lambda: vr.search(contrastive.ContrastiveModel(10, 6), torch.randn(3, 6, 10), ""),
    ],
)
def test_bad_input_is_one_line_value_error(call):
    with pytest.raises(ValueError) as excinfo:
        call()
    assert one_line(excinfo)
