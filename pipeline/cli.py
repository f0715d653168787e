"""The `edgepipe` command. Heavy imports (paddle, onnx, onnxruntime) happen inside each
command, so `--help` is instant. Errors are one line and a non-zero exit (--debug: traceback)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_run(args) -> int:
    from edgepipe.pipeline.recipe import load_recipe
    from edgepipe.pipeline.report import table_text
    from edgepipe.pipeline.run import run_recipe

    recipe = load_recipe(args.recipe)
    if args.name:
        from dataclasses import replace

        recipe = replace(recipe, name=args.name)
    run_dir, manifest = run_recipe(recipe, Path(args.runs_dir), force=args.force, from_stage=args.from_stage)
    print(table_text(manifest))
    report = run_dir / "report" / "report.md"
    print(f"\nrun directory: {run_dir}" + (f"\nreport: {report}" if report.is_file() else ""))
    return 0


def cmd_export(args) -> int:
    import numpy as np

    from edgepipe.devices import EdgepipeError
    from edgepipe.pipeline.artifact import read_model_info
    from edgepipe.pipeline.stages.export import export_checked

    out = Path(args.output or Path(args.model) / "model.onnx")
    if out.suffix != ".onnx":
        raise EdgepipeError(f"{out}: the output name must end in .onnx")
    shape = read_model_info(args.model)["input_shape"]
    x = np.random.default_rng(0).standard_normal((args.parity_samples, *shape)).astype("float32")
    facts = export_checked(args.model, out, x, opset=args.opset, atol=args.atol, rtol=args.rtol, name=str(args.model))
    print(f"{out}: {facts['bytes']:,} bytes, {facts['params']:,} params, {facts['macs']:,} MACs; "
          f"parity max |diff| {facts['parity']['max_abs_diff']:.2e} on {facts['parity']['samples']} random inputs")
    return 0


def cmd_quantize(args) -> int:
    from edgepipe.devices import EdgepipeError
    from edgepipe.export.analysis import describe
    from edgepipe.export.quantize import StaticInt8Options, quantize_static_int8
    from edgepipe.runtime.runner import load_npz

    src = Path(args.model)
    out = Path(args.output or src.with_name(src.name.removesuffix(".onnx") + ".int8.onnx"))
    if args.calibration:
        arrays, _ = load_npz(Path(args.calibration))
        calib = arrays.get("x", next(iter(arrays.values()), None))
        if calib is None:
            raise EdgepipeError(f"{args.calibration}: holds no arrays")
    else:
        from edgepipe.pipeline.data import load_dataset
        from edgepipe.pipeline.recipe import DataConfig

        calib = load_dataset(DataConfig()).split("calibration")[0]
    opts = StaticInt8Options(format=args.format, per_channel=not args.per_tensor, calibration=args.method,
                             reduce_range=args.reduce_range)
    quantize_static_int8(src, out, calib[: args.samples], opts)
    facts = describe(out)
    print(f"{out}: {facts['bytes']:,} bytes ({facts['bytes'] / src.stat().st_size:.2f}× of {src.name}), "
          f"calibrated on {min(len(calib), args.samples)} samples")
    return 0


def cmd_bench(args) -> int:
    from edgepipe.runtime.runner import main as runner_main

    argv = [str(args.model), "--threads", str(args.threads), "--batch", str(args.batch), "--iters", str(args.iters),
            "--min-seconds", str(args.min_seconds)]
    if args.inputs:
        argv += ["--inputs", str(args.inputs)]
    if args.json:
        argv += ["--json", str(args.json)]
    return runner_main(argv)


def cmd_report(args) -> int:
    from edgepipe.devices import EdgepipeError
    from edgepipe.pipeline.report import load, markdown, table_text
    from edgepipe.runtime.atomic import write_text_atomic

    run_dir = Path(args.run_dir)
    if not (run_dir / "manifest.json").is_file():
        raise EdgepipeError(f"{run_dir}: no manifest.json here; pass a run directory made by `edgepipe run`")
    manifest = load(run_dir)
    print(table_text(manifest))
    if args.output:
        write_text_atomic(args.output, markdown(manifest, run_dir))
        print(f"\nwrote {args.output}")
    return 0


def cmd_verify(args) -> int:
    from edgepipe.pipeline.run import verify_run

    problems = verify_run(Path(args.run_dir))
    for p in problems:
        print(p)
    if not problems:
        print(f"{args.run_dir}: every output matches its sha256 in manifest.json")
    return 1 if problems else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgepipe", description="Compress a Paddle model, export it to int8 ONNX, and measure it for an edge device.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run a recipe (default: the built-in MNIST teacher/student recipe)")
    r.add_argument("recipe", nargs="?", help="recipe YAML (default: built-in mnist_kd.yaml)")
    r.add_argument("--runs-dir", default="runs", help="where run directories go (default: runs)")
    r.add_argument("--name", help="run name (default: the recipe's name)")
    r.add_argument("--force", action="store_true", help="redo every stage")
    r.add_argument("--from", dest="from_stage", metavar="STAGE", help="redo this stage and the ones after it")
    r.set_defaults(fn=cmd_run)

    e = sub.add_parser("export", help="export an edgepipe model folder (model.json + model.pdparams) to ONNX")
    e.add_argument("model", help="model folder, e.g. runs/mnist-kd/distill/student")
    e.add_argument("-o", "--output", help="output .onnx (default: MODEL/model.onnx)")
    e.add_argument("--opset", type=int, default=13)
    e.add_argument("--parity-samples", type=int, default=64, help="random inputs compared against Paddle")
    e.add_argument("--atol", type=float, default=1e-4)
    e.add_argument("--rtol", type=float, default=1e-3)
    e.set_defaults(fn=cmd_export)

    q = sub.add_parser("quantize", help="static int8 quantization of an ONNX model with onnxruntime")
    q.add_argument("model", help="fp32 .onnx")
    q.add_argument("-o", "--output", help="output (default: MODEL.int8.onnx)")
    q.add_argument("--calibration", help=".npz of calibration inputs ('x'); default: the bundled MNIST calibration split")
    q.add_argument("--samples", type=int, default=200, help="calibration samples (default 200)")
    q.add_argument("--method", choices=["minmax", "entropy", "percentile"], default="minmax")
    q.add_argument("--format", choices=["qdq", "qoperator"], default="qdq")
    q.add_argument("--per-tensor", action="store_true", help="per-tensor weights (default per-channel)")
    q.add_argument("--reduce-range", action="store_true", help="7-bit weights (avoids u8s8 saturation on CPUs without VNNI)")
    q.set_defaults(fn=cmd_quantize)

    b = sub.add_parser("bench", help="latency and memory of an ONNX model (same as the on-device runner)")
    b.add_argument("model", help=".onnx model")
    b.add_argument("--inputs", help=".npz inputs ('x' and optional labels 'y')")
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--iters", type=int, default=100)
    b.add_argument("--min-seconds", type=float, default=1.0)
    b.add_argument("--json", help="write the full result here")
    b.set_defaults(fn=cmd_bench)

    rp = sub.add_parser("report", help="print the summary table of a run (and write markdown with -o)")
    rp.add_argument("run_dir", help="run directory, e.g. runs/mnist-kd")
    rp.add_argument("-o", "--output", help="write the markdown report here")
    rp.set_defaults(fn=cmd_report)

    v = sub.add_parser("verify", help="re-hash a run's outputs against its manifest")
    v.add_argument("run_dir")
    v.set_defaults(fn=cmd_verify)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from edgepipe.devices import EdgepipeError

    try:
        return args.fn(args)
    except EdgepipeError as exc:
        if args.debug:
            raise
        print(f"edgepipe: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug or an unexpected library failure: still one line
        if args.debug:
            raise
        print(f"edgepipe: internal error: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("edgepipe: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
