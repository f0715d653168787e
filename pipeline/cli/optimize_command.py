"""`edgepipe optimize MODEL --images DIR`: the user's trained model (an ONNX file, a Paddle inference
folder, an edgepipe model folder) and a folder of their images in, the fastest deployment that keeps the
task's metric out — a run directory with manifest.json, report.html and the optimize stage's deploy.json,
written by the same machinery as a recipe (an `optimize` stage, then `report`)."""

from __future__ import annotations

import shutil
from pathlib import Path

from edgepipe.devices import EdgepipeError


def add_optimize(sub) -> None:
    from edgepipe.runtime.args import add_contract_args, add_shape_arg, add_task_args

    p = sub.add_parser(
        "optimize",
        help="from a trained model and a folder of images to the fastest deployment that keeps the task's "
        "metric: your model, edgepipe's int8 and NNCF's int8 on every backend here, measured side by side",
    )
    p.add_argument("model", help="an ONNX file, a Paddle inference model (folder or path prefix), or a model folder")
    p.add_argument(
        "--images",
        type=Path,
        required=True,
        help="your images: calibration, and the task's metric (class folders, a labels file, or none: then "
        "against your float model's predictions)",
    )
    p.add_argument("-o", "--output", type=Path, help="the run directory (default runs/optimize-<model name>)")
    p.add_argument("--max-drop", type=float, default=1.0, help="points of the task's metric allowed (default 1)")
    p.add_argument("--profile", help="device profile whose budgets, threads and int8 preset apply (default: detected)")
    p.add_argument("--threads", type=int, help="threads for every candidate (default: the profile's, capped here)")
    p.add_argument(
        "--backend", action="append", choices=["onnxruntime", "openvino"], help="backends to try (repeatable)"
    )
    p.add_argument(
        "--quantizer",
        action="append",
        choices=["edgepipe", "nncf"],
        help="int8 makers to try (repeatable; default both: edgepipe for onnxruntime, NNCF for OpenVINO)",
    )
    p.add_argument("--budget-p90", type=float, metavar="MS", help="a p90 latency the choice must meet (default none)")
    p.add_argument("--budget-bytes", type=int, metavar="N", help="a model size the choice must meet (default none)")
    p.add_argument(
        "--time-limit",
        type=float,
        metavar="S",
        help="seconds the quantizers may take: none starts past it, nor any guard step (default none)",
    )
    p.add_argument("--samples", type=int, default=100, help="calibration images (default 100, spread over the folder)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    p.add_argument("--seconds", type=float, default=0.3, help="seconds per candidate per round (default 0.3)")
    p.add_argument("--force", action="store_true", help="rerun every stage even where an earlier result stands")
    add_task_args(p, reference=False)
    add_contract_args(p)
    add_shape_arg(p)
    p.set_defaults(fn=cmd_optimize)


def float_onnx(args, work: Path) -> Path:
    """The user's model as a float ONNX file carrying its input contract and task: an ONNX file as it is
    (or a copy in `work` with the contract/task flags written into it), a Paddle inference model or an
    edgepipe model folder exported (and parity-checked) into `work`."""
    from edgepipe.devices.base.atomic import write_bytes_atomic
    from edgepipe.export.metadata import write_metadata
    from edgepipe.pipeline.cli.model_commands import model_signature
    from edgepipe.pipeline.stages.export import contract_metadata
    from edgepipe.runtime.inputs.images import CONTRACT_FLAGS
    from edgepipe.runtime.model.session import open_session
    from edgepipe.runtime.tasks import task_from_args

    model = Path(args.model)
    if not model.exists() and not any(Path(f"{model}{s}").is_file() for s in (".json", ".pdmodel")):
        raise EdgepipeError(f"{model}: not found (give an ONNX file, a Paddle inference model or a model folder)")
    work.mkdir(parents=True, exist_ok=True)
    if model.suffix != ".onnx":
        src = _export(model, work, args)
    else:
        src = model
    given = [k for k in CONTRACT_FLAGS if getattr(args, k, None) not in (None, False)]
    props = {}
    if given:
        props |= contract_metadata(model_signature(src, args)[1].to_dict())
    if args.task or args.task_opt:
        props |= task_from_args(open_session(src), args.task, args.task_opt).metadata_props()
    if not props:
        return src
    out = work / src.name
    if out != src:
        write_bytes_atomic(out, src.read_bytes())
    write_metadata(out, props)
    return out


def _export(model: Path, work: Path, args) -> Path:
    """A Paddle inference model or an edgepipe model folder exported into `work` (as `edgepipe export`)."""
    import argparse

    from edgepipe.pipeline.cli.model_commands import cmd_export

    name = (model.name if model.is_dir() else model.stem) or "model"
    out = work / f"{name}.onnx"
    ns = argparse.Namespace(**vars(args))
    ns.model, ns.output, ns.opset, ns.atol, ns.rtol, ns.parity_samples = str(model), str(out), 13, 1e-4, 1e-3, 8
    if not args.shape and args.size:  # the parity check's inputs at the contract's size (dynamic sizes stay so)
        h, _, w = args.size.lower().partition("x")
        ns.shape = [f"1x{args.channels or 3}x{h}x{w or h}"]
    cmd_export(ns)
    return out


def cmd_optimize(args) -> int:
    if not args.images.is_dir():
        raise EdgepipeError(f"--images {args.images}: not a folder of images")
    stem = Path(args.model).name.removesuffix(".onnx") or "model"
    run_dir = Path(args.output or Path("runs") / f"optimize-{stem}")
    fresh = not run_dir.exists()
    try:
        manifest = _run(args, run_dir)
    except BaseException:
        if fresh:  # a failed first run leaves no half-made run directory
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    print(candidate_table(manifest["stages"]["optimize"]["metrics"]))
    print(f"\nrun directory: {run_dir}\nreport: {run_dir / 'report' / 'report.html'}")
    print(f"run it: edgepipe-runner --deployment {run_dir / 'optimize' / 'deploy.json'}")
    return 0


def _run(args, run_dir: Path) -> dict:
    """The float ONNX file prepared in RUN_DIR/input, then the optimize and report stages; the manifest."""
    from edgepipe.pipeline.core.recipe import parse_recipe
    from edgepipe.pipeline.core.run import run_recipe

    src = float_onnx(args, run_dir / "input")
    stage = {
        "model": {"onnx": str(src.resolve())},
        "images": str(args.images.resolve()),
        "task": args.task,
        "max_accuracy_drop": args.max_drop,
        "calibration_samples": args.samples,
        "profile": args.profile,
        "threads": args.threads,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "budget_p90_ms": args.budget_p90,
        "budget_bytes": args.budget_bytes,
        "time_limit": args.time_limit,
    }
    if args.backend:
        stage["backends"] = list(args.backend)
    if args.quantizer:
        stage["quantizers"] = list(dict.fromkeys(args.quantizer))
    raw = {"name": run_dir.name, "stages": [{"optimize": stage}, {"report": {}}]}
    recipe = parse_recipe(raw, base=Path.cwd())
    return run_recipe(recipe, run_dir.parent, force=args.force)[1]


def candidate_table(m: dict) -> str:
    """The candidates, the chosen one first, with the task's metric and why each other one lost."""
    metric = m["chosen"]["metric"]
    cands = sorted(m["candidates"], key=lambda c: (not c["chosen"], c["time_vs_reference"]))
    w = max(len(c["name"]) for c in cands)
    rows = [f"{'model':<{w}}  {'backend':<11} {'ran as':<6} {'p50 ms':>8} {'× ref':>6} {metric:>14}  outcome"]
    for c in cands:
        value = c["accuracy"] if c["accuracy"] is not None else (c.get("task") or {}).get("vs_reference")
        shown = "—" if value is None else f"{100 * value:.2f}%"
        outcome = ("chosen" + (f" ({c['tie']})" if c.get("tie") else "")) if c["chosen"] else "; ".join(c["why_not"])
        rows.append(
            f"{c['name']:<{w}}  {c['backend']:<11} {c['ran']['precision']:<6} {c['p50_ms']:>8.3f} "
            f"{c['time_vs_reference']:>6.2f} {shown:>14}  {outcome}"
        )
    if m.get("speedup_vs_source"):
        rows.append(f"\nthe choice runs ×{m['speedup_vs_source']:.2f} as fast as your model on its best backend here")
    rows += [f"note: {n}" for n in m.get("notes", [])]
    rows.append(f"measured at batch 1, {m['threads']} thread(s), profile {m['profile']}")
    return "\n".join(rows)
