"""Where the course keeps its files: shipped data in ``data/``, trained models in ``runs/``.

Both are found from the package's own location (the package is installed in
editable mode from the course folder), so a notebook finds them from anywhere.
``COURSE_RUNS_DIR`` moves the outputs elsewhere (for example to Google Drive on Colab).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data"


def runs_dir() -> Path:
    """The folder for trained models and other outputs (created on first use)."""
    path = Path(os.environ.get("COURSE_RUNS_DIR", REPO_ROOT / "runs"))
    path.mkdir(parents=True, exist_ok=True)
    return path
