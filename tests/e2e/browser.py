"""Debian's Chromium through Playwright, headless, with nothing reaching out to the network."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required"]  # the recording test presses play by script
TIMEOUT_MS = 30_000


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def new_page(browser: Browser) -> Page:
    page = await browser.new_page(viewport={"width": 1280, "height": 900},
                                  ignore_https_errors=True)  # the generated self-signed pair
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    # script exceptions, and any server error (a 404 is the card of a ticket not yet written)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("response", lambda r: errors.append(f"HTTP {r.status} {r.url}")
            if r.status >= 500 else None)
    page.js_errors = errors  # type: ignore[attr-defined]
    return page


def js_errors(page: Page) -> list[str]:
    """Uncaught script errors and 5xx responses the page has seen."""
    found: list[str] = page.js_errors  # type: ignore[attr-defined]
    return found


async def screenshot(page: Page, name: str) -> Path:
    """Kept in test-artifacts/ (written under a temporary name first: parallel runs)."""
    ARTIFACTS.mkdir(exist_ok=True)
    tmp = ARTIFACTS / f".{name}-{os.getpid()}.png"
    await page.screenshot(path=str(tmp), full_page=True)
    final = ARTIFACTS / f"{name}.png"
    tmp.replace(final)
    return final
