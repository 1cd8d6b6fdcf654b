"""Debian's Chromium, headless, driven by Playwright: opens a local page and records everything that went wrong.

Playwright's own browser downloads are never used (`playwright install` is not needed): the Makefile and CI install
Debian's `chromium` package. Without it the browser tests fail, saying how to install it, rather than skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = Path(os.environ.get("ONNXPLAIN_CHROMIUM", "/usr/bin/chromium"))
# Offline and quiet: no GPU, no sandbox (containers run as root), no background traffic to Google.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class PageLog:
    """What the page reported while it was open."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    """Every URL the page asked for (the page itself included)."""


def artifacts_dir() -> Path:
    """Where tests keep files for people to look at: $ONNXPLAIN_TEST_ARTIFACTS, else <repository>/test-artifacts
    (git-ignored)."""
    folder = Path(os.environ.get("ONNXPLAIN_TEST_ARTIFACTS") or REPOSITORY_ROOT / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def open_page(path: Path, viewport: tuple[int, int] = (1280, 900)) -> Iterator[tuple[Any, PageLog]]:
    """The page loaded from `path` (file://) once its images have loaded, and the log of what went wrong."""
    if not CHROMIUM.exists():
        raise AssertionError(
            f"Chromium is not installed at {CHROMIUM}: run `apt-get install chromium` (or `make test`, which does), "
            "or point ONNXPLAIN_CHROMIUM at a Chromium binary"
        )
    from playwright.sync_api import sync_playwright

    log = PageLog()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.on("console", lambda message: message.type == "error" and log.console_errors.append(message.text))
            page.on("pageerror", lambda error: log.page_errors.append(str(error)))
            page.on("request", lambda request: log.requests.append(request.url))
            page.goto(path.resolve().as_uri(), wait_until="load")
            yield page, log
        finally:
            browser.close()
