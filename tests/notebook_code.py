"""Run the code cells of a chapter that are tagged ``inline`` (the code the chapter
teaches inline, which the package also holds), so a test can compare the two."""

from __future__ import annotations

import json
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def inline_namespace(notebook: str) -> dict:
    """Execute, in order and in one namespace, every code cell tagged ``inline`` in ``notebook``."""
    path = NOTEBOOKS / notebook
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    tagged = [c for c in cells if c["cell_type"] == "code" and "inline" in c.get("metadata", {}).get("tags", [])]
    if not tagged:
        raise AssertionError(f"{notebook} has no code cell tagged 'inline'")
    namespace: dict = {"__name__": f"inline_{path.stem}"}
    for cell in tagged:
        source = "".join(cell["source"])
        exec(compile(source, f"{notebook}[inline]", "exec"), namespace)
    return namespace
