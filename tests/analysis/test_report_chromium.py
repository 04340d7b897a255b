"""report.html draws in headless Chromium (Debian's chromium): every figure loads, the page logs
nothing to the console, and a screenshot is not blank."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from analysis import pipeline, report

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=15000"]

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed "
                       "(Debian package chromium; CI installs it)"),
]


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def page(tiny_faulty_sweep, tmp_path_factory) -> report.Report:
    return report.build([tiny_faulty_sweep], tmp_path_factory.mktemp("chromium-report"),
                        pipeline.Options(n_boot=50), workers=1)


def test_every_figure_loads_and_the_console_is_quiet(page, tmp_path):
    r = _chromium(tmp_path, "--enable-logging=stderr", "--v=0", "--dump-dom",
                  page.html.as_uri())
    assert r.returncode == 0, r.stderr[-2000:]
    n = len(page.figures)
    assert n >= 7
    assert f'data-figures-loaded="{n}/{n}"' in r.stdout, r.stdout[:300]
    body = r.stdout.split("<script>")[0]
    assert body.count("<img ") == n
    assert "figure did not load" not in body
    console = [ln for ln in r.stderr.splitlines() if "CONSOLE" in ln]
    assert not console, console


def test_screenshot_is_not_blank(page, tmp_path):
    shot = tmp_path / "shot.png"
    r = _chromium(tmp_path, "--window-size=1400,2000", f"--screenshot={shot}",
                  page.html.as_uri())
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    assert shot.stat().st_size > 50_000  # a blank page is a few kB
    if shutil.which("identify"):
        out = subprocess.run(["identify", "-format", "%k", str(shot)], capture_output=True,
                             text=True).stdout
        assert re.match(r"\d+", out) and int(out) > 50


def test_a_broken_figure_is_caught(page, tmp_path):
    text = page.html.read_text(encoding="utf-8")
    broken = tmp_path / "broken.html"
    broken.write_text(text.replace('src="data:image/svg+xml;base64,',
                                   'src="data:image/svg+xml;base64,AAAA', 1), encoding="utf-8")
    r = _chromium(tmp_path, "--dump-dom", broken.as_uri())
    n = len(page.figures)
    assert f'data-figures-loaded="{n - 1}/{n}"' in r.stdout
    assert "figure did not load" in r.stdout.split("<script>")[0]
