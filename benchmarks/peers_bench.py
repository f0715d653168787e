"""Side by side: what a Paddle user could deploy with instead of edgepipe, against edgepipe's
deployment choice, in one process and one sitting, batch 1, interleaved rounds.

Peers, each on the same trained float model:
  Paddle Inference fp32   paddle.jit.save + paddle.inference with oneDNN (what Paddle ships)
  onnxruntime fp32        edgepipe's ONNX export, onnxruntime's CPU provider
  OpenVINO default        the same ONNX file, OpenVINO's CPU plugin at its default precision
  NNCF PTQ int8           nncf.quantize on the OpenVINO model with the calibration digits (what an
                          Intel user would do; NNCF is a benchmark-only dependency: [peers] extra)
and edgepipe's choice: for the seed CNN, the demo's deploy stage choice (runs/mnist-kd/deploy/
deploy.json, which may be a compressed model); for the paddle.vision nets, edgepipe's own choice
among its fp32 and int8 (QDQ, this host's profile preset) files on each installed backend,
measured by runtime/measure/compare.py on validation digits and chosen by the deploy stage's rule (the
fastest within 1 point of the best float candidate's accuracy) before the peers are timed.

Models: the seed CNN (the demo's distilled student, trained on the bundled digits) and
paddle.vision MobileNetV2, MobileNetV3-small and ResNet-18 at 224×224. The vision nets have random
backbones (no pretrained weights can be downloaded here) with BatchNorm statistics re-estimated on
upsampled digits and the last layer fitted by ridge regression (benchmarks/quant_bench.py), so
their accuracy is that of a weak digit classifier — enough to show whether a peer or a
quantized file changes the predictions, not an ImageNet figure.

Each round times every peer for --seconds (median of its runs), in an order rotated each round,
after --settle seconds of sleep and a short warm-up (so the previous peer's spinning threads are
idle). The table gives the median p50 over rounds [min–max] and the ratio to the fastest of the four
peers, taken in each round (drift that slows a whole round cancels) and then averaged over rounds
(geometric mean, the highest and lowest 20% cut: runtime/measure/compare.paired_ratio, which the deploy
stage ranks its candidates by).
Each round also records how much of the host's CPU other processes and the hypervisor took; a
(model, threads) block where they took cores the peers needed is flagged. --against EARLIER.json prints how many
ratios moved by more than 15% since that run, with both runs' host load.
Accuracy and agreement with Paddle's fp32 predictions are measured through each peer's own
session on held-out test digits (at the first thread count); ×kept is the ratio to the fastest
peer that stays within --max-drop points of Paddle fp32's accuracy, the goal's "at equal
accuracy" (a peer that is fast because it changes the predictions does not set that bar).

    make demo && .venv/bin/pip install -e '.[peers]' && .venv/bin/python benchmarks/peers_bench.py

Prints the table and writes JSON (default benchmarks/results/peers_bench.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from quant_bench import _digits, digit_classifier  # noqa: E402  (benchmarks/quant_bench.py)

from edgepipe.runtime.measure.compare import paired_ratio  # noqa: E402  (the deploy stage's ranking, shared)
from edgepipe.runtime.measure.hostload import HostLoad, contended  # noqa: E402

PEERS = ("Paddle Inference fp32", "onnxruntime fp32", "OpenVINO default", "NNCF PTQ int8")
VISION = {"mobilenet_v2": "MobileNetV2", "mobilenet_v3_small": "MobileNetV3-small", "resnet18": "ResNet-18"}


def paddle_inference(layer, shape: tuple, work: Path):
    """paddle.jit.save the layer; returns make(threads) -> run(x) through a oneDNN predictor."""
    import paddle
    from paddle import inference

    prefix = work / "paddle" / "model"
    layer.eval()
    paddle.jit.save(layer, str(prefix), input_spec=[paddle.static.InputSpec([None, *shape], "float32", "x")])

    def make(threads: int):
        config = inference.Config(str(prefix) + ".json", str(prefix) + ".pdiparams")
        config.disable_gpu()
        config.enable_mkldnn()
        config.set_cpu_math_library_num_threads(threads)
        config.disable_glog_info()
        predictor = inference.create_predictor(config)
        inp = predictor.get_input_handle(predictor.get_input_names()[0])
        out = predictor.get_output_handle(predictor.get_output_names()[0])

        def run(x):
            inp.reshape(x.shape)
            inp.copy_from_cpu(x)
            predictor.run()
            return out.copy_to_cpu()

        return run

    return make


def onnx_peer(model: Path, backend: str, precision: str = "auto"):
    from edgepipe.runtime.model.backends import describe, open_model

    def make(threads: int):
        s = open_model(model, backend, threads=threads, precision=precision)
        name, outs = s.get_inputs()[0].name, [o.name for o in s.get_outputs()]
        run = lambda x: s.run(outs, {name: x})[0]
        run.ran = describe(s, model)
        return run

    return make


def nncf_peer(model: Path, calib: np.ndarray, work: Path):
    """NNCF's post-training int8 of the OpenVINO model (its defaults: mixed preset, fast bias correction)."""
    from edgepipe.runtime.model.backends.openvino import load_openvino

    ov = load_openvino()  # openvino with its import-time telemetry off, before nncf imports it
    import nncf

    core = ov.Core()
    q = nncf.quantize(
        core.read_model(str(model)), nncf.Dataset([calib[i : i + 1] for i in range(len(calib))]), subset_size=len(calib)
    )
    xml = work / f"{model.stem}.nncf.xml"
    ov.save_model(q, str(xml))

    def make(threads: int):
        compiled = core.compile_model(str(xml), "CPU", {"INFERENCE_NUM_THREADS": threads})
        req = compiled.create_infer_request()
        return lambda x: req.infer({0: x})[0]

    return make, nncf.__version__


def edgepipe_choice(fp32: Path, int8: Path, x: np.ndarray, y: np.ndarray) -> dict:
    """The deploy stage's rule over edgepipe's own files on each installed backend."""
    from edgepipe.pipeline.stages.choice import choose
    from edgepipe.pipeline.stages.deploy import backend_precisions
    from edgepipe.runtime.measure.compare import measure

    pairs, _ = backend_precisions(None, None)
    cands = [
        {"id": f"{m.name}|{b}|{p}", "name": m.name, "model": str(m), "backend": b, "precision": p}
        for m in (fp32, int8)
        for b, p in pairs
    ]
    best, table = choose(measure(cands, x, y, threads=1, rounds=3, seconds=0.3), max_drop=1.0, budgets={})
    return {
        "model": Path(best["model"]),
        "backend": best["backend"],
        "precision": best["precision"],
        "table": [{k: c[k] for k in ("id", "p50_ms", "accuracy", "why_not")} for c in table],
    }


def rounds(peers: dict, x1: np.ndarray, n: int, seconds: float, settle: float) -> tuple[dict, list[dict]]:
    """p50 (ms) of each peer in each of n rounds, peers in an order rotated each round; before each
    peer's block, `settle` seconds of sleep (the previous peer's spinning threads go idle: on a 2-core
    host they would otherwise take the next peer's cores) and a short untimed warm-up. Also returns
    each round's host load (other processes' CPU share, hypervisor steal)."""
    from edgepipe.runtime.measure.bench import interleaved_rounds, timed_runs

    runs = {k: (lambda r=r: r(x1)) for k, r in peers.items()}
    for r in runs.values():
        timed_runs(r, 3, 0.2)  # warm-up

    def settle_and_warm(k):
        time.sleep(settle)
        timed_runs(runs[k], 2, min(0.05, seconds / 4))

    p50, _, loads = interleaved_rounds(runs, n, seconds, min_count=3, before_each=settle_and_warm, per_round=HostLoad)
    loads = [load.as_dict() for load in loads]
    return p50, loads


def predictions(run, x: np.ndarray) -> np.ndarray:
    return np.array([int(np.asarray(run(x[i : i + 1])).reshape(-1).argmax()) for i in range(len(x))])


def bench_model(
    label: str, layer, shape: tuple, fp32: Path, choice: dict, calib, xt, yt, args, work: Path
) -> list[dict]:
    make = {
        "Paddle Inference fp32": paddle_inference(layer, shape, work),
        "onnxruntime fp32": onnx_peer(fp32, "onnxruntime"),
        "OpenVINO default": onnx_peer(fp32, "openvino"),
    }
    make["NNCF PTQ int8"], nncf_version = nncf_peer(fp32, calib, work)
    make["edgepipe choice"] = onnx_peer(choice["model"], choice["backend"], choice["precision"])
    rows, acc = [], {}
    for t in args.threads:
        peers = {k: m(t) for k, m in make.items()}
        if not acc:  # accuracy once, at the first thread count: the sessions compute the same function at any
            preds = {k: predictions(r, xt) for k, r in peers.items()}
            ref = preds["Paddle Inference fp32"]
            acc = {
                k: {"accuracy": float((p == yt).mean()), "agreement_with_paddle": float((p == ref).mean())}
                for k, p in preds.items()
            }
        p50, loads = rounds(peers, xt[:1], args.rounds, args.seconds, args.settle)
        score = ratios(p50, {k: v["accuracy"] for k, v in acc.items()}, args.max_drop)
        busy = max((x["others_cpu_share"] or 0) + (x["steal_share"] or 0) for x in loads)
        flagged = sum(contended(x, t) for x in loads)
        for k in make:
            med = float(np.median(p50[k]))
            rows.append(
                {
                    "model": label,
                    "threads": t,
                    "peer": k,
                    "p50_ms": med,
                    "range_ms": [min(p50[k]), max(p50[k])],
                    "p50_rounds_ms": p50[k],
                    **score[k],
                    "host_load": {"max_busy_share": round(busy, 4), "contended_rounds": flagged, "rounds": loads},
                    **acc[k],
                    "accuracy_at_threads": args.threads[0],
                    "ran": getattr(peers[k], "ran", None),
                    **(
                        {"file": choice["model"].name, "backend": choice["backend"], "precision": choice["precision"]}
                        if k == "edgepipe choice"
                        else {}
                    ),
                    **({"nncf": nncf_version} if k == "NNCF PTQ int8" else {}),
                }
            )
        print(
            f"  {label}, {t} thread(s): "
            + ", ".join(f"{k} {np.median(p50[k]):.3f}" for k in make)
            + " ms"
            + (
                f"  [{flagged} of {len(loads)} rounds contended: up to {100 * busy:.0f}% of the CPU went to "
                "other processes or the hypervisor]"
                if flagged
                else ""
            ),
            file=sys.stderr,
            flush=True,
        )
    return rows


def ratios(p50: dict, accuracy: dict, max_drop: float) -> dict:
    """Per peer: its paired ratio (runtime/measure/compare.paired_ratio) to the fastest peer and to the fastest
    that keeps Paddle fp32's accuracy within max_drop points, the fastest being the one with the lowest
    paired ratio to Paddle fp32 — the same statistic, so no peer reads below ×1.00 of "the fastest"."""

    def fastest_of(pool):
        return min(pool, key=lambda k: paired_ratio(p50[k], p50[PEERS[0]]))

    fastest = fastest_of(PEERS)
    floor = accuracy[PEERS[0]] - max_drop / 100
    kept = fastest_of([k for k in PEERS if accuracy[k] >= floor - 1e-9])  # Paddle fp32 itself always qualifies
    out = {}
    for k in p50:
        per_round = [x / y for x, y in zip(p50[k], p50[fastest])]
        out[k] = {
            "ratio_to_fastest_peer": paired_ratio(p50[k], p50[fastest]),
            "ratio_range": [min(per_round), max(per_round)],
            "fastest_peer": fastest,
            "ratio_to_fastest_accurate_peer": paired_ratio(p50[k], p50[kept]),
            "fastest_accurate_peer": kept,
        }
    return out


def rescore(path: Path, max_drop: float) -> None:
    """Recompute a saved result's ratios from its per-round p50s with this version's rule, in place."""
    d = json.loads(path.read_text())
    blocks = {}
    for r in d["rows"]:
        blocks.setdefault((r["model"], r["threads"]), []).append(r)
    acc = {(r["model"], r["peer"]): r["accuracy"] for r in d["rows"] if r.get("accuracy") is not None}
    for (model, _), rows in blocks.items():
        score = ratios(
            {r["peer"]: r["p50_rounds_ms"] for r in rows}, {r["peer"]: acc[(model, r["peer"])] for r in rows}, max_drop
        )
        for r in rows:
            r.update(score[r["peer"]])
    path.write_text(json.dumps(d, indent=1, default=str))
    print(f"rescored {path}")


def parse_args() -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/mnist-kd"), help="a finished run of the default recipe")
    ap.add_argument("--models", nargs="+", default=["seed", *VISION], choices=["seed", *VISION])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--seconds", type=float, default=0.3, help="time per peer per round")
    ap.add_argument(
        "--settle", type=float, default=0.1, help="sleep before each peer's block, so the last one's threads go idle"
    )
    ap.add_argument(
        "--max-drop",
        type=float,
        default=1.0,
        help="accuracy points below Paddle fp32 a peer may lose and still count as keeping the accuracy (default 1)",
    )
    ap.add_argument("--against", type=Path, help="an earlier JSON of this benchmark: print how far each ratio moved")
    ap.add_argument(
        "--test", type=int, default=256, help="held-out digits for accuracy (the seed CNN uses the run's test split)"
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "peers_bench.json")
    ap.add_argument(
        "--rescore",
        type=Path,
        nargs="+",
        metavar="RESULT.json",
        help="recompute saved results' ratios from their per-round p50s, then exit (nothing is timed); "
        "with --against, compare the last of them with it",
    )
    return ap.parse_args()


def rescore_only(args) -> int:
    """--rescore: recompute the saved results' ratios (and compare the last with --against); nothing is timed."""
    for path in args.rescore:
        rescore(path, args.max_drop)
    if args.against:  # the last rescored result against the earlier one, as a run with --against prints it
        print(
            against(
                json.loads(args.rescore[-1].read_text())["rows"],
                json.loads(args.against.read_text())["rows"],
                args.against,
            )
        )
    return 0


def require_peers() -> None:
    """Exit with an install hint unless OpenVINO and NNCF import."""
    try:
        from edgepipe.runtime.model.backends.openvino import load_openvino

        load_openvino()  # openvino's import-time telemetry off; nncf then finds no openvino_telemetry and sends nothing
        import nncf  # noqa: F401
    except ImportError as exc:
        sys.exit(f"peers_bench: {exc.name} is not installed: .venv/bin/pip install -e '.[peers]' (NNCF and OpenVINO)")


def seed_setup(args) -> tuple:
    """The seed CNN from the demo's run: (label, layer, shape, fp32, choice, calib, xt, yt)."""
    from edgepipe.pipeline.core.recipe import DataConfig
    from edgepipe.pipeline.data.load import load_dataset
    from edgepipe.pipeline.models.load import load_model

    deploy = args.run / "deploy" / "deploy.json"
    if not deploy.is_file():
        sys.exit(f"peers_bench: {deploy} not found; run `make demo` first (or pass --run)")
    d = json.loads(deploy.read_text())
    with np.load(args.run / "bench" / "test_split.npz") as z:
        xt, yt = z["x"], z["y"]
    calib = load_dataset(DataConfig()).split("calibration")[0][:128]
    layer, shape, fp32 = (
        load_model(args.run / "distill" / "student")[0],
        (1, 28, 28),
        args.run / "export" / "student.onnx",
    )
    choice = {
        "model": deploy.parent / d["model"],
        "backend": d["backend"],
        "precision": d["precision"],
        "table": "the demo's deploy stage (deploy.json)",
    }
    return "seed CNN (distilled student)", layer, shape, fp32, choice, calib, xt, yt


def vision_setup(name: str, args, work: Path, profile) -> tuple:
    """A paddle.vision net with a digit head, exported and quantized: (label, layer, shape, fp32, choice, ...)."""
    from edgepipe.export.paddle_onnx import export_layer
    from edgepipe.export.quantize import QuantOptions, quantize_static

    print(f"peers_bench: {VISION[name]}: digit head, export, int8, edgepipe's choice", file=sys.stderr, flush=True)
    layer, _ = digit_classifier(name)
    shape, fp32, int8 = (3, 224, 224), work / name / f"{name}.onnx", work / name / f"{name}.int8.onnx"
    export_layer(layer, shape, fp32, name=name)
    calib = _digits("calibration", 128, seed=1)[0]
    quantize_static(fp32, int8, calib, QuantOptions.from_profile(profile) if profile else QuantOptions())
    xv, yv = _digits("val", 128, seed=4)
    xt, yt = _digits("test", args.test, seed=3)
    choice = edgepipe_choice(fp32, int8, xv, yv)
    return VISION[name], layer, shape, fp32, choice, calib, xt, yt


def write_result(args, host, profile, choices: dict, rows: list[dict], t0: float) -> None:
    """Write the JSON result to --out."""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "host": {"cpu": host.cpu_model, "flags": sorted(host.flags)},
                "profile": profile.name if profile else None,
                "rounds": args.rounds,
                "seconds_per_round": args.seconds,
                "settle_s": args.settle,
                "choices": choices,
                "rows": rows,
                "wall_s": round(time.perf_counter() - t0, 1),
            },
            indent=1,
            default=str,
        )
    )
    print(f"\nwrote {args.out}")


def main() -> int:
    args = parse_args()
    if args.rescore:
        return rescore_only(args)
    require_peers()
    from edgepipe.devices import detect_host
    from edgepipe.devices.profiles import detect_profile

    t0 = time.perf_counter()
    host = detect_host()
    profile = detect_profile(host)
    rows, choices = [], {}
    with tempfile.TemporaryDirectory(prefix="edgepipe-peers-") as tmp:
        work = Path(tmp)
        for name in args.models:
            (work / name).mkdir()
            setup = seed_setup(args) if name == "seed" else vision_setup(name, args, work, profile)
            label, layer, shape, fp32, choice, calib, xt, yt = setup
            choices[label] = {k: (str(v.name) if isinstance(v, Path) else v) for k, v in choice.items()}
            rows += bench_model(label, layer, shape, fp32, choice, calib, xt, yt, args, work / name)
    print_table(rows, args, host)
    write_result(args, host, profile, choices, rows, t0)
    if args.against:
        print(against(rows, json.loads(args.against.read_text())["rows"], args.against))
    return 0


def against(rows: list[dict], old: list[dict], path: Path, tolerance: float = 0.15) -> str:
    """How many ratios (to the fastest peer, and to the fastest that keeps the accuracy) moved by at
    most `tolerance` since an earlier run, and which did not."""
    before = {(r["model"], r["threads"], r["peer"]): r for r in old}
    lines = []
    for key in ("ratio_to_fastest_peer", "ratio_to_fastest_accurate_peer"):
        both = [
            (r, before[k]) for r in rows if (k := (r["model"], r["threads"], r["peer"])) in before and key in before[k]
        ]
        moved = [(r, o, r[key] / o[key]) for r, o in both]
        misses = [(r, o, q) for r, o, q in moved if abs(q - 1) > tolerance]
        lines.append(
            f"\nagainst {path}, {key}: {len(moved) - len(misses)} of {len(moved)} within {100 * tolerance:.0f}%"
        )
        for r, o, q in misses:
            busy = [f"{100 * x.get('host_load', {}).get('max_busy_share', float('nan')):.0f}%" for x in (o, r)]
            lines.append(
                f"  {r['model']}, {r['threads']} thread(s), {r['peer']}: ×{o[key]:.2f} then ×{r[key]:.2f} "
                f"({100 * (q - 1):+.0f}%; host busy up to {busy[0]} then {busy[1]})"
            )
    return "\n".join(lines)


def print_table(rows: list[dict], args, host) -> None:
    print(
        f"\nbatch 1 on {host.cpu_model}; p50 ms, median of {args.rounds} interleaved rounds [min–max]; "
        "× = ratio to the fastest of the four peers in the same round, trimmed geometric mean over rounds; "
        "×kept = the same against the fastest peer "
        f"within {args.max_drop:g} point of Paddle fp32's accuracy; accuracy on held-out digits (agreement with "
        "Paddle fp32); * = in a round of that block other processes or the hypervisor took cores it needed\n"
    )
    head = (
        f"{'model':<30} {'thr':>3} {'peer':<22} {'p50 ms':>9} {'[min–max]':>17} {'×':>6} {'×kept':>6} "
        f"{'accuracy':>9} {'agree':>7}  ran"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        acc = f"{100 * r['accuracy']:.1f}%" if "accuracy" in r else ""
        agree = f"{100 * r['agreement_with_paddle']:.1f}%" if "agreement_with_paddle" in r else ""
        ran = (
            f"{r['file']} on {r['backend']} ({(r.get('ran') or {}).get('precision', r['precision'])})"
            if r["peer"] == "edgepipe choice"
            else ""
        )
        busy = "*" if r["host_load"]["contended_rounds"] else " "
        print(
            f"{r['model']:<30} {r['threads']:>3}{busy}{r['peer']:<22} {r['p50_ms']:>9.3f} "
            f"{'[%.3f–%.3f]' % tuple(r['range_ms']):>17} {r['ratio_to_fastest_peer']:>6.2f} "
            f"{r['ratio_to_fastest_accurate_peer']:>6.2f} {acc:>9} {agree:>7}  {ran}"
        )


if __name__ == "__main__":
    sys.exit(main())
