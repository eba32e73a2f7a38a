"""Multimodal fusion: answering questions about images (chapter 05, Sort-of-CLEVR).

A visual question answering model has three parts:

* an **image encoder** that turns a picture into a set of element vectors, either the
  patches of a small CNN (:class:`~course_utils.vision.patch_cnn.PatchCNN`, a 5x5 grid with each patch's coordinates
  appended, as in the relation-network paper; pretrained on what each patch holds, frozen,
  and cached by :func:`~course_utils.vision.patch_cnn.cache_patches`) or the scene's object descriptions
  (:meth:`course_utils.vision.shapes.SortOfClevr.object_descriptions`);
* a **question encoder** giving a question vector and question tokens: the paper's
  11-bit vector through an MLP (:class:`VectorQuestionEncoder`) or the English sentence
  through a BERT (:class:`BertQuestionEncoder`);
* a **fusion** that combines the two into answer logits. Every fusion has the same interface,
  ``fusion(elements (B, N, d_image), question: QuestionEncoding) -> logits (B, n_answers)``:

  - :class:`EarlyFusion` -- the paper's baseline: flatten the elements into one vector,
    concatenate it with the question (or add / multiply their projections), then an MLP;
  - :class:`FiLMFusion` -- the question scales and shifts every element's features;
  - :class:`CrossAttentionFusion` -- the question (vector or tokens) attends to the elements
    with the course's :class:`~course_utils.layers.attention.MultiHeadAttention`;
  - :class:`RelationNetwork` -- an MLP ``g`` over every pair of elements with the question,
    summed, then an MLP ``f`` (Santoro et al. 2017).

:class:`VQAModel` puts the three together; :func:`~course_utils.vision.vqa_training.train_vqa` trains it
(in :mod:`course_utils.vision.vqa_training`, with the other training and scoring helpers; the figures and
the attention widget are in :mod:`course_utils.vision.vqa_plots`). The patch CNN is in
:mod:`course_utils.vision.patch_cnn`; the shared image-text embedding space (CLIP-like) in :mod:`course_utils.vision.contrastive`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
import torch.nn.functional as F

from course_utils.vision import shapes
from course_utils.layers.attention import MultiHeadAttention

if TYPE_CHECKING:
    from course_utils.vision.patch_cnn import PatchCNN

N_ANSWERS = len(shapes.ANSWERS)


# ============================================================================ question side


@dataclass
class QuestionEncoding:
    """What a question encoder gives a fusion: one vector per question, and tokens to attend with.

    vector: (B, d); tokens: (B, T, d); mask: (B, T) bool, True at real tokens.
    The vector encoder has a single token (the vector itself).
    """

    vector: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor


class VectorQuestionEncoder(nn.Module):
    """The paper's 11-bit question vector through a two-layer MLP."""

    def __init__(self, d_model: int = 128, d_in: int = shapes.QUESTION_DIM):
        super().__init__()
        self.d_model, self.d_in = d_model, d_in
        self.mlp = nn.Sequential(nn.Linear(d_in, d_model), nn.ReLU(), nn.Linear(d_model, d_model))

    def forward(self, question_vectors: torch.Tensor, question_texts=None) -> QuestionEncoding:
        if question_vectors.dim() != 2 or question_vectors.shape[-1] != self.d_in:
            raise ValueError(
                f"question vectors have shape {tuple(question_vectors.shape)}; expected "
                f"(batch, {self.d_in}), the paper's encoding (shapes.question_vector)"
            )
        v = self.mlp(question_vectors)
        return QuestionEncoding(v, v[:, None, :], torch.ones(v.shape[0], 1, dtype=torch.bool, device=v.device))


def _pad(rows: list, value=0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences of different lengths -> (U, T, ...) padded with ``value``, and the (U, T) mask of real entries."""
    padded = nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=value)
    lengths = torch.tensor([r.shape[0] for r in rows], device=padded.device)
    return padded, torch.arange(padded.shape[1], device=padded.device)[None] < lengths[:, None]


class BertQuestionEncoder(nn.Module):
    """The English question through a BERT (chapter 03's, or any in the transformers layout).

    Vector: the mean of BERT's last hidden states over the real tokens, standardised per feature
    (:class:`~torch.nn.BatchNorm1d` statistics, no learned scale), projected to ``d_model``;
    tokens: each hidden state standardised the same way and projected. ``finetune=False``
    freezes BERT (only the projection learns) and caches each distinct sentence's hidden states;
    ``finetune=True`` trains BERT too, at ``lr_scale`` times the learning rate of the rest. Sort-of-CLEVR has only 36 distinct questions, so each batch
    runs BERT once per distinct sentence, not once per question.
    """

    needs_text = True

    def __init__(self, bert: nn.Module, tokenizer, d_model: int = 128, finetune: bool = False, lr_scale: float = 0.1):
        super().__init__()
        from course_utils.text.bert import check_tokenizer_matches

        check_tokenizer_matches(bert, tokenizer)  # another model's tokenizer gives confident nonsense
        self.bert, self.tokenizer, self.finetune = bert, tokenizer, finetune
        self.d_model, self.lr_scale = d_model, lr_scale
        hidden = bert.config.hidden_size
        # BERT's sentence vectors share one large common direction (they all look alike); standardising
        # each feature over the questions makes their differences -- the colour, the kind -- stand out
        self.sentence_norm = nn.BatchNorm1d(hidden, affine=False)
        self.token_norm = nn.BatchNorm1d(hidden, affine=False)
        self.proj = nn.Linear(hidden, d_model)
        self.bert.requires_grad_(finetune)
        self._cache: dict = {}  # sentence -> frozen hidden states
        self._ids: dict = {}  # sentence -> token ids

    def _encode_unique(self, texts: list) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, T, hidden) states and (U, T) mask for distinct sentences."""
        device = self.proj.weight.device
        for t in texts:  # tokenise each distinct sentence once
            if t not in self._ids:
                self._ids[t] = torch.tensor(self.tokenizer(t)["input_ids"])
        ids, mask = _pad([self._ids[t] for t in texts], self.tokenizer.pad_token_id or 0)
        ids, mask = ids.to(device), mask.to(device)
        if self.finetune:
            self.bert.train(self.training)
            return self.bert(ids, attention_mask=mask.long()).last_hidden_state, mask
        self.bert.eval()
        with torch.no_grad():
            return self.bert(ids, attention_mask=mask.long()).last_hidden_state, mask

    def forward(self, question_vectors=None, question_texts=None) -> QuestionEncoding:
        if question_texts is None or isinstance(question_texts, str):
            raise ValueError(
                "BertQuestionEncoder reads the English questions: pass a list of sentences as "
                "question_texts (QuestionSet.texts(rows) gives them)"
            )
        unique = sorted(set(question_texts))
        where = {t: i for i, t in enumerate(unique)}
        if self.finetune:
            states, mask = self._encode_unique(unique)
        else:
            missing = [t for t in unique if t not in self._cache]
            if missing:
                new_states, new_mask = self._encode_unique(missing)
                for t, h, m in zip(missing, new_states, new_mask):
                    self._cache[t] = h[m]  # (real tokens, hidden)
            states, mask = _pad([self._cache[t] for t in unique])
        real = mask[..., None].to(states.dtype)
        sentences = self._standardise(self.sentence_norm, (states * real).sum(1) / real.sum(1))  # (U, hidden)
        tokens = torch.zeros_like(states)
        tokens[mask] = self._standardise(self.token_norm, states[mask])
        index = torch.tensor([where[t] for t in question_texts], device=states.device)
        return QuestionEncoding(self.proj(sentences)[index], self.proj(tokens)[index], mask[index])

    def _standardise(self, norm: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
        """Per feature, subtract the mean and divide by the standard deviation over the batch's
        sentences (tokens) while training, over the running averages otherwise."""
        batch_stats = self.training and x.shape[0] > 1
        return F.batch_norm(
            x, norm.running_mean, norm.running_var, training=batch_stats, momentum=norm.momentum, eps=norm.eps
        )


# ============================================================================ fusions


def _mlp(d_in: int, hidden: int, d_out: int, layers: int = 2, dropout: float = 0.0) -> nn.Sequential:
    """Linear-ReLU blocks (``layers`` of them) then a Linear to ``d_out``."""
    mods, d = [], d_in
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.ReLU()]
        if dropout:
            mods.append(nn.Dropout(dropout))
        d = hidden
    mods.append(nn.Linear(d, d_out))
    return nn.Sequential(*mods)


class Fusion(nn.Module):
    """Base class: checks the inputs every fusion receives."""

    def __init__(self, d_image: int, n_elements: int, d_question: int):
        super().__init__()
        self.d_image, self.n_elements, self.d_question = d_image, n_elements, d_question
        self.last_attention = None

    def check(self, elements: torch.Tensor, question: QuestionEncoding) -> None:
        if elements.dim() != 3 or elements.shape[-1] != self.d_image:
            raise ValueError(
                f"image elements have shape {tuple(elements.shape)}; this fusion expects "
                f"(batch, elements, {self.d_image})"
            )
        if question.vector.shape != (elements.shape[0], self.d_question):
            raise ValueError(
                f"question vector has shape {tuple(question.vector.shape)}; expected "
                f"({elements.shape[0]}, {self.d_question}): one per image row, d_question wide"
            )


class EarlyFusion(Fusion):
    """The paper's baseline: the image's elements, flattened into one long vector x (N * d_image
    numbers, in the order given), fused with the question vector q, then an MLP to the answers:

    * ``concat``: MLP([x; q]) -- the paper's CNN + MLP;
    * ``sum``: MLP(relu(W_x x + W_q q)) -- the same function as ``concat``: a Linear on [x; q]
      *is* W_x x + W_q q (see :meth:`as_concat`); only the starting weights differ;
    * ``product``: MLP((W_x x) * (W_q q)) -- the question multiplies the image features,
      switching on the ones it needs.

    No element is compared with another until the MLP does it, and the MLP sees slots: which
    element sits in which place of x matters (unlike every other fusion here).
    """

    OPS = ("concat", "sum", "product")

    def __init__(
        self,
        d_image: int,
        n_elements: int,
        d_question: int,
        op: str = "concat",
        hidden: int = 256,
        dropout: float = 0.0,
    ):
        super().__init__(d_image, n_elements, d_question)
        if op not in self.OPS:
            raise ValueError(f"op must be one of {self.OPS}, got {op!r}")
        self.op = op
        d_flat = n_elements * d_image
        if op == "concat":
            self.head = _mlp(d_flat + d_question, hidden, N_ANSWERS, layers=3, dropout=dropout)
        else:
            self.image_proj = nn.Linear(d_flat, hidden)
            self.question_proj = nn.Linear(d_question, hidden)
            self.head = _mlp(hidden, hidden, N_ANSWERS, layers=2, dropout=dropout)

    def check(self, elements: torch.Tensor, question: QuestionEncoding) -> None:
        super().check(elements, question)
        if elements.shape[1] != self.n_elements:
            raise ValueError(
                f"{elements.shape[1]} image elements, but this fusion flattens exactly "
                f"{self.n_elements}: build it with n_elements={elements.shape[1]}"
            )

    def forward(self, elements: torch.Tensor, question: QuestionEncoding) -> torch.Tensor:
        self.check(elements, question)
        x = elements.flatten(1)
        if self.op == "concat":
            return self.head(torch.cat([x, question.vector], dim=-1))
        v, u = self.image_proj(x), self.question_proj(question.vector)
        return self.head(F.relu(v + u) if self.op == "sum" else v * u)

    def as_concat(self) -> "EarlyFusion":
        """A ``concat`` fusion computing exactly what this ``sum`` fusion computes: its first
        Linear on [x; q] gets the weight [W_x, W_q] and the bias b_x + b_q."""
        if self.op != "sum":
            raise ValueError("only a 'sum' fusion has a 'concat' twin")
        twin = EarlyFusion(
            self.d_image, self.n_elements, self.d_question, op="concat", hidden=self.image_proj.out_features
        )
        with torch.no_grad():
            first = twin.head[0]
            first.weight.copy_(torch.cat([self.image_proj.weight, self.question_proj.weight], dim=1))
            first.bias.copy_(self.image_proj.bias + self.question_proj.bias)
            rest = [m for m in twin.head if isinstance(m, nn.Linear)][1:]
            for target, source in zip(rest, [m for m in self.head if isinstance(m, nn.Linear)]):
                target.load_state_dict(source.state_dict())
        return twin


class FiLMFusion(Fusion):
    """Pointwise FiLM: feature-wise linear modulation (Perez et al. 2018) applied to each element
    alone. In each of ``layers`` residual blocks the question gives a scale gamma and a shift beta
    per feature (one Linear of the question vector), the same for every element, and each element's
    vector becomes ``h = h + relu((1 + gamma) * (W h + b) + beta)``, with ``W h + b`` a Linear on that
    element only (``1 + gamma``: a freshly initialised layer starts near scale one). Then mean- and
    max-pooling over elements and an MLP. No element ever sees another before the pooling, so
    relations must pass through the pooled vector. Perez et al. modulate 3x3 convolutions over a
    feature map with coordinate channels, so neighbouring positions do mix there; this module does not.
    """

    def __init__(self, d_image: int, n_elements: int, d_question: int, hidden: int = 128, layers: int = 2):
        super().__init__(d_image, n_elements, d_question)
        self.embed = nn.Sequential(nn.Linear(d_image, hidden), nn.ReLU())
        self.blocks = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.film = nn.ModuleList(nn.Linear(d_question, 2 * hidden) for _ in range(layers))
        self.head = _mlp(2 * hidden, 2 * hidden, N_ANSWERS, layers=2)

    def forward(self, elements, question):
        self.check(elements, question)
        h = self.embed(elements)  # (B, N, hidden)
        for block, film in zip(self.blocks, self.film):
            gamma, beta = film(question.vector)[:, None, :].chunk(2, dim=-1)
            h = h + F.relu((1 + gamma) * block(h) + beta)  # 1 + gamma: starts as identity scale
        return self.head(torch.cat([h.mean(1), h.amax(1)], dim=-1))


class CrossAttentionFusion(Fusion):
    """The question attends to the image: the query is the question vector (or, with
    ``token_queries=True``, every question token), keys and values are the image elements. Each of ``layers`` pre-LN blocks does
    ``q = q + MHA(LN(q), elements)`` then ``q = q + FFN(LN(q))``; stacking two lets the question
    look twice (find the object of colour c, then the object nearest to it). With
    ``token_queries=True`` (BERT's tokens) each block first lets the tokens attend to each other,
    as a Transformer decoder does. The outputs, averaged over the real tokens, go to an MLP.
    With ``keep_attention = True``, ``last_attention`` holds, per layer, the cross-attention
    weights of the last forward, (B, heads, T, N).
    """

    def __init__(
        self,
        d_image: int,
        n_elements: int,
        d_question: int,
        d_model: int = 128,
        num_heads: int = 4,
        layers: int = 2,
        token_queries: bool = False,
    ):
        super().__init__(d_image, n_elements, d_question)
        self.embed = _mlp(d_image, d_model, d_model, layers=1)
        self.norm_kv = nn.LayerNorm(d_model)
        self.query_in = nn.Linear(d_question, d_model)
        self.token_queries = token_queries
        if token_queries:
            self.self_attn = nn.ModuleList(MultiHeadAttention(d_model, num_heads) for _ in range(layers))
            self.norm_self = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(layers))
        self.cross_attn = nn.ModuleList(MultiHeadAttention(d_model, num_heads) for _ in range(layers))
        self.norm_q = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(layers))
        self.norm_ff = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(layers))
        self.ff = nn.ModuleList(_mlp(d_model, 2 * d_model, d_model, layers=1) for _ in range(layers))
        self.head = _mlp(d_model, d_model, N_ANSWERS, layers=1)
        self.keep_attention = False

    def forward(self, elements, question):
        self.check(elements, question)
        kv = self.norm_kv(self.embed(elements))  # (B, N, d)
        if self.token_queries:
            q, real = self.query_in(question.tokens), question.mask  # (B, T, d): every token asks
        else:
            q = self.query_in(question.vector)[:, None, :]  # (B, 1, d): one question vector asks
            real = torch.ones(q.shape[0], 1, dtype=torch.bool, device=q.device)
        maps = []
        for i in range(len(self.cross_attn)):
            if self.token_queries:
                x = self.norm_self[i](q)
                q = q + self.self_attn[i](x, x, x, key_padding_mask=real, need_weights=False)[0]
            out, weights = self.cross_attn[i](self.norm_q[i](q), kv, kv, need_weights=self.keep_attention)
            q = q + out
            q = q + self.ff[i](self.norm_ff[i](q))
            maps.append(weights)
        self.last_attention = maps if self.keep_attention else None
        weight = real[..., None].to(q.dtype)
        return self.head((q * weight).sum(1) / weight.sum(1))


class RelationNetwork(Fusion):
    """RN(O, q) = f( sum over pairs (i, j) of g(o_i, o_j, q) ) (Santoro et al. 2017).

    g's first layer on the concatenation [o_i; o_j; q] is W [o_i; o_j; q] = W_i o_i + W_j o_j + W_q q:
    it is computed once per element and once per question, then broadcast-added into the
    (N x N) pairs -- N + N + 1 small products instead of N^2 big ones. The remaining layers of g
    run on every pair. :meth:`naive_pairs` builds the concatenations explicitly (for checking).
    """

    def __init__(
        self,
        d_image: int,
        n_elements: int,
        d_question: int,
        hidden: int = 128,
        g_layers: int = 3,
        f_hidden: int = 256,
        dropout: float = 0.0,
        pool: str = "sum",
        norm: bool = False,
    ):
        super().__init__(d_image, n_elements, d_question)
        self.pool = pool
        self.norm = nn.LayerNorm(hidden) if norm else nn.Identity()
        self.g_first = nn.Linear(2 * d_image + d_question, hidden)
        rest = []
        for _ in range(g_layers - 1):
            rest += [nn.Linear(hidden, hidden), nn.ReLU()]
        self.g_rest = nn.Sequential(*rest)
        self.f = _mlp(hidden, f_hidden, N_ANSWERS, layers=2, dropout=dropout)

    def first_layer(self, elements: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        """(B, N, N, hidden): g's first layer (before ReLU) for every pair, by broadcast-adding."""
        d = self.d_image
        w_i, w_j, w_q = self.g_first.weight.split([d, d, self.d_question], dim=1)
        left = elements @ w_i.T  # (B, N, hidden): o_i's part
        right = elements @ w_j.T  # (B, N, hidden): o_j's part
        q = question @ w_q.T + self.g_first.bias  # (B, hidden)
        return left[:, :, None, :] + right[:, None, :, :] + q[:, None, None, :]

    def naive_pairs(self, elements: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        """The same first layer from the explicit (B, N, N, 2d + d_q) concatenations."""
        b, n, d = elements.shape
        o_i = elements[:, :, None, :].expand(b, n, n, d)
        o_j = elements[:, None, :, :].expand(b, n, n, d)
        q = question[:, None, None, :].expand(b, n, n, question.shape[-1])
        return self.g_first(torch.cat([o_i, o_j, q], dim=-1))

    def forward(self, elements, question):
        self.check(elements, question)
        pairs = self.g_rest(F.relu(self.first_layer(elements, question.vector)))  # (B, N, N, hidden)
        pooled = pairs.sum(dim=(1, 2)) if self.pool == "sum" else pairs.mean(dim=(1, 2))
        return self.f(self.norm(pooled))


FUSIONS = ("concat", "sum", "product", "film", "cross_attention", "relation_network")


def make_fusion(name: str, d_image: int, n_elements: int, d_question: int, **kwargs) -> Fusion:
    """One of :data:`FUSIONS` by name, e.g. ``make_fusion("film", 34, 25, 128)``."""
    if name in EarlyFusion.OPS:
        return EarlyFusion(d_image, n_elements, d_question, op=name, **kwargs)
    if name == "film":
        return FiLMFusion(d_image, n_elements, d_question, **kwargs)
    if name == "cross_attention":
        return CrossAttentionFusion(d_image, n_elements, d_question, **kwargs)
    if name == "relation_network":
        return RelationNetwork(d_image, n_elements, d_question, **kwargs)
    raise ValueError(f"unknown fusion {name!r}; choose one of {FUSIONS}")


class VQAModel(nn.Module):
    """question encoder + fusion (+ an image encoder when trained from pixels).

    ``forward(image_input, question_vectors, question_texts=None)``: ``image_input`` is
    (B, N, d_image) elements (cached patches or object descriptions) when ``image_encoder`` is
    None, else (B, 3, 75, 75) images. With ``questions_per_image = k > 1`` (end-to-end
    training), ``image_input`` has B / k images and each image's elements serve its k questions:
    the CNN runs once per image, not once per question.
    """

    def __init__(self, question_encoder: nn.Module, fusion: Fusion, image_encoder: PatchCNN | None = None):
        super().__init__()
        self.question_encoder, self.fusion, self.image_encoder = question_encoder, fusion, image_encoder

    def forward(self, image_input, question_vectors, question_texts=None, questions_per_image: int = 1):
        elements = image_input if self.image_encoder is None else self.image_encoder.patches(image_input)
        if questions_per_image > 1:
            elements = elements.repeat_interleave(questions_per_image, dim=0)
        if elements.shape[0] != question_vectors.shape[0]:
            raise ValueError(
                f"{elements.shape[0]} image rows but {question_vectors.shape[0]} questions; "
                "give one image per question (or set questions_per_image)"
            )
        return self.fusion(elements, self.question_encoder(question_vectors, question_texts))


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
