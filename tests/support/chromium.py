"""Headless Debian Chromium for looking at a rendered page the way a person's browser does."""
import os
import subprocess
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium's connections are refused by the closed network.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={workdir / 'profile'}", *args],
                          capture_output=True, text=True, timeout=60)


def screenshot(page: Path, png: Path, workdir: Path, window: str = "1200,1600") -> subprocess.CompletedProcess:
    """Chromium's screenshot of page into png, as a window of that size shows it (its profile in workdir)."""
    return _chromium(workdir, f"--screenshot={png}", f"--window-size={window}", page.resolve().as_uri())


def print_to_pdf(page: Path, pdf: Path, workdir: Path) -> None:
    """Chromium's print of page into pdf, as a person's "Print to PDF" makes it (no header or footer)."""
    printed = _chromium(workdir, "--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.resolve().as_uri())
    assert printed.returncode == 0 and pdf.is_file(), printed.stderr[-2000:]


def render(page: Path, workdir: Path, window: str = "1200,1600") -> tuple[str, Path]:
    """(the DOM after rendering, a PNG screenshot); skips when Chromium is not installed."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("needs Debian's chromium (scripts/setup.sh installs it)")
    dom = _chromium(workdir, "--dump-dom", page.resolve().as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    png = workdir / f"{page.stem}.png"
    shot = screenshot(page, png, workdir, window)
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000  # a blank page is a few kB
    return dom.stdout, png
