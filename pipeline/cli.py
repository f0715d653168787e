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


def cmd_prune(args) -> int:
    import shutil
    import tempfile

    from edgepipe.devices import EdgepipeError
    from edgepipe.devices.config import ConfigError, from_dict
    from edgepipe.pipeline.artifact import load_model
    from edgepipe.pipeline.channel_prune import DATA_SCORERS, ChannelRule
    from edgepipe.pipeline.data import DataConfig, load_dataset
    from edgepipe.pipeline.sensitivity import Sensitivity, analyse, choose_ratios, write
    from edgepipe.pipeline.stages.prune import _bar

    if not args.sensitivity:
        raise EdgepipeError("edgepipe prune: add --sensitivity (this command runs the analysis alone; pruning and "
                            "fine-tuning happen in a recipe's prune stage)")
    target = None
    if args.target:
        kind, _, value = args.target.partition("=")
        try:
            target = {kind: float(value)}
        except ValueError:
            raise EdgepipeError(f"--target {args.target}: write KIND=SHARE, e.g. macs=0.5") from None
    try:
        rule = from_dict(ChannelRule, {"criterion": args.criterion, "round_to": args.round_to, "skip": args.skip or [],
                                       "layers": args.layers or ["*"], "samples": args.samples, "target": target})
        sens = from_dict(Sensitivity, {"ratios": [float(r) for r in args.ratios.split(",")] if args.ratios else list(
            Sensitivity().ratios), "samples": args.val_samples, "plot": not args.no_plot})
    except ValueError as exc:
        raise EdgepipeError(f"--ratios {args.ratios}: {exc}") from None
    except ConfigError as exc:
        raise EdgepipeError(f"edgepipe prune: {exc}") from None
    model_dir = Path(args.model)
    layer, info = load_model(model_dir)
    data = load_dataset(DataConfig())
    train = data.split("train") if rule.criterion in DATA_SCORERS else None
    shape = tuple(info["input_shape"])
    if tuple(data.split("val")[0].shape[1:]) != shape:
        raise EdgepipeError(f"{model_dir}: the model takes inputs of shape {shape}, the bundled MNIST splits are "
                            f"{tuple(data.split('val')[0].shape[1:])}; run the analysis in a recipe (prune stage, "
                            "sensitivity: {}) with matching data")
    doc, g, aux = analyse(layer, shape, rule, sens, data.split("val"), train, progress=_bar("sensitivity"))
    if rule.target is not None:
        choose_ratios(layer, shape, doc, g, aux, rule)
    out = Path(args.output or model_dir / "sensitivity")
    tmp = Path(tempfile.mkdtemp(prefix=".sensitivity-", dir=out.parent if out.parent.is_dir() else None))
    try:
        files = write(doc, tmp, plot=sens.plot)
        out.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.move(str(f), str(out / f.name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = doc["baseline"]
    print(f"validation accuracy {100 * base['accuracy']:.2f}% on {doc['val_samples']} samples; "
          f"{base['params']:,} params, {base['macs']:,} MACs; criterion {doc['criterion']}")
    ratios = doc["ratios"]
    print(f"{'group (first layer)':<28} {'ch':>5} " + " ".join(f"{r:>6.2f}" for r in ratios))
    for grp in doc["groups"]:
        print(f"{grp['group'][0][:28]:<28} {grp['channels']:>5} " + " ".join(f"{100 * p['accuracy']:>6.1f}" for p in grp["points"]))
    for fz in doc["frozen"]:
        print(f"  left alone: {', '.join(fz['group'])} ({fz['skip']})")
    if "allocation" in doc:
        a = doc["allocation"]
        lat = a.get("latency")
        print(f"target {', '.join(f'{k} {v:g}' for k, v in a['target'].items())}: {a['params']:,} params, {a['macs']:,} MACs"
              + (f", p50 {lat['pruned_ms']:.3f} ms vs {lat['unpruned_ms']:.3f} ms unpruned ({lat['probes']} probes)" if lat else "")
              + f"; predicted loss {100 * a['predicted_loss']:.2f} pt (sum of the groups' losses alone); per_layer for the prune stage:")
        for name, r in a["ratios"].items():
            print(f"  - {{name: {name}, ratio: {r}}}")
    print(f"wrote {', '.join(str(out / f.name) for f in files)}")
    return 0


def cmd_quantize(args) -> int:
    from edgepipe.devices import EdgepipeError
    from edgepipe.export.analysis import describe
    from edgepipe.export.quantize import convert_fp16, quantize_dynamic, quantize_matmul_4bit
    from edgepipe.pipeline.stages.quantize import QuantizeConfig, resolve_options
    from edgepipe.runtime.runner import load_npz

    src = Path(args.model)
    cfg = QuantizeConfig(model=src.name, mode=args.mode, profile=args.profile, format=args.format,
                         per_channel=False if args.per_tensor else None, calibration=args.method,
                         percentile=args.percentile, calibration_samples=args.samples,
                         activation_type=args.activation_type, weight_type=args.weight_type,
                         reduce_range=True if args.reduce_range else None, max_accuracy_drop=args.max_drop)
    out = Path(args.output or src.with_name(cfg.output_name))
    if out.suffix != ".onnx":
        raise EdgepipeError(f"{out}: the output name must end in .onnx")
    if args.mode == "static":
        from edgepipe.export.guard import guarded_quantize

        if args.calibration:
            arrays, _ = load_npz(Path(args.calibration))
            calib = arrays.get("x", next(iter(arrays.values())))
        else:
            from edgepipe.pipeline.data import load_dataset
            from edgepipe.pipeline.recipe import DataConfig

            calib = load_dataset(DataConfig()).split("calibration")[0]
        opts, source = resolve_options(cfg)
        if args.exclude:
            from dataclasses import replace

            opts = replace(opts, nodes_to_exclude=tuple(args.exclude))
        x = y = None
        if args.eval:
            arrays, y = load_npz(Path(args.eval))
            x = arrays.get("x", next(iter(arrays.values())))
        elif args.max_drop is not None:
            raise EdgepipeError("--max-drop needs --eval FILE.npz (held-out inputs 'x', labels 'y' optional)")
        g = guarded_quantize(src, out, calib[: args.samples], opts, x if x is not None else calib[:64], y,
                             args.max_drop, max_float_layers=args.max_float_layers)
        print(f"options: {opts.format} {opts.bits}, per-channel={opts.per_channel}, reduce_range={opts.reduce_range}, "
              f"{opts.calibration} calibration" + (f" (preset of profile '{source['profile']}': {source['reason']})" if source["profile"] else ""))
        if args.eval:
            last = g["steps"][-1]
            print(f"on {args.eval}: top-1 agreement with fp32 {100 * last['agreement']:.2f}%, output SQNR {last['output_sqnr_db']:.1f} dB"
                  + (f", accuracy {100 * last['accuracy']:.2f}% ({-last['drop_points']:+.2f} points)" if "accuracy" in last else ""))
        if g["kept_float"]:
            print(f"accuracy guard kept in float: {', '.join(g['kept_float'])} ({1e3 * g['latency_cost_ms']:+.0f} µs at batch 1)")
        if not g["met"]:
            out.unlink(missing_ok=True)
            raise EdgepipeError(f"{out.name}: drop {g['drop_points']:.2f} points exceeds --max-drop {args.max_drop} even with "
                                f"{len(g['kept_float'])} node(s) in float; try --method entropy/percentile or QAT")
    elif args.mode == "dynamic":
        for w in quantize_dynamic(src, out):
            print(f"warning: {w}", file=sys.stderr)
    elif args.mode == "fp16":
        for w in convert_fp16(src, out):
            print(f"note: {w}", file=sys.stderr)
    else:
        n = quantize_matmul_4bit(src, out)
        print(f"{n} MatMul weight(s) converted to 4-bit blocks")
    facts = describe(out)
    print(f"{out}: {facts['bytes']:,} bytes ({facts['bytes'] / src.stat().st_size:.2f}× of {src.name})")
    return 0


def cmd_explain(args) -> int:
    import json

    from edgepipe.export.explain import explain, explain_text
    from edgepipe.runtime.atomic import write_json_atomic

    r = explain(args.model, threads=args.threads, seconds=args.seconds, batch=args.batch)
    print(explain_text(r))
    if args.json:
        write_json_atomic(args.json, json.loads(json.dumps(r)))
    return 0


def cmd_bench(args) -> int:
    from edgepipe.runtime.runner import execute

    return execute(args)


def cmd_devices(args) -> int:
    from edgepipe.devices import detect_host
    from edgepipe.devices.profiles import all_presets, detect_profile, load_profile

    if args.show:
        import yaml

        print(yaml.safe_dump(load_profile(args.show).to_dict(), sort_keys=False, allow_unicode=True).rstrip())
        return 0
    host = detect_host()
    presets = all_presets()
    found = detect_profile(host, presets)
    rows = [("profile", "arch", "cores", "threads", "providers", "int8 preset", "p90 budget")]
    for p in presets:
        q = p.quantization
        rows.append((("* " if found and p.name == found.name else "  ") + p.name, p.arch, str(p.cores), str(p.threads),
                     ",".join(x.removesuffix("ExecutionProvider") for x in p.providers),
                     f"{q.format} {q.activation_type}{q.weight_type}{' rr' if q.reduce_range else ''}",
                     f"{p.budgets.latency_p90_ms:g} ms" if p.budgets.latency_p90_ms else "—"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print(f"\nthis host: {host.cpu_model} ({host.arch}), {host.logical_cores} logical cores, "
          f"{host.memory_mb} MB; int8 flags: {', '.join(host.flags) or 'none'}"
          + (f"; board: {host.board}" if host.board else "") + (f"; GPU: {', '.join(host.gpus)}" if host.gpus else ""))
    print(f"detected profile: {found.name} (marked *) — {found.quantization.reason}" if found else
          "detected profile: none matches; copy the closest preset (`edgepipe devices --show NAME`) and edit it")
    return 0


def cmd_report(args) -> int:
    from edgepipe.devices import EdgepipeError
    from edgepipe.pipeline.report import device_table, load, load_device_result, markdown, table_text
    from edgepipe.runtime.atomic import write_text_atomic

    run_dir = Path(args.run_dir)
    if not (run_dir / "manifest.json").is_file():
        raise EdgepipeError(f"{run_dir}: no manifest.json here; pass a run directory made by `edgepipe run`")
    manifest = load(run_dir)
    devices = [load_device_result(Path(d)) for d in args.device or []]
    print(table_text(manifest))
    if devices:
        print("\n" + device_table(devices))
    if args.output:
        write_text_atomic(args.output, markdown(manifest, run_dir, devices))
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

    q = sub.add_parser("quantize", help="quantize an ONNX model with onnxruntime (static int8/int4/a16w8, dynamic, fp16, 4-bit MatMul)")
    q.add_argument("model", help="fp32 .onnx")
    q.add_argument("-o", "--output", help="output (default: MODEL.<int8|int4|a16w8|dyn8|fp16|mm4>.onnx)")
    q.add_argument("--mode", choices=["static", "dynamic", "fp16", "matmul4"], default="static")
    q.add_argument("--profile", help="device profile whose int8 preset gives the defaults (default: this host's)")
    q.add_argument("--calibration", help=".npz of calibration inputs ('x'); default: the bundled MNIST calibration split")
    q.add_argument("--samples", type=int, default=200, help="calibration samples (default 200)")
    q.add_argument("--method", choices=["minmax", "entropy", "percentile"], default="minmax", help="calibration method")
    q.add_argument("--percentile", type=float, default=99.999, help="for --method percentile (default 99.999)")
    q.add_argument("--format", choices=["qdq", "qoperator"], help="default: the profile's (qdq)")
    q.add_argument("--per-tensor", action="store_true", help="per-tensor weights (default: the profile's, per-channel)")
    q.add_argument("--activation-type", choices=["u8", "s8", "u16", "s16"], help="default: the profile's")
    q.add_argument("--weight-type", choices=["s8", "u8", "s4", "u4"], help="default: the profile's")
    q.add_argument("--reduce-range", action="store_true", help="7-bit weights (avoids u8s8 saturation on CPUs without VNNI)")
    q.add_argument("--exclude", action="append", metavar="NODE", help="keep this ONNX node in float (repeatable)")
    q.add_argument("--eval", help=".npz of held-out inputs 'x' (labels 'y' optional) for the accuracy guard")
    q.add_argument("--max-drop", type=float, help="accuracy-guard budget in points (accuracy, or top-1 agreement without labels)")
    q.add_argument("--max-float-layers", type=int, default=4, help="at most this many guard steps (default 4)")
    q.set_defaults(fn=cmd_quantize)

    pr = sub.add_parser("prune", help="structured-pruning sensitivity: validation accuracy of each channel group vs ratio (JSON + PNG)")
    pr.add_argument("model", help="model folder, e.g. runs/mnist-kd/distill/student")
    pr.add_argument("--sensitivity", action="store_true", help="run the sensitivity analysis (required)")
    pr.add_argument("-o", "--output", help="output folder (default: MODEL/sensitivity)")
    pr.add_argument("--criterion", default="l1", help="channel importance: l1 l2 fpgm bn_scale taylor apoz activation (default l1)")
    pr.add_argument("--ratios", help="comma-separated ratios (default 0.1,0.2,...,0.9)")
    pr.add_argument("--round-to", type=int, default=1, help="kept channel counts rounded to a multiple of this")
    pr.add_argument("--layers", action="append", metavar="GLOB", help="only groups holding these layers (repeatable)")
    pr.add_argument("--skip", action="append", metavar="GLOB", help="leave groups holding these layers alone (repeatable)")
    pr.add_argument("--samples", type=int, default=512, help="training samples for taylor/apoz/activation (default 512)")
    pr.add_argument("--val-samples", type=int, default=0, help="validation samples evaluated (default: the whole split)")
    pr.add_argument("--target", metavar="KIND=SHARE", help="also choose per-group ratios keeping this share: params=, macs= or latency=")
    pr.add_argument("--no-plot", action="store_true", help="JSON only")
    pr.set_defaults(fn=cmd_prune)

    x = sub.add_parser("explain", help="why an (int8) ONNX model is fast or slow: time per op, unfused Q/DQ, float fallbacks")
    x.add_argument("model", help=".onnx model")
    x.add_argument("--threads", type=int, default=1)
    x.add_argument("--batch", type=int, default=1)
    x.add_argument("--seconds", type=float, default=1.0, help="profile for at least this long (default 1)")
    x.add_argument("--json", help="write the full analysis here")
    x.set_defaults(fn=cmd_explain)

    from edgepipe.runtime.args import build_parser as runner_parser

    b = sub.add_parser("bench", parents=[runner_parser(add_help=False)],
                       help="latency, memory, energy and a budget verdict for an ONNX model (the on-device runner)",
                       description="Same arguments and output as the on-device runner, edgepipe-runner.")
    b.set_defaults(fn=cmd_bench)

    d = sub.add_parser("devices", help="list the device profiles and detect this host")
    d.add_argument("--show", metavar="PROFILE", help="print one profile (a preset name or a YAML file) in full")
    d.set_defaults(fn=cmd_devices)

    rp = sub.add_parser("report", help="print the summary table of a run (and write markdown with -o)")
    rp.add_argument("run_dir", help="run directory, e.g. runs/mnist-kd")
    rp.add_argument("-o", "--output", help="write the markdown report here")
    rp.add_argument("--device", action="append", metavar="RESULT.json",
                    help="merge a runner result measured on a device (edgepipe-runner --json); repeatable")
    rp.set_defaults(fn=cmd_report)

    v = sub.add_parser("verify", help="re-hash a run's outputs against its manifest")
    v.add_argument("run_dir")
    v.set_defaults(fn=cmd_verify)
    return p


def main(argv: list[str] | None = None) -> int:
    import os

    # Paddle's C++ side logs warnings through glog (e.g. while tracing a model to its static graph);
    # they are not the user's concern and would break the one-line error contract. Errors still show.
    os.environ.setdefault("GLOG_minloglevel", "2")
    import warnings

    warnings.filterwarnings("ignore", message="No ccache found")  # paddle's, on import; about building C++ extensions
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
