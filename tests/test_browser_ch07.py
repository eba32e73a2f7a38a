"""Chapter 07's caption widget in a real JupyterLab (headless Chromium, fast mode): moving the word
slider redraws the attention for another word; moving the image slider writes a new caption.
Uses the server fixture and helpers of tests/test_browser.py; skipped the same way without
Chromium or Playwright."""

from __future__ import annotations

from test_browser import (  # noqa: F401
    _first_picture,
    _open_and_run_all,
    _screenshot,
    _wait_for_new_src,
    lab,
)

WIDGET = ".course-caption-attention"
PICTURE = f"{WIDGET} img"
CAPTION = f"{WIDGET} .widget-html"


def _caption_words(page, at_least: int = 1, timeout_ms: int = 60_000) -> list:
    """The caption's words once it shows at least ``at_least`` of them: the browser may draw the
    picture before the caption text, so the text is waited for rather than read at once."""
    page.wait_for_function(
        "([selector, n]) => { const el = document.querySelector(selector);"
        " return el && el.innerText.trim().split(/\\s+/).filter(w => w).length >= n; }",
        arg=[CAPTION, at_least],
        timeout=timeout_ms,
    )
    return page.locator(CAPTION).first.inner_text().split()


def test_caption_widget_follows_the_word_and_image_sliders(lab):  # noqa: F811
    from playwright.sync_api import sync_playwright

    base, token, tmp_path = lab
    with sync_playwright() as playwright:
        browser, page = _open_and_run_all(playwright, base, token, "07_image_captioning.ipynb")
        try:
            first = _first_picture(page, PICTURE, timeout_ms=300_000)
            caption = _caption_words(page)
            assert len(caption) == 1, f"at word 0 the caption shows one word, not {caption!r}"
            word = page.locator(f"{WIDGET} .course-caption-word .noUi-handle").first
            word.focus()
            word.press("ArrowRight")  # word 0 -> word 1
            second = _wait_for_new_src(page, PICTURE, first)
            readout = page.locator(f"{WIDGET} .course-caption-word .widget-readout").first.inner_text()
            assert readout.strip() == "1", f"the word slider reads {readout!r} after one step right"
            longer = _caption_words(page, at_least=2)
            assert longer[:1] == caption and len(longer) == 2, (caption, longer)
            image = page.locator(f"{WIDGET} .course-caption-image .noUi-handle").first
            image.focus()
            image.press("ArrowRight")  # image 0 -> image 1
            _wait_for_new_src(page, PICTURE, second)
            readout = page.locator(f"{WIDGET} .course-caption-word .widget-readout").first.inner_text()
            assert readout.strip() == "0", "a new image starts again at its first word"
            _screenshot(page, tmp_path, "caption_widget")
        finally:
            browser.close()
