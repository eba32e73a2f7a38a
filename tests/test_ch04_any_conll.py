"""Chapter 04 runs on any CoNLL files: a foreign tag set, two-column files, odd blank lines.

The whole notebook is executed in the fast mode with papermill on generated train/dev/test
files whose entity types are nothing like PER/ORG/LOC/MISC: lower-case, multi-word
(``work_of_art``), hyphenated (``medical-condition``), 13 of them. One of the slower tests
(about 2 to 2.5 minutes on a loaded 2-core machine, load average about 8): it is the only proof that no cell hard-codes a tag.
"""

import json
import random
from pathlib import Path

import nbformat
import pytest

from course_utils.text import ner

papermill = pytest.importorskip("papermill")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "04_bert_ner_finetuning.ipynb"

# entity type -> the phrases (one or more words) that fill it
FILLERS = {
    "person": ["Amara Okafor", "Lin Wei", "Tomasz Nowak", "Ana Duarte"],
    "org": ["Helix Labs", "the Riverside Trust", "Nordvik Shipping"],
    "gpe": ["Quito", "New Brunswick", "Lagos"],
    "work_of_art": ["The Silent Harbour", "Songs of Ash"],
    "medical-condition": ["type 2 diabetes", "asthma", "migraine"],
    "drug-name": ["metformin", "ibuprofen", "salbutamol"],
    "date": ["last Tuesday", "March 2021", "the spring"],
    "money": ["$ 40 million", "12 euros"],
    "event": ["the Harvest Festival", "World Water Week"],
    "product": ["Model X2", "the Aurora phone"],
    "law": ["the Clean Air Act", "Article 9"],
    "language": ["Swahili", "Basque"],
    "norp": ["Kenyan", "Catalan"],
}
TEMPLATES = [
    "{person} of {org} said on {date} that {drug-name} helps with {medical-condition} .",
    "{person} wrote {work_of_art} in {gpe} .",
    "{org} paid {money} for {product} .",
    "At {event} , {norp} speakers read {work_of_art} in {language} .",
    "Under {law} , {org} must report {medical-condition} cases in {gpe} .",
    "The weather was mild .",
]


def sentence(rng):
    tokens, tags = [], []
    for word in rng.choice(TEMPLATES).split():
        if word.startswith("{"):
            kind = word[1:-1]
            for i, piece in enumerate(rng.choice(FILLERS[kind]).split()):
                tokens.append(piece)
                tags.append(("B-" if i == 0 else "I-") + kind)
        else:
            tokens.append(word)
            tags.append("O")
    return tokens, tags


def write(path, sentences, columns):
    """CoNLL with 2 columns (tab-separated, blank lines of spaces/tabs) or 4 columns (spaces)."""
    lines = ["-DOCSTART- -X- -X- O", ""] if columns == 4 else []
    for tokens, tags in sentences:
        for token, tag in zip(tokens, tags):
            lines.append(f"{token}\t{tag}" if columns == 2 else f"{token} NN O {tag}")
        lines.append(" \t " if columns == 2 else "")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_chapter_04_runs_on_a_foreign_tag_set(tmp_path):
    rng = random.Random(0)
    splits = {"train": 80, "dev": 24, "test": 24}
    files = {}
    for split, n in splits.items():
        files[split] = tmp_path / f"{split}.conll"
        write(files[split], [sentence(rng) for _ in range(n)], columns=2 if split == "train" else 4)
        assert len(ner.read_conll(files[split])) == n  # the blank lines of spaces and tabs end sentences
    types = {tag[2:] for split in files.values() for _, tags in ner.read_conll(split) for tag in tags if tag != "O"}
    assert types == set(FILLERS) and len(types) >= 10

    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(out),
        kernel_name="python3",
        cwd=str(NOTEBOOK.parent),
        progress_bar=False,
        parameters=dict(
            fast=True,
            train_file=str(files["train"]),
            dev_file=str(files["dev"]),
            test_file=str(files["test"]),
            output_dir=str(tmp_path / "ner_model"),
        ),
    )
    outputs = "\n".join(str(o) for cell in nbformat.read(out, as_version=4).cells for o in cell.get("outputs", []))
    assert "B-work_of_art" in outputs and "I-medical-condition" in outputs  # the labels printed are the data's own
    assert "test (test.conll)" in outputs and "unseen names" not in outputs  # scores named after the file used
    saved = json.loads((tmp_path / "ner_model" / "config.json").read_text(encoding="utf-8"))
    assert set(saved["id2label"].values()) == {"O"} | {f"{p}-{t}" for t in FILLERS for p in "BI"}
