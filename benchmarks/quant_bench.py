"""Quantization benchmark, two parts, every ratio measured in this one run.

mnist   the quantization study recipe's results (pipeline/recipes/mnist_quant.yaml: PTQ with each
        calibration method, PTQ and QAT at 8 and 4 bits, dynamic, fp16, 4-bit MatMul) against the
        fp32 student, with the issue's targets checked.
vision  paddle.vision ResNet-18 and MobileNetV2 at 224×224 as 10-class digit classifiers (random
        backbones, as no pretrained weights can be downloaded here; BatchNorm statistics
        re-estimated on upsampled digits and the last layer fitted by ridge regression, so the
        predictions are diverse and agreement means something): fp32 vs static int8 (this host's
        profile preset) at batch 1 and 1 thread in fresh runner processes, top-1 agreement with
        fp32 on 512 held-out digits, and dynamic int8's warning.

    .venv/bin/python benchmarks/quant_bench.py [--part mnist|vision|all] [--out FILE]

mnist needs the study run first: .venv/bin/edgepipe run pipeline/recipes/mnist_quant.yaml
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROWS = [
    ("fp32", "student.onnx"),
    ("PTQ int8 minmax", "student.ptq-minmax.onnx"),
    ("PTQ int8 entropy", "student.ptq-entropy.onnx"),
    ("PTQ int8 percentile", "student.ptq-percentile.onnx"),
    ("PTQ int4 weights", "student.ptq-w4.onnx"),
    ("QAT int8", "student.qat-w8.onnx"),
    ("QAT int4 weights", "student.qat-w4.onnx"),
    ("dynamic int8", "student.dyn8.onnx"),
    ("fp16", "student.fp16.onnx"),
    ("4-bit MatMul", "student.mm4.onnx"),
]


def mnist(run_dir: Path) -> dict:
    manifest = run_dir / "manifest.json"
    if not manifest.is_file():
        sys.exit(
            f"quant_bench: {manifest} not found; run `.venv/bin/edgepipe run pipeline/recipes/mnist_quant.yaml` first"
        )
    m = json.loads(manifest.read_text())
    arts = {n: a["meta"] for s in m["stages"].values() for n, a in s.get("artifacts", {}).items()}
    bench = next(s for s in m["stages"].values() if s["type"] == "bench")["metrics"]["models"]
    rows = []
    for label, name in ROWS:
        a, b = arts[name], bench[name]
        rows.append(
            {
                "variant": label,
                "file": name,
                "accuracy": a["accuracy"],
                "bytes": a["bytes"],
                "p50_ms": b["latency"]["p50_ms"],
                "kept_float": (a.get("guard") or {}).get("kept_float", []),
            }
        )
    acc = {r["variant"]: 100 * r["accuracy"] for r in rows}
    fp32 = acc["fp32"]
    checks = [
        (f"PTQ int8 {c} within 0.5 point of fp32", fp32 - acc[f"PTQ int8 {c}"] <= 0.5)
        for c in ("minmax", "entropy", "percentile")
    ]
    checks += [
        ("QAT int8 at least as accurate as PTQ int8 (minmax)", acc["QAT int8"] >= acc["PTQ int8 minmax"]),
        ("QAT int4 weights within 1.5 points of fp32", fp32 - acc["QAT int4 weights"] <= 1.5),
    ]
    print(f"{'variant':<22} {'accuracy':>9} {'Δ vs fp32':>9} {'bytes':>9} {'p50 ms':>7}  kept float")
    for r in rows:
        print(
            f"{r['variant']:<22} {100 * r['accuracy']:>8.2f}% {100 * r['accuracy'] - fp32:>+9.2f} {r['bytes']:>9,} "
            f"{r['p50_ms']:>7.3f}  {', '.join(r['kept_float']) or '—'}"
        )
    print()
    for text, ok in checks:
        print(f"  [{'met' if ok else 'NOT met'}] {text}")
    return {"rows": rows, "checks": [{"target": t, "met": ok} for t, ok in checks], "run": str(run_dir)}


def _digits(split: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Image-like inputs: bundled MNIST digits upsampled to 224×224, three channels, normalised."""
    from edgepipe.pipeline.core.recipe import DataConfig
    from edgepipe.pipeline.data.load import load_dataset

    x, y = load_dataset(DataConfig()).split(split)
    idx = np.random.default_rng(seed).choice(len(x), min(n, len(x)), replace=False)
    big = np.kron(x[idx], np.ones((1, 1, 8, 8), np.float32))  # 28 -> 224
    return np.ascontiguousarray(np.repeat(big, 3, axis=1)), y[idx]


def _export(name: str, out: Path, head_samples: int = 512) -> float:
    """Export digit_classifier(name) to `out`; returns its fp32 test accuracy on digits."""
    from edgepipe.export.paddle_onnx import export_layer

    net, acc = digit_classifier(name, head_samples)
    export_layer(net, (3, 224, 224), out, name=name)
    return acc


def digit_classifier(name: str, head_samples: int = 512):
    """A 10-class digit classifier on a random backbone: BatchNorm statistics re-estimated on digits,
    then the last Linear fitted by ridge regression on the pooled features (no pretrained weights can
    be downloaded here, and a random head would predict one class for everything, making top-1
    agreement meaningless). Returns (the Paddle model, its test accuracy on 512 digits)."""
    import paddle

    paddle.seed(0)
    net = vision_model(name)
    return net, fit_digit_head(net, digit_head(name, net), head_samples)


def vision_model(name: str):
    """A fresh paddle.vision `resnet18`, `mobilenet_v2`, `mobilenet_v3_small` or `shufflenet_v2_x1_0`
    with a 10-class head (random weights)."""
    import paddle

    return {
        "resnet18": paddle.vision.models.resnet18,
        "mobilenet_v2": paddle.vision.models.mobilenet_v2,
        "mobilenet_v3_small": paddle.vision.models.mobilenet_v3_small,
        "shufflenet_v2_x1_0": paddle.vision.models.shufflenet_v2_x1_0,
    }[name](num_classes=10)


def digit_head(name: str, net):
    """The last Linear of a vision_model(name): the layer fit_digit_head() fits."""
    return {"resnet18": lambda: net.fc, "shufflenet_v2_x1_0": lambda: net._fc}.get(name, lambda: net.classifier[-1])()


def fit_digit_head(net, head, head_samples: int = 512) -> float:
    """Re-estimate `net`'s BatchNorm statistics on digits and fit its last Linear `head` by ridge
    regression on the pooled features; returns the test accuracy on 512 held-out digits. Also used
    to adapt a compressed backbone as cheaply as possible (no gradient step)."""
    import paddle

    from edgepipe.pipeline.training import predict_logits

    x, y = _digits("train", head_samples, seed=0)
    # BatchNorm running statistics from digits, exactly: momentum 0 and one batch of 64, so every BN
    # layer keeps that batch's statistics. (A few updates at the default momentum 0.9 left the running
    # variance mostly at its initial 1.0, the signal shrank layer by layer, and MobileNetV2's pooled
    # features came out at ~1e-7 with a head of weights ~1e5: logits of amplified rounding noise, on
    # which two fp32 engines disagreed.)
    bns = [m for m in net.sublayers() if isinstance(m, paddle.nn.layer.norm._BatchNormBase)]
    saved = [m._momentum for m in bns]
    for m in bns:
        m._momentum = 0.0
    net.train()
    with paddle.no_grad():
        net(paddle.to_tensor(x[:64]))
    for m, v in zip(bns, saved):
        m._momentum = v
    net.eval()
    feats = []
    hook = head.register_forward_pre_hook(lambda layer, inp: feats.append(inp[0].numpy()) or None)
    predict_logits(net, x, batch=32)
    hook.remove()
    f = np.concatenate(feats).astype(np.float64)
    mu, sd = f.mean(0), f.std(0) + 1e-6
    fz = np.hstack([(f - mu) / sd, np.ones((len(f), 1))])
    target = np.eye(10)[y] - 0.1
    fit_n = len(fz) * 3 // 4  # ridge on standardised features, its strength chosen on the last quarter

    def ridge(lam, rows):
        return np.linalg.solve(fz[rows].T @ fz[rows] + lam * np.eye(fz.shape[1]), fz[rows].T @ target[rows])

    lam = max(
        (10.0**k for k in range(0, 6)),
        key=lambda lam: ((fz[fit_n:] @ ridge(lam, slice(0, fit_n))).argmax(1) == y[fit_n:]).mean(),
    )
    w = ridge(lam, slice(None))
    head.weight.set_value((w[:-1] / sd[:, None]).astype(np.float32))
    head.bias.set_value((w[-1] - (mu / sd) @ w[:-1]).astype(np.float32))
    xt, yt = _digits("test", 512, seed=3)
    return float((predict_logits(net, xt, batch=32).argmax(1) == yt).mean())


def _runner(model: Path, out: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "edgepipe.runtime",
        str(model),
        "--threads",
        "1",
        "--batch",
        "1",
        "--warmup",
        "10",
        "--warmup-seconds",
        "1",
        "--iters",
        "50",
        "--min-seconds",
        "3",
        "--energy-seconds",
        "0",
        "--json",
        str(out),
        "--quiet",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"quant_bench: runner failed on {model}: {proc.stderr.strip()}")
    return json.loads(out.read_text())


def vision(work: Path) -> dict:
    """MobileNetV2 and ResNet-18 with digit heads: fp32 against int8 (static, guarded, dynamic)."""
    from edgepipe.devices import detect_host
    from edgepipe.devices.profiles import detect_profile
    from edgepipe.export.quantize import QuantOptions

    profile = detect_profile(detect_host())
    opts = QuantOptions.from_profile(profile) if profile else QuantOptions()
    calib = _digits("calibration", 128, seed=1)[0]
    held_out, labels = _digits("test", 512, seed=3)
    results = [vision_one(name, work, opts, calib, held_out, labels) for name in ("mobilenet_v2", "resnet18")]
    print_vision(results, opts, profile)
    return {
        "options": {
            "format": opts.format,
            "bits": opts.bits,
            "per_channel": opts.per_channel,
            "reduce_range": opts.reduce_range,
            "profile": profile.name if profile else None,
        },
        "models": results,
    }


def vision_one(name: str, work: Path, opts, calib: np.ndarray, held_out: np.ndarray, labels: np.ndarray) -> dict:
    """Export, quantize, guard and time one vision net; its result row."""
    from edgepipe.export.guard import guarded_quantize, run_outputs
    from edgepipe.export.quantize import quantize_dynamic, quantize_static
    from edgepipe.runtime.judge.fidelity import sqnr_db
    from edgepipe.runtime.model.cost import load_onnx

    fp32, int8, dyn = work / f"{name}.onnx", work / f"{name}.int8.onnx", work / f"{name}.dyn8.onnx"
    _export(name, fp32)
    quantize_static(fp32, int8, calib, opts)
    # the accuracy guard, deciding on 256 validation digits (not the 512 reported below),
    # budget 2 points of top-1 disagreement, i.e. >= 98% agreement
    guarded = work / f"{name}.int8-guard.onnx"
    val = _digits("val", 256, seed=4)[0]
    g = guarded_quantize(fp32, guarded, calib, opts, val, None, max_drop=2.0, max_float_layers=4, probe_samples=32)
    warnings = quantize_dynamic(fp32, dyn)
    ref_logits = next(iter(run_outputs(fp32, held_out, batch=32).values()))
    q_logits = next(iter(run_outputs(int8, held_out, batch=32).values()))
    ref, q = ref_logits.argmax(1), q_logits.argmax(1)
    head_in = [n for n in load_onnx(fp32).graph.node if n.op_type in ("MatMul", "Gemm")][-1].input[0]
    feat_sqnr = sqnr_db(
        run_outputs(fp32, held_out[:128], [head_in], batch=32)[head_in],
        run_outputs(int8, held_out[:128], [head_in], batch=32)[head_in],
        per_channel=False,
    )
    qg = next(iter(run_outputs(guarded, held_out, batch=32).values())).argmax(1)
    rf, ri, rg = _runner(fp32, work / "f.json"), _runner(int8, work / "i.json"), _runner(guarded, work / "g.json")
    lat_f, lat_i = rf["runs"][0]["latency"]["p50_ms"], ri["runs"][0]["latency"]["p50_ms"]
    lat_g = rg["runs"][0]["latency"]["p50_ms"]
    return {
        "model": name,
        "fp32_p50_ms": lat_f,
        "int8_p50_ms": lat_i,
        "speedup": lat_f / lat_i,
        "top1_agreement": float((ref == q).mean()),
        "samples": len(held_out),
        "output_sqnr_db": sqnr_db(ref_logits, q_logits, per_channel=False),
        "feature_sqnr_db": feat_sqnr,
        "guard": {
            "kept_float": g["kept_float"],
            "val_agreement": g["agreement"],
            "p50_ms": lat_g,
            "speedup": lat_f / lat_g,
            "top1_agreement": float((ref == qg).mean()),
            "accuracy": float((qg == labels).mean()),
        },
        "fp32_accuracy": float((ref == labels).mean()),
        "int8_accuracy": float((q == labels).mean()),
        "fp32_bytes": fp32.stat().st_size,
        "int8_bytes": int8.stat().st_size,
        "distinct_fp32_classes": int(len(np.unique(ref))),
        "dynamic_warning": warnings,
    }


def print_vision(results: list[dict], opts, profile) -> None:
    """Print the vision nets' table, guard lines and goal checks."""
    print(
        f"\nvision models, 224×224, batch 1, 1 thread, int8 options {opts.format} {opts.bits} "
        f"per-channel={opts.per_channel} "
        f"reduce_range={opts.reduce_range} (profile {profile.name if profile else 'none'})"
    )
    print(
        f"{'model':<14} {'fp32 ms':>8} {'int8 ms':>8} {'speed-up':>9} {'agreement':>10} {'SQNR dB':>8} "
        f"{'fp32 MB':>8} {'int8 MB':>8}  dynamic int8 warns"
    )
    for r in results:
        print(
            f"{r['model']:<14} {r['fp32_p50_ms']:>8.2f} {r['int8_p50_ms']:>8.2f} {r['speedup']:>8.2f}× "
            f"{100 * r['top1_agreement']:>9.1f}% {r['output_sqnr_db']:>8.1f} "
            f"{r['fp32_bytes'] / 1e6:>8.1f} {r['int8_bytes'] / 1e6:>8.1f}  "
            f"{'yes' if r['dynamic_warning'] else 'NO'}"
        )
    print(
        "  pooled-feature SQNR int8 vs fp32 (independent of the fitted head): "
        + ", ".join(f"{r['model']} {r['feature_sqnr_db']:.1f} dB" for r in results)
    )
    print(
        f"  (agreement over {results[0]['samples']} held-out digits; digit accuracy fp32 → int8: "
        + ", ".join(
            f"{r['model']} {100 * r['fp32_accuracy']:.1f}% → {100 * r['int8_accuracy']:.1f}% "
            f"({r['distinct_fp32_classes']} classes predicted)"
            for r in results
        )
        + ")"
    )
    for r in results:
        g = r["guard"]
        print(
            f"  {r['model']} with the accuracy guard (decided on 256 validation digits): kept "
            f"{len(g['kept_float'])} node(s) float ({', '.join(g['kept_float']) or 'none'}), {g['p50_ms']:.2f} ms "
            f"({g['speedup']:.2f}× fp32), agreement {100 * g['top1_agreement']:.1f}%, "
            f"digit accuracy {100 * g['accuracy']:.1f}%"
        )
    for r in results:
        g = r["guard"]
        print(
            f"  [{'met' if r['speedup'] >= 1.4 else 'NOT met'}] {r['model']}: int8 ≥ 1.4× faster than fp32 "
            f"({r['speedup']:.2f}×); [{'met' if r['top1_agreement'] >= 0.98 else 'NOT met'}] agreement ≥ 98% "
            f"({100 * r['top1_agreement']:.1f}%; with the guard {100 * g['top1_agreement']:.1f}% "
            f"at {g['speedup']:.2f}×)"
        )


def bench_main(
    doc: str, out_name: str, default_run: str, mnist_part, work_name: str | None = None, work_part=None
) -> int:
    """The command line both benchmarks share: `--part mnist|<work_name>|all`; `mnist_part(run_dir)`
    reads a finished run, `work_part(tmp_dir)` builds its models in a temporary folder. A part run
    alone updates its own entry in an existing results file."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--part", choices=["mnist", "all"] + ([work_name] if work_part else []), default="all")
    ap.add_argument("--run", type=Path, default=Path(default_run))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / out_name)
    args = ap.parse_args()
    result = {}
    if args.out.is_file() and args.part != "all":
        try:
            result = json.loads(args.out.read_text())
        except ValueError:
            result = {}
    if args.part in ("mnist", "all"):
        result["mnist"] = mnist_part(args.run)
    if work_part and args.part in (work_name, "all"):
        with tempfile.TemporaryDirectory(prefix=f"edgepipe-{Path(out_name).stem}-") as tmp:
            result[work_name] = work_part(Path(tmp))
    from edgepipe.runtime.runner import environment

    result["environment"] = environment()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


def main() -> int:
    return bench_main(__doc__, "quant_bench.json", "runs/mnist-quant", mnist, "vision", vision)


if __name__ == "__main__":
    sys.exit(main())
