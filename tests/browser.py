"""Headless Chromium (Debian's `chromium` package) for the report's browser test and the README's
screenshots: a PNG of a page at a given window size, its DOM after rendering, and the network
requests the page itself made (from Chromium's net log).

    python tests/browser.py runs/mnist-kd/report/report.html OUT_DIR   # desktop and phone PNGs
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Chromium's own background traffic (updates, sync, time, accounts) stays off or is told apart
# below; these are the flags a closed network needs (the page must not wait on refused connections).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--disable-extensions",
)
SIZES = {"desktop": (1280, 12000), "phone": (390, 20000)}  # taller than the page; the PNG is cropped to it


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(page: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("chromium not found (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="edgepipe-chromium-") as profile:
        return subprocess.run(
            [exe, *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def screenshot(page: Path, png: Path, width: int, height: int, netlog: Path | None = None) -> None:
    args = [f"--window-size={width},{height}", f"--screenshot={png}"] + ([f"--log-net-log={netlog}"] if netlog else [])
    proc = _run(page, *args)
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-500:]}")


def dom(page: Path, width: int = 1280) -> str:
    """The document as Chromium serialises it after loading and laying it out."""
    proc = _run(page, f"--window-size={width},2000", "--dump-dom")
    if proc.returncode != 0 or "<html" not in proc.stdout:
        raise RuntimeError(f"chromium --dump-dom failed (exit {proc.returncode}): {proc.stderr[-500:]}")
    return proc.stdout


def page_requests(netlog: Path) -> list[str]:
    """URLs the page (a file:// document) asked the network for: URL requests whose network isolation
    key is the file's site. Chromium's own requests (component updates, time, accounts) carry no such
    key and are not the page's doing."""
    d = json.loads(netlog.read_text())
    names = {v: k for k, v in d["constants"]["logEventTypes"].items()}
    out = []
    for e in d["events"]:
        p = e.get("params") or {}
        if names.get(e["type"]) == "URL_REQUEST_START_JOB" and "file://" in str(p.get("network_isolation_key", "")):
            if not p.get("url", "").startswith(("file:", "data:")):
                out.append(p["url"])
    return out


def rendered(png: Path, size: tuple[int, int]) -> dict:
    """Size of the screenshot and how much of it is not background: a blank page has (almost) none."""
    import numpy as np
    from PIL import Image

    with Image.open(png) as im:
        a = np.asarray(im.convert("L"), dtype=np.float32)
        got = im.size
    return {"size": got, "expected": size, "ink": float((a < 200).mean()), "std": float(a.std())}


def crop_to_page(png: Path, margin: int = 24) -> tuple[int, int]:
    """Cut the blank window below the page and store the PNG with a 128-colour palette (small enough
    to keep in the repository); returns the new size."""
    import numpy as np
    from PIL import Image

    with Image.open(png) as im:
        rgb = im.convert("RGB")
    rows = np.nonzero((np.asarray(rgb.convert("L")) < 250).any(axis=1))[0]
    bottom = min(rgb.height, int(rows[-1]) + margin) if rows.size else rgb.height
    rgb.crop((0, 0, rgb.width, bottom)).quantize(128).save(png, optimize=True)
    return rgb.width, bottom


def main(argv: list[str]) -> int:
    page, out = Path(argv[0]), Path(argv[1])
    if not page.is_file():
        print(f"{page}: not found; run `make demo` first", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    for name, (w, h) in SIZES.items():
        png = out / f"report-{name}.png"
        screenshot(page, png, w, h)
        r = rendered(png, (w, h))
        print(f"{png}: {crop_to_page(png)[1]} px tall, {100 * r['ink']:.1f}% ink")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
