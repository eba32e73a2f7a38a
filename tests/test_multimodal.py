"""Fusion modules, the patch CNN, the question encoders and the contrastive loss, against references."""

import math

import pytest
import torch
import torch.nn.functional as F

from course_utils.vision import multimodal as mm
from course_utils.vision import vqa_plots, vqa_training
from course_utils.vision import contrastive
from course_utils.vision import patch_cnn
from course_utils.vision import shapes


@pytest.fixture(scope="module")
def data():
    return shapes.generate(8, seed=1)


def encoding(batch, d, tokens=1, seed=0, pad_last=0):
    g = torch.Generator().manual_seed(seed)
    toks = torch.randn(batch, tokens, d, generator=g)
    mask = torch.ones(batch, tokens, dtype=torch.bool)
    if pad_last:
        mask[-1, tokens - pad_last :] = False
    return mm.QuestionEncoding(toks.mean(1), toks, mask)


# ---------------------------------------------------------------- image side


def test_patch_cnn_shapes_and_coordinates(data):
    cnn = patch_cnn.PatchCNN(channels=8).eval()
    patches = cnn.patches(data.images[:3])
    assert patches.shape == (3, 25, 10) and cnn.d_out == 10
    # the last two features are each patch's centre, row by row, scaled like the objects: [-1, 1]
    centres = [(15 * col + 7) / 74 * 2 - 1 for col in range(5)]
    expected = torch.tensor([(centres[c], centres[r]) for r in range(5) for c in range(5)])
    assert torch.allclose(patches[0, :, 8:], expected)
    assert cnn(data.images[:3]).shape == (3, 25, 10)
    assert cnn.describe(data.images[:3]).shape == (3, 25, patch_cnn.D_DESCRIPTION)
    # uint8 images are scaled to floats the same way as explicit floats
    assert torch.allclose(cnn.patches(data.images[:2].float() / 255 - 0.5), patches[:2], atol=1e-6)


def test_each_output_patch_sees_its_own_15_pixels(data):
    """Changing pixels far outside a patch leaves that patch's vector unchanged."""
    torch.manual_seed(0)
    cnn = patch_cnn.PatchCNN(channels=4).eval()
    image = data.images[:1].clone()
    before = cnn.patches(image)
    image[..., 45:, 45:] = 0  # bottom-right corner only
    after = cnn.patches(image)
    assert torch.equal(before[0, 0], after[0, 0])  # top-left patch: pixels 0..14, sees up to 20
    assert not torch.equal(before[0, 24], after[0, 24])


def test_grid_targets_put_each_object_in_its_patch(data):
    t = patch_cnn.grid_targets(data)
    assert t["holds"].shape == (8, 25) and t["offset"].shape == (8, 25, 2)
    for i in range(8):
        claimed = {}
        for k in range(6):
            x, y = data.centers[i, k].tolist()
            cell = (y // 15) * 5 + x // 15
            dist = (x - (15 * (x // 15) + 7)) ** 2 + (y - (15 * (y // 15) + 7)) ** 2
            if cell not in claimed or dist < claimed[cell][1]:
                claimed[cell] = (k, dist)
        for cell in range(25):
            if cell not in claimed:
                assert t["holds"][i, cell] == 6 and t["offset"][i, cell].abs().sum() == 0
                continue
            k = claimed[cell][0]
            x, y = data.centers[i, k].tolist()
            assert t["holds"][i, cell] == k and t["circle"][i, cell] == data.shapes[i, k]
            assert t["offset"][i, cell, 0].item() == pytest.approx((x - 15 * (x // 15) - 7) / 7)
            assert t["offset"][i, cell, 1].item() == pytest.approx((y - 15 * (y // 15) - 7) / 7)


def _perfect_prediction(t):
    logits = torch.nn.functional.one_hot(t["holds"], 7).float() * 20 - 10
    return torch.cat([logits, (t["circle"] * 20 - 10)[..., None], t["offset"]], -1)


def test_dense_metrics_on_a_perfect_prediction(data):
    t = patch_cnn.grid_targets(data)
    perfect = _perfect_prediction(t)
    m = patch_cnn.dense_metrics(perfect, t)
    assert m == {"cell_accuracy": 1.0, "object_accuracy": 1.0, "position_error_px": 0.0}
    assert patch_cnn.dense_loss(perfect, t).item() < 1e-3
    wrong_shape = perfect.clone()
    wrong_shape[..., 7] *= -1
    assert patch_cnn.dense_metrics(wrong_shape, t)["object_accuracy"] == 0.0


def test_describe_patches(data):
    """A perfect head describes each occupied patch as its object's description says it."""
    t = patch_cnn.grid_targets(data)
    d = patch_cnn.describe_patches(_perfect_prediction(t))
    assert d.shape == (8, 25, 10) == (8, 25, patch_cnn.D_DESCRIPTION)
    torch.testing.assert_close(d[..., :7].sum(-1), torch.ones(8, 25))
    empty = t["holds"] == 6
    assert d[..., 7][empty].abs().max() < 1e-3  # an empty patch says no shape ...
    torch.testing.assert_close(
        d[..., 8:][empty], patch_cnn.grid_coordinates().expand(8, 25, 2)[empty], atol=1e-3, rtol=1e-3
    )  # ... and sits at its centre
    objects = data.object_descriptions(shuffle=False)  # (8, 6, 10): colour, shape, x, y
    for i in range(8):
        for cell in (~empty[i]).nonzero().flatten().tolist():
            k = int(t["holds"][i, cell])
            assert d[i, cell, :7].argmax() == k
            assert d[i, cell, 7].item() == pytest.approx(objects[i, k, 7].item(), abs=1e-3)  # circle
            torch.testing.assert_close(d[i, cell, 8:], objects[i, k, 8:], atol=1e-3, rtol=1e-3)


def test_cache_patches_keeps_the_most_object_like(data):
    torch.manual_seed(0)
    cnn = patch_cnn.PatchCNN(channels=4).eval()
    full = patch_cnn.cache_patches(cnn, data.images, keep=25, batch_size=3)
    with torch.no_grad():
        described = cnn.describe(data.images)
        objectness = 1 - cnn(data.images)[..., :7].softmax(-1)[..., 6]
    torch.testing.assert_close(full.vectors, described)
    assert torch.equal(full.index, torch.arange(25).expand(8, 25))
    top = patch_cnn.cache_patches(cnn, data.images, keep=8, batch_size=3)
    assert top.vectors.shape == (8, 8, 10)
    for i in range(8):
        assert set(top.index[i].tolist()) == set(objectness[i].topk(8).indices.tolist())
        assert top.index[i].tolist() == sorted(top.index[i].tolist())
        torch.testing.assert_close(top.vectors[i], described[i, top.index[i]])
    grid = top.weights_on_grid(torch.ones(2, 8), torch.tensor([0, 3]))
    assert grid.shape == (2, 25) and grid.sum().item() == 16 and grid[1, top.index[3]].sum().item() == 8
    channels = patch_cnn.cache_patches(cnn, data.images[:2], keep=6, what="channels")
    assert channels.vectors.shape == (2, 6, cnn.d_out)
    with pytest.raises(ValueError, match="keep must be between 1 and 25"):
        patch_cnn.cache_patches(cnn, data.images, keep=0)
    with pytest.raises(ValueError, match="what must be 'description' or 'channels'"):
        patch_cnn.cache_patches(cnn, data.images, what="pixels")


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.zeros(3, 75, 75, dtype=torch.uint8), "single image"),
        (torch.zeros(2, 75, 75, 3, dtype=torch.uint8), "channels-last"),
        (torch.zeros(2, 1, 75, 75), r"\(batch, 3, 75, 75\)"),
        (torch.zeros(2, 3, 64, 64), r"\(batch, 3, 75, 75\)"),
    ],
)
def test_bad_images_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        patch_cnn.PatchCNN(4).patches(bad)


# ---------------------------------------------------------------- fusions


@pytest.mark.parametrize("name", mm.FUSIONS)
@pytest.mark.parametrize("n_elements, d_image", [(6, 10), (25, 34)])
def test_every_fusion_gives_answer_logits(name, n_elements, d_image):
    torch.manual_seed(0)
    fusion = mm.make_fusion(name, d_image, n_elements, 16)
    elements = torch.randn(5, n_elements, d_image)
    logits = fusion(elements, encoding(5, 16))
    assert logits.shape == (5, len(shapes.ANSWERS)) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None for p in fusion.parameters())


def test_relation_network_broadcast_add_equals_all_pairs():
    torch.manual_seed(0)
    rn = mm.RelationNetwork(d_image=7, n_elements=5, d_question=3, hidden=16)
    elements, question = torch.randn(4, 5, 7), torch.randn(4, 3)
    fast, naive = rn.first_layer(elements, question), rn.naive_pairs(elements, question)
    assert fast.shape == (4, 5, 5, 16)
    torch.testing.assert_close(fast, naive, atol=1e-5, rtol=1e-5)
    # and the whole module equals f(sum over explicit pairs of g)
    pairs = torch.stack(
        [
            torch.stack([torch.cat([elements[:, i], elements[:, j], question], -1) for j in range(5)], 1)
            for i in range(5)
        ],
        1,
    )  # (4, 5, 5, 2*7+3)
    g = rn.g_rest(F.relu(rn.g_first(pairs)))
    torch.testing.assert_close(
        rn(elements, mm.QuestionEncoding(question, question[:, None], torch.ones(4, 1, dtype=torch.bool))),
        rn.f(g.sum((1, 2))),
        atol=1e-5,
        rtol=1e-5,
    )


SET_FUSIONS = [f for f in mm.FUSIONS if f not in mm.EarlyFusion.OPS]


@pytest.mark.parametrize("name", SET_FUSIONS)
def test_every_fusion_but_the_mlp_treats_the_image_as_a_set(name):
    """Shuffling the elements changes no answer: objects come in random order."""
    torch.manual_seed(0)
    elements, q = torch.randn(3, 6, 10), encoding(3, 8)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    fusion = mm.make_fusion(name, 10, 6, 8).eval()
    with torch.no_grad():
        torch.testing.assert_close(fusion(elements[:, perm], q), fusion(elements, q), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("op", mm.EarlyFusion.OPS)
def test_the_early_fusion_mlp_sees_slots(op):
    """The paper's MLP reads the flattened elements: the same objects in another order change its answer."""
    torch.manual_seed(0)
    elements, q = torch.randn(3, 6, 10), encoding(3, 8)
    fusion = mm.make_fusion(op, 10, 6, 8).eval()
    with torch.no_grad():
        assert not torch.allclose(fusion(elements[:, [3, 0, 5, 1, 4, 2]], q), fusion(elements, q), atol=1e-4)


def reference_mha(mha, query, kv, key_padding=None):
    """The course's MultiHeadAttention rebuilt on torch's scaled_dot_product_attention."""
    b, t, d = query.shape
    h = mha.num_heads

    def heads(x, proj):
        return proj(x).view(b, x.shape[1], h, d // h).transpose(1, 2)

    mask = None if key_padding is None else key_padding[:, None, None, :]
    out = F.scaled_dot_product_attention(
        heads(query, mha.q_proj), heads(kv, mha.k_proj), heads(kv, mha.v_proj), attn_mask=mask
    )
    return mha.out_proj(out.transpose(1, 2).reshape(b, t, d))


def reference_cross_attention(fusion, elements, question):
    kv = fusion.norm_kv(fusion.embed(elements))
    if fusion.token_queries:
        q, real = fusion.query_in(question.tokens), question.mask
    else:
        q, real = fusion.query_in(question.vector)[:, None], torch.ones(elements.shape[0], 1, dtype=torch.bool)
    for i in range(len(fusion.cross_attn)):
        if fusion.token_queries:
            x = fusion.norm_self[i](q)
            q = q + reference_mha(fusion.self_attn[i], x, x, key_padding=real)
        q = q + reference_mha(fusion.cross_attn[i], fusion.norm_q[i](q), kv)
        q = q + fusion.ff[i](fusion.norm_ff[i](q))
    real = real.float()[..., None]
    return fusion.head((q * real).sum(1) / real.sum(1))


@pytest.mark.parametrize("token_queries, tokens, pad", [(False, 1, 0), (False, 5, 2), (True, 5, 2)])
def test_cross_attention_equals_a_reference_on_torch_sdpa(token_queries, tokens, pad):
    torch.manual_seed(0)
    fusion = mm.CrossAttentionFusion(10, 6, 12, d_model=16, num_heads=4, layers=2, token_queries=token_queries).eval()
    elements, question = torch.randn(3, 6, 10), encoding(3, 12, tokens=tokens, pad_last=pad)
    with torch.no_grad():
        ours = fusion(elements, question)
        torch.testing.assert_close(ours, reference_cross_attention(fusion, elements, question), atol=1e-5, rtol=1e-5)
        fusion.keep_attention = True
        torch.testing.assert_close(fusion(elements, question), ours, atol=1e-5, rtol=1e-5)
    maps = fusion.last_attention
    queries = tokens if token_queries else 1
    assert len(maps) == 2 and maps[0].shape == (3, 4, queries, 6)
    torch.testing.assert_close(maps[-1].sum(-1), torch.ones(3, 4, queries))


def test_padded_question_tokens_change_nothing():
    torch.manual_seed(0)
    fusion = mm.CrossAttentionFusion(10, 6, 12, d_model=16, layers=2, token_queries=True).eval()
    elements, question = torch.randn(2, 6, 10), encoding(2, 12, tokens=4, pad_last=2)
    changed = question.tokens.clone()
    changed[-1, 2:] = 100.0  # garbage in the padding
    with torch.no_grad():
        a = fusion(elements, question)
        b = fusion(elements, mm.QuestionEncoding(question.vector, changed, question.mask))
    torch.testing.assert_close(a, b)


def test_film_with_zero_modulation_ignores_the_question():
    torch.manual_seed(0)
    film = mm.FiLMFusion(10, 6, 8, hidden=16)
    for lin in film.film:
        torch.nn.init.zeros_(lin.weight), torch.nn.init.zeros_(lin.bias)
    elements = torch.randn(2, 6, 10)
    torch.testing.assert_close(film(elements, encoding(2, 8, seed=1)), film(elements, encoding(2, 8, seed=2)))


def test_early_fusion_ops_combine_as_named():
    """Each op rebuilt from torch.nn.functional on the module's own weights."""
    torch.manual_seed(0)
    elements, q = torch.randn(2, 6, 10), encoding(2, 8)
    x = elements.reshape(2, 60)
    for op in mm.EarlyFusion.OPS:
        f = mm.EarlyFusion(10, 6, 8, op=op, hidden=16).eval()
        linears = [m for m in f.head if isinstance(m, torch.nn.Linear)]
        if op == "concat":
            h = torch.cat([x, q.vector], -1)
        else:
            v = F.linear(x, f.image_proj.weight, f.image_proj.bias)
            u = F.linear(q.vector, f.question_proj.weight, f.question_proj.bias)
            h = F.relu(v + u) if op == "sum" else v * u
        for lin in linears[:-1]:
            h = F.relu(F.linear(h, lin.weight, lin.bias))
        torch.testing.assert_close(
            f(elements, q), F.linear(h, linears[-1].weight, linears[-1].bias), atol=1e-5, rtol=1e-5
        )


def test_sum_fusion_is_concat_fusion_with_split_weights():
    """A Linear on [x; q] equals W_x x + W_q q: the 'sum' fusion is a 'concat' fusion in disguise."""
    torch.manual_seed(0)
    elements, q = torch.randn(4, 6, 10), encoding(4, 8)
    summed = mm.EarlyFusion(10, 6, 8, op="sum", hidden=16).eval()
    twin = summed.as_concat().eval()
    assert twin.op == "concat" and mm.count_parameters(twin) == mm.count_parameters(summed) - 16
    torch.testing.assert_close(twin(elements, q), summed(elements, q), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="only a 'sum' fusion"):
        twin.as_concat()


def test_fusion_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown fusion 'mlp'"):
        mm.make_fusion("mlp", 10, 6, 8)
    with pytest.raises(ValueError, match="op must be one of"):
        mm.EarlyFusion(10, 6, 8, op="max")
    with pytest.raises(ValueError, match="flattens exactly 6"):
        mm.EarlyFusion(10, 6, 8)(torch.randn(2, 5, 10), encoding(2, 8))
    rn = mm.RelationNetwork(10, 6, 8)
    with pytest.raises(ValueError, match=r"expects \(batch, elements, 10\)"):
        rn(torch.randn(2, 6, 9), encoding(2, 8))
    with pytest.raises(ValueError, match="question vector has shape"):
        rn(torch.randn(2, 6, 10), encoding(3, 8))


# ---------------------------------------------------------------- question encoders and the model


def test_vector_encoder_and_model(data):
    qenc = mm.VectorQuestionEncoder(16)
    model = mm.VQAModel(qenc, mm.make_fusion("relation_network", 10, 6, 16, hidden=8))
    objects = data.object_descriptions()
    logits = model(objects[:4], data.questions[:4, 0])
    assert logits.shape == (4, 10)
    with pytest.raises(ValueError, match=r"expected \(batch, 11\)"):
        qenc(torch.zeros(4, 7))
    with pytest.raises(ValueError, match="4 image rows but 3 questions"):
        model(objects[:4], data.questions[:3, 0])


def test_end_to_end_model_runs_the_cnn_once_per_image(data):
    torch.manual_seed(0)
    cnn = patch_cnn.PatchCNN(8).eval()
    model = mm.VQAModel(mm.VectorQuestionEncoder(16), mm.make_fusion("concat", cnn.d_out, 25, 16), image_encoder=cnn)
    per_image = model(data.images[:2], data.questions[:2, :3].flatten(0, 1), questions_per_image=3)
    repeated = model(data.images[:2].repeat_interleave(3, 0), data.questions[:2, :3].flatten(0, 1))
    torch.testing.assert_close(per_image, repeated, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    from course_utils.text import bert

    words = sorted({w.strip("?").lower() for t in shapes.ALL_QUESTION_TEXTS for w in t.split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "?"] + words
    try:  # transformers 5 ignores vocab_file here (a 5-token tokenizer, every word [UNK]): pass the vocabulary
        tokenizer = transformers.BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)})
    except TypeError:  # transformers 4 reads a vocabulary file
        path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
        path.write_text("\n".join(vocab) + "\n")
        tokenizer = transformers.BertTokenizerFast(vocab_file=str(path))
    assert (
        len(tokenizer) == len(vocab)
        and tokenizer.unk_token_id not in tokenizer(shapes.ALL_QUESTION_TEXTS[0])["input_ids"]
    )
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    return bert.BertModel(config).eval(), tokenizer


def _bert_states(model, tokenizer, text):
    ids = tokenizer([text], return_tensors="pt")
    was_training = model.training
    model.eval()  # no dropout
    with torch.no_grad():
        states = model(ids["input_ids"], attention_mask=ids["attention_mask"]).last_hidden_state[0]
    model.train(was_training)
    return states  # (T, hidden)


def test_bert_encoder_dedupes_caches_and_standardises(tiny_bert):
    model, tokenizer = tiny_bert
    texts = [shapes.ALL_QUESTION_TEXTS[i] for i in (0, 7, 0, 30, 7)]
    frozen = mm.BertQuestionEncoder(model, tokenizer, d_model=8, finetune=False)
    eps = frozen.sentence_norm.eps
    # evaluation: fixed statistics; one sentence at a time, straight through BERT, gives the same
    g = torch.Generator().manual_seed(0)
    for norm in (frozen.sentence_norm, frozen.token_norm):
        norm.running_mean.copy_(torch.randn(16, generator=g))
        norm.running_var.copy_(torch.rand(16, generator=g) + 0.5)
    enc = frozen.eval()(None, texts)
    assert enc.tokens.shape[:2] == enc.mask.shape and enc.vector.shape == (5, 8)
    sn, tn = frozen.sentence_norm, frozen.token_norm
    with torch.no_grad():
        for i, text in enumerate(texts):
            states = _bert_states(model, tokenizer, text)
            n = states.shape[0]
            tokens = frozen.proj((states - tn.running_mean) / (tn.running_var + eps).sqrt())
            torch.testing.assert_close(enc.tokens[i, :n], tokens, atol=1e-5, rtol=1e-5)
            assert enc.mask[i].sum() == n and (enc.tokens[i, n:] == frozen.proj.bias).all()
            vector = frozen.proj((states.mean(0) - sn.running_mean) / (sn.running_var + eps).sqrt())
            torch.testing.assert_close(enc.vector[i], vector, atol=1e-5, rtol=1e-5)
    assert len(frozen._cache) == 3
    assert not any(p.requires_grad for p in frozen.bert.parameters())
    # training: each feature standardised over the distinct sentences of the batch
    frozen.train()
    before = sn.running_mean.clone()
    enc = frozen(None, texts)
    unique = sorted(set(texts))
    with torch.no_grad():
        means = torch.stack([_bert_states(model, tokenizer, t).mean(0) for t in unique])
        standard = (means - means.mean(0)) / (means.var(0, unbiased=False) + eps).sqrt()
        for i, text in enumerate(texts):
            torch.testing.assert_close(enc.vector[i], frozen.proj(standard[unique.index(text)]), atol=1e-4, rtol=1e-4)
    assert not torch.equal(sn.running_mean, before)  # running statistics move
    # fine-tuned: same outputs from the same weights, BERT trained at lr * lr_scale
    tuned = mm.BertQuestionEncoder(model, tokenizer, d_model=8, finetune=True)
    tuned.load_state_dict(frozen.state_dict())
    torch.testing.assert_close(
        tuned.eval()(None, texts).vector, frozen.eval()(None, texts).vector, atol=1e-5, rtol=1e-5
    )
    groups = vqa_training._param_groups(mm.VQAModel(tuned, mm.make_fusion("sum", 10, 6, 8)), lr=1e-3)
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(1e-4)]
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="list of sentences"):
        frozen(None, None)


# ---------------------------------------------------------------- training and scoring


def test_question_set_and_accuracy_by_subtype(data):
    qs = vqa_training.QuestionSet.from_data(data, data.object_descriptions())
    assert len(qs) == 8 * 20
    assert qs.image_index[45].item() == 2 and qs.answers[45] == data.answers[2, 5]
    assert qs.texts(torch.tensor([45])) == [data.question_text[2][5]]
    acc = vqa_training.accuracy_by_subtype(qs.answers.clone(), qs)
    assert acc["overall"] == 1.0
    always_yes = torch.zeros_like(qs.answers)
    acc = vqa_training.accuracy_by_subtype(always_yes, qs)
    left = qs.subtypes == 1
    assert acc["left"] == pytest.approx((qs.answers[left] == 0).float().mean().item())
    assert acc["relational"] == 0.0
    with pytest.raises(ValueError, match="elements are given for 3 images"):
        vqa_training.QuestionSet.from_data(data, data.object_descriptions()[:3])


@pytest.mark.parametrize("name", mm.FUSIONS)
def test_training_fits_a_small_set(name):
    """The loop trains: every fusion fits the 80 questions of 4 images far above chance."""
    data = shapes.generate(4, seed=4)
    qs = vqa_training.QuestionSet.from_data(data, data.object_descriptions())
    torch.manual_seed(0)
    model = mm.VQAModel(mm.VectorQuestionEncoder(32), mm.make_fusion(name, 10, 6, 32))
    result = vqa_training.train_vqa(model, qs, qs, steps=150, batch_size=80, lr=3e-3, progress=False)
    assert result.losses[0] > 2.0 and result.losses[-1] < 0.5  # from ln(10) = 2.3 to a fit
    assert vqa_training.evaluate_vqa(model, qs)["overall"] > 0.75  # majority answers: about 0.4
    assert len(result.steps) == 10 and result.parameters == mm.count_parameters(model)


def _cross_attention_on_patches(data):
    torch.manual_seed(0)
    cnn = patch_cnn.PatchCNN(channels=8).eval()
    patches = patch_cnn.cache_patches(cnn, data.images).keep(6)
    model = mm.VQAModel(
        mm.VectorQuestionEncoder(16),
        mm.make_fusion("cross_attention", patch_cnn.D_DESCRIPTION, 6, 16, d_model=16, num_heads=2),
    ).eval()
    return model, patches


def test_attention_maps_are_distributions_over_the_kept_patches(data):
    model, patches = _cross_attention_on_patches(data)
    logits, maps = vqa_plots.attention_maps(model, patches.vectors[:3], data.questions[:3, 10])
    torch.testing.assert_close(logits, model(patches.vectors[:3], data.questions[:3, 10]))
    assert len(maps) == 2 and model.fusion.last_attention is None  # not kept after the call
    for w in maps:
        assert w.shape == (3, 6) and (w >= 0).all()
        torch.testing.assert_close(w.sum(-1), torch.ones(3))
        on_grid = patches.weights_on_grid(w, torch.arange(3))
        assert on_grid.shape == (3, 25)
        for i in range(3):
            torch.testing.assert_close(on_grid[i, patches.index[i]], w[i])
            others = torch.ones(25, dtype=torch.bool)
            others[patches.index[i]] = False
            assert (on_grid[i, others] == 0).all()
    with pytest.raises(TypeError, match="CrossAttentionFusion"):
        vqa_plots.attention_maps(
            mm.VQAModel(mm.VectorQuestionEncoder(16), mm.make_fusion("film", 12, 6, 16)),
            patches.vectors[:1],
            data.questions[:1, 0],
        )


def test_attention_widget_redraws_for_a_new_image_and_question(data):
    pytest.importorskip("ipywidgets")
    model, patches = _cross_attention_on_patches(data)
    box = vqa_plots.attention_widget(model, data, patches)
    first = bytes(box.picture.value)
    assert first.startswith(b"\x89PNG") and box.question.value == 10
    assert box.question.options[10][0].endswith(data.question_text[0][10])
    box.question.value = 13
    second = bytes(box.picture.value)
    assert second != first
    box.image.value = 3
    assert box.question.value == 10 and box.question.options[0][0].endswith(data.question_text[3][0])
    assert bytes(box.picture.value) not in (first, second)


# ---------------------------------------------------------------- shared embedding space


def test_contrastive_loss_by_hand():
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(4, 5, generator=g), dim=-1)
    txt = F.normalize(torch.randn(4, 5, generator=g), dim=-1)
    t = 0.1
    sims = [[sum(img[i, k].item() * txt[j, k].item() for k in range(5)) / t for j in range(4)] for i in range(4)]
    image_to_text = sum(-sims[i][i] + math.log(sum(math.exp(s) for s in sims[i])) for i in range(4)) / 4
    text_to_image = sum(-sims[j][j] + math.log(sum(math.exp(sims[i][j]) for i in range(4))) for j in range(4)) / 4
    ours = contrastive.contrastive_loss(img, txt, t).item()
    assert ours == pytest.approx((image_to_text + text_to_image) / 2, rel=1e-5)
    logits = img @ txt.T / t
    labels = torch.arange(4)
    reference = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    assert ours == pytest.approx(reference.item(), rel=1e-6)
    # matched pairs at a low temperature: almost no loss
    assert contrastive.contrastive_loss(img, img, 0.01).item() < 1e-3
    with pytest.raises(ValueError, match="one text per image"):
        contrastive.contrastive_loss(img, txt[:3], t)


def test_recall_at_k():
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.2, 0.1], [0.0, 0.5, 0.4]])
    # row 0: right partner first; row 1: second; row 2: second
    assert contrastive.recall_at_k(sim, 1) == pytest.approx(1 / 3)
    assert contrastive.recall_at_k(sim, 2) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="square"):
        contrastive.recall_at_k(sim[:2], 1)


def test_scene_tokens_and_contrastive_model(data):
    texts = [data.scene_text(i) for i in range(4)]
    ids = contrastive.tokenize_scenes(texts)
    vocab = contrastive.scene_vocabulary()
    assert ids.shape == (4, 30) and " ".join(vocab[i] for i in ids[0]).replace(" .", ".") == texts[0]
    model = contrastive.ContrastiveModel(d_image=10, n_elements=25, d_embed=8)
    loss = model(torch.randn(4, 25, 10), ids)
    assert loss.item() > 0 and model.temperature.item() == pytest.approx(0.07)
    sim = contrastive.similarity_matrix(model, torch.randn(4, 25, 10), ids)
    assert sim.shape == (4, 4) and sim.abs().max() <= 1 + 1e-5
    with pytest.raises(ValueError, match="not in the scene vocabulary"):
        contrastive.tokenize_scenes(["purple square top left."])


def _accuracy_by_hand(model, qs, rows):
    """Overall accuracy on ``rows``, computed with the model's forward directly (no predict/evaluate)."""
    with torch.no_grad():
        logits = model(qs.elements[qs.image_index[rows]], qs.vectors[rows])
    return (logits.argmax(-1) == qs.answers[rows]).float().mean().item()


def test_train_vqa_curve_is_on_validation_and_keep_best_returns_the_best_point():
    """The curve is measured on the validation questions given; keep_best returns the model of the
    evaluation point with the highest validation accuracy (the earliest on a tie), not the last one."""
    train_data, val_data = shapes.generate(6, seed=11), shapes.generate(5, seed=12)
    train = vqa_training.QuestionSet.from_data(train_data, train_data.object_descriptions())
    validation = vqa_training.QuestionSet.from_data(val_data, val_data.object_descriptions())
    probe = torch.arange(60)  # eval_questions=60: the first 60 questions
    for keep_best in (False, True):
        torch.manual_seed(0)
        model = mm.VQAModel(mm.VectorQuestionEncoder(16), mm.make_fusion("concat", 10, 6, 16))
        result = vqa_training.train_vqa(
            model,
            train,
            validation,
            steps=60,
            batch_size=32,
            lr=1e-2,
            eval_every=6,
            eval_questions=60,
            progress=False,
            keep_best=keep_best,
        )
        overall = [a["overall"] for a in result.accuracy]
        assert len(overall) == 10 and result.steps == list(range(6, 61, 6))
        assert result.best_step == result.steps[overall.index(max(overall))]
        returned = _accuracy_by_hand(model, validation, probe)
        if keep_best:
            assert returned == pytest.approx(max(overall))
        else:
            assert returned == pytest.approx(overall[-1])
    assert len(set(overall)) > 1  # the curve moves, so the choice means something


def test_train_vqa_keep_best_restores_an_earlier_state():
    """When the best validation point is not the last step, keep_best gives back exactly that state."""
    data, val_data = shapes.generate(4, seed=4), shapes.generate(3, seed=5)
    train = vqa_training.QuestionSet.from_data(data, data.object_descriptions())
    validation = vqa_training.QuestionSet.from_data(val_data, val_data.object_descriptions())
    torch.manual_seed(0)
    model = mm.VQAModel(mm.VectorQuestionEncoder(16), mm.make_fusion("concat", 10, 6, 16))
    snapshots = {}
    original = vqa_training.evaluate_vqa.__globals__["evaluate_vqa"]

    def recording(m, qs, batch_size=500):
        snapshots[len(snapshots) + 1] = {k: v.clone() for k, v in m.state_dict().items()}
        return original(m, qs, batch_size)

    vqa_training.evaluate_vqa.__globals__["evaluate_vqa"] = recording
    try:
        # lr 0.3 overfits 80 questions and wanders: validation accuracy does not peak at the end
        result = vqa_training.train_vqa(
            model, train, validation, steps=40, batch_size=80, lr=0.3, eval_every=4, progress=False, keep_best=True
        )
    finally:
        vqa_training.evaluate_vqa.__globals__["evaluate_vqa"] = original
    assert result.best_step < 40  # so the state returned is an earlier one
    best = result.steps.index(result.best_step) + 1
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, snapshots[best][key])


@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_train_vqa_refuses_bad_steps(steps):
    data = shapes.generate(2, seed=1)
    qs = vqa_training.QuestionSet.from_data(data, data.object_descriptions())
    model = mm.VQAModel(mm.VectorQuestionEncoder(8), mm.make_fusion("concat", 10, 6, 8))
    with pytest.raises(ValueError, match="steps must be a positive int"):
        vqa_training.train_vqa(model, qs, qs, steps=steps, progress=False)


def test_attention_overlay_outlines_patches_and_leaves_the_colours_alone(data):
    """One outline per patch with weight, darker for heavier weights; the only image drawn is the
    picture itself, pixel for pixel (no heat map tinting the colours the questions ask about)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    weights = torch.zeros(25)
    weights[[0, 7, 24]] = torch.tensor([0.2, 0.5, 0.3])
    fig, ax = plt.subplots()
    mapping = vqa_plots.plot_attention_on_image(ax, data.images[0], weights, vmax=1.0)
    outlines = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(outlines) == 3 and len(ax.images) == 1
    assert (ax.images[0].get_array() == data.images[0].permute(1, 2, 0).numpy()).all()
    alphas = sorted(round(p.get_edgecolor()[3], 6) for p in outlines)
    assert alphas == [0.2, 0.3, 0.5] and mapping.norm.vmax == 1.0
    corners = sorted(p.get_xy() for p in outlines)
    assert corners[0] == (0.5, 0.5)  # patch 0: the top-left 15x15 pixels, inset by one
    with pytest.raises(ValueError, match="one value per patch"):
        vqa_plots.plot_attention_on_image(ax, data.images[0], torch.ones(6))
    plt.close(fig)


@pytest.mark.parametrize("fast", [True, False])
def test_step_budgets_by_mode_and_override(fast):
    from course_utils import config

    config.setup(fast=fast, seed=0, device="cpu")
    try:
        budgets = vqa_training.step_budgets()
        assert set(budgets) == {"objects", "patches", "bert", "channels"}
        assert set(budgets["objects"]) == set(mm.FUSIONS) == set(budgets["patches"])
        assert set(budgets["bert"]) == {"BERT frozen", "BERT fine-tuned"}
        assert budgets["objects"]["concat"] == (150 if fast else 2000)
        merged = vqa_training.step_budgets({"objects": {"concat": 7, "new_model": 9}, "bert": {"BERT frozen": 3}})
        assert merged["objects"]["concat"] == 7 and merged["objects"]["new_model"] == 9
        assert merged["bert"] == {**budgets["bert"], "BERT frozen": 3}
        assert merged["objects"]["film"] == budgets["objects"]["film"] and merged["patches"] == budgets["patches"]
        assert vqa_training.step_budgets()["objects"]["concat"] == budgets["objects"]["concat"]  # defaults untouched
        everything = vqa_training.step_budgets(5)
        assert set(everything["patches"].values()) == set(everything["bert"].values()) == {5}
        assert everything["channels"] == 5
        with pytest.raises(TypeError, match="papermill"):
            vqa_training.step_budgets("100")
        with pytest.raises(ValueError, match="unknown key 'object'"):
            vqa_training.step_budgets({"object": {"concat": 1}})
        with pytest.raises(TypeError, match=r"steps\['bert'\] must be a dict"):
            vqa_training.step_budgets({"bert": 1})
        with pytest.raises(TypeError, match=r"steps\['channels'\] must be an int"):
            vqa_training.step_budgets({"channels": {"x": 1}})
    finally:
        config.setup(fast=True, seed=0)
