"""The captioner of chapter 07: a model that writes what it sees, its training, and captioning images.

A captioning model is an encoder-decoder: the image encoder (chapter 05's :class:`PatchCNN`)
turns the picture into a grid of patch vectors, the *memory*; the decoder writes the caption
one word at a time, and in every layer a **cross-attention** sub-layer
(:mod:`course_utils.vision.cross_attention`) lets the words look at the image. Chapter 03's BERT as
such a decoder is :class:`course_utils.vision.bert_decoder.BertDecoder`.

* :class:`Captioner`: chapter 06's pre-LN :class:`~course_utils.text.decoder.DecoderBlock` with a
  cross-attention sub-layer (:class:`CaptionBlock`), over cached patch features. Its KV cache
  holds, per block, the self-attention keys and values (growing by one position per step) and
  the cross-attention keys and values (computed **once per image**, never recomputed);
  :meth:`Captioner.bind` gives the ``model(input_ids, attention_mask, past_key_values, use_cache)``
  that :func:`course_utils.text.generation.generate` drives, greedy or beam search alike.

Training (:func:`train_captioner`: teacher forcing, AdamW with warmup, optional label
smoothing) and captioning images (:func:`generate_captions`) are at the end; plots and the
widget live in :mod:`course_utils.vision.captioning_viz`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from course_utils import training
from course_utils.checkpoints import CheckpointError
from course_utils.vision.cross_attention import CaptionerInputError, CrossAttention
from course_utils.text.decoder import DecoderBlock

__all__ = [
    "BoundCaptioner",
    "CaptionBlock",
    "Captioner",
    "CaptionerConfig",
    "teacher_forced_loss",
    "train_captioner",
]


class CaptionBlock(DecoderBlock):
    """Chapter 06's pre-LN decoder block with a cross-attention sub-layer added between its
    self-attention and its MLP: ``x + self_attn(norm1(x))``, ``x + cross_attn(norm_cross(x), image)``,
    ``x + mlp(norm2(x))``."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.0):
        super().__init__(d_model, num_heads, d_ff, dropout=dropout, attn_dropout=dropout)
        self.norm_cross = nn.LayerNorm(d_model)
        self.cross_attn = CrossAttention(d_model, num_heads, dropout=dropout)
        self.cross_dropout = nn.Dropout(dropout)

    def forward(self, x, cross_kv, past=None, key_mask=None, memory_mask=None, need_weights: bool = False):
        attended, present, _ = self.self_attn(self.norm1(x), past=past, key_mask=key_mask, need_weights=False)
        x = x + attended
        crossed, weights = self.cross_attn.attend(self.norm_cross(x), cross_kv, memory_mask, need_weights)
        x = x + self.cross_dropout(crossed)
        x = x + self.mlp(self.norm2(x))
        return x, present, weights


@dataclass
class CaptionerConfig:
    vocab_size: int
    d_image: int  # numbers per patch in the memory (chapter 05's descriptions: 10)
    n_patches: int = 25  # patches per image
    d_model: int = 128
    num_heads: int = 4
    num_layers: int = 2
    d_ff: int = 512
    max_positions: int = 96  # the longest caption, [BOS] and [EOS] included
    dropout: float = 0.0
    pad_token_id: int = 0
    bos_token_id: int = 1
    eos_token_id: int = 2


class Captioner(nn.Module):
    """Patch features in, caption logits out.

    ``encode(features (B, N, d_image))`` -> memory (B, N, d_model): a linear map of every patch
    plus a learned embedding of its place in the grid, then LayerNorm.
    ``forward(input_ids (B, L), memory=None, attention_mask=None, memory_mask=None,
    past_key_values=None, use_cache=False, output_attentions=False, position_ids=None)`` ->
    ``(logits, cache, cross_attentions)``; ``attention_mask`` (B, cache + L) 1 = real token covers
    the cached positions too, and ``position_ids`` let left-padded prompts start at position 0. The cache is a tuple over blocks of ``(self_keys, self_values,
    cross_keys, cross_values)``; with a cache, ``memory`` is not needed (its keys and values are in it).
    """

    def __init__(self, config: CaptionerConfig):
        super().__init__()
        if not isinstance(config, CaptionerConfig):
            raise TypeError(f"Captioner takes a CaptionerConfig, got {type(config).__name__}")
        self.config = config
        c = config
        self.image_proj = nn.Linear(c.d_image, c.d_model)
        self.patch_embedding = nn.Embedding(c.n_patches, c.d_model)
        self.image_norm = nn.LayerNorm(c.d_model)
        self.token_embedding = nn.Embedding(c.vocab_size, c.d_model)
        self.position_embedding = nn.Embedding(c.max_positions, c.d_model)
        self.blocks = nn.ModuleList(
            CaptionBlock(c.d_model, c.num_heads, c.d_ff, c.dropout) for _ in range(c.num_layers)
        )
        self.final_norm = nn.LayerNorm(c.d_model)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.apply(_init_weights)
        self.lm_head.weight = self.token_embedding.weight  # tied, as GPT-2 and BERT

    @property
    def max_positions(self) -> int:
        return self.config.max_positions

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        c = self.config
        if not isinstance(features, torch.Tensor) or not features.dtype.is_floating_point:
            raise CaptionerInputError(
                f"patch features must be a float tensor (B, {c.n_patches}, {c.d_image}); got "
                f"{features.dtype if isinstance(features, torch.Tensor) else type(features).__name__}. "
                "For images, run the patch CNN first (features_of(cnn, images))."
            )
        if features.dim() != 3 or tuple(features.shape[1:]) != (c.n_patches, c.d_image):
            raise CaptionerInputError(
                f"patch features have shape {tuple(features.shape)}; this captioner was built for "
                f"(batch, {c.n_patches}, {c.d_image}). Cache them with the same CNN and `what`."
            )
        grid = self.patch_embedding.weight[None]
        return self.image_norm(self.image_proj(features) + grid)

    def cross_cache(self, memory: torch.Tensor) -> list:
        """Every block's cross-attention keys and values of ``memory``: computed once per image."""
        return [block.cross_attn.memory_kv(memory) for block in self.blocks]

    def forward(
        self,
        input_ids: torch.Tensor,
        memory: torch.Tensor | None = None,
        attention_mask=None,
        memory_mask=None,
        past_key_values=None,
        use_cache: bool = False,
        output_attentions: bool = False,
        position_ids: torch.Tensor | None = None,
    ):
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype != torch.long:
            raise CaptionerInputError("input_ids must be a (batch, length) torch.long tensor of caption token ids.")
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.config.vocab_size):
            raise CaptionerInputError(
                f"token ids must be in 0..{self.config.vocab_size - 1}, got "
                f"{int(input_ids.min())}..{int(input_ids.max())}: was the tokenizer made for this model?"
            )
        past_len = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        length = input_ids.shape[1]
        if past_len + length > self.config.max_positions:
            raise CaptionerInputError(
                f"{past_len + length} positions do not fit the position table of "
                f"{self.config.max_positions}: generate fewer tokens or build a longer table."
            )
        if past_key_values is None:
            if memory is None:
                raise CaptionerInputError("the first call needs the image memory (memory=captioner.encode(features)).")
            if memory.shape[0] != input_ids.shape[0]:
                raise CaptionerInputError(
                    f"{memory.shape[0]} images for {input_ids.shape[0]} captions: give one "
                    "memory row per caption (repeat_interleave it for several per image)."
                )
            cross = self.cross_cache(memory)
        else:
            cross = [(p[2], p[3]) for p in past_key_values]
        if position_ids is None:  # no left padding: positions follow the cache
            position_ids = torch.arange(past_len, past_len + length, device=input_ids.device)[None]
        elif int(position_ids.max()) >= self.config.max_positions:
            raise CaptionerInputError(
                f"position {int(position_ids.max())} is past the position table ({self.config.max_positions})."
            )
        x = self.token_embedding(input_ids) + self.position_embedding(position_ids)
        key_mask = None if attention_mask is None else attention_mask.bool()
        presents, attentions = [], []
        for i, block in enumerate(self.blocks):
            past = None if past_key_values is None else past_key_values[i][:2]
            x, present, weights = block(
                x, cross[i], past=past, key_mask=key_mask, memory_mask=memory_mask, need_weights=output_attentions
            )
            if use_cache:
                presents.append((*present, *cross[i]))
            if output_attentions:
                attentions.append(weights.detach())
        logits = self.lm_head(self.final_norm(x))
        return logits, (tuple(presents) if use_cache else None), (tuple(attentions) if output_attentions else None)

    def bind(self, features: torch.Tensor) -> BoundCaptioner:
        """The decoder with these images' memory attached: ``bound(input_ids, attention_mask=None,
        past_key_values=None, use_cache=False)``, the interface of chapter 06's ``generate``."""
        return BoundCaptioner(self, features)

    # --- checkpoints
    def save(self, path: str | Path) -> Path:
        """Weights as safetensors, the config in the file's metadata."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if k != "lm_head.weight"}
        save_file(tensors, str(path), metadata={"config": json.dumps(asdict(self.config))})
        return path

    @classmethod
    def load(cls, path: str | Path, expected: CaptionerConfig | None = None) -> Captioner:
        """A captioner from :meth:`save`; with ``expected``, a checkpoint of another size is refused in one line."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no captioner checkpoint at {path}: train one and call model.save(path).")
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if "config" not in meta:
            raise CheckpointError(f"{path} is not a captioner checkpoint (no config in its metadata).")
        config = CaptionerConfig(**json.loads(meta["config"]))
        if expected is not None and config != expected:
            diff = {k: (v, getattr(expected, k)) for k, v in asdict(config).items() if getattr(expected, k) != v}
            raise CheckpointError(
                f"{path} holds a captioner of another size (checkpoint vs expected: "
                f"{diff}); build the model from the checkpoint's config or retrain."
            )
        model = cls(config)
        model.load_state_dict(load_file(str(path)), strict=False)
        return model.eval()


class BoundCaptioner(nn.Module):
    """A captioner bound to M images: ``forward(input_ids (B, L), attention_mask=None,
    past_key_values=None, use_cache=False)`` -> ``(logits, cache)``, for B a multiple of M
    (B = M * k: k beams or samples per image, rows in ``repeat_interleave`` order, as beam search
    lays them out). The cross-attention keys and values are computed for the M images once, on the
    first call, and carried in the cache; :meth:`reorder_cache` moves only the self-attention part
    when beams are reordered within an image."""

    def __init__(self, model: Captioner, features: torch.Tensor):
        super().__init__()
        self.model = model
        self.memory = model.encode(features)
        self.max_positions = model.max_positions
        self.config = model.config
        self.cross_computations = 0  # how often image keys/values were computed (tests read it)
        self.last_cross_attentions = None
        self.train(model.training)

    def _repeats(self, batch: int) -> int:
        images = self.memory.shape[0]
        if batch % images:
            raise CaptionerInputError(
                f"{batch} captions for {images} images: the batch must be a multiple of the "
                "number of images (rows in repeat_interleave order)."
            )
        return batch // images

    def forward(
        self,
        input_ids,
        attention_mask=None,
        past_key_values=None,
        use_cache: bool = False,
        output_attentions: bool = False,
        position_ids=None,
    ):
        k = self._repeats(input_ids.shape[0])
        if past_key_values is None:
            cross = [tuple(t.repeat_interleave(k, dim=0) for t in kv) for kv in self.model.cross_cache(self.memory)]
            self.cross_computations += 1
            past = None
        else:
            past = past_key_values
            cross = None
        if past is None:
            # run the first step with empty self-attention caches and the precomputed image keys/values
            d_head = self.model.config.d_model // self.model.config.num_heads
            empty = input_ids.new_zeros(
                (input_ids.shape[0], self.model.config.num_heads, 0, d_head), dtype=cross[0][0].dtype
            )
            past = tuple((empty, empty, *kv) for kv in cross)
        logits, cache, attentions = self.model(
            input_ids,
            attention_mask=attention_mask,
            past_key_values=past,
            use_cache=use_cache,
            output_attentions=output_attentions,
            position_ids=position_ids,
        )
        self.last_cross_attentions = attentions
        return (logits, cache) if use_cache else (logits,)

    def reorder_cache(self, cache, beam_idx: torch.Tensor):
        """Beams of one image are reordered among themselves, so the image keys/values stay put;
        only if a row were to take another image's place are they moved too."""
        k = self._repeats(beam_idx.shape[0])
        image_of_row = torch.arange(beam_idx.shape[0], device=beam_idx.device) // k
        same_image = bool((image_of_row[beam_idx] == image_of_row).all())
        return tuple(
            (
                layer[0].index_select(0, beam_idx),
                layer[1].index_select(0, beam_idx),
                *(layer[2:] if same_image else (t.index_select(0, beam_idx) for t in layer[2:])),
            )
            for layer in cache
        )


def _init_weights(module: nn.Module, std: float = 0.02) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# ============================================================================ training


def teacher_forced_loss(
    model: Captioner,
    features: torch.Tensor,
    ids: torch.Tensor,
    mask: torch.Tensor,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Teacher forcing: the decoder reads the *true* caption up to word t and predicts word t + 1.
    Padding takes no part. ``reduction="none"`` gives one mean loss per caption."""
    logits = model(ids[:, :-1], memory=model.encode(features), attention_mask=mask[:, :-1])[0]
    targets = ids[:, 1:].masked_fill(~mask[:, 1:], -100)
    token_losses = F.cross_entropy(
        logits.transpose(1, 2), targets, ignore_index=-100, label_smoothing=label_smoothing, reduction="none"
    )
    if reduction == "none":
        return token_losses.sum(1) / mask[:, 1:].sum(1)
    return token_losses.sum() / mask[:, 1:].sum()


def warmup_factor(step: int, steps: int, warmup: float = 0.05) -> float:
    """Linear warmup over the first ``warmup`` share of the steps, then cosine decay to 10%: transformers'
    ``get_cosine_with_min_lr_schedule_with_warmup(min_lr_rate=0.1)`` with the warm-up one step ahead (its
    first step already moves; tests/test_library_agreement.py shows both)."""
    warm = max(1, int(steps * warmup))
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, steps - warm)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def train_captioner(
    model: Captioner,
    features: torch.Tensor,
    ids: torch.Tensor,
    mask: torch.Tensor,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    warmup: float = 0.05,
    label_smoothing: float = 0.0,
    progress: bool = True,
    seed: int = 0,
    cnn=None,
) -> list:
    """Teacher-forced training with AdamW and warmup; returns the loss of every step.
    ``features`` (N, patches, d_image) cached patch features, ``ids``/``mask`` (N, L) the captions.

    End to end from pixels (``cnn`` given, the GPU option): ``features`` are then the (N, 3, 75, 75)
    uint8 images, and each step computes the patch descriptions with chapter 05's patch CNN *with*
    gradients, so the loss of the captions trains the CNN too (its parameters join the optimizer)."""
    if cnn is not None:
        check_uint8_images(features)
        from course_utils.vision.patch_cnn import describe_patches

        cnn.requires_grad_(True)

        def batch_features(idx, device):
            return describe_patches(cnn(features[idx].to(device)), cnn.coords)

        params = [*model.named_parameters(), *(("cnn." + n, q) for n, q in cnn.named_parameters())]
    else:

        def batch_features(idx, device):
            return features[idx].to(device)

        params = list(model.named_parameters())
    if features.shape[0] != ids.shape[0] or ids.shape != mask.shape:
        raise CaptionerInputError(
            f"{features.shape[0]} images, ids {tuple(ids.shape)}, mask {tuple(mask.shape)}: "
            "give one caption (ids and mask of the same shape) per image."
        )
    decay = [p for n, p in params if p.dim() >= 2 and "embedding" not in n]
    no_decay = [p for n, p in params if not (p.dim() >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_factor(s, steps, warmup))
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device

    def random_captions():
        while True:
            yield torch.randint(features.shape[0], (batch_size,), generator=g)

    def loss_of(_, idx: torch.Tensor) -> torch.Tensor:
        length = int(mask[idx].sum(1).max())  # trim the padding every caption in the batch has
        return teacher_forced_loss(
            model,
            batch_features(idx, device),
            ids[idx, :length].to(device),
            mask[idx, :length].to(device),
            label_smoothing,
        )

    # The course's one loop; clipping covers the CNN too when it trains (its parameters follow the captioner's).
    trained = model if cnn is None else nn.ModuleList([model, cnn])
    history = training.train(
        trained,
        random_captions(),
        loss_of,
        opt,
        sched,
        steps=steps,
        max_grad_norm=1.0,
        progress=progress,
        desc="training the captioner" + (" and the CNN" if cnn is not None else ""),
    )
    model.eval()
    if cnn is not None:
        cnn.eval().requires_grad_(False)
    return history.values("loss")


# ============================================================================ images -> features -> captions


def check_uint8_images(images) -> None:
    """Raise one clear line unless ``images`` are (B, 3, 75, 75) uint8 pictures as shapes.generate makes them."""
    from course_utils.vision.patch_cnn import check_images

    if isinstance(images, torch.Tensor) and images.dim() == 3:
        raise CaptionerInputError(f"one image of shape {tuple(images.shape)}: add a batch axis, images[None].")
    check_images(images)
    if images.dtype != torch.uint8:
        raise CaptionerInputError(
            f"images have dtype {images.dtype}; the patch CNN reads uint8 pixels in 0..255 as "
            "shapes.generate makes them (for floats in [0, 1]: (x * 255).round().to(torch.uint8))."
        )


@torch.no_grad()
def features_of(cnn, images: torch.Tensor, what: str = "description") -> torch.Tensor:
    """All 25 patches of each image through the frozen patch CNN of chapter 05 (reading order)."""
    from course_utils.vision.patch_cnn import GRID, cache_patches

    check_uint8_images(images)
    return cache_patches(cnn, images, keep=GRID * GRID, what=what).vectors


@torch.no_grad()
def generate_captions(
    model: Captioner,
    features: torch.Tensor,
    tokenizer,
    num_beams: int = 1,
    max_new_tokens: int | None = None,
    length_penalty: float = 1.0,
    batch_size: int = 250,
    progress: bool = False,
) -> list[str]:
    """Captions for cached patch features, greedy (``num_beams=1``) or beam search, batch by batch."""
    from tqdm.auto import tqdm

    from course_utils.text.generation import generate

    model.eval()
    max_new_tokens = max_new_tokens or model.max_positions - 1
    out = []
    for start in tqdm(
        range(0, features.shape[0], batch_size), disable=not progress, desc=f"captions, beams={num_beams}"
    ):
        chunk = features[start : start + batch_size]
        bound = model.bind(chunk)
        prompt = torch.full((chunk.shape[0], 1), tokenizer.BOS, dtype=torch.long)
        ids = generate(
            bound,
            prompt,
            max_new_tokens,
            num_beams=num_beams,
            length_penalty=length_penalty,
            eos_token_id=tokenizer.EOS,
            pad_token_id=tokenizer.PAD,
        )
        out.extend(tokenizer.decode(row[1:]) for row in ids)
    return out
