"""Every package the course imports is declared: requirements.txt names each one the notebooks,
course_utils, tests, benchmarks and tools import (or, for tests and tools, a package that one of those
requires); pyproject.toml's core dependencies plus the [colab] extra cover what the notebooks and
course_utils import on Colab, with requirements.txt's bounds; environment.yml is requirements.txt."""

from __future__ import annotations

import ast
import functools
import json
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
# Imported only where they import, never installed by the course (a one-line message otherwise).
OPTIONAL = {"torchvision": "chapter 07's online photos, on Colab or a GPU machine (COURSE_DESIGN: no CPU build here)"}
# What Colab's kernel itself runs on; installing another version there would break the kernel.
COLAB_PROVIDES = {"ipython"}


def imported_modules(source: str) -> set[str]:
    """Top-level names of every import in ``source`` (also inside functions); notebook magics skipped."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def third_party_imports(files: list[Path]) -> dict[str, list[str]]:
    """{module: [files importing it]} without the standard library, the course's own modules and
    modules that sit next to the importing file or in tools/ (helpers)."""
    found: dict[str, list[str]] = {}
    for path in files:
        if path.suffix == ".ipynb":
            cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
            sources = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
        else:
            sources = [path.read_text(encoding="utf-8")]
        for source in sources:
            for name in imported_modules(source):
                local = (path.parent / f"{name}.py").exists() or (ROOT / "tools" / f"{name}.py").exists()
                if name in sys.stdlib_module_names or name == "course_utils" or local:
                    continue
                found.setdefault(name, []).append(path.relative_to(ROOT).as_posix())
    return found


def course_files() -> list[Path]:
    return sorted(ROOT.glob("notebooks/*.ipynb")) + sorted(ROOT.glob("course_utils/**/*.py"))


def support_files() -> list[Path]:
    return [p for folder in ("tests", "benchmarks", "tools") for p in sorted((ROOT / folder).glob("*.py"))]


@functools.cache
def course_imports() -> dict[str, list[str]]:
    return third_party_imports(course_files())


def requirements(path: Path) -> dict[str, Requirement]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    found = [Requirement(line) for line in lines if line and not line.startswith("-")]
    return {canonicalize_name(r.name): r for r in found}


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml with tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@functools.cache
def _owners() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def distribution_of(module: str) -> str:
    owners = _owners().get(module)
    if not owners:
        raise AssertionError(f"no installed distribution provides the module {module!r}: install and declare it")
    return canonicalize_name(owners[0])


def required_by(names: set[str]) -> set[str]:
    """``names`` and every distribution they require, installed ones followed (extras left out)."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return seen


def test_course_imports_are_declared_in_requirements():
    declared = set(requirements(ROOT / "requirements.txt"))
    missing = {}
    for module, files in course_imports().items():
        if module in OPTIONAL:
            continue
        if distribution_of(module) not in declared:
            missing[module] = files[:3]
    assert not missing, f"imported but not in requirements.txt: {missing}"


def test_chapter_00_prints_the_version_of_every_package_requirements_installs():
    from course_utils import config

    listed = [canonicalize_name(name) for name in config.PACKAGES + config.DEV_PACKAGES]
    assert listed == list(requirements(ROOT / "requirements.txt")), (
        "config.PACKAGES + DEV_PACKAGES must list requirements.txt's packages, in its order"
    )


def test_test_and_tool_imports_are_installed_by_requirements():
    declared = set(requirements(ROOT / "requirements.txt"))
    installed = required_by(declared)
    missing = {
        m: f[:3]
        for m, f in third_party_imports(support_files()).items()
        if m not in OPTIONAL and distribution_of(m) not in installed
    }
    assert not missing, f"imported but neither in requirements.txt nor required by a package there: {missing}"


def test_colab_gets_every_package_the_course_imports():
    project = pyproject()["project"]
    core = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    colab = {canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"]["colab"]}
    covered = required_by(core | colab) | COLAB_PROVIDES
    missing = {m: f[:3] for m, f in course_imports().items() if m not in OPTIONAL and distribution_of(m) not in covered}
    assert not missing, f"imported by the course but not installed on Colab by pyproject's [colab] extra: {missing}"


def test_colab_extra_has_the_bounds_of_requirements():
    pinned = requirements(ROOT / "requirements.txt")
    for line in pyproject()["project"]["optional-dependencies"]["colab"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"[colab] installs {name}, which requirements.txt does not list"
        assert requirement.specifier == pinned[name].specifier, (
            f"[colab] {line!r} differs from requirements.txt's {str(pinned[name])!r}"
        )


def test_environment_yml_is_requirements_txt_with_the_course_torch():
    text = (ROOT / "environment.yml").read_text()
    assert re.search(r"^\s*- -r requirements\.txt\s*$", text, re.M), "environment.yml must install requirements.txt"
    assert re.search(r"^\s*- -e \.\s*$", text, re.M), "environment.yml must install the course package"
    torch_pin = re.search(r"^\s*- torch==(\S+)\s*$", text, re.M)
    script_pin = re.search(r"pip install --quiet torch==(\S+)", (ROOT / "course").read_text())
    assert torch_pin and script_pin and torch_pin.group(1) == script_pin.group(1), (
        "environment.yml and ./course must install the same torch"
    )


def test_optional_imports_are_really_optional():
    """Every OPTIONAL module is imported inside a function (only when asked), never at a notebook's top level."""
    for module in OPTIONAL:
        for path in course_files():
            if path.suffix != ".ipynb":
                continue
            for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
                source = "".join(cell["source"])
                if cell["cell_type"] != "code" or module not in source:
                    continue
                try:
                    tree = ast.parse(source)
                except SyntaxError:
                    continue
                top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) and module in ast.unparse(n)]
                assert not top, f"{path.name} imports {module} at the top level of a cell: it is optional"
