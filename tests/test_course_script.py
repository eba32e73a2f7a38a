"""`./course`, the entry point, without starting anything: its dry run (`COURSE_DRY_RUN=1`) prints the
JupyterLab command it would run, and every setting in it is checked against the installed
JupyterLab (a trait that exists, a plugin id the bundle has, a page config jupyterlab_server reads).
tests/test_browser_lab.py then starts that command in a real browser."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from course_utils import config

ROOT = Path(__file__).resolve().parents[1]
COURSE = ROOT / "course"
NEWS_PLUGIN = "@jupyterlab/apputils-extension:announcements"


def run_course(*args: str, env: dict[str, str] | None = None, user: int | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, COURSE_DRY_RUN="1")
    full_env.pop("COURSE_FAST", None)  # conftest sets it for the notebooks; here each test says what it wants
    full_env.update(env or {})
    command = [str(COURSE), *args]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    return subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=60)


def dry_run(*args: str, **kwargs) -> tuple[str, dict[str, str], list[str]]:
    """(what it printed, environment additions, argv) of `./course lab *args`."""
    done = run_course("lab", *args, **kwargs)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    env_line = next(line for line in lines if line.startswith("env "))
    name, value = shlex.split(env_line)[1].split("=", 1)
    return done.stdout, {name: value}, shlex.split(lines[-1])


def options(argv: list[str]) -> dict[str, str]:
    """``--Class.trait=value`` arguments as {"Class.trait": value}; the last one wins, as in traitlets."""
    found = {}
    for arg in argv:
        if arg.startswith("--") and "=" in arg:
            key, value = arg[2:].split("=", 1)
            found[key] = value
    return found


def test_dry_run_starts_jupyter_lab_on_the_notebooks_folder():
    out, _, argv = dry_run()
    assert "./course setup would run here" in out
    assert argv[1:4] == ["-m", "jupyter", "lab"], argv
    assert Path(argv[0]).name.startswith("python"), argv
    assert options(argv)["ServerApp.root_dir"] == str(ROOT / "notebooks")


def test_opens_chapter_00():
    _, _, argv = dry_run()
    url = options(argv)["LabApp.default_url"]
    assert url.startswith("/lab/tree/"), url
    assert (ROOT / "notebooks" / url.removeprefix("/lab/tree/")).is_file(), f"{url} names no notebook"
    assert url.endswith("/00_setup.ipynb")


def test_every_option_is_a_setting_of_the_installed_jupyterlab():
    from jupyter_server.serverapp import ServerApp
    from jupyterlab.labapp import LabApp

    _, _, argv = dry_run("--no-browser")
    classes = {"LabApp": LabApp, "ServerApp": ServerApp}
    for key, value in options(argv).items():
        owner, trait_name = key.split(".")
        traits = classes[owner].class_traits(config=True)
        assert trait_name in traits, f"--{key} is not a setting of the installed {owner}"
        traits[trait_name].from_string(value)  # parses as traitlets will (raises if not)
    assert LabApp.class_traits()["news_url"].from_string(options(argv)["LabApp.news_url"]) is None
    assert options(argv)["LabApp.extension_manager"] == "readonly"  # never looks extensions up on PyPI


def test_the_update_check_class_never_checks():
    import asyncio

    from jupyterlab.handlers.announcements import CheckForUpdateABC
    from traitlets.utils.importstring import import_item

    _, _, argv = dry_run()
    checker = import_item(options(argv)["LabApp.check_for_updates_class"])
    assert issubclass(checker, CheckForUpdateABC)
    assert asyncio.run(checker("4.0.0")()) is None  # "no newer version", without asking the network


def test_the_news_plugin_is_disabled_by_the_course_page_config(tmp_path, monkeypatch):
    """jupyterlab_server reads .course/jupyter/labconfig/page_config.json through JUPYTER_CONFIG_PATH."""
    from jupyterlab_server.config import get_static_page_config

    _, added_env, _ = dry_run()
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "user-config"))  # no user settings
    monkeypatch.delenv("JUPYTER_CONFIG_PATH", raising=False)
    assert NEWS_PLUGIN not in get_static_page_config(level="all").get("disabledExtensions", {}), (
        "the plugin is disabled even without the course's settings"
    )
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", added_env["JUPYTER_CONFIG_PATH"])
    assert get_static_page_config(level="all")["disabledExtensions"].get(NEWS_PLUGIN) is True


def test_the_disabled_plugin_exists_in_the_installed_jupyterlab():
    """If JupyterLab renames the plugin, disabling the old name would silently do nothing."""
    from jupyterlab.commands import get_app_dir

    static = Path(get_app_dir()) / "static"
    bundles = list(static.glob("*.js"))
    assert bundles, f"no JupyterLab bundle in {static}"
    assert any(f'"{NEWS_PLUGIN}"'.encode() in path.read_bytes() for path in bundles), (
        f"{NEWS_PLUGIN} is not a plugin of the installed JupyterLab"
    )


def jupyter_reads(args: list[str]) -> dict:
    """What the installed JupyterLab makes of these command-line arguments (raises as it would)."""
    from jupyter_server.serverapp import ServerApp
    from jupyterlab.labapp import LabApp
    from traitlets.config.loader import KVArgParseConfigLoader

    return KVArgParseConfigLoader(
        args, aliases=LabApp.aliases, flags=LabApp.flags, classes=[ServerApp, LabApp]
    ).load_config()


def test_jupyter_accepts_the_command_line():
    _, _, argv = dry_run("--no-browser")
    read = jupyter_reads(argv[4:])
    assert read.LabApp.extension_manager == "readonly" and read.ServerApp.open_browser is False


@pytest.mark.parametrize(
    "yours",
    [
        ["--LabApp.default_url=/lab"],
        ["--LabApp.news_url", "https://example.org/feed.xml"],
        ["--notebook-dir=/tmp"],
        ["--ServerApp.root_dir", "/tmp"],
        ["--LabApp.extension_manager=pypi"],
        ["--allow-root"],
    ],
)
def test_a_setting_you_give_replaces_the_course_one(yours):
    """Jupyter refuses a setting given twice ("only accepts one value"): the script leaves its own out."""
    _, _, argv = dry_run(*yours)
    assert argv[-len(yours) :] == yours
    read = jupyter_reads(argv[4:])  # raises ArgumentError on a setting given twice
    if yours[0].startswith("--LabApp."):
        key = yours[0][len("--LabApp.") :].split("=")[0]
        assert read.LabApp[key] == (yours[0].split("=", 1)[1] if "=" in yours[0] else yours[1])
    if "root_dir" in yours[0] or "notebook-dir" in yours[0]:
        assert read.ServerApp.root_dir == "/tmp"


def test_the_course_settings_are_added_to_yours():
    _, added_env, _ = dry_run(env={"JUPYTER_CONFIG_PATH": "/somewhere/else"})
    assert added_env == {"JUPYTER_CONFIG_PATH": f"{ROOT / '.course' / 'jupyter'}:/somewhere/else"}


@pytest.mark.skipif(os.geteuid() != 0, reason="runs as root only here: the root case needs root")
def test_as_root_it_adds_allow_root_and_says_so():
    out, _, argv = dry_run()
    assert "--allow-root" in argv
    assert "running as root" in out


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to run the script as another user",
)
def test_as_another_user_it_does_not_add_allow_root():
    out, _, argv = dry_run(user=65534)  # nobody
    assert "--allow-root" not in argv
    assert "running as root" not in out


@pytest.mark.parametrize("word", sorted(config._TRUE | config._FALSE))
def test_the_mode_it_announces_is_the_mode_the_notebooks_use(word, monkeypatch):
    """The script reads COURSE_FAST with the same words as course_utils.config."""
    monkeypatch.setenv("COURSE_FAST", word)
    expected = config.resolve_mode(None)
    for spelled in (word, word.upper(), f" {word} "):
        out, _, _ = dry_run(env={"COURSE_FAST": spelled})
        assert f"mode: {expected}" in out, (spelled, out)
    if expected == "full":
        assert "COURSE_FAST=1 ./course lab" in out  # how to get the quick pass


def test_unset_course_fast_means_full_mode():
    out, _, _ = dry_run()
    assert "mode: full (the default)" in out
    assert "COURSE_FAST=1 ./course lab" in out


def test_a_wrong_course_fast_is_one_line_naming_the_fix(monkeypatch):
    done = run_course("lab", env={"COURSE_FAST": "maybe"})
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "COURSE_FAST=maybe is not understood" in done.stderr and "COURSE_FAST=1" in done.stderr
    monkeypatch.setenv("COURSE_FAST", "maybe")
    with pytest.raises(ValueError, match="COURSE_FAST"):  # the notebooks refuse it too
        config.resolve_mode(None)


def test_help_and_an_unknown_command():
    shown = run_course("help")
    assert shown.returncode == 0 and "./course lab" in shown.stdout and "COURSE_FAST=1" in shown.stdout
    unknown = run_course("serve")
    assert unknown.returncode == 2 and "./course test" in unknown.stdout


def test_ci_runs_the_readme_command():
    run = (ROOT / ".ci" / "run").read_text()
    assert run.rstrip().splitlines()[-1] == "exec ./course test"


def lint_sandbox(tmp_path: Path, source: str) -> Path:
    """A copy of the course's entry point and settings around one Python file; the course's own
    environment (an absolute COURSE_VENV) is up to date for these same requirements, so setup does nothing."""
    for name in ("course", "requirements.txt", "pyproject.toml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / "example.py").write_text(source)
    return tmp_path


def setup_is_up_to_date() -> bool:
    """Whether ./course setup would do nothing for this environment (its stamp matches), so that a
    sandbox pointing at it never installs anything."""
    stamp = Path(sys.prefix) / ".course-setup-stamp"
    if shutil.which("cksum") is None or not stamp.is_file():
        return False
    want = subprocess.run(
        "cat requirements.txt pyproject.toml | cksum", shell=True, cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return stamp.read_text().strip() == want


def run_sandbox(sandbox: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COURSE_VENV=sys.prefix, COURSE_CHROMIUM="skip")
    return subprocess.run(
        [str(sandbox / "course"), *args], cwd=sandbox, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.skipif(not setup_is_up_to_date(), reason="needs an environment ./course setup has finished (its stamp)")
def test_course_test_lints_first_and_stops_on_a_finding(tmp_path):
    sandbox = lint_sandbox(tmp_path, "import os\nx = 1; y = 2\n")
    done = run_sandbox(sandbox, "test", "--collect-only", "-q", "example.py")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "environment up to date" in done.stdout, "the sandbox should reuse the course's environment"
    assert "F401" in done.stdout and "E702" in done.stdout, done.stdout  # ruff's findings, shown
    assert "course: lint failed: fix the findings above" in done.stderr
    assert "collected" not in done.stdout and "no tests ran" not in done.stdout  # pytest never started


@pytest.mark.skipif(not setup_is_up_to_date(), reason="needs an environment ./course setup has finished (its stamp)")
def test_course_test_runs_pytest_after_a_clean_lint(tmp_path):
    sandbox = lint_sandbox(tmp_path, "def test_one():\n    assert 1 + 1 == 2\n")
    done = run_sandbox(sandbox, "test", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "example.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.index("course: lint: ruff check .") < done.stdout.index("1 passed")
    lint_only = run_sandbox(sandbox, "lint")
    assert lint_only.returncode == 0 and "course: lint: ruff check ." in lint_only.stdout
