"""Text-line images with known strings, rendered here: a stand-in for the photos of labels, parcels and
documents an OCR model reads, made because no OCR data set can be downloaded on these machines.

Each line is drawn with the DejaVu Sans font that matplotlib ships (mpl-data/fonts/ttf), dark text
on a light, slightly noisy background, at a random size and position. `render_lines` writes
`OUT/lines/NNNN.png` with `OUT/lines/labels.tsv` (PaddleOCR's `image<TAB>text`) and `OUT/labels.json`
({file: string}); with `orientation=True` also `OUT/orientation/0/` and `OUT/orientation/180/` (the
same lines upright and upside down: the classes of a text direction classifier), and with `pages`
`OUT/pages/` with several lines on one page (for a text detector), its `labels.tsv` in PaddleOCR's
detection format (`image<TAB>[{"transcription", "points"}]`, the box around each line's ink).
"""

from __future__ import annotations

import json
import shutil
import string
import tempfile
from pathlib import Path

import numpy as np

from edgepipe.devices import EdgepipeError

WORDS = (
    "edge",
    "camera",
    "parcel",
    "door",
    "model",
    "paddle",
    "label",
    "front",
    "garden",
    "delivery",
    "order",
    "box",
    "street",
    "north",
    "south",
    "device",
    "window",
    "light",
    "motion",
    "alert",
    "zone",
    "track",
)


def font_path() -> Path:
    """DejaVu Sans as matplotlib ships it (a package font, the same on every machine)."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    if not path.is_file():
        raise EdgepipeError(f"{path}: matplotlib's DejaVu Sans font is missing; reinstall matplotlib")
    return path


def random_text(rng: np.random.Generator) -> str:
    words = [WORDS[i] for i in rng.integers(0, len(WORDS), rng.integers(1, 4))]
    if rng.random() < 0.6:
        words.append("".join(rng.choice(list(string.digits), rng.integers(2, 6))))
    if rng.random() < 0.3:
        words[0] = words[0].capitalize()
    return " ".join(words)


def draw_line(text: str, rng: np.random.Generator, height: int = 48):
    """One RGB text line image (PIL) about `height` pixels tall."""
    from PIL import Image, ImageDraw, ImageFont

    size = int(height * rng.uniform(0.55, 0.75))
    font = ImageFont.truetype(str(font_path()), size)
    left, top, right, bottom = font.getbbox(text)
    pad_x, pad_y = int(rng.integers(4, 16)), int(rng.integers(2, max(3, height - (bottom - top) - 2)))
    w = right - left + 2 * pad_x
    bg = tuple(int(v) for v in rng.integers(190, 256, 3))
    fg = tuple(int(v) for v in rng.integers(0, 70, 3))
    im = Image.new("RGB", (w, height), bg)
    ImageDraw.Draw(im).text((pad_x - left, min(pad_y, height - (bottom - top) - 1) - top), text, fill=fg, font=font)
    arr = np.asarray(im, dtype=np.int16) + rng.normal(0, 6, (height, w, 1)).astype(np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def draw_page(lines: list, rng: np.random.Generator, size=(480, 640)):
    """Several text lines pasted on one page (PIL); returns (page, boxes as [x0, y0, x1, y1])."""
    from PIL import Image

    h, w = size
    page = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(200, 256, 3)))
    boxes, y = [], int(rng.integers(10, 40))
    for line in lines:
        line = line if line.width <= w - 20 else line.resize((w - 20, line.height))
        if y + line.height > h - 10:
            break
        x = int(rng.integers(10, max(11, w - line.width - 10)))
        page.paste(line, (x, y))
        ink = np.nonzero(np.asarray(line.convert("L")) < 128)  # the text itself, not the line's margins
        if ink[0].size:
            boxes.append(
                [x + int(ink[1].min()), y + int(ink[0].min()), x + int(ink[1].max()) + 1, y + int(ink[0].max()) + 1]
            )
        else:
            boxes.append([x, y, x + line.width, y + line.height])
        y += line.height + int(rng.integers(10, 50))
    return page, boxes


def render_lines(
    out: str | Path, n: int = 40, seed: int = 0, height: int = 48, orientation: bool = False, pages: int = 0
) -> dict:
    """Write n text lines (and the orientation classes, and `pages` pages) to a new folder `out`."""
    out = Path(out)
    if out.exists():
        raise EdgepipeError(f"{out}: exists; give a new folder")
    rng = np.random.default_rng(seed)
    labels, boxes = {}, {}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))  # renamed into place when whole
    try:
        (tmp / "lines").mkdir()
        images = []
        for i in range(n):
            text = random_text(rng)
            im = draw_line(text, rng, height)
            name = f"{i:04d}.png"
            im.save(tmp / "lines" / name)
            labels[f"lines/{name}"] = text
            images.append(im)
        if orientation:
            for cls, turn in (("0", 0), ("180", 180)):
                (tmp / "orientation" / cls).mkdir(parents=True)
                for i, im in enumerate(images):
                    im.rotate(turn).save(tmp / "orientation" / cls / f"{i:04d}.png")
        if pages:
            (tmp / "pages").mkdir()
            for p in range(pages):
                chosen = [images[int(k)] for k in rng.choice(len(images), min(6, len(images)), replace=False)]
                page, b = draw_page(chosen, rng)
                page.save(tmp / "pages" / f"{p:04d}.png")
                boxes[f"pages/{p:04d}.png"] = b
        # PaddleOCR's label files: image<TAB>text for recognition, image<TAB>[{transcription, points}] for detection
        (tmp / "lines" / "labels.tsv").write_text("".join(f"{k[6:]}\t{v}\n" for k, v in labels.items()))
        if pages:
            (tmp / "pages" / "labels.tsv").write_text(
                "".join(f"{k[6:]}\t{json.dumps(_regions(b))}\n" for k, b in boxes.items())
            )
        (tmp / "labels.json").write_text(
            json.dumps({"font": font_path().name, "lines": labels, "boxes": boxes}, indent=1)
        )
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"path": str(out), "lines": n, "pages": pages, "orientation": orientation}


def _regions(boxes: list) -> list[dict]:
    """Axis-aligned boxes as PaddleOCR's detection labels: four corners clockwise from the top-left."""
    return [{"transcription": "", "points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]} for x0, y0, x1, y1 in boxes]
