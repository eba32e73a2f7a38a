"""The course's Colab links, built from one setting: ``[tool.course]`` in pyproject.toml.

    python tools/colab_links.py                      check every badge and Colab cell (exit 1 on a problem)
    python tools/colab_links.py --write [NB ...]     put the badge into each chapter's title cell
    python tools/colab_links.py --write --colab-cell [NB ...]
                                                     ... and replace its first code cell by the Colab cell
    python tools/colab_links.py --readme             print the README's badge column, one row per chapter

A fork changes ``repository`` (and ``branch``) in pyproject.toml and runs ``--write --colab-cell``
(CITATION.cff's repository-code follows too).
Notebooks are read and written with nbformat in one step each (cell ids and everything else kept).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\((?P<url>[^)]*)\)")
COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/[^\s)\"'>]+")
COLAB_CELL_REPO = re.compile(r"""os\.environ\.get\("COURSE_REPO",\s*"(?P<url>[^"]+)"\)""")


def settings(root: Path = ROOT) -> dict[str, str]:
    """``repository`` and ``branch`` from ``[tool.course]`` in pyproject.toml."""
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    try:
        import tomllib
    except ImportError:  # Python 3.10: read the two keys of the one table by hand
        table = re.search(r"^\[tool\.course\]\s*$(?P<body>.*?)(?=^\[|\Z)", text, re.M | re.S)
        body = table.group("body") if table else ""
        found = dict(re.findall(r'^(repository|branch)\s*=\s*"([^"]*)"', body, re.M))
    else:
        found = tomllib.loads(text).get("tool", {}).get("course", {})
    missing = [key for key in ("repository", "branch") if not found.get(key)]
    if missing:
        raise ValueError(
            f"pyproject.toml's [tool.course] lacks {missing}: set repository = "
            '"https://github.com/OWNER/NAME" and branch = "main".'
        )
    github = re.fullmatch(r"https://github\.com/(?P<owner>[\w.-]+)/(?P<name>[\w.-]+?)(?:\.git)?/?", found["repository"])
    if not github:
        raise ValueError(
            f"[tool.course] repository = {found['repository']!r}: Colab opens notebooks from GitHub, "
            "so give it as https://github.com/OWNER/NAME."
        )
    return {
        "repository": found["repository"],
        "branch": found["branch"],
        "owner": github["owner"],
        "name": github["name"],
    }


def colab_extra(root: Path = ROOT) -> list[str]:
    """The distribution names of pyproject.toml's ``[colab]`` extra (what the Colab cell installs)."""
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    block = re.search(r"^colab\s*=\s*\[(?P<items>.*?)\]", text, re.M | re.S)
    if not block:
        raise ValueError("pyproject.toml has no [project.optional-dependencies] colab = [...]")
    requirements = re.findall(r'"([^"]+)"', block.group("items"))
    return [re.match(r"[A-Za-z0-9_.-]+", r).group(0) for r in requirements]


def colab_url(notebook: str | Path, config: dict[str, str]) -> str:
    """The address that opens ``notebook`` (a path inside the repository) in Colab."""
    path = Path(notebook)
    if path.is_absolute():
        path = path.relative_to(ROOT)
    return (
        f"https://colab.research.google.com/github/{config['owner']}/{config['name']}"
        f"/blob/{config['branch']}/{path.as_posix()}"
    )


def badge(notebook: str | Path, config: dict[str, str]) -> str:
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(notebook, config)})"


def colab_cell(config: dict[str, str], packages: list[str]) -> str:
    """The first code cell of every chapter: on Colab it says what it installs, then installs it."""
    import textwrap

    listed = textwrap.wrap(
        f"course_utils and what Colab lacks ({', '.join(packages)}); Colab's own torch is kept. About a minute.",
        width=96,
        break_on_hyphens=False,
    )
    message = "\n".join(f'          "{line} "' for line in listed[:-1]) + f'\n          "{listed[-1]}")'
    return f'''# On Colab: fetch the course and install what Colab lacks. Elsewhere `./course lab` did this already.
import importlib.util
import os
import subprocess
import sys

if "google.colab" in sys.modules and importlib.util.find_spec("course_utils") is None:
    repo = os.environ.get("COURSE_REPO", "{config["repository"]}")
    branch = os.environ.get("COURSE_BRANCH", "{config["branch"]}")
    print(f"Colab: cloning {{repo}} ({{branch}}) into /content/course, then installing the course's package "
{message}
    if not os.path.isdir("/content/course/.git"):
        subprocess.run(["git", "clone", "--quiet", "--depth=1", "--branch", branch, repo, "/content/course"],
                       check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", "/content/course[colab]"], check=True)
    sys.path.insert(0, "/content/course")
    print("Colab: ready. Trained models go to /content/course/runs and vanish with the session; "
          "to keep them on Google Drive, see 'Keeping your models on Colab' in chapter 00.")
elif importlib.util.find_spec("course_utils") is None:
    print("course_utils is not installed: run `./course lab` in the course folder (see README.md).")'''


def chapters(root: Path = ROOT) -> list[Path]:
    return sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def with_badge(title: str, line: str) -> str:
    """The title cell's text with ``line`` as its badge: replaced where one is, else under the heading."""
    if BADGE.search(title):
        return BADGE.sub(lambda _: line, title, count=1)
    heading, newline, rest = title.partition("\n")
    if not heading.startswith("#"):
        raise ValueError(f"the title cell starts with {heading[:40]!r}, not a '# heading': add the title first")
    return f"{heading}\n\n{line}\n" + (f"\n{rest.lstrip(chr(10))}" if rest.strip() else "")


def problems(root: Path = ROOT, notebooks: list[Path] | None = None) -> list[str]:
    """Every badge, Colab link and Colab cell that does not agree with ``[tool.course]``; [] when all do."""
    import nbformat

    config = settings(root)
    found = []
    for path in notebooks if notebooks is not None else chapters(root):
        nb = nbformat.read(path, as_version=4)
        title = nb.cells[0].source if nb.cells and nb.cells[0].cell_type == "markdown" else ""
        urls = [m["url"] for m in BADGE.finditer(title)]
        expected = colab_url(path.relative_to(root), config)
        if urls != [expected]:
            found.append(
                f"{path.name}: the title cell's Colab badge is {urls or 'missing'}, expected one linking to "
                f"{expected} (run python tools/colab_links.py --write {path.relative_to(root)})"
            )
        code = [c.source for c in nb.cells if c.cell_type == "code"]
        repo = COLAB_CELL_REPO.search(code[0]) if code else None
        if not repo or repo["url"] != config["repository"]:
            found.append(
                f"{path.name}: the Colab cell clones {repo['url'] if repo else 'nothing'}, not "
                f"{config['repository']} (run python tools/colab_links.py --write --colab-cell)"
            )
    citation = root / "CITATION.cff"
    if citation.exists():
        cited = re.search(r'^repository-code:\s*"?([^"\n]+)"?', citation.read_text(encoding="utf-8"), re.M)
        if not cited or cited.group(1).strip() != config["repository"]:
            found.append(
                f"CITATION.cff: repository-code is {cited.group(1) if cited else 'missing'}, not "
                f"{config['repository']} (run python tools/colab_links.py --write)"
            )
    prefix = f"https://colab.research.google.com/github/{config['owner']}/{config['name']}/blob/{config['branch']}/"
    for readme in sorted(root.glob("README*.md")):
        for url in COLAB_LINK.findall(readme.read_text(encoding="utf-8")):
            if not url.startswith(prefix) or not (root / url[len(prefix) :]).is_file():
                found.append(
                    f"{readme.name}: {url} does not open a notebook of {config['repository']} "
                    f"on branch {config['branch']}"
                )
    return found


def write(paths: list[Path], colab: bool, root: Path = ROOT) -> None:
    """Read, change and write each notebook in one step (others may be editing other cells)."""
    import nbformat

    config = settings(root)
    cell = colab_cell(config, colab_extra(root))
    citation = root / "CITATION.cff"
    if citation.exists():
        text = citation.read_text(encoding="utf-8")
        citation.write_text(
            re.sub(r"^repository-code:.*$", f'repository-code: "{config["repository"]}"', text, flags=re.M),
            encoding="utf-8",
        )
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if not nb.cells or nb.cells[0].cell_type != "markdown":
            raise ValueError(f"{path.name}: the first cell must be the title (markdown)")
        nb.cells[0].source = with_badge(nb.cells[0].source, badge(path.resolve().relative_to(root), config))
        if colab:
            first_code = next(c for c in nb.cells if c.cell_type == "code")
            first_code.source = cell
        nbformat.write(nb, path)
        print(f"{path.relative_to(root)}: badge{' and Colab cell' if colab else ''} written")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="chapters to write (default: all)")
    parser.add_argument("--write", action="store_true", help="write the badge into each title cell")
    parser.add_argument("--colab-cell", action="store_true", help="with --write: also rewrite the Colab cell")
    parser.add_argument("--readme", action="store_true", help="print the README's Colab column")
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or chapters()
    if args.readme:
        config = settings()
        for path in paths:
            print(f"| {path.name[:2]} | {badge(path.relative_to(ROOT), config)} |")
        return 0
    if args.write:
        write(paths, args.colab_cell)
        return 0
    found = problems(notebooks=paths if args.notebooks else None)
    print("\n".join(found) or f"Colab links agree with {settings()['repository']}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
