"""The report as a browser shows it: headless Chromium renders results/<profile>/report.html, to a
screenshot of its first screen (``make screenshot``) or to its DOM after scripts ran (the
browser test). Everything here is optional: without Chromium it says so and does nothing."""

import argparse
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from normexp.tracking.store import RECORD_PROFILE, profile_dir

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FIRST_SCREEN = (1280, 900)


def chromium() -> str | None:
    """The Chromium executable: $CHROMIUM, else the first of ``NAMES`` on PATH."""
    configured = os.environ.get("CHROMIUM")
    if configured:
        return shutil.which(configured)
    return next((path for name in NAMES if (path := shutil.which(name))), None)


def _headless(page: Path, *flags: str, timeout: float = 120) -> subprocess.CompletedProcess:
    browser = chromium()
    if browser is None:
        raise FileNotFoundError("no Chromium on PATH (apt-get install chromium)")
    # A profile of its own: no shared state between calls, nothing left in $HOME.
    with tempfile.TemporaryDirectory(prefix="normexp-chromium-") as profile:
        command = [
            browser,
            "--headless",
            "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",  # let the page finish loading before the capture
            *flags,
            Path(page).resolve().as_uri(),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited {done.returncode}: {done.stderr[-2000:]}")
    return done


def screenshot(page: Path, out: Path, size: tuple[int, int] = FIRST_SCREEN) -> Path:
    """A PNG of the page's first screen at ``size`` (width, height) pixels."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    _headless(page, f"--screenshot={out}", f"--window-size={size[0]},{size[1]}")
    if not out.exists():
        raise RuntimeError(f"chromium wrote no screenshot to {out}")
    return out


def dump_dom(page: Path, size: tuple[int, int] = FIRST_SCREEN) -> str:
    """The page's DOM as serialized after its scripts ran, in a window of ``size`` pixels (a
    desktop's: the column at its full width)."""
    return _headless(page, "--dump-dom", f"--window-size={size[0]},{size[1]}").stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    folder = profile_dir(Path("results"), RECORD_PROFILE)  # the committed report
    parser.add_argument("--page", type=Path, default=folder / "report.html")
    parser.add_argument("--out", type=Path, default=folder / "report_screenshot.png")
    args = parser.parse_args(argv)
    if chromium() is None:
        print("screenshot: no Chromium on PATH, skipped (apt-get install chromium fonts-noto-cjk)")
        return 0
    print(f"screenshot -> {screenshot(args.page, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
