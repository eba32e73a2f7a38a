"""`./course lab` in a real browser: the server it starts opens chapter 00, with no news pop-up.

The server is started with exactly the command and environment `./course lab` would use (read
from its dry run, `COURSE_DRY_RUN=1`), plus a port and a temporary copy of notebooks/
(so nothing is written into the repository), and with empty Jupyter settings folders, as on a
fresh machine. A second test starts the same JupyterLab without the course's settings and sees
the news prompt, so the first test is known to be able to see it.

Needs Debian's Chromium (/usr/bin/chromium, or COURSE_CHROMIUM) and Playwright for Python;
skipped with a one-line reason otherwise, like tests/test_browser.py (whose helpers it reuses).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from test_browser import CHROMIUM, CHROMIUM_ARGS, _free_port, _stop, _wait_for_server

ROOT = Path(__file__).resolve().parents[1]
NEWS_PROMPT = "official Jupyter news"  # JupyterLab 4's "Would you like to get notified about official Jupyter news?"
CHAPTER_00 = "00_setup.ipynb"


def course_lab_command(*extra: str) -> tuple[dict[str, str], list[str]]:
    """(environment additions, argv) of `./course lab *extra`, from its dry run."""
    out = subprocess.run(
        [str(ROOT / "course"), "lab", *extra],
        env=dict(os.environ, COURSE_DRY_RUN="1"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    env_line = next(line for line in out.splitlines() if line.startswith("env "))
    name, value = shlex.split(env_line)[1].split("=", 1)
    return {name: value}, shlex.split(out.strip().splitlines()[-1])


def start_lab(tmp_path: Path, course_settings: bool):
    """Start the lab as `./course lab --no-browser` would; returns (server, the address it prints)."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set COURSE_CHROMIUM)")
    pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    port = _free_port()
    added_env, argv = course_lab_command(  # the server makes its token and prints it, as for a learner
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={tmp_path / 'notebooks'}",
        "--LabApp.expose_app_in_browser=True",
    )
    # a fresh machine: no user settings, no saved workspace
    env = dict(
        os.environ,
        COURSE_FAST="1",
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
        PYTHONPATH=str(ROOT),
    )
    env.pop("JUPYTER_CONFIG_PATH", None)
    if course_settings:
        env.update(added_env)
    log = tmp_path / "jupyter.log"
    with log.open("w") as log_file:
        server = subprocess.Popen(
            argv, cwd=tmp_path, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = printed_address(log, port, server)
        token = re.search(r"token=(\w+)", url).group(1)
        _wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", server, log)
    except BaseException:
        _stop(server)
        raise
    return server, url


def printed_address(log: Path, port: int, server: subprocess.Popen, timeout: float = 90) -> str:
    """The address the server prints for a headless user to open (what a browser would be sent to)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.findall(rf"http://127\.0\.0\.1:{port}/\S+token=\w+", log.read_text())
        if found:
            return found[-1]
        if server.poll() is not None:
            raise AssertionError(f"jupyter lab exited with code {server.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"the server printed no address within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def open_in_chromium(playwright, url: str):
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_function(
        "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
        " && window.jupyterapp.shell.currentWidget.context",
        timeout=90_000,
    )
    page.wait_for_selector(".jp-Notebook .jp-Cell", state="attached")
    return browser, page


def test_course_lab_opens_chapter_00_without_a_news_prompt(tmp_path):
    from playwright.sync_api import sync_playwright

    server, url = start_lab(tmp_path, course_settings=True)
    try:
        assert f"/lab/tree/{CHAPTER_00}?token=" in url, f"the printed address does not open chapter 00: {url}"
        with sync_playwright() as playwright:
            browser, page = open_in_chromium(playwright, url)
            try:
                path = page.evaluate("() => window.jupyterapp.shell.currentWidget.context.path")
                assert path == CHAPTER_00, f"the open document is {path!r}, not chapter 00"
                page.locator(".jp-Notebook .jp-RenderedMarkdown h1", has_text="00 · Setup").wait_for(state="visible")
                # the news prompt comes once the app is restored; give it time to show up
                page.evaluate("() => window.jupyterapp.restored")
                page.wait_for_timeout(5_000)
                assert page.get_by_text(NEWS_PROMPT).count() == 0, "JupyterLab's news prompt is shown"
                assert page.locator(".Toastify__toast").count() == 0, (
                    "a notification pop-up is shown: " + page.locator(".Toastify__toast").first.inner_text()
                )
                folder = os.environ.get("COURSE_BROWSER_ARTIFACTS")
                if folder:
                    Path(folder).mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(Path(folder) / "course_lab_first_screen.png"))
            finally:
                browser.close()
    finally:
        _stop(server)
    assert "Extension Manager is 'readonly'" in (tmp_path / "jupyter.log").read_text(), (
        "the extension manager may query PyPI"
    )


def test_without_the_course_settings_the_news_prompt_shows(tmp_path):
    """The control: the same JupyterLab, without .course/jupyter, asks about news, so the test above can see it."""
    from playwright.sync_api import sync_playwright

    server, url = start_lab(tmp_path, course_settings=False)
    try:
        with sync_playwright() as playwright:
            browser, page = open_in_chromium(playwright, url)
            try:
                page.get_by_text(NEWS_PROMPT).first.wait_for(state="visible", timeout=60_000)
            finally:
                browser.close()
    finally:
        _stop(server)
