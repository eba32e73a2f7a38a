"""Every chapter notebook follows CONTRIBUTING.md: valid, committed without outputs, the
Colab cell first, one `parameters` cell, config.setup, exercises and the glossary at the end."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from course_utils import exercises

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
MAX_BYTES = 200_000
MIN_CHECKS = {"00": 1}  # the setup chapter may have fewer than the usual four exercises
CHECK_CALL = re.compile(r"""exercises\.check\(\s*(?:(["'])(?P<key>[^"']+)\1)?""")
SHOW_CALL = re.compile(r"""exercises\.show\(\s*(["'])(?P<key>[^"']+)\1""")


def code_cells(nb) -> list[str]:
    return [cell.source for cell in nb.cells if cell.cell_type == "code"]


def code_lines(source: str) -> str:
    """The source without comment lines, so `# exercises.solution(...)` is not counted as a call."""
    return "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("#"))


@pytest.fixture(scope="module", params=NOTEBOOKS, ids=lambda p: p.name)
def notebook(request):
    path = request.param
    return path, nbformat.read(path, as_version=4)


def chapter_of(path: Path) -> str:
    return path.name[:2]


def test_notebooks_exist():
    assert NOTEBOOKS, "no notebooks/*.ipynb found"


def test_name_and_size(notebook):
    path, _ = notebook
    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name), f"{path.name}: name chapters NN_snake_case.ipynb"
    size = path.stat().st_size
    assert size < MAX_BYTES, (
        f"{path.name} is {size / 1000:.0f} kB (limit {MAX_BYTES // 1000} kB): outputs or images stored?"
    )


def test_valid_nbformat(notebook):
    path, nb = notebook
    nbformat.validate(nb)  # raises ValidationError naming the problem
    assert nb.nbformat == 4


def test_no_outputs_or_execution_counts(notebook):
    path, nb = notebook
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has stored outputs: clear them before committing"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count: clear outputs"


def test_first_code_cell_is_the_colab_cell(notebook):
    path, nb = notebook
    first = code_cells(nb)[0]
    assert "google.colab" in first and "course_utils" in first, (
        f"{path.name}: the first code cell must be the Colab cell (copy it from CONTRIBUTING.md / 00_setup)"
    )
    assert nb.cells[0].cell_type == "markdown", f"{path.name}: start with a title cell"


def test_colab_cell_is_the_same_everywhere():
    cells = {path.name: code_cells(nbformat.read(path, as_version=4))[0] for path in NOTEBOOKS}
    variants = {}
    for name, source in cells.items():
        variants.setdefault(source.strip(), []).append(name)
    assert len(variants) <= 1, f"the Colab cell differs between notebooks: {list(variants.values())}"


def test_one_parameters_cell_before_setup(notebook):
    path, nb = notebook
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: exactly one cell must be tagged 'parameters', found {len(tagged)}"
    params = nb.cells[tagged[0]]
    assert params.cell_type == "code"
    assert re.search(r"^fast\s*=\s*None\b", params.source, re.M), (
        f"{path.name}: the parameters cell needs `fast = None`"
    )
    assert re.search(r"^seed\s*=", params.source, re.M), f"{path.name}: the parameters cell needs `seed = ...`"
    setup = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "config.setup(" in code_lines(c.source)]
    assert setup, f"{path.name} never calls config.setup(fast=fast, seed=seed)"
    colab = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    assert colab < tagged[0] < setup[0], f"{path.name}: order must be Colab cell, parameters cell, config.setup"
    assert re.search(r"config\.setup\([^)]*fast\s*=\s*fast[^)]*seed\s*=\s*seed", nb.cells[setup[0]].source), (
        f"{path.name}: pass the parameters on: config.setup(fast=fast, seed=seed)"
    )


def test_exercises_checked(notebook):
    path, nb = notebook
    chapter = chapter_of(path)
    check_cells = [src for src in code_cells(nb) if CHECK_CALL.search(code_lines(src))]
    calls = [m for src in check_cells for m in CHECK_CALL.finditer(code_lines(src))]
    want = MIN_CHECKS.get(chapter, 4)
    assert len(calls) >= want, f"{path.name} has {len(calls)} exercises.check( calls; it needs at least {want}"
    checked = [m.group("key") for m in calls]
    assert None not in checked, f"{path.name}: call exercises.check with the key as a string literal"
    registered = exercises.keys(chapter)
    assert not set(checked) - set(registered), (
        f"{path.name} checks unregistered exercises {set(checked) - set(registered)}"
    )
    assert not set(registered) - set(checked), f"{path.name} never checks {set(registered) - set(checked)}"
    shown = {m.group("key") for src in code_cells(nb) for m in SHOW_CALL.finditer(code_lines(src))}
    assert set(checked) <= shown, (
        f"{path.name}: show every exercise with exercises.show(key): missing {set(checked) - shown}"
    )
    for src in check_cells:  # the learner starts from a placeholder, so run-all never reveals an answer
        assert re.search(r"=\s*None\b", src), f"{path.name}: the check cell needs a placeholder `answer = None`:\n{src}"


def test_glossary_shown(notebook):
    path, nb = notebook
    chapter = chapter_of(path)
    code = "\n".join(code_lines(src) for src in code_cells(nb))
    assert re.search(rf"""glossary\.show\(\s*["']{chapter}["']\s*\)""", code), (
        f'{path.name}: end with glossary.show("{chapter}")'
    )
