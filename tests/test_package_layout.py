"""The package's layout: folders by the course's arc, imports one way, no module too long,
old flat names still importable as the same module objects, and nothing in the repository
importing through them."""

import ast
import importlib
import re
from pathlib import Path

import pytest

import course_utils

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "course_utils"
# Rank of each part of the package: a module may import only from parts of lower or equal rank;
# vision and scale share a rank but may not import each other.
RANK = {"core": 0, "layers": 1, "text": 2, "vision": 3, "scale": 3, "exercises": 4}
MAX_LINES = 600


def part_of(dotted: str) -> str:
    """'course_utils.text.bert' -> 'text'; top-level modules are 'core'."""
    parts = dotted.split(".")
    if len(parts) > 2 and parts[1] in RANK:
        return parts[1]
    if len(parts) > 1 and parts[1] in RANK:  # the folder itself
        return parts[1]
    return "core"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path):
    """Every course_utils module ``path`` imports (relative imports resolved), with line numbers."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # `from course_utils.text import bert` imports course_utils.text.bert
                candidate = f"{target}.{alias.name}"
                yield (
                    (candidate if (ROOT / Path(*candidate.split("."))).with_suffix(".py").is_file() else target),
                    node.lineno,
                )


PACKAGE_FILES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_folders_follow_the_course_arc():
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    assert {"layers", "text", "vision", "scale", "exercises"} <= set(folders), folders
    top_level = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    assert len(top_level) <= 8, f"the top level should hold only what every chapter uses, found {top_level}"


@pytest.mark.parametrize("path", PACKAGE_FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_too_long(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines: split it by idea (at most {MAX_LINES})"


@pytest.mark.parametrize("path", PACKAGE_FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_one_way(path):
    own = part_of(module_name(path))
    wrong = []
    for target, line in imported_modules(path):
        if not (target == "course_utils" or target.startswith("course_utils.")):
            continue
        other = part_of(target)
        if RANK[other] > RANK[own] or (own != other and {own, other} == {"vision", "scale"}):
            wrong.append(f"line {line}: {own} imports {target} ({other})")
    assert not wrong, f"{path.relative_to(ROOT)}: imports must go down the arc: {wrong}"


@pytest.mark.parametrize("old", sorted(course_utils.MOVED))
def test_old_flat_names_are_the_same_modules(old):
    moved = importlib.import_module(f"course_utils.{course_utils.MOVED[old]}.{old}")
    assert importlib.import_module(f"course_utils.{old}") is moved
    assert moved.__name__ == f"course_utils.{course_utils.MOVED[old]}.{old}"
    assert moved.__spec__.name == moved.__name__


def test_the_design_entry_points_still_import():
    from course_utils.attention import MultiHeadAttention, scaled_dot_product_attention
    from course_utils.bert import BertForPreTraining, BertModel
    from course_utils.decoder import GPTModel
    from course_utils.generation import generate
    from course_utils.layers import attention
    from course_utils.ner import read_conll, write_conll
    from course_utils.shapes import generate as generate_scenes
    from course_utils.transformer import TransformerEncoderLayer

    assert MultiHeadAttention is attention.MultiHeadAttention
    assert scaled_dot_product_attention is attention.scaled_dot_product_attention
    for thing in (
        BertForPreTraining,
        BertModel,
        GPTModel,
        generate,
        read_conll,
        write_conll,
        generate_scenes,
        TransformerEncoderLayer,
    ):
        assert callable(thing)


OLD_NAME = re.compile(r"\bcourse_utils[./](" + "|".join(sorted(course_utils.MOVED)) + r")\b")
OLD_IMPORT = re.compile(r"from course_utils import ([\w, ]+)")


def repository_texts():
    for folder in ("course_utils", "tests", "benchmarks", "tools", "notebooks", "notebook_sources"):
        for path in sorted((ROOT / folder).rglob("*")):
            if (
                path.suffix in {".py", ".ipynb"}
                and "__pycache__" not in path.parts
                and path.name != Path(__file__).name
            ):
                yield path
    for name in ("README.md", "README.zh.md", "CONTRIBUTING.md", "course", "conftest.py"):
        yield ROOT / name


def test_nothing_in_the_repository_uses_the_old_names():
    found = []
    for path in repository_texts():
        text = path.read_text(encoding="utf-8")
        if path.name == "__init__.py" and path.parent == PACKAGE:
            continue  # the table of moved names
        found += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in OLD_NAME.finditer(text)]
        for m in OLD_IMPORT.finditer(text):
            old = [
                n.split(" as ")[0].strip()
                for n in m.group(1).split(",")
                if n.split(" as ")[0].strip() in course_utils.MOVED
            ]
            found += [f"{path.relative_to(ROOT)}: from course_utils import {n}" for n in old]
    assert not found, f"use the folders' names (course_utils.text.bert, not course_utils.bert): {found[:10]}"
