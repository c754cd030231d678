"""Pages opened as a user opens them: a local server (TensorBoard, optuna-dashboard) started on a loopback
port, and Debian's headless chromium driven by playwright (the dev extra) through its executable path
(`apt-get install chromium`; playwright never downloads a browser here). For the browser tests and
scripts/screenshots.py; tests that need it skip without chromium."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    """A TCP port free on the loopback interface now (for a server started next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(program: str, *args: str, path: str = "/") -> Iterator[str]:
    """Runs `program` (a console script of this environment) with `--port` and `--host`; yields its URL
    once it answers, and stops it after."""
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / program), *args, "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + path, timeout=5).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, f"{program} did not start"
                time.sleep(0.2)
        yield url
    finally:
        server.kill()
        server.communicate()


@contextmanager
def browser_page(width: int = 1600, height: int = 1000) -> Iterator[Any]:
    """A page of headless chromium at the given window size."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def visible_at(page: Any, text: str) -> list[tuple[float, float]]:
    """Where (x, y of the top left corner) each visible element whose whole text is `text` is on the page."""
    found = page.get_by_text(text, exact=True)
    boxes = [found.nth(i).bounding_box() for i in range(found.count()) if found.nth(i).is_visible()]
    return [(box["x"], box["y"]) for box in boxes if box]
