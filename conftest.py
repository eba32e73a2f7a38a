"""pytest setup shared by the unit tests and the notebooks run under nbval."""

import os

# Notebooks run in the fast mode under test, and never reach for a model hub.
os.environ.setdefault("COURSE_FAST", "1")
for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# Models trained under test go to their own folder, never over a learner's full-mode runs/.
os.environ.setdefault("COURSE_RUNS_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "runs", "under-test"))
