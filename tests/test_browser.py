"""End to end in a real browser: JupyterLab runs a chapter, its widget renders, and moving the
widget's controls redraws the picture (chapter 01's attention explorer, chapter 05's
cross-attention over the image).

Needs Debian's Chromium (/usr/bin/chromium, or the path in COURSE_CHROMIUM) and Playwright for
Python; skipped with a one-line reason otherwise. The server runs on a copy of notebooks/ in
a temporary folder (outputs never land in the repository) with its own settings folders.
Set COURSE_BROWSER_ARTIFACTS=<dir> to keep screenshots of the run there.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("COURSE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NOTEBOOK = "01_attention_math.ipynb"
IMAGE = ".course-attention-explorer img"
SLIDER_HANDLE = ".course-temperature .noUi-handle"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _wait_for_server(url: str, server: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"jupyter lab exited with code {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"jupyter lab did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(server: subprocess.Popen) -> None:
    """Stop the server and its kernels (its own process group)."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on a random port over a temporary copy of notebooks/: (base url, token)."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set COURSE_CHROMIUM)")
    pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    # no "news" or update pop-up over the notebook
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
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
    env.pop("MPLBACKEND", None)  # the kernel picks its inline backend
    port, token = _free_port(), secrets.token_hex(16)
    log = tmp_path / "jupyter.log"
    with log.open("w") as log_file:
        server = subprocess.Popen(
            [
                _python(),
                "-m",
                "jupyter",
                "lab",
                "--no-browser",
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={tmp_path / 'notebooks'}",
                "--LabApp.expose_app_in_browser=True",
                "--LabApp.extension_manager=readonly",
            ]  # no extension look-ups on PyPI
            + (["--allow-root"] if os.geteuid() == 0 else []),  # CI containers run as root
            cwd=tmp_path,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for_server(f"{base}/api/status?token={token}", server, log)
        yield base, token, tmp_path
    finally:
        _stop(server)


def _screenshot(page, tmp_path: Path, name: str) -> None:
    folder = Path(os.environ.get("COURSE_BROWSER_ARTIFACTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"))


def _open_and_run_all(playwright, base: str, token: str, notebook: str):
    """A browser page with ``notebook`` open in JupyterLab, "run all" started; returns (browser, page)."""
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(f"{base}/lab/tree/{notebook}?token={token}", wait_until="domcontentloaded")
    page.wait_for_function(
        "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
        " && window.jupyterapp.shell.currentWidget.sessionContext",
        timeout=90_000,
    )
    page.wait_for_selector(".jp-Notebook .jp-Cell", state="attached")
    # run all once the kernel is up
    page.evaluate("""async () => {
        const panel = window.jupyterapp.shell.currentWidget;
        await panel.sessionContext.ready;
        await window.jupyterapp.commands.execute('runmenu:run-all');
    }""")
    return browser, page


PICTURE_SOURCES = ("data:image/png;base64,", "blob:")  # an Output's inline PNG; an ipywidgets Image


def _first_picture(page, selector: str, timeout_ms: int) -> str:
    """Wait until the notebook has drawn the widget's picture; scroll to it; return its source."""
    image = page.locator(selector).first
    image.wait_for(state="attached", timeout=timeout_ms)
    image.scroll_into_view_if_needed()
    src = image.get_attribute("src")
    assert src and src.startswith(PICTURE_SOURCES), f"unexpected image source {str(src)[:60]!r}"
    return src


def _wait_for_new_src(page, selector: str, old: str) -> str:
    page.wait_for_function(
        "([selector, old]) => { const img = document.querySelector(selector);"
        " return img && img.getAttribute('src') !== old; }",
        arg=[selector, old],
        timeout=60_000,
    )
    new = page.locator(selector).first.get_attribute("src")
    assert new != old and new.startswith(PICTURE_SOURCES), f"unexpected image source {new[:60]!r}"
    return new


def test_attention_explorer_responds_to_the_temperature_slider(lab):
    from playwright.sync_api import sync_playwright

    base, token, tmp_path = lab
    with sync_playwright() as playwright:
        browser, page = _open_and_run_all(playwright, base, token, NOTEBOOK)
        try:
            before = _first_picture(page, IMAGE, timeout_ms=120_000)
            _screenshot(page, tmp_path, "explorer_before")

            handle = page.locator(SLIDER_HANDLE).first
            handle.focus()
            for _ in range(6):  # six log-steps up: temperature 1.00 -> 2.00
                handle.press("ArrowRight")
            _wait_for_new_src(page, IMAGE, before)
            _screenshot(page, tmp_path, "explorer_after")
            readout = page.locator(".course-temperature .widget-readout").first.inner_text()
            assert float(readout) > 1.0, f"the temperature readout shows {readout!r} after moving the slider up"
        finally:
            browser.close()


def test_attention_on_the_image_follows_the_image_slider_and_the_question(lab):
    """Chapter 05 (fast mode) in the browser: the cross-attention widget redraws for another image
    and for another question."""
    from playwright.sync_api import sync_playwright

    base, token, tmp_path = lab
    widget = ".course-attention-on-image"
    picture = f"{widget} img"
    with sync_playwright() as playwright:
        browser, page = _open_and_run_all(playwright, base, token, "05_multimodal_fusion.ipynb")
        try:
            first = _first_picture(page, picture, timeout_ms=240_000)
            handle = page.locator(f"{widget} .course-image-picker .noUi-handle").first
            handle.focus()
            handle.press("ArrowRight")  # image 0 -> image 1
            second = _wait_for_new_src(page, picture, first)
            readout = page.locator(f"{widget} .course-image-picker .widget-readout").first.inner_text()
            assert readout.strip() == "1", f"the image slider reads {readout!r} after one step right"
            page.locator(f"{widget} select").first.select_option(index=3)  # a non-relational question
            _wait_for_new_src(page, picture, second)
            _screenshot(page, tmp_path, "attention_on_image")
        finally:
            browser.close()
