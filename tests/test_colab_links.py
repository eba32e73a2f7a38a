"""Colab: every badge and every Colab cell is built from the one repository setting in pyproject.toml
([tool.course]); the Colab cell, run as on Colab (with git and pip stubbed), says what it installs and
installs exactly the [colab] extra from the configured repository."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import colab_links  # noqa: E402

# Chapters whose title cell still waits for its badge (they were being rewritten when the badges went in):
# `python tools/colab_links.py --write notebooks/01_*.ipynb notebooks/02_*.ipynb ...` and empty this set.
BADGE_PENDING: set[str] = set()


def test_the_setting_is_a_github_repository():
    config = colab_links.settings()
    assert config["repository"] == f"https://github.com/{config['owner']}/{config['name']}"
    assert config["branch"]


@pytest.mark.parametrize("path", colab_links.chapters(), ids=lambda p: p.name)
def test_each_chapter_has_its_own_badge_and_clones_the_configured_repository(path):
    found = colab_links.problems(notebooks=[path])
    if path.name[:2] in BADGE_PENDING:
        found = [p for p in found if "Colab badge is missing" not in p]
    assert not found, "\n".join(found)


def test_pending_chapters_are_still_pending():
    """A chapter that got its badge leaves BADGE_PENDING, so the check covers it from then on."""
    have = {
        p.name[:2]
        for p in colab_links.chapters()
        if colab_links.BADGE.search(nbformat.read(p, as_version=4).cells[0].source)
    }
    assert not (have & BADGE_PENDING), f"remove {sorted(have & BADGE_PENDING)} from BADGE_PENDING"


def test_readme_links_and_the_citation_name_the_configured_repository():
    assert not [p for p in colab_links.problems() if p.startswith(("README", "CITATION"))]


def test_a_fork_changes_one_place(tmp_path):
    """Another repository in pyproject.toml: the badge, the Colab cell and the check all follow it."""
    (tmp_path / "notebooks").mkdir()
    text = (
        (ROOT / "pyproject.toml")
        .read_text()
        .replace(colab_links.settings()["repository"], "https://github.com/someone/my-fork")
    )
    (tmp_path / "pyproject.toml").write_text(text.replace('branch = "main"', 'branch = "dev"'))
    (tmp_path / "CITATION.cff").write_text((ROOT / "CITATION.cff").read_text())
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# 00 · Title\n\nText."),
            nbformat.v4.new_code_cell("print('old Colab cell')"),
        ]
    )
    path = tmp_path / "notebooks" / "00_x.ipynb"
    nbformat.write(nb, path)
    assert len(colab_links.problems(tmp_path)) == 3  # no badge; a Colab cell that clones nothing; the citation
    colab_links.write([path], colab=True, root=tmp_path)
    assert colab_links.problems(tmp_path) == []
    written = nbformat.read(path, as_version=4)
    assert written.cells[0].source.startswith("# 00 · Title\n\n[![Open In Colab]")
    assert "colab.research.google.com/github/someone/my-fork/blob/dev/notebooks/00_x.ipynb" in written.cells[0].source
    assert written.cells[0].source.endswith("\n\nText.")
    assert '"https://github.com/someone/my-fork"' in written.cells[1].source
    assert 'repository-code: "https://github.com/someone/my-fork"' in (tmp_path / "CITATION.cff").read_text()
    colab_links.write([path], colab=True, root=tmp_path)  # again: the badge is replaced, not added
    assert nbformat.read(path, as_version=4).cells[0].source == written.cells[0].source


def test_a_repository_colab_cannot_open_is_named(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.course]\nrepository = "https://gitlab.com/a/b"\nbranch = "main"\n')
    with pytest.raises(ValueError, match="https://github.com/OWNER/NAME"):
        colab_links.settings(tmp_path)


def run_colab_cell(source: str, monkeypatch, cloned: bool = False) -> tuple[list[list[str]], str]:
    """Run the Colab cell as on Colab with a fresh runtime: no course_utils yet; git and pip recorded, not run."""
    commands = []
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "course_utils" else real_find_spec(name, *a)
    )
    monkeypatch.setattr(subprocess, "run", lambda command, **kw: commands.append(command))
    real_isdir = __import__("os").path.isdir
    monkeypatch.setattr("os.path.isdir", lambda p: cloned if p == "/content/course/.git" else real_isdir(p))
    monkeypatch.setattr(sys, "path", list(sys.path))
    printed = []
    exec(compile(source, "<colab cell>", "exec"), {"print": lambda *a, **k: printed.append(" ".join(map(str, a)))})
    return commands, "\n".join(printed)


def test_the_colab_cell_says_what_it_installs_and_installs_it(monkeypatch):
    config = colab_links.settings()
    cell = colab_links.colab_cell(config, colab_links.colab_extra())
    commands, printed = run_colab_cell(cell, monkeypatch)
    assert commands[0][:2] == ["git", "clone"] and config["repository"] in commands[0]
    assert commands[0][commands[0].index("--branch") + 1] == config["branch"]
    assert commands[1][1:] == ["-m", "pip", "install", "--quiet", "-e", "/content/course[colab]"]
    for package in colab_links.colab_extra():  # what it says is what the extra holds
        assert package in printed, f"the Colab cell does not say it installs {package}"
    assert "torch is kept" in printed
    assert "chapter 00" in printed  # where keeping models on Drive is explained
    commands, _ = run_colab_cell(cell, monkeypatch, cloned=True)  # run again after a failed install
    assert [c[:2] for c in commands] == [[sys.executable, "-m"]], "it must not clone over an existing clone"


def test_the_colab_cell_is_lint_clean(tmp_path):
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip("ruff is not installed (pip install -r requirements.txt)")
    script = tmp_path / "colab_cell.py"
    script.write_text(colab_links.colab_cell(colab_links.settings(), colab_links.colab_extra()) + "\n")
    done = subprocess.run(
        [str(ruff), "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(script)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
