"""Chapter 07's caption widget: its callbacks, without a browser; the attention it shows is the
attention generation used (causal, so one teacher-forced pass equals the step-by-step one)."""

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from course_utils.vision import captioning as K
from course_utils.vision import captioning_viz as viz
from course_utils.vision import captions as C
from course_utils.vision import shapes

TOK = C.CaptionTokenizer()


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = K.Captioner(
        K.CaptionerConfig(
            vocab_size=len(TOK), d_image=10, d_model=32, num_heads=4, num_layers=2, d_ff=64, max_positions=24
        )
    ).eval()
    with torch.no_grad():  # image-dependent, never-ending random captions
        for block in model.blocks:
            block.cross_attn.v_proj.weight.mul_(10)
            block.cross_attn.out_proj.weight.mul_(10)
        model.token_embedding.weight[TOK.EOS].zero_()
    data = shapes.generate(4, seed=1)
    features = torch.randn(4, 25, 10)
    return model, data, features


def test_trace_attention_equals_the_generation_steps(setup):
    model, _data, features = setup
    trace = viz.caption_with_attention(model, features[1], TOK)
    n = len(trace.words)
    assert trace.attention.shape == (n, 2, 25)
    assert torch.allclose(trace.attention.sum(-1), torch.ones(n, 2), atol=1e-5)
    # step by step through the cache, keeping each step's cross-attention
    bound = model.bind(features[1:2])
    ids = torch.tensor([[TOK.BOS] + [TOK.stoi[w] for w in trace.words]])
    cache = None
    for t in range(n):
        _, cache, attn = model(
            ids[:, t : t + 1],
            past_key_values=cache if t else None,
            memory=bound.memory if t == 0 else None,
            use_cache=True,
            output_attentions=True,
        )
        stepwise = torch.stack([a[0, :, 0].mean(0) for a in attn])  # (layers, 25)
        assert torch.allclose(stepwise, trace.attention[t], atol=1e-5)
    assert trace.caption == C.join_words([w for w in trace.words if w != "[EOS]"])


def test_widget_callbacks(setup):
    model, data, features = setup
    box = viz.caption_widget(model, data, features, TOK)
    first_caption = box.state["trace"].caption
    first_picture = box.picture.value
    assert box.word.max == len(box.state["trace"].words) - 1 and box.word.value == 0
    assert first_picture and "<b" in box.text.value and "scene check" in box.verdict.value
    box.word.value = min(3, box.word.max)  # move along the words: a new picture, more words shown
    assert box.picture.value != first_picture
    assert box.text.value.count(" ") > 0
    box.image.value = 2  # another image: a new caption, the word slider restarts
    assert box.word.value == 0
    assert box.state["trace"].caption != first_caption
    expected = viz.caption_with_attention(model, features[2], TOK).caption
    assert box.state["trace"].caption == expected


def test_outlines_not_tints(setup):
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    _, data, _ = setup
    fig, ax = plt.subplots()
    weights = torch.zeros(25)
    weights[[3, 7]] = torch.tensor([0.7, 0.3])
    viz.attention_on_image(ax, data.images[0], weights)
    boxes = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(boxes) == 2 and not any(b.get_fill() for b in boxes)
    assert len(ax.images) == 1  # the image itself, no heat-map layer over it
    widths = sorted(b.get_linewidth() for b in boxes)
    assert widths[0] < widths[1]
    plt.close(fig)
