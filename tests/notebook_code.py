"""Reading chapter notebooks in tests: run the code cells tagged ``inline`` (the code the chapter
teaches inline, which the package also holds), so a test can compare the two; split markdown into
its sections by heading."""

from __future__ import annotations

import json
import re
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
HEADING = re.compile(r"^(#{1,4})\s+(.*?)\s*$", re.M)
FENCE = re.compile(r"^```.*?^```", re.M | re.S)  # code blocks: their '# comments' are not headings


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


def sections(markdown: str) -> dict[str, str]:
    """{heading text, lower case: the text under it up to the next heading}."""
    found = {}
    markdown = FENCE.sub("", markdown)
    matches = list(HEADING.finditer(markdown))
    for here, after in zip(matches, matches[1:] + [None]):
        end = after.start() if after else len(markdown)
        found[here.group(2).lower()] = markdown[here.end() : end]
    return found
