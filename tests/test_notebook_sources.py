"""tools/notebook_sources.py, the jupytext pairing of the chapters: every notebook survives the
round trip notebook -> percent script -> notebook, an edit in a script reaches only its cell (ids kept),
and the check names a pair that drifted apart. Runs on copies; the repository's notebooks are not touched."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import notebook_sources  # noqa: E402

jupytext = pytest.importorskip("jupytext", reason="jupytext is not installed (pip install -r requirements.txt)")
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture
def course_copy(tmp_path):
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return tmp_path


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_the_round_trip_keeps_every_cell(notebook):
    text = notebook_sources.script_text(notebook)
    assert not text.startswith("# ---"), "the script carries a metadata header"
    back = jupytext.reads(text, fmt=notebook_sources.FORMAT)
    assert notebook_sources.cells(back) == notebook_sources.cells(nbformat.read(notebook, as_version=4))


def test_an_edit_in_a_script_reaches_its_cell_only(course_copy):
    folder = course_copy / "notebook_sources"
    notebook = course_copy / "notebooks" / "00_setup.ipynb"
    before = nbformat.read(notebook, as_version=4)
    notebook_sources.write_scripts([notebook], folder)
    found = notebook_sources.problems(course_copy, folder)
    assert all("has no script" in p and "00_setup" not in p for p in found), found  # only the others lack one
    script = folder / "00_setup.py"
    marker = "seed = 0"
    text = script.read_text()
    assert marker in text
    script.write_text(text.replace(marker, "seed = 1", 1))
    assert any("00_setup.ipynb and 00_setup.py differ" in p for p in notebook_sources.problems(course_copy, folder))
    notebook_sources.write_notebooks([script], course_copy)
    after = nbformat.read(notebook, as_version=4)
    assert [c.id for c in after.cells] == [c.id for c in before.cells]
    changed = [i for i, (a, b) in enumerate(zip(before.cells, after.cells)) if a.source != b.source]
    assert len(changed) == 1 and "seed = 1" in after.cells[changed[0]].source
    assert after.cells[changed[0]].metadata.get("tags") == before.cells[changed[0]].metadata.get("tags")
    assert after.metadata == before.metadata
    assert not any("00_setup" in p for p in notebook_sources.problems(course_copy, folder))


def test_the_check_names_a_missing_notebook_and_a_missing_script(course_copy):
    folder = course_copy / "notebook_sources"
    folder.mkdir()
    (folder / "99_orphan.py").write_text("# %%\nprint(1)\n")
    found = notebook_sources.problems(course_copy, folder)
    assert any("99_orphan.py has no notebook" in p for p in found)
    assert sum("has no script" in p for p in found) == len(NOTEBOOKS)


def test_every_chapter_is_paired_with_its_script_in_the_repository():
    """The pairing is applied: each notebook's percent script is in notebook_sources/ and they agree
    (after editing either side, run `python tools/notebook_sources.py write` or `to-notebooks`)."""
    assert notebook_sources.problems() == []
    assert len(list(notebook_sources.FOLDER.glob("*.py"))) == len(NOTEBOOKS)
