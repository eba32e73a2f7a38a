"""Every chapter has its frame (issue 17, CONTRIBUTING.md "A chapter notebook"): right after the title
and the Colab cell, before the parameters cell, a markdown cell with "What you will be able to do"
(3 to 5 outcomes), "Prerequisites" (chapters, and what it reuses or rebuilds in `runs/`) and "Time"
(reading, fast compute, full compute); the setup cell prints the versions that matter; at the end a
"Recap" (after the last teaching section, before the glossary) that says what the next chapter builds
on them (chapter 09: where to go next)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from notebook_code import FENCE, HEADING, sections

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ITEM = re.compile(r"^\s{0,3}(?:[-*+]|\d+[.)])\s+\S", re.M)
LAST_CHAPTER = max(int(path.name[:2]) for path in NOTEBOOKS) if NOTEBOOKS else 0


def section(markdown_cells: list[str], name: str) -> str | None:
    """The text under the first heading that starts with ``name`` (case-insensitive), in any of the cells."""
    for source in markdown_cells:
        for heading, body in sections(source).items():
            if heading.startswith(name):
                return body
    return None


def parameters_index(nb) -> int:
    return next(i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", []))


@pytest.fixture(scope="module", params=NOTEBOOKS, ids=lambda p: p.name[:2])
def chapter(request):
    path = request.param
    return path, nbformat.read(path, as_version=4)


def frame_cells(nb) -> list[str]:
    """The markdown cells between the title and the parameters cell: where the frame belongs."""
    return [cell.source for cell in nb.cells[1 : parameters_index(nb)] if cell.cell_type == "markdown"]


def test_outcomes(chapter):
    path, nb = chapter
    body = section(frame_cells(nb), "what you will be able to do")
    assert body is not None, (
        f"{path.name}: no '## What you will be able to do' heading in a markdown cell after the title/Colab cells "
        "and before the parameters cell"
    )
    outcomes = ITEM.findall(body)
    assert 3 <= len(outcomes) <= 5, (
        f"{path.name}: 'What you will be able to do' lists {len(outcomes)} outcomes (3 to 5)"
    )


def test_prerequisites(chapter):
    path, nb = chapter
    body = section(frame_cells(nb), "prerequisites")
    assert body is not None, f"{path.name}: no '## Prerequisites' heading in the frame (before the parameters cell)"
    assert "runs/" in body, (
        f"{path.name}: the prerequisites say which `runs/` artefacts the chapter reuses or rebuilds (or that it needs none)"
    )
    if path.name[:2] != "00":
        assert re.search(r"chapters?:?\s+0\d", body, re.I), (
            f"{path.name}: the prerequisites name the chapters it builds on"
        )


def test_time(chapter):
    path, nb = chapter
    body = section(frame_cells(nb), "time")
    assert body is not None, f"{path.name}: no '## Time' heading in the frame (before the parameters cell)"
    lowered = body.lower()
    for word in ("reading", "fast", "full"):
        assert word in lowered, f"{path.name}: 'Time' gives the {word} time (reading, fast compute, full compute)"
    assert re.search(r"\d", body), f"{path.name}: 'Time' gives measured figures, not just words"


def test_setup_cell_prints_versions(chapter):
    path, nb = chapter
    code = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    setup = next(i for i, source in enumerate(code) if re.search(r"^[^#\n]*config\.setup\(", source, re.M))
    assert any("versions(" in source or "__version__" in source for source in code[setup : setup + 2]), (
        f"{path.name}: the setup cell (or the code cell after it) prints the versions of the packages that "
        "matter to the chapter (chapter 00: all of them)"
    )


def test_recap(chapter):
    path, nb = chapter
    number = int(path.name[:2])
    recaps = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "markdown" and any(h.startswith("recap") for h in sections(cell.source))
    ]
    assert len(recaps) == 1, (
        f"{path.name}: one markdown cell with a '## Recap' heading at the end (found {len(recaps)})"
    )
    where = recaps[0]
    body = section([nb.cells[where].source], "recap")
    assert len(ITEM.findall(body)) >= 2, f"{path.name}: the recap gives the key ideas as a few bullets"
    if number < LAST_CHAPTER:
        assert re.search(rf"chapter\s+0?{number + 1}\b", body, re.I), (
            f"{path.name}: the recap says what chapter {number + 1:02d} builds on these ideas"
        )
    else:
        assert "next" in body.lower(), f"{path.name}: the last chapter's recap says where to go next"
    glossary = next(i for i, cell in enumerate(nb.cells) if "glossary.show(" in cell.source)
    exercises_start = next(
        (i for i, cell in enumerate(nb.cells) if "exercises.page(" in cell.source or "exercises.show(" in cell.source),
        glossary,
    )
    teaching = [
        i
        for i, cell in enumerate(nb.cells[:exercises_start])
        if cell.cell_type == "markdown"
        and i != where
        and HEADING.search(FENCE.sub("", cell.source))
        and not re.search(r"^#{1,4}\s+(\d+\.\s*)?exercises", cell.source, re.I | re.M)
    ]
    assert where > max(teaching), (
        f"{path.name}: the recap (cell {where}) comes after the last teaching section (cell {max(teaching)})"
    )
    assert where < glossary, f"{path.name}: the recap comes before the glossary"
