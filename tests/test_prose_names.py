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
from notebook_code import sections

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


def section_found(reference: str, headings: list[str]) -> bool:
    """ "4. Six fusions (the relation network, inline)" names section 4, and its first words are in section 4's
    heading or in one of the chapter's subheadings; a reference without a number is the start of a heading."""
    reference = re.sub(r"\s*\(.*\)$", "", reference).strip().lower()  # headings come lower-case (sections)
    numbered = re.match(r"(\d+)\.\s+(.*)", reference)
    if not numbered:
        return any(h.startswith(reference) for h in headings)
    number, title = numbered.groups()
    first_words = " ".join(title.split()[:2])
    section = [h for h in headings if h.startswith(f"{number}. ")]
    return bool(section) and any(first_words in h for h in section + [h for h in headings if h[:1].isalpha()])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exercise_sections_are_headings_of_their_chapter(path):
    """An exercise's `section` ("4. Six fusions") is a section of its chapter, so "draws on" points somewhere."""
    from course_utils import exercises
    from course_utils.exercises import registry

    nb = nbformat.read(path, as_version=4)
    headings = [heading for cell in nb.cells if cell.cell_type == "markdown" for heading in sections(cell.source)]
    wrong = {
        key: registry.get(key).section
        for key in exercises.keys(path.name[:2])
        if not all(section_found(ref, headings) for ref in registry.get(key).section.split("; ") if ref)
    }
    assert not wrong, f"{path.name}: exercises whose section is not a section of the chapter: {wrong}"


def test_section_references_are_checked():
    headings = ["4. six fusions", "the relation network, inline", "7. after relation networks", "recap"]
    assert section_found("4. Six fusions (the relation network, inline)", headings)
    assert not section_found("7. Where the methods go wrong", headings)
    assert not section_found("5. Six fusions", headings)
