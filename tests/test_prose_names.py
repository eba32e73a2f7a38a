"""A name the prose puts in backticks, `module.attribute`, exists where it says.

The chapters import the package's modules under short names (`mm`, `vqa_training`, `shapes`); when a
function moves to another module, the code cells fail loudly but a markdown cell that still says
`mm.train_vqa` is silently wrong. This test resolves every such name in the markdown (and in code
comments) against the modules that notebook imports.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
FILE_SUFFIXES = {"json", "py", "md", "txt", "ipynb", "safetensors", "yml", "yaml", "toml", "csv", "png"}
DOTTED = re.compile(r"`(?P<alias>[A-Za-z_]\w*)\.(?P<path>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")


def module_aliases(nb) -> dict[str, str]:
    """{name in the notebook: module} for every import of a course_utils module in its code cells."""
    aliases = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse("\n".join(line for line in cell.source.splitlines() if not line.startswith(("%", "!"))))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("course_utils") and a.asname:
                        aliases[a.asname] = a.name
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("course_utils"):
                for a in node.names:
                    try:  # a module, not a function
                        importlib.import_module(f"{node.module}.{a.name}")
                    except ModuleNotFoundError:
                        continue
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    return aliases


def prose_references(nb):
    for cell in nb.cells:
        text = cell.source
        if cell.cell_type == "code":  # only the comments of code cells are prose
            text = "\n".join(line.split("#", 1)[1] for line in text.splitlines() if "#" in line)
        yield from DOTTED.finditer(text)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_backticked_names_exist(path):
    nb = nbformat.read(path, as_version=4)
    aliases = module_aliases(nb)
    missing = []
    for match in prose_references(nb):
        if match["alias"] not in aliases or match["path"].split(".")[-1] in FILE_SUFFIXES:
            continue  # not a module's name, or a file name such as `config.json`
        obj = importlib.import_module(aliases[match["alias"]])
        for part in match["path"].split("."):
            if not hasattr(obj, part):
                missing.append(f"`{match['alias']}.{match['path']}` ({aliases[match['alias']]} has no {part!r})")
                break
            obj = getattr(obj, part)
    assert not missing, f"{path.name}: names in the prose that do not exist: {sorted(set(missing))}"


def test_the_check_finds_a_wrong_name():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("from course_utils.vision import multimodal as mm"),
        nbformat.v4.new_markdown_cell("One loop, `mm.train_vqa`, and `mm.make_fusion` builds them."),
    ]
    aliases = module_aliases(nb)
    names = [m["path"] for m in prose_references(nb)]
    assert aliases == {"mm": "course_utils.vision.multimodal"} and names == ["train_vqa", "make_fusion"]
    module = importlib.import_module(aliases["mm"])
    assert not hasattr(module, "train_vqa") and hasattr(module, "make_fusion")
