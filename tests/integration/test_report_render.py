"""The report renders in a real browser: headless Chromium loads the HTML of a synthetic run
and of a synthetic sweep and saves a screenshot (skipped when Chromium is not installed;
Debian: apt-get install chromium)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from profiler.report.build import write_report_files
from tests.fakes.synthetic_runs import make_run, make_sweep

pytestmark = pytest.mark.integration

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def _browser() -> str | None:
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def _screenshot(browser: str, html: Path, png: Path) -> None:
    profile = png.parent / f".{png.stem}-profile"
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--window-size=1280,6000",
        f"--screenshot={png}",
        html.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png.exists(), f"no screenshot (rc {proc.returncode}): {proc.stderr[-2000:]}"


def _has_content(png: Path) -> bool:
    """The screenshot is not blank: many distinct colours (plots and text)."""
    from matplotlib.image import imread

    img = imread(png)
    rgb = (img[..., :3] * 255).astype("uint8").reshape(-1, 3)
    import numpy as np

    return len(np.unique(rgb[:: max(1, len(rgb) // 200_000)], axis=0)) > 50


@pytest.mark.parametrize("kind", ["run", "sweep"])
def test_report_loads_in_headless_chromium(tmp_path: Path, kind: str) -> None:
    browser = _browser()
    if browser is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    path = make_run(tmp_path, "r", n=300) if kind == "run" else make_sweep(tmp_path)
    html = write_report_files([path], formats=["html"]).main
    png = tmp_path / f"{kind}.png"
    _screenshot(browser, html, png)
    assert png.stat().st_size > 50_000
    assert _has_content(png)
