"""What came after relation networks: vision-language Transformers on Sort-of-CLEVR (chapter 05).

Three models, each on the image elements of chapter 05 (object descriptions or cached patches):

* :class:`SingleStreamFusion` -- **single-stream** (VisualBERT, Li et al. 2019): one BERT encoder,
  built from the course's own BERT layers (:mod:`course_utils.text.bert`), reads the sequence
  [CLS; question tokens; image elements], each projected to the hidden size, with segment
  (token type) ids 0 for text and 1 for image; the answer comes from [CLS]. The encoder part
  (:meth:`SingleStreamEncoder.encode`) computes what ``transformers.BertModel`` computes from
  ``inputs_embeds``, ``token_type_ids`` and ``position_ids``.
* :class:`CoAttentionFusion` -- **two-way co-attention** (ViLBERT, Lu et al. 2019; LXMERT, Tan
  and Bansal 2019): two streams; in each co-layer the text attends to the image and the image
  to the text (:class:`CoAttentionLayer`), then each stream attends to itself.
* :class:`ImageTextMatcher` -- **image-text matching**, the multimodal counterpart of BERT's
  next-sentence prediction: does this scene description belong to this image? A single-stream
  encoder over [CLS; description words; image elements], two logits from [CLS].
  :func:`matching_batch` makes the pairs (the true description, another image's, or hard
  negatives: two colours swapped, one shape flipped, one object moved), :func:`train_matching`
  trains it, :func:`matching_accuracy` scores held-out images (chance: 50%).

Both fusions follow :class:`course_utils.vision.multimodal.Fusion`, so :class:`~course_utils.vision.multimodal.VQAModel`
and :func:`~course_utils.vision.vqa_training.train_vqa` train them unchanged. Zero-shot retrieval with a
CLIP-style embedding is in :mod:`course_utils.vision.vl_retrieval`.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from course_utils.vision import multimodal as mm
from course_utils.vision import contrastive
from course_utils.vision import shapes
from course_utils import training
from course_utils.layers.attention import MultiHeadAttention
from course_utils.text.bert import BertModel
from course_utils.layers.transformer import TransformerEncoderLayer
from course_utils.vision.vqa_training import lr_factor

TEXT, IMAGE = 0, 1  # segment (token type) ids, as BERT's sentence A and B
WORDS_PER_OBJECT = 5  # "red circle top left ." in a scene description


def bert_config(
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    intermediate: int | None = None,
    dropout: float = 0.0,
    max_positions: int = 64,
    init_std: float = 0.02,
):
    """A small ``transformers.BertConfig`` for an encoder whose inputs are embeddings already:
    one (unused, all-zero) word embedding, two segments (text, image); ``init_std`` is BERT's
    ``initializer_range``, the standard deviation of the starting weights."""
    from transformers import BertConfig

    for name, value in (("hidden", hidden), ("layers", layers), ("heads", heads), ("max_positions", max_positions)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if hidden % heads:
        raise ValueError(f"hidden={hidden} is not divisible by heads={heads}: each head gets hidden / heads features")
    return BertConfig(
        vocab_size=1,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate or 4 * hidden,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        max_position_embeddings=max_positions,
        type_vocab_size=2,
        pad_token_id=0,
        initializer_range=init_std,
    )


def _check_tokens(name: str, x, mask=None) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(
            f"{name} must be a (batch, length, features) tensor, got "
            f"{tuple(getattr(x, 'shape', ())) or type(x).__name__}"
        )
    if mask is not None and (not isinstance(mask, torch.Tensor) or mask.shape != x.shape[:2]):
        raise ValueError(
            f"{name} mask must be (batch, length) = {tuple(x.shape[:2])}, True at real entries; "
            f"got {tuple(getattr(mask, 'shape', ())) or type(mask).__name__}"
        )


def _check_fusion_inputs(fusion: mm.Fusion, elements, question) -> None:
    """The base checks, and question tokens as wide as the question vector (the tokens are read here)."""
    mm.Fusion.check(fusion, elements, question)
    if question.tokens.shape[-1] != fusion.d_question or question.mask.shape != question.tokens.shape[:2]:
        raise ValueError(
            f"question tokens {tuple(question.tokens.shape)} and mask {tuple(question.mask.shape)} must "
            f"be (batch, tokens, {fusion.d_question}) and (batch, tokens)"
        )


# ============================================================================ single stream


class SingleStreamEncoder(nn.Module):
    """One BERT over [CLS; text; image]: the course's :class:`~course_utils.text.bert.BertModel` layers
    (its position and segment embeddings, LayerNorm, post-LN encoder layers and pooler), fed
    embeddings instead of word ids.

    Positions: [CLS] 0, text tokens 1..T, and every image element 0, as VisualBERT does when no
    word-region alignment is given: the elements are a set (their coordinates are in their
    features), so the encoder's output over them does not depend on their order.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=True)
        self.cls = nn.Parameter(torch.randn(config.hidden_size) * config.initializer_range)

    def embed_inputs(
        self, text: torch.Tensor, text_mask: torch.Tensor, image: torch.Tensor, image_mask: torch.Tensor | None = None
    ) -> dict:
        """The sequence the encoder reads, as transformers' BertModel takes it: ``inputs_embeds``
        (B, 1+T+N, hidden), ``token_type_ids``, ``position_ids`` and ``attention_mask`` (1 = real)."""
        _check_tokens("text", text, text_mask)
        _check_tokens("image", image, image_mask)
        hidden = self.config.hidden_size
        if text.shape[-1] != hidden or image.shape[-1] != hidden or text.shape[0] != image.shape[0]:
            raise ValueError(
                f"text {tuple(text.shape)} and image {tuple(image.shape)} must share the batch and "
                f"have {hidden} features each (project them to the hidden size first)"
            )
        if text.shape[1] + 1 > self.config.max_position_embeddings:
            raise ValueError(
                f"{text.shape[1]} text tokens + [CLS] exceed the {self.config.max_position_embeddings} "
                "positions: build the config with a larger max_positions"
            )
        b, t, n = text.shape[0], text.shape[1], image.shape[1]
        device = text.device
        image_mask = torch.ones(b, n, dtype=torch.bool, device=device) if image_mask is None else image_mask
        embeds = torch.cat([self.cls.expand(b, 1, hidden), text, image], dim=1)
        types = torch.cat([torch.full((b, 1 + t), TEXT, device=device), torch.full((b, n), IMAGE, device=device)], 1)
        positions = torch.cat([torch.arange(1 + t, device=device), torch.zeros(n, dtype=torch.long, device=device)])
        mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=device), text_mask.bool(), image_mask.bool()], 1)
        return {
            "inputs_embeds": embeds,
            "token_type_ids": types,
            "position_ids": positions.expand(b, -1),
            "attention_mask": mask.long(),
        }

    def encode(self, inputs_embeds, token_type_ids, position_ids, attention_mask):
        """(hidden states (B, L, hidden), pooled [CLS] (B, hidden)) -- what
        ``transformers.BertModel(inputs_embeds=..., token_type_ids=..., position_ids=..., attention_mask=...)``
        returns as ``last_hidden_state`` and ``pooler_output`` (the tests compare them)."""
        emb = self.bert.embeddings
        x = inputs_embeds + emb.token_type_embeddings(token_type_ids) + emb.position_embeddings(position_ids)
        x = emb.dropout(emb.LayerNorm(x))
        keep = attention_mask.bool()
        keep = None if bool(keep.all()) else keep  # no padding: the fused kernel may run
        for layer in self.bert.encoder.layers:
            x = layer(x, key_padding_mask=keep)
        return x, self.bert.pooler(x)

    def forward(self, text, text_mask, image, image_mask=None):
        return self.encode(**self.embed_inputs(text, text_mask, image, image_mask))


class SingleStreamFusion(mm.Fusion):
    """VisualBERT-style fusion: the question's tokens (one token for the bit vector, BERT's token
    states for a sentence) and the image elements, each through a Linear to the hidden size, read
    together by one :class:`SingleStreamEncoder`; an MLP on the pooled [CLS] gives the answer.
    Every layer lets every token attend to every other, words and image elements alike."""

    def __init__(
        self,
        d_image: int,
        n_elements: int,
        d_question: int,
        hidden: int = 64,
        layers: int = 2,
        heads: int = 4,
        dropout: float = 0.0,
        init_std: float = 0.02,
    ):
        super().__init__(d_image, n_elements, d_question)
        self.text_in = nn.Linear(d_question, hidden)
        self.image_in = nn.Linear(d_image, hidden)
        self.encoder = SingleStreamEncoder(bert_config(hidden, layers, heads, dropout=dropout, init_std=init_std))
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, mm.N_ANSWERS))

    def check(self, elements, question) -> None:
        _check_fusion_inputs(self, elements, question)

    def forward(self, elements, question):
        self.check(elements, question)
        _, pooled = self.encoder(self.text_in(question.tokens), question.mask, self.image_in(elements))
        return self.head(pooled)


# ============================================================================ two streams


class CoAttentionLayer(nn.Module):
    """One co-layer of two streams (pre-LN, as LXMERT's cross-modality layer in order):

    1. both directions at once, from the layer's inputs: text += MHA(query text, keys/values image)
       and image += MHA(query image, keys/values text) -- :meth:`cross`;
    2. each stream attends to itself and runs its feed-forward block (a pre-LN
       :class:`~course_utils.layers.transformer.TransformerEncoderLayer` per stream).

    Masks are True at real entries (the course's convention; torch's MHA uses the opposite).
    With ``keep_attention``, ``last_attention`` holds the two (B, heads, queries, keys) maps.
    """

    def __init__(self, d_model: int = 64, num_heads: int = 4, d_ff: int | None = None):
        super().__init__()
        self.norm_text, self.norm_image = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.text_from_image = MultiHeadAttention(d_model, num_heads)  # text queries, image keys/values
        self.image_from_text = MultiHeadAttention(d_model, num_heads)  # image queries, text keys/values
        self.text_self = TransformerEncoderLayer(d_model, num_heads, d_ff or 2 * d_model, norm_first=True)
        self.image_self = TransformerEncoderLayer(d_model, num_heads, d_ff or 2 * d_model, norm_first=True)
        self.keep_attention = False
        self.last_attention = None

    def cross(self, text, text_mask, image, image_mask=None):
        """(what the text reads from the image (B, T, d), what the image reads from the text (B, N, d)),
        both computed from the same normalised inputs; no residual yet."""
        t, i = self.norm_text(text), self.norm_image(image)
        keep = self.keep_attention
        to_text, w_text = self.text_from_image(t, i, i, key_padding_mask=image_mask, need_weights=keep)
        to_image, w_image = self.image_from_text(i, t, t, key_padding_mask=text_mask, need_weights=keep)
        self.last_attention = (w_text, w_image) if keep else None
        return to_text, to_image

    def forward(self, text, text_mask, image, image_mask=None):
        to_text, to_image = self.cross(text, text_mask, image, image_mask)
        text, image = text + to_text, image + to_image
        return (self.text_self(text, key_padding_mask=text_mask), self.image_self(image, key_padding_mask=image_mask))


class CoAttentionFusion(mm.Fusion):
    """ViLBERT/LXMERT-style fusion: question tokens and image elements, each through a Linear to
    ``d_model``, go through ``layers`` :class:`CoAttentionLayer` (one by default: on a CPU budget a
    second did not pay for its cost on Sort-of-CLEVR); each stream is then normalised and
    mean-pooled over its real entries, and an MLP on the two pooled vectors gives the answer
    (ViLBERT multiplies them element-wise; concatenating keeps both for the MLP)."""

    def __init__(
        self, d_image: int, n_elements: int, d_question: int, d_model: int = 64, layers: int = 1, heads: int = 4
    ):
        super().__init__(d_image, n_elements, d_question)
        self.text_in = nn.Linear(d_question, d_model)
        self.image_in = nn.Linear(d_image, d_model)
        self.layers = nn.ModuleList(CoAttentionLayer(d_model, heads) for _ in range(layers))
        self.norm_text, self.norm_image = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.head = nn.Sequential(nn.Linear(2 * d_model, d_model), nn.ReLU(), nn.Linear(d_model, mm.N_ANSWERS))

    def check(self, elements, question) -> None:
        _check_fusion_inputs(self, elements, question)

    def forward(self, elements, question):
        self.check(elements, question)
        text, image, real = self.text_in(question.tokens), self.image_in(elements), question.mask
        for layer in self.layers:
            text, image = layer(text, real, image)
        weight = real[..., None].to(text.dtype)
        pooled_text = (self.norm_text(text) * weight).sum(1) / weight.sum(1)
        return self.head(torch.cat([pooled_text, self.norm_image(image).mean(1)], dim=-1))


FUSIONS = ("single_stream", "co_attention")


def make_fusion(name: str, d_image: int, n_elements: int, d_question: int, **kwargs) -> mm.Fusion:
    """``make_fusion("single_stream" | "co_attention", d_image, n_elements, d_question)``."""
    if name == "single_stream":
        return SingleStreamFusion(d_image, n_elements, d_question, **kwargs)
    if name == "co_attention":
        return CoAttentionFusion(d_image, n_elements, d_question, **kwargs)
    raise ValueError(f"unknown fusion {name!r}; choose one of {FUSIONS} (the others are in multimodal.make_fusion)")


# ============================================================================ scene descriptions as ids

VOCAB = {w: i for i, w in enumerate(contrastive.scene_vocabulary())}  # the words of SortOfClevr.scene_text
COLOR_IDS = torch.tensor([VOCAB[c] for c in shapes.COLORS])
SHAPE_IDS = torch.tensor([VOCAB[s] for s in shapes.SHAPES])
VERTICAL_IDS = torch.tensor([VOCAB[w] for w in shapes.VERTICAL])
HORIZONTAL_IDS = torch.tensor([VOCAB[w] for w in shapes.HORIZONTAL])
N_REGIONS = len(shapes.VERTICAL) * len(shapes.HORIZONTAL)


def regions(data: shapes.SortOfClevr) -> torch.Tensor:
    """(N, 6) long: the 3x3-grid region of each colour's object, ``row * 3 + column``, the thirds
    :meth:`SortOfClevr.scene_text` names (top/middle/bottom, left/centre/right)."""
    third = (data.centers * 3 // shapes.IMAGE_SIZE).clamp(max=2)
    return third[..., 1] * 3 + third[..., 0]


def object_words(colour: torch.Tensor, shape: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """(..., 5) word ids "colour shape vertical horizontal ." of objects given as index tensors."""
    full_stop = torch.full_like(colour, VOCAB["."])
    return torch.stack(
        [COLOR_IDS[colour], SHAPE_IDS[shape], VERTICAL_IDS[region // 3], HORIZONTAL_IDS[region % 3], full_stop], dim=-1
    )


def decode(ids: torch.Tensor) -> str:
    """One row of word ids back to text (padding dropped): the inverse of ``tokenize_scenes``."""
    words = contrastive.scene_vocabulary()
    return " ".join(words[i] for i in ids.tolist() if i).replace(" .", ".")


# ============================================================================ image-text matching

NEGATIVES = ("other image", "colours swapped", "shape flipped", "object moved")


def matching_batch(
    data: shapes.SortOfClevr, rows: torch.Tensor, kinds: torch.Tensor, g: torch.Generator, objects: int = 6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Descriptions of ``objects`` objects (in a random order) for the images ``rows``: kind -1
    describes the image itself; kind k >= 0 makes the negative :data:`NEGATIVES`[k]:

    0. objects of another image;
    1. two described objects that differ in shape or region get each other's colour words (if all
       the described objects share shape and region, the swap changes nothing and the text stays true);
    2. one described object's shape flipped;
    3. one described object moved to another of the 9 regions.

    Returns (ids (B, 5 * objects), true (B,) bool: every object the text describes is in the image,
    read from the scene -- a kind-0 text naming few objects can happen to be true).
    """
    if isinstance(objects, bool) or not isinstance(objects, int) or not 1 <= objects <= shapes.N_OBJECTS:
        raise ValueError(f"objects must be an integer in 1..{shapes.N_OBJECTS}, got {objects!r}")
    if objects == 1 and bool((kinds == 1).any()):
        raise ValueError("a colour swap needs two described objects: use objects >= 2 or leave kind 1 out")
    if len(data) < 2 and bool((kinds == 0).any()):
        raise ValueError("'other image' negatives need at least two images")
    if kinds.shape != rows.shape or bool(((kinds < -1) | (kinds >= len(NEGATIVES))).any()):
        raise ValueError(f"kinds must hold one of -1..{len(NEGATIVES) - 1} per row")
    rows = rows.long()
    b = rows.shape[0]
    source = rows.clone()
    other = kinds == 0
    source[other] = (rows[other] + torch.randint(1, len(data), (int(other.sum()),), generator=g)) % len(data)
    order = torch.rand(b, shapes.N_OBJECTS, generator=g).argsort(1)[:, :objects]  # the described objects
    colour, shape, region = order.clone(), data.shapes[source[:, None], order], regions(data)[source[:, None], order]
    swap = (kinds == 1).nonzero().flatten()
    if len(swap):
        # a pair of described objects that differ in shape or region, chosen at random
        code = shape[swap] * N_REGIONS + region[swap]
        score = torch.rand(len(swap), objects, objects, generator=g)
        differ = code[:, :, None] != code[:, None, :]
        score = torch.where(differ, score, score - 2).flatten(1)  # a pair that differs whenever there is one
        first, second = score.argmax(1) // objects, score.argmax(1) % objects
        a, c = colour[swap, first].clone(), colour[swap, second].clone()
        colour[swap, first], colour[swap, second] = c, a
    flip = (kinds == 2).nonzero().flatten()
    if len(flip):
        k = torch.randint(objects, (len(flip),), generator=g)
        shape[flip, k] = 1 - shape[flip, k]
    move = (kinds == 3).nonzero().flatten()
    if len(move):
        k = torch.randint(objects, (len(move),), generator=g)
        region[move, k] = (region[move, k] + torch.randint(1, N_REGIONS, (len(move),), generator=g)) % N_REGIONS
    true = ((data.shapes[rows[:, None], colour] == shape) & (regions(data)[rows[:, None], colour] == region)).all(1)
    return object_words(colour, shape, region).flatten(1), true


class ImageTextMatcher(nn.Module):
    """Does this description belong to this image? Word embeddings of the description and the
    image elements through a Linear, both into one :class:`SingleStreamEncoder`; two logits
    (no / yes) from the pooled [CLS], as BERT's next-sentence head."""

    def __init__(
        self,
        d_image: int,
        hidden: int = 64,
        layers: int = 2,
        heads: int = 4,
        dropout: float = 0.0,
        sentence_tokens: bool = True,
        init_std: float = 0.02,
    ):
        super().__init__()
        self.d_image, self.sentence_tokens = d_image, sentence_tokens
        self.words = nn.Embedding(len(VOCAB), hidden, padding_idx=0)
        self.image_in = nn.Linear(d_image, hidden)
        self.encoder = SingleStreamEncoder(bert_config(hidden, layers, heads, dropout=dropout, init_std=init_std))
        self.head = nn.Linear(hidden, 2)

    def forward(self, elements: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(elements, torch.Tensor) or elements.dim() != 3 or elements.shape[-1] != self.d_image:
            raise ValueError(
                f"elements must be (batch, elements, {self.d_image}), got "
                f"{tuple(getattr(elements, 'shape', ())) or type(elements).__name__}"
            )
        if (
            not isinstance(ids, torch.Tensor)
            or ids.dtype != torch.long
            or ids.dim() != 2
            or ids.shape[0] != elements.shape[0]
        ):
            raise ValueError(
                f"ids must be (batch={elements.shape[0]}, words) torch.long word ids from "
                f"tokenize_scenes, got {getattr(ids, 'dtype', type(ids).__name__)} "
                f"{tuple(getattr(ids, 'shape', ()))}"
            )
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= len(VOCAB)):
            raise ValueError(f"word ids must be in 0..{len(VOCAB) - 1} (the scene vocabulary); use tokenize_scenes")
        if self.sentence_tokens:
            if ids.shape[1] % WORDS_PER_OBJECT:
                raise ValueError(
                    f"sentence tokens need descriptions of whole sentences ({WORDS_PER_OBJECT} words "
                    f"each), got {ids.shape[1]} words"
                )
            sentences = ids.view(ids.shape[0], -1, WORDS_PER_OBJECT)
            text, real = self.words(sentences).sum(2), (sentences != 0).any(2)  # a bag of words per sentence
        else:
            text, real = self.words(ids), ids != 0
        _, pooled = self.encoder(text, real, self.image_in(elements))
        return self.head(pooled)


def _check_training(elements, data, steps, batch_size) -> None:
    if not isinstance(elements, torch.Tensor) or elements.dim() != 3 or elements.shape[0] != len(data):
        raise ValueError(
            f"elements must be (images={len(data)}, elements, features), one row per image of the "
            f"data, got {tuple(getattr(elements, 'shape', ()))}"
        )
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def train_matching(
    model: ImageTextMatcher,
    elements: torch.Tensor,
    data: shapes.SortOfClevr,
    steps: int,
    objects: int = 6,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Each step: ``batch_size`` random images, each once with its own description and once with a
    negative whose kind is drawn uniformly from :data:`NEGATIVES` (descriptions of ``objects``
    objects; the label is whether the text is true of the image, :func:`matching_batch`).
    AdamW with :func:`~course_utils.vision.vqa_training.lr_factor`'s schedule, in the course's one loop
    (:func:`course_utils.training.train`, without gradient clipping).
    Returns {"losses", "seconds", "parameters"}."""
    _check_training(elements, data, steps, batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps))
    g = torch.Generator().manual_seed(seed)

    def random_pairs():
        while True:
            rows = torch.randint(len(data), (batch_size,), generator=g)
            kinds = torch.cat(
                [torch.full((batch_size,), -1), torch.randint(len(NEGATIVES), (batch_size,), generator=g)]
            )
            ids, true = matching_batch(data, rows.repeat(2), kinds, g, objects)
            yield rows.repeat(2), ids, true

    def loss_of(model: ImageTextMatcher, batch) -> torch.Tensor:
        rows, ids, true = batch
        return F.cross_entropy(model(elements[rows], ids), true.long())

    history = training.train(
        model,
        random_pairs(),
        loss_of,
        opt,
        sched,
        steps=steps,
        max_grad_norm=None,
        progress=progress,
        desc="image-text matching",
    )
    model.eval()
    return {"losses": history.values("loss"), "seconds": history.seconds, "parameters": mm.count_parameters(model)}


@torch.no_grad()
def matching_accuracy(
    model: ImageTextMatcher,
    elements: torch.Tensor,
    data: shapes.SortOfClevr,
    objects: int = 6,
    seed: int = 0,
    batch_size: int = 500,
) -> dict:
    """Every image once with its own description and once with one negative of each kind.

    Returns the accuracy on the true descriptions (``"true description"``), on each kind of
    negative, and ``"vs <kind>"``: the accuracy on a balanced set of the true descriptions and
    that kind of negative, whose chance level (always "yes", always "no", or a coin) is 50%.
    """
    _check_training(elements, data, 1, 1)
    model.eval()
    g = torch.Generator().manual_seed(seed)
    correct = {}
    for kind, name in [(-1, "true description")] + list(enumerate(NEGATIVES)):
        right = []
        for start in range(0, len(data), batch_size):
            rows = torch.arange(start, min(start + batch_size, len(data)))
            ids, true = matching_batch(data, rows, torch.full((len(rows),), kind), g, objects)
            right.append((model(elements[rows], ids).argmax(-1) == 1) == true)
        correct[name] = torch.cat(right).float().mean().item()
    result = dict(correct)
    for name in NEGATIVES:
        result[f"vs {name}"] = (correct["true description"] + correct[name]) / 2
    return result
