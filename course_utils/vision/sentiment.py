"""Multimodal sentiment models (chapter 09): text-only, image-only, early, gated and
cross-attention fusion of a post's text (Chinese or English) and its 48x48 image, and late fusion.

* **Text**: a small BERT built with chapter 03's :class:`~course_utils.text.bert.BertModel`, trained
  from scratch with the classifier, over a BERT tokenizer whose vocabulary is every word and
  every Chinese character the posts use (BERT's pre-tokenizer splits CJK text into characters).
  MiniLM cannot be used as it is: its English vocabulary has 244 CJK characters and lacks most
  sentiment characters (好, 喜, 雨 are ``[UNK]``), which the chapter shows. The posts hold few
  distinct sentences, so each batch runs the BERT once per distinct sentence
  (:meth:`SentimentModel.encode_texts`).
* **Image**: a small CNN in chapter 05's style whose 4x4 output grid lines up with 12x12-pixel
  patches; each patch vector gets its (x, y) appended.
* **Fusions** (``config["fusion"]``): ``"text"``, ``"image"`` (one modality; the other is
  ignored), ``"early"`` (concatenate the pooled text and the flattened patches, then an MLP),
  ``"gated"`` (a gated multimodal unit, Arevalo et al. 2017: ``h = z * tanh(W_t t) + (1 - z) *
  tanh(W_i i)`` with ``z = sigmoid(W_z [t; i])``), ``"cross"`` (text tokens attend to image
  patches with the course's :class:`~course_utils.layers.attention.MultiHeadAttention`). Late fusion,
  the average of a text-only and an image-only model's probabilities, is :class:`LateFusion`.
* :func:`save_model` / :func:`load_model`: ``config.json`` + ``model.safetensors`` + the
  tokenizer (transformers' ``save_pretrained`` files).

Training them (with modality dropout) and scoring them per slice is
:mod:`course_utils.vision.sentiment_training`; one post's prediction, what drove it, and the
widget are :mod:`course_utils.vision.sentiment_predict`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from course_utils.vision import sentiment_data as sd
from course_utils.layers.attention import MultiHeadAttention

GRID = 4  # the CNN's output grid: 4x4 patches of 12x12 pixels
CELL = sd.IMAGE_SIZE // GRID
FUSIONS = ("text", "image", "early", "gated", "cross")
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
DEFAULTS = {
    "fusion": "cross",
    "d_model": 64,
    "layers": 2,
    "heads": 4,
    "max_len": 24,
    "channels": 32,
    "vocab_size": None,
    "dropout": 0.1,
}


# ============================================================================ tokenizer


def vocabulary() -> list:
    """Every word and CJK character the generator can write, after BERT's lower-casing and
    pre-tokenisation (whitespace, punctuation, one token per CJK character), sorted."""
    from tokenizers import normalizers, pre_tokenizers

    norm, pre = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    strings = []

    def collect(x):
        if isinstance(x, str):
            strings.append(x.replace("{not}", " ").replace("{w}", " ").replace("{w2}", " ").replace("{w3}", " "))
        elif isinstance(x, dict):
            for v in x.values():
                collect(v)
        else:
            for v in x:
                collect(v)

    collect(sd.WORDS)
    strings += [sd.EN_VERB_NEGATION, *sd.NEGATION.values(), "真", "很"]
    words = {w for s in strings for w, _ in pre.pre_tokenize_str(norm.normalize_str(s))}
    return sorted(words)


def build_tokenizer(max_len: int = DEFAULTS["max_len"]):
    """A BERT tokenizer (transformers ``BertTokenizerFast``) over :func:`vocabulary`, with
    deterministic ids: the specials 0..4, then the sorted words."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    from course_utils.text.tokenization import wrap

    vocab = {w: i for i, w in enumerate([*SPECIALS, *vocabulary()])}
    raw = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##"))
    raw.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    raw.decoder = decoders.WordPiece(prefix="##")
    raw.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return wrap(raw, model_max_length=max_len)


# ============================================================================ input checks


def check_images(images: torch.Tensor) -> None:
    """One-line errors unless ``images`` is (B, 3, 48, 48) uint8 as the generator makes them."""
    size = sd.IMAGE_SIZE
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"images must be a torch.Tensor (batch, 3, {size}, {size}) of uint8, got {type(images).__name__}"
        )
    if images.dim() != 4 or tuple(images.shape[1:]) != (3, size, size):
        hint = (
            " Add a batch axis with image[None]."
            if images.dim() == 3 and tuple(images.shape) == (3, size, size)
            else " Channels-last? use .permute(0, 3, 1, 2)."
            if images.dim() == 4 and images.shape[-1] == 3
            else ""
        )
        raise ValueError(
            f"images have shape {tuple(images.shape)}; the model expects (batch, 3, {size}, {size}) "
            f"uint8 pictures as sentiment_data.generate draws them.{hint}"
        )
    if images.dtype != torch.uint8:
        raise TypeError(
            f"images have dtype {images.dtype}; pass uint8 pixels 0..255 (images.to(torch.uint8) "
            "after rounding), as sentiment_data.generate makes them."
        )


def tokenize(tokenizer, texts: list, max_len: int, allow_empty: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and bool mask; a one-line error for a text longer than ``max_len`` tokens."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a list of strings (one per post)")
    rows = []
    for t in texts:
        if not allow_empty and not t.strip():
            raise ValueError(
                "the text is empty: write a sentence (in Chinese or English); to see what the image "
                "alone says, use the ablation in predict_sentiment's answer"
            )
        ids = tokenizer(t)["input_ids"]
        if len(ids) > max_len:
            raise ValueError(
                f"the text has {len(ids)} tokens with [CLS] and [SEP] (Chinese counts one per "
                f"character) but the model has {max_len} positions: shorten it to {max_len - 2} tokens."
            )
        rows.append(torch.tensor(ids))
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    return ids, ids != tokenizer.pad_token_id


# ============================================================================ encoders


class ImageEncoder(nn.Module):
    """48x48 -> a 4x4 grid of patch vectors (B, 16, channels + 2), coordinates appended.

    A 3x3 convolution with stride 3 cuts the image into 16x16 blocks of 3x3 pixels, two 3x3
    convolutions let blocks see their neighbours, a 4x4 convolution with stride 4 turns each
    4x4 group of blocks -- one 12x12 patch -- into one vector (batch norm and ReLU after each)."""

    def __init__(self, channels: int = 32):
        super().__init__()

        def block(c_in, c_out, kernel, stride):
            return [
                nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=(kernel // 2 if stride == 1 else 0)),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            ]

        self.body = nn.Sequential(
            *block(3, channels, 3, 3),
            *block(channels, channels, 3, 1),
            *block(channels, channels, 3, 1),
            *block(channels, channels, 4, 4),
        )
        centre = (torch.arange(GRID, dtype=torch.float32) + 0.5) / GRID * 2 - 1
        y, x = torch.meshgrid(centre, centre, indexing="ij")
        self.register_buffer("coords", torch.stack([x.flatten(), y.flatten()], -1), persistent=False)
        self.d_out = channels + 2

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        fmap = self.body(images.float() / 255.0 - 0.5)  # (B, C, 4, 4)
        patches = fmap.flatten(2).transpose(1, 2)  # (B, 16, C)
        return torch.cat([patches, self.coords.expand(len(patches), -1, -1)], -1)


def _bert(config: dict):
    from transformers import BertConfig

    from course_utils.text.bert import BertModel

    d = config["d_model"]
    return BertModel(
        BertConfig(
            vocab_size=config["vocab_size"],
            hidden_size=d,
            num_hidden_layers=config["layers"],
            num_attention_heads=config["heads"],
            intermediate_size=2 * d,
            max_position_embeddings=config["max_len"],
            hidden_dropout_prob=config["dropout"],
            attention_probs_dropout_prob=config["dropout"],
        ),
        add_pooling_layer=False,
    )


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real positions: (B, T, d), (B, T) bool -> (B, d)."""
    w = mask[..., None].to(x.dtype)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


# ============================================================================ fusions


class GatedFusion(nn.Module):
    """Gated multimodal unit: h = z * tanh(W_t t) + (1 - z) * tanh(W_i i), z = sigmoid(W_z [t; i])
    (per feature). ``last_gate`` keeps z of the last forward."""

    def __init__(self, d_text: int, d_image: int, d: int):
        super().__init__()
        self.text_proj, self.image_proj = nn.Linear(d_text, d), nn.Linear(d_image, d)
        self.gate = nn.Linear(d_text + d_image, d)
        self.last_gate = None

    def forward(self, t: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        z = torch.sigmoid(self.gate(torch.cat([t, i], -1)))
        self.last_gate = z.detach()
        return z * torch.tanh(self.text_proj(t)) + (1 - z) * torch.tanh(self.image_proj(i))


class CrossAttentionBlock(nn.Module):
    """Pre-LN: q = q + MHA(LN(q), patches, patches); q = q + FFN(LN(q)). ``last_attention`` keeps
    the weights (B, heads, T, 16) of the last forward."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.norm_q, self.norm_ff = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = MultiHeadAttention(d, heads)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(), nn.Linear(2 * d, d))
        self.last_attention = None

    def forward(self, q: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        out, weights = self.attn(self.norm_q(q), patches, patches, need_weights=True)
        self.last_attention = weights.detach()
        q = q + out
        return q + self.ff(self.norm_ff(q))


class SentimentModel(nn.Module):
    """forward(texts: list of str, images (B, 3, 48, 48) uint8) -> logits (B, 2)."""

    def __init__(self, config: dict, tokenizer):
        super().__init__()
        config = {**DEFAULTS, **config}
        if config["fusion"] not in FUSIONS:
            raise ValueError(
                f"unknown fusion {config['fusion']!r}; choose one of {FUSIONS} (late fusion is LateFusion)"
            )
        if config["vocab_size"] is None:
            config["vocab_size"] = len(tokenizer)
        self.config, self.tokenizer = config, tokenizer
        d, fusion = config["d_model"], config["fusion"]
        self.text = _bert(config) if fusion != "image" else None
        self.image = ImageEncoder(config["channels"]) if fusion != "text" else None
        if self.image is not None:
            self.patch_proj = nn.Sequential(nn.Linear(self.image.d_out, d), nn.LayerNorm(d))
        flat = GRID * GRID * d
        if fusion == "text":
            d_head = d
        elif fusion == "image":
            d_head = flat
        elif fusion == "early":
            d_head = d + flat
        elif fusion == "gated":
            self.fuse = GatedFusion(d, flat, d)
            d_head = d
        else:
            self.blocks = nn.ModuleList(CrossAttentionBlock(d, config["heads"]) for _ in range(2))
            self.norm_out = nn.LayerNorm(d)
            d_head = d
        self.head = nn.Sequential(nn.Linear(d_head, d), nn.ReLU(), nn.Dropout(config["dropout"]), nn.Linear(d, 2))
        self._ids: dict = {}

    def encode_texts(self, texts: list) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states (B, T, d) and mask (B, T): the BERT runs once per distinct sentence."""
        unique = sorted(set(texts))
        missing = [t for t in unique if t not in self._ids]
        if missing:
            ids, mask = tokenize(self.tokenizer, missing, self.config["max_len"])
            for t, row, m in zip(missing, ids, mask):
                self._ids[t] = row[m]
        width = max(len(self._ids[t]) for t in unique)
        ids = torch.zeros(len(unique), width, dtype=torch.long)
        for k, t in enumerate(unique):
            ids[k, : len(self._ids[t])] = self._ids[t]
        mask = ids != self.tokenizer.pad_token_id
        states = self.text(ids, attention_mask=mask.long()).last_hidden_state
        where = (
            torch.tensor([unique.index(t) for t in texts])
            if len(unique) < 64
            else torch.tensor([{t: k for k, t in enumerate(unique)}[t] for t in texts])
        )
        return states[where], mask[where]

    def features(self, texts: list, images: torch.Tensor) -> dict:
        out = {}
        if self.text is not None:
            out["tokens"], out["mask"] = self.encode_texts(texts)
            out["text"] = masked_mean(out["tokens"], out["mask"])
        if self.image is not None:
            out["patches"] = self.patch_proj(self.image(images))
            out["image"] = out["patches"].flatten(1)
        return out

    def forward(self, texts: list, images: torch.Tensor) -> torch.Tensor:
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, one per image; for one post use [text] and image[None]")
        if images is not None:
            check_images(images)
        if images is not None and len(texts) != len(images):
            raise ValueError(f"{len(texts)} texts but {len(images)} images: one text per image")
        f, fusion = self.features(texts, images), self.config["fusion"]
        if fusion in ("text", "image"):
            x = f[fusion]
        elif fusion == "early":
            x = torch.cat([f["text"], f["image"]], -1)
        elif fusion == "gated":
            x = self.fuse(f["text"], f["image"])
        else:
            q = f["tokens"]
            for block in self.blocks:
                q = block(q, f["patches"])
            x = masked_mean(self.norm_out(q), f["mask"])
        return self.head(x)

    def probabilities(self, texts: list, images: torch.Tensor) -> torch.Tensor:
        return self(texts, images).softmax(-1)


class LateFusion(nn.Module):
    """The average of a text-only and an image-only model's probabilities (nothing to train)."""

    def __init__(self, text_model: SentimentModel, image_model: SentimentModel):
        super().__init__()
        self.text_model, self.image_model = text_model, image_model

    def probabilities(self, texts: list, images: torch.Tensor) -> torch.Tensor:
        return (self.text_model.probabilities(texts, images) + self.image_model.probabilities(texts, images)) / 2


# ============================================================================ save and load


def save_model(model: SentimentModel, directory: str | Path) -> Path:
    """config.json + model.safetensors + the tokenizer's files, in one directory."""
    from safetensors.torch import save_file

    if not isinstance(model, SentimentModel):
        raise TypeError(
            f"save_model saves a SentimentModel, got {type(model).__name__} (LateFusion: save its two models)"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(
        json.dumps({"model_type": "course-multimodal-sentiment", **model.config}, indent=2, ensure_ascii=False),
        encoding="utf-8",
    )
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))
    model.tokenizer.save_pretrained(str(directory))
    return directory


def load_model(directory: str | Path) -> SentimentModel:
    """The model :func:`save_model` wrote, in eval mode; one-line errors for a wrong directory."""
    from safetensors.torch import load_file

    from tokenizers import Tokenizer

    from course_utils.text.tokenization import wrap

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory: pass the folder save_model wrote")
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} has no {name}: it is not a folder written by sentiment.save_model")
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{directory / 'config.json'} is not valid JSON ({err}): save the model again") from None
    if config.pop("model_type", None) != "course-multimodal-sentiment":
        raise ValueError(
            f"{directory / 'config.json'} is not a multimodal sentiment model's config "
            "(model_type should be 'course-multimodal-sentiment')"
        )
    # from tokenizer.json directly: transformers' loader would read our config.json and warn about its model_type
    tokenizer = wrap(
        Tokenizer.from_file(str(directory / "tokenizer.json")), model_max_length=config.get("max_len", 512)
    )
    model = SentimentModel(config, tokenizer)
    try:
        state = load_file(str(directory / "model.safetensors"))
    except Exception as err:  # safetensors reports a damaged file deep in its own code
        raise ValueError(
            f"{directory / 'model.safetensors'} cannot be read ({type(err).__name__}): save the model again"
        ) from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{directory / 'model.safetensors'} does not fit its config.json "
            f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
        )
    return model.eval()
