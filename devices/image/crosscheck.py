"""The x86 side of `make image-arm`'s check: the same runner on this host, on the same model, test
split and frames as the arm64 image ran under qemu (build.py's run_in_image), compared with what the
image wrote: outputs, accuracy, and the camera mode's frames and predictions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from emulation import RUNNER_ARGS


def write_frames(data: Path, folder: Path, n: int = 30) -> Path:
    """The first n test digits as 112×112 PNG frames (grey on black), for the camera mode's check."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    with np.load(data) as z:
        x = z["x"][:n, 0]
    px = np.clip((x - x.min()) / (x.max() - x.min()) * 255, 0, 255).round().astype(np.uint8)
    for i, p in enumerate(px):
        Image.fromarray(p).resize((112, 112), Image.NEAREST).save(folder / f"{i:03d}.png")
    return folder


def compare_stream(model: Path, out: Path) -> dict:
    """The camera mode on the same frames on x86: the same frames processed, the same predictions."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgepipe.runtime",
            model,
            "--stream",
            out / "frames",
            "--profile",
            "x86-avx2",
            "--energy-seconds",
            "0",
            "--json",
            out / "x86-stream.json",
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the x86 runner's --stream failed: {proc.stderr.strip()[-800:]}")
    arm, x86 = (json.loads((out / f).read_text()) for f in ("arm-stream.json", "x86-stream.json"))
    return {
        "stream_frames_image": arm["frames_processed"],
        "stream_frames_x86": x86["frames_processed"],
        "stream_predictions_match": arm["predicted"] == x86["predicted"],
    }


def compare(model: Path, data: Path, out: Path) -> dict:
    import numpy as np

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgepipe.runtime",
            model,
            "--inputs",
            data,
            "--profile",
            "x86-avx2",
            "--json",
            out / "x86.json",
            "--save-outputs",
            out / "x86.npz",
            *RUNNER_ARGS,
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the x86 runner failed: {proc.stderr.strip()[-800:]}")
    arm, x86 = json.loads((out / "arm.json").read_text()), json.loads((out / "x86.json").read_text())
    with np.load(out / "arm.npz") as a, np.load(out / "x86.npz") as b:
        la, lb = a["outputs"], b["outputs"]
    return {
        "samples": int(len(la)),
        "arch_image": arm["environment"]["host"]["arch"],
        "onnxruntime_image": arm["environment"]["onnxruntime"],
        "onnxruntime_x86": x86["environment"]["onnxruntime"],
        "max_abs_diff": float(np.abs(la - lb).max()),
        "logit_scale": float(np.abs(lb).max()),
        "top1_agreement": float((la.argmax(1) == lb.argmax(1)).mean()),
        "accuracy_image": arm["accuracy"],
        "accuracy_x86": x86["accuracy"],
    }
