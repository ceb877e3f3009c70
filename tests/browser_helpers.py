"""Browser tests: a real headless Chromium (Debian's ``chromium`` package) driven by Playwright.

    from browser_helpers import open_page

    with open_page(url) as page:                 # a WatchedPage
        page.wait_for_function("window.rtParticipant.painted > 5")   # plain expressions work (CSP)
        img = page.pixels("#display")            # (H, W, 3) uint8 RGB
        page.screenshot(tmp_path / "bar.png")
        assert not page.errors, page.errors      # console errors, page errors, failed requests

Playwright runs the system browser (``executable_path``), never a downloaded one:
``apt-get install chromium`` (``.ci/run`` does it when it is missing).
"""

from __future__ import annotations

import io
import re
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

# --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
# --autoplay-policy: Web Audio may start without a click (the pages still wait for one).
# --mute-audio: tests make no sound. --disable-dev-shm-usage: containers often have a 64 MB /dev/shm.
# requestAnimationFrame runs at 60 Hz headless with these (median 16.7 ms, p99 16.8 ms, measured on
# Chromium 150); no vsync flag is needed (--disable-gpu-vsync changes nothing headless).
CHROMIUM_ARGS = ("--no-sandbox", "--autoplay-policy=no-user-gesture-required", "--mute-audio",
                 "--disable-dev-shm-usage")

# Debian's /usr/bin/chromium is a shell script that adds desktop flags (extensions, GPU rasterization)
# and sources /etc/chromium.d; the binary behind it is started directly.
_DEBIAN_BINARY = Path("/usr/lib/chromium/chromium")


def chromium_executable() -> str:
    """The system Chromium's executable; a one-line error saying how to install it when it is missing."""
    exe = shutil.which("chromium")
    if exe is None:
        raise RuntimeError("headless Chromium not found (no 'chromium' on PATH): "
                           "apt-get install chromium (.ci/run installs it)")
    try:
        is_script = Path(exe).read_bytes()[:2] == b"#!"
    except OSError:
        is_script = False
    if is_script and _DEBIAN_BINARY.is_file():
        return str(_DEBIAN_BINARY)
    return exe


@contextmanager
def open_browser(args: Sequence[str] = ()) -> Iterator[Any]:
    """Headless Chromium (a Playwright sync ``Browser``) with CHROMIUM_ARGS plus ``args``; closed on exit."""
    exe = chromium_executable()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:  # pragma: no cover - the test extra installs it
        raise RuntimeError("playwright is not installed: pip install -e '.[test]'") from e
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=[*CHROMIUM_ARGS, *args])
        try:
            yield browser
        finally:
            browser.close()


class WatchedPage:
    """A Playwright ``Page`` that records what went wrong on it in ``errors`` (one line each):
    console errors, uncaught page errors, failed requests, HTTP answers >= 400 and WebSocket errors.
    Every other attribute is the page's (``evaluate``, ``wait_for_function``, ``click``, ``keyboard``...).
    """

    def __init__(self, page: Any):
        self.page = page
        self.errors: list[str] = []
        self.console: list[str] = []      # every console message, "type: text"
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("requestfailed", lambda req: self.errors.append(
            f"request failed: {req.method} {req.url}: {req.failure}"))
        page.on("response", self._on_response)
        page.on("websocket", self._on_websocket)

    def _on_console(self, msg: Any) -> None:
        self.console.append(f"{msg.type}: {msg.text}")
        if msg.type == "error":
            loc = msg.location or {}
            where = f" ({loc.get('url')}:{loc.get('lineNumber')})" if loc.get("url") else ""
            self.errors.append(f"console error: {msg.text}{where}")

    def _on_response(self, resp: Any) -> None:
        if resp.status >= 400:
            self.errors.append(f"HTTP {resp.status}: {resp.request.method} {resp.url}")

    def _on_websocket(self, ws: Any) -> None:
        ws.on("socketerror", lambda err: self.errors.append(f"websocket error: {ws.url}: {err}"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.page, name)

    def goto(self, url: str, **kw: Any) -> Any:
        return self.page.goto(url, **kw)

    def wait_for_function(self, expression: str, **kw: Any) -> Any:
        """Page.wait_for_function, with a plain expression ("window.x > 3") turned into a function:
        Playwright evaluates a plain expression with eval(), which the pages' Content-Security-Policy
        refuses (a function runs through the debugging protocol, which CSP does not check)."""
        return self.page.wait_for_function(as_function(expression), **kw)

    def screenshot(self, path: str | Path, selector: str | None = None) -> Path:
        """The page (or one element) as a PNG file at ``path``; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if selector is None:
            self.page.screenshot(path=str(path))
        else:
            self.page.locator(selector).screenshot(path=str(path))
        return path

    def pixels(self, selector: str = "#display") -> np.ndarray:
        """The element's pixels as shown, (H, W, 3) uint8 RGB."""
        return pixels(self, selector)

    def raf_intervals(self, frames: int = 120) -> np.ndarray:
        """Intervals (ms) between ``frames + 1`` successive requestAnimationFrame callbacks."""
        return raf_intervals(self, frames)

    def assert_no_errors(self) -> None:
        assert not self.errors, "the page reported errors:\n" + "\n".join(self.errors)


_FUNCTION_LIKE = re.compile(r"^\s*(async\s+)?(function\b|\([^()]*\)\s*=>|[A-Za-z_$][\w$]*\s*=>)")


def as_function(expression: str) -> str:
    """``expression`` as a JavaScript function's source: a plain expression becomes ``() => (expression)``."""
    return expression if _FUNCTION_LIKE.match(expression) else f"() => ({expression})"


def new_page(browser: Any, *, width: int = 1280, height: int = 720) -> WatchedPage:
    """A new page (its own context: fresh sessionStorage) of ``width`` x ``height`` CSS pixels, scale 1."""
    ctx = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
    return WatchedPage(ctx.new_page())


@contextmanager
def open_page(url: str | None = None, *, width: int = 1280, height: int = 720,
              args: Sequence[str] = ()) -> Iterator[WatchedPage]:
    """A browser with one watched page, at ``url`` (loaded) when given; all closed on exit."""
    with open_browser(args) as browser:
        page = new_page(browser, width=width, height=height)
        if url is not None:
            page.goto(url)
        yield page


def _png_to_rgb(png: bytes) -> np.ndarray:
    from PIL import Image  # Pillow: a dependency of matplotlib, which mne needs

    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB")).copy()


def pixels(page: Any, selector: str = "#display") -> np.ndarray:
    """What ``selector`` (a canvas, or any element) shows, (H, W, 3) uint8 RGB, from a screenshot of it.
    ``page``: a WatchedPage or a Playwright Page."""
    page = page.page if isinstance(page, WatchedPage) else page
    return _png_to_rgb(page.locator(selector).screenshot(type="png"))


_RAF_JS = """(n) => new Promise((resolve) => {
  const ts = [];
  const step = (t) => { ts.push(t); if (ts.length <= n) requestAnimationFrame(step); else resolve(ts); };
  requestAnimationFrame(step);
})"""


def raf_intervals(page: Any, frames: int = 120) -> np.ndarray:
    """Intervals (ms) between successive requestAnimationFrame callbacks on ``page`` (``frames`` of them)."""
    page = page.page if isinstance(page, WatchedPage) else page
    return np.diff(np.asarray(page.evaluate(_RAF_JS, frames), dtype=float))
