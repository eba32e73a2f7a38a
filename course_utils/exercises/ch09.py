"""Chapter 09 exercises: predict a single-modality floor and a Chinese token count, fix a late
fusion that averages the wrong thing, write a gated unit's extreme, and explain why late fusion
cannot read a wish and why a blank image confuses a model trained without modality dropout.

Every check compares with an independent computation (the floor from the slice shares by hand,
characters counted, explicit probabilities) and names the misconception behind each typical
mistake; the tests prove each one is rejected with its message.
"""

from __future__ import annotations

import torch

from . import Mistake, choice, exercise, expect_same, given_function, numeric

# ----------------------------------------------------------------------------- 09.text_floor


def _text_floor() -> float:
    # text-only is right on every "text decides" post and, guessing, on half of the others
    return 0.5 * 1.0 + 0.25 * 0.5 + 0.25 * 0.5


numeric(
    "09.text_floor",
    "Predict: the text-only floor with other slice shares",
    "Suppose the generator drew half of its posts from 'text decides' and a quarter each from 'image decides' "
    "and 'both needed' (the rules unchanged). What is the best accuracy ANY model that reads only the text "
    "can reach, over all posts? (A number between 0 and 1.)",
    reference=_text_floor,
    tolerance=0.005,
    mistakes=[
        Mistake(0.5, "0.5 is a coin: the text alone decides half of the posts, so it does better than that"),
        Mistake(
            1.0,
            "1.0 would need the text to tell the label on every slice; on 'image decides' and "
            "'both needed' the label is independent of the text",
        ),
        Mistake(
            0.5 + 0.25 * 0.5,
            "you counted one of the two other slices as a coin flip and the other as "
            "always wrong: on both, a text-only model guesses right half the time",
        ),
    ],
    hint="split the posts by slice: on each, how often can the text alone be right?",
    section="2. Posts, slices and floors",
    minutes=3,
)

# ----------------------------------------------------------------------------- 09.zh_tokens


def _zh_tokens() -> float:
    return len("太好了，又下雨了") + 2  # one token per character (the comma too), plus [CLS] and [SEP]


numeric(
    "09.zh_tokens",
    "Predict: how many tokens is a Chinese sentence?",
    "How many ids does the chapter's tokenizer return for '太好了，又下雨了' (input_ids, with the special tokens)?",
    reference=_zh_tokens,
    tolerance=0.0,
    mistakes=[
        Mistake(8, "the characters are right, but BERT's tokenizer adds [CLS] in front and [SEP] at the end"),
        Mistake(9, "the full-width comma '，' is punctuation, and punctuation is a token of its own"),
        Mistake(6, "BERT does not split Chinese into words: every CJK character is a token"),
        Mistake(4, "BERT does not split Chinese into words: every CJK character is a token"),
    ],
    hint="BERT's pre-tokenizer puts spaces around every CJK character and every punctuation mark",
    section="1. Chinese in a BERT tokenizer",
    minutes=2,
)

# ----------------------------------------------------------------------------- 09.late_fusion

LATE_GIVEN = """
def late_fusion(text_logits, image_logits):
    return ((text_logits + image_logits) / 2).softmax(-1)
"""


def _late_reference(text_logits: torch.Tensor, image_logits: torch.Tensor) -> torch.Tensor:
    return (text_logits.softmax(-1) + image_logits.softmax(-1)) / 2


def _late_by_exp(text_logits: torch.Tensor, image_logits: torch.Tensor) -> torch.Tensor:
    def probs(z):
        e = torch.exp(z.double() - z.double().max(-1, keepdim=True).values)
        return e / e.sum(-1, keepdim=True)

    return ((probs(text_logits) + probs(image_logits)) / 2).float()


def _late_cases():
    g = torch.Generator().manual_seed(9)
    cases = [(torch.randn(5, 2, generator=g) * 3, torch.randn(5, 2, generator=g) * 3) for _ in range(3)]
    cases.append((torch.tensor([[8.0, -8.0]]), torch.tensor([[0.0, 0.0]])))  # one sure, one unsure
    cases.append((torch.tensor([[30.0, 0.0]]), torch.tensor([[0.0, 1.0]])))  # a very sure text
    return cases


def _late_mistakes():
    return [
        Mistake(
            given_function(LATE_GIVEN, "late_fusion", "09.late_fusion"),
            "averaging LOGITS lets a very sure model drown the other (30 vs 1 stays ~1.0); late fusion averages "
            "the PROBABILITIES: softmax each model first, then take the mean",
        ),
        Mistake(
            lambda t, i: (t.log_softmax(-1) + i.log_softmax(-1)) / 2,
            "that is the mean of log-probabilities (a geometric mean, not normalised): average the probabilities",
        ),
        Mistake(
            lambda t, i: t.softmax(-1) + i.softmax(-1), "the sum of two probability vectors sums to 2: divide by 2"
        ),
    ]


@exercise(
    "09.late_fusion",
    "Debug: late fusion",
    "late_fusion(text_logits, image_logits) should return the late fusion of two classifiers given their "
    "(B, 2) logits: the average of the two models' PROBABILITIES, as section 3's LateFusion computes. The "
    "given version averages something else. Fix it.",
    reference=_late_reference,
    mistakes=_late_mistakes,
    kind="debug",
    given=LATE_GIVEN,
    section="3. Six models",
    minutes=4,
)
def check_late_fusion(fn) -> None:
    expect_same(
        fn,
        _late_by_exp,
        cases=_late_cases(),
        what="late_fusion(text_logits, image_logits)",
        atol=1e-5,
        hint="(softmax(text_logits) + softmax(image_logits)) / 2",
    )


# ----------------------------------------------------------------------------- 09.gate_text_only


def _gate_reference(t: torch.Tensor, w_t: torch.Tensor, b_t: torch.Tensor) -> torch.Tensor:
    return torch.tanh(t @ w_t.T + b_t)


def _gate_by_loops(t, w_t, b_t):
    out = torch.empty(t.shape[0], w_t.shape[0])
    for b in range(t.shape[0]):
        for j in range(w_t.shape[0]):
            out[b, j] = torch.tanh(sum(t[b, k] * w_t[j, k] for k in range(t.shape[1])) + b_t[j])
    return out


def _gate_cases():
    g = torch.Generator().manual_seed(4)
    return [
        (torch.randn(3, 5, generator=g), torch.randn(4, 5, generator=g), torch.randn(4, generator=g)),
        (torch.randn(1, 2, generator=g), torch.randn(3, 2, generator=g), torch.zeros(3)),
    ]


@exercise(
    "09.gate_text_only",
    "Modify: a gate that is always open for the text",
    "The gated unit computes h = z * tanh(W_t t + b_t) + (1 - z) * tanh(W_i i + b_i) with z = sigmoid(W_z [t; i] + b_z). "
    "Write gate_text_only(t, w_t, b_t) returning h when the gate's weights are zero and its bias is +infinity "
    "(so z = 1 for every feature): t is (B, d_t), w_t (d, d_t), b_t (d,).",
    reference=_gate_reference,
    mistakes=lambda: [
        Mistake(lambda t, w, b: t @ w.T + b, "the text branch goes through tanh before the gate mixes it"),
        Mistake(
            lambda t, w, b: torch.tanh(t @ w.T + b) / 2,
            "z = sigmoid(+inf) = 1, not 1/2: the image branch gets weight 0 and the text weight 1",
        ),
        Mistake(lambda t, w, b: torch.tanh(t @ w + b), "W_t is (d, d_t): multiply by its transpose"),
    ],
    kind="modify",
    section="3. Six models",
    minutes=4,
)
def check_gate_text_only(fn) -> None:
    expect_same(fn, _gate_by_loops, cases=_gate_cases(), what="gate_text_only(t, w_t, b_t)", atol=1e-5)


# ----------------------------------------------------------------------------- conceptual

choice(
    "09.why_late_fails",
    "Why does late fusion stay near 50% on 'both needed'?",
    "On 'both needed' (a wish for sun or rain, a picture of sun or rain) late fusion is near a coin flip while "
    "cross-attention is near 100%. Why?",
    options={
        "a": "the two single-modality models were trained too briefly",
        "b": "each single-modality model is at 50% on this slice whatever it sees, and averaging two answers "
        "that each ignore the other modality cannot express 'the picture matches the wish'",
        "c": "averaging probabilities loses information that averaging logits would keep",
        "d": "the wish sentences are longer than the model's positions",
    },
    correct="b",
    why="the label is an interaction (wish == weather, an XOR): P(positive | text) = P(positive | image) = 1/2 on "
    "this slice, so any function of one modality, and any average of two such functions, is a coin flip there",
    why_not={
        "a": "even the best possible text-only and image-only models (the floors) are at 0.5 on this slice",
        "c": "averaging logits is also a combination of two one-modality answers: it cannot express the XOR either",
        "d": "the wishes are under 12 tokens; a too-long text raises an error, it does not lower accuracy",
    },
    section="4. The comparison",
    minutes=3,
)

choice(
    "09.blank_image",
    "A missing picture",
    "A cross-attention model trained WITHOUT modality dropout gets 'this is not great' with the blank grey image "
    "instead of a neutral object. What is the most likely outcome?",
    options={
        "a": "it still answers from the text as well as before, since the text alone decides here",
        "b": "its answers can change: a flat grey picture never occurred in training, so the patches the text "
        "attends to are out of distribution; modality dropout shows it such pictures and fixes that",
        "c": "it raises an error, because the image is blank",
    },
    correct="b",
    why="the model only ever saw images from the generator; nothing made its text pathway robust to an unseen "
    "picture. Training with blank images (and empty texts) teaches it what 'missing' looks like",
    why_not={
        "a": "the text decides the LABEL, but the model's computation still mixes in the image features; an "
        "unseen image can move them (section 5 measures by how much)",
        "c": "a blank (3, 48, 48) uint8 image is valid input: no check rejects it",
    },
    section="5. A missing modality",
    minutes=3,
)
