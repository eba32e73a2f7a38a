"""Each chapter's editable source: its jupytext percent script, kept beside the notebook and in sync.

    python tools/notebook_sources.py write [NB ...]         notebook -> notebook_sources/NN_name.py
    python tools/notebook_sources.py to-notebooks [PY ...]  script -> notebook (cell ids and metadata kept)
    python tools/notebook_sources.py check                  every notebook has its script, and they agree

The scripts have no header (notebook metadata stays in the .ipynb) and carry cell tags in the cell
markers, e.g. ``# %% tags=["parameters"]``; the round trip notebook -> script -> notebook gives the
same cells. ``--folder DIR`` puts the scripts elsewhere. Notebooks are written without outputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "notebook_sources"
FORMAT = {
    "extension": ".py",
    "format_name": "percent",
    "notebook_metadata_filter": "-all",  # kernelspec and the like stay in the notebook
    "cell_metadata_filter": "-lines_to_next_cell",
}  # jupytext's spacing hint, not ours


def script_text(notebook: Path) -> str:
    import jupytext

    return jupytext.writes(jupytext.read(notebook), fmt=FORMAT)


def script_of(notebook: Path, folder: Path) -> Path:
    return folder / f"{notebook.stem}.py"


def notebook_of(script: Path, root: Path = ROOT) -> Path:
    return root / "notebooks" / f"{script.stem}.ipynb"


def cells(nb) -> list[tuple[str, str, list[str]]]:
    """What the pair must agree on: each cell's type, source and tags."""
    return [(c.cell_type, c.source, list(c.metadata.get("tags", []))) for c in nb.cells]


def write_scripts(notebooks: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for notebook in notebooks:
        script_of(notebook, folder).write_text(script_text(notebook), encoding="utf-8")
        print(f"{script_of(notebook, folder)} <- {notebook.name}")


def write_notebooks(scripts: list[Path], root: Path = ROOT) -> None:
    """Each script into its notebook, read-modify-write in one step: cells matched by jupytext keep their
    ids and metadata; outputs are cleared (the notebooks are committed without them)."""
    import jupytext
    import nbformat
    from jupytext.combine import combine_inputs_with_outputs

    for script in scripts:
        target = notebook_of(script, root)
        new = jupytext.reads(script.read_text(encoding="utf-8"), fmt=FORMAT)
        if target.exists():
            old = nbformat.read(target, as_version=4)
            new = combine_inputs_with_outputs(new, old, fmt=FORMAT) or new
            new.metadata = old.metadata
        for cell in new.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        nbformat.write(new, target)
        print(f"{target.relative_to(root)} <- {script.name}")


def problems(root: Path = ROOT, folder: Path | None = None) -> list[str]:
    """Each notebook without its script, each script without its notebook, each pair that differs."""
    import jupytext

    folder = folder or root / "notebook_sources"
    found = []
    notebooks = sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for notebook in notebooks:
        script = script_of(notebook, folder)
        if not script.exists():
            found.append(f"{notebook.name} has no script {script.name}: run python tools/notebook_sources.py write")
            continue
        in_script = cells(jupytext.reads(script.read_text(encoding="utf-8"), fmt=FORMAT))
        if in_script != cells(jupytext.read(notebook)):
            found.append(
                f"{notebook.name} and {script.name} differ: run `python tools/notebook_sources.py write "
                f"notebooks/{notebook.name}` if you edited the notebook, `... to-notebooks "
                f"{script.relative_to(root)}` if you edited the script"
            )
        elif script.read_text(encoding="utf-8") != script_text(notebook):
            found.append(
                f"{script.name} is not in the canonical layout: run python tools/notebook_sources.py write "
                f"notebooks/{notebook.name}"
            )
    for script in sorted(folder.glob("*.py")):
        if not notebook_of(script, root).exists():
            found.append(f"{script.name} has no notebook: run python tools/notebook_sources.py to-notebooks {script}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["write", "to-notebooks", "check"])
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--folder", type=Path, default=FOLDER, help="where the scripts live")
    args = parser.parse_args(argv)
    folder = args.folder.resolve()
    if args.action == "write":
        write_scripts(
            [p.resolve() for p in args.paths] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")), folder
        )
    elif args.action == "to-notebooks":
        write_notebooks([p.resolve() for p in args.paths] or sorted(folder.glob("*.py")))
    else:
        found = problems(folder=folder)
        print("\n".join(found) or "every notebook agrees with its script")
        return 1 if found else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
