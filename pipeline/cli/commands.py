"""What each `edgepipe` command does (cmd_<name>(args) -> exit code). Heavy imports (paddle, onnx,
onnxruntime) happen inside each command, so `--help` is instant."""

from __future__ import annotations

from pathlib import Path

from edgepipe.devices import EdgepipeError


def cmd_run(args) -> int:
    from edgepipe.pipeline.core import distributed
    from edgepipe.pipeline.core.recipe import load_recipe
    from edgepipe.pipeline.core.run import run_recipe
    from edgepipe.pipeline.data.load import load_dataset
    from edgepipe.pipeline.report.tables import table_text

    recipe = load_recipe(args.recipe)
    if args.name:
        from dataclasses import replace

        recipe = replace(recipe, name=args.name)
    if args.nproc is not None or args.nnodes is not None:
        from edgepipe.pipeline.cli.launch import launch_args, run_launched

        nproc, nnodes = launch_args(args)
        if nproc * nnodes > 1:
            return run_launched(args, recipe)
    run_dir, manifest = run_recipe(
        recipe, Path(args.runs_dir), force=args.force, from_stage=args.from_stage, load_data=load_dataset
    )
    if not distributed.is_main():
        return 0  # rank 0 prints the table
    print(table_text(manifest))
    reports = [p for p in (run_dir / "report" / "report.md", run_dir / "report" / "report.html") if p.is_file()]
    print(f"\nrun directory: {run_dir}" + "".join(f"\nreport: {p}" for p in reports))
    return 0


def cmd_prune(args) -> int:
    """Run a channel-sensitivity analysis of a model folder, write it and print its table."""

    from edgepipe.pipeline.compress.channels.importance import DATA_SCORERS
    from edgepipe.pipeline.compress.channels.sensitivity import analyse, choose_ratios
    from edgepipe.pipeline.core.progress import progress_bar
    from edgepipe.pipeline.core.recipe import DataConfig
    from edgepipe.pipeline.data.load import load_dataset
    from edgepipe.pipeline.models.load import load_model

    if not args.sensitivity:
        raise EdgepipeError(
            "edgepipe prune: add --sensitivity (this command runs the analysis alone; pruning and "
            "fine-tuning happen in a recipe's prune stage)"
        )
    rule, sens = _prune_settings(args)
    model_dir = Path(args.model)
    layer, info = load_model(model_dir)
    shape = tuple(info["input_shape"])
    data = load_dataset(data_for(info, Path(args.data), args.layout) if args.data else DataConfig())
    train = data.split("train") if rule.criterion in DATA_SCORERS else None
    if tuple(data.input_shape) != shape:
        raise EdgepipeError(
            f"{model_dir}: the model takes inputs of shape {list(shape)}, the "
            + (f"data in {args.data}" if args.data else "bundled MNIST splits")
            + f" are {list(data.input_shape)}; "
            "give --data: an image folder or .npz of the model's input"
        )
    doc, g, aux = analyse(layer, shape, rule, sens, data.split("val"), train, progress=progress_bar("sensitivity"))
    if rule.target is not None:
        choose_ratios(layer, shape, doc, g, aux, rule)
    out = Path(args.output or model_dir / "sensitivity")
    files = _write_sensitivity(doc, out, sens.plot)
    _print_sensitivity(doc)
    print(f"wrote {', '.join(str(out / f.name) for f in files)}")
    return 0


def _prune_settings(args):
    """(the ChannelRule, the Sensitivity settings) that `edgepipe prune`'s flags ask for."""

    from edgepipe.devices.base.config import ConfigError, from_dict
    from edgepipe.pipeline.compress.channels.prune import ChannelRule
    from edgepipe.pipeline.compress.channels.sensitivity import Sensitivity

    target = None
    if args.target:
        kind, _, value = args.target.partition("=")
        try:
            target = {kind: float(value)}
        except ValueError:
            raise EdgepipeError(f"--target {args.target}: write KIND=SHARE, e.g. macs=0.5") from None
    try:
        rule = from_dict(
            ChannelRule,
            {
                "criterion": args.criterion,
                "round_to": args.round_to,
                "skip": args.skip or [],
                "layers": args.layers or ["*"],
                "samples": args.samples,
                "target": target,
            },
        )
        sens = from_dict(
            Sensitivity,
            {
                "ratios": [float(r) for r in args.ratios.split(",")] if args.ratios else list(Sensitivity().ratios),
                "samples": args.val_samples,
                "plot": not args.no_plot,
            },
        )
    except ValueError as exc:
        raise EdgepipeError(f"--ratios {args.ratios}: {exc}") from None
    except ConfigError as exc:
        raise EdgepipeError(f"edgepipe prune: {exc}") from None
    return rule, sens


def _write_sensitivity(doc: dict, out: Path, plot: bool) -> list[Path]:
    """Write a sensitivity analysis into `out` (through a temporary folder beside it); its files' names."""
    import shutil
    import tempfile

    from edgepipe.pipeline.compress.channels.sensitivity import write

    tmp = Path(tempfile.mkdtemp(prefix=".sensitivity-", dir=out.parent if out.parent.is_dir() else None))
    try:
        files = write(doc, tmp, plot=plot)
        out.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.move(str(f), str(out / f.name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return files


def _print_sensitivity(doc: dict) -> None:
    """Print a sensitivity analysis: its baseline, each group's accuracy per ratio, and any allocation."""
    base = doc["baseline"]
    print(
        f"validation accuracy {100 * base['accuracy']:.2f}% on {doc['val_samples']} samples; "
        f"{base['params']:,} params, {base['macs']:,} MACs; criterion {doc['criterion']}"
    )
    ratios = doc["ratios"]
    print(f"{'group (first layer)':<28} {'ch':>5} " + " ".join(f"{r:>6.2f}" for r in ratios))
    for grp in doc["groups"]:
        print(
            f"{grp['group'][0][:28]:<28} {grp['channels']:>5} "
            + " ".join(f"{100 * p['accuracy']:>6.1f}" for p in grp["points"])
        )
    for fz in doc["frozen"]:
        print(f"  left alone: {', '.join(fz['group'])} ({fz['skip']})")
    if "allocation" in doc:
        a = doc["allocation"]
        lat = a.get("latency")
        print(
            f"target {', '.join(f'{k} {v:g}' for k, v in a['target'].items())}: "
            f"{a['params']:,} params, {a['macs']:,} MACs"
            + (
                f", p50 {lat['pruned_ms']:.3f} ms vs {lat['unpruned_ms']:.3f} ms unpruned ({lat['probes']} probes)"
                if lat
                else ""
            )
            + f"; predicted loss {100 * a['predicted_loss']:.2f} pt (sum of the groups' losses alone); "
            "per_layer for the prune stage:"
        )
        for name, r in a["ratios"].items():
            print(f"  - {{name: {name}, ratio: {r}}}")


def data_for(info: dict, path: Path, layout: str | None):
    """A data: config for a model folder's own input: an image folder or an .npz of pixels, under the
    input contract its model.json records (or its input shape, with default normalisation)."""

    from edgepipe.devices.base.config import ConfigError, from_dict
    from edgepipe.pipeline.core.recipe import DataConfig

    c = info.get("contract") or {}
    channels, h, w = info["input_shape"]
    fields = {
        "source": "imagefolder" if path.is_dir() else "npz",
        "path": str(path),
        "size": [h, w],
        "channels": channels,
        "test": 0.1,
        "val": 0.2,
        "calibration": 1,
    }
    if c:
        fields |= {"mean": list(c["mean"]), "std": list(c["std"])} | (
            {"resize": c["resize"]} if c.get("resize") and path.is_dir() else {}
        )
    if fields["source"] == "npz":
        fields["layout"] = layout
    try:
        return from_dict(DataConfig, fields, "--data")
    except ConfigError as exc:
        raise EdgepipeError(str(exc)) from None


def cmd_frames(args) -> int:
    from edgepipe.pipeline.core.progress import progress_bar
    from edgepipe.pipeline.data.frames import make_frames

    if args.objects is not None:
        return _detection_frames(args)
    if args.splits:
        raise EdgepipeError("--splits goes with --objects (detection frames); class frames use --held-out")
    held = dict(zip(("test", "val"), args.held_out)) if args.held_out else None
    r = make_frames(
        Path(args.output),
        size=args.size or 96,
        per_class=100 if args.per_class is None else args.per_class,
        seed=args.seed,
        progress=progress_bar("frames"),
        renderings=args.renderings,
        holdout=held,
    )
    print(
        f"{r['path']}: {r['images']} RGB frames of {r['size']}×{r['size']} ({r['per_class']} digits per class"
        + (f"; test/val digits held out: {held}; {r['renderings']} per training digit" if held else "")
        + ") made from the bundled MNIST digits — a stand-in for a camera's classes"
    )
    return 0


def _detection_frames(args) -> int:
    from edgepipe.pipeline.core.progress import progress_bar
    from edgepipe.pipeline.data.detframes import make_detection_frames

    if args.held_out or args.renderings != 1 or args.per_class is not None:
        raise EdgepipeError("--held-out, --renderings and --per-class are for class frames; --objects uses --splits")
    r = make_detection_frames(
        Path(args.output),
        size=args.size or 160,
        counts=dict(zip(("train", "val", "test"), args.splits or (600, 100, 100))),
        max_objects=args.objects,
        seed=args.seed,
        progress=progress_bar("frames"),
    )
    parts = ", ".join(f"{k} {v['frames']} frames / {v['objects']} objects" for k, v in r["splits"].items())
    print(
        f"{r['path']}: {parts}, {r['size']}×{r['size']}, COCO boxes in <split>/instances_<split>.json; "
        "made from the bundled MNIST digits — a stand-in for a camera's objects"
    )
    return 0


def cmd_explain(args) -> int:
    import json

    from edgepipe.devices.base.atomic import write_json_atomic
    from edgepipe.export.explain import explain, explain_text

    r = explain(args.model, threads=args.threads, seconds=args.seconds, batch=args.batch)
    print(explain_text(r))
    if args.json:
        write_json_atomic(args.json, json.loads(json.dumps(r)))
    return 0


def cmd_bench(args) -> int:
    from edgepipe.runtime.runner import execute

    return execute(args)


def cmd_deploy(args) -> int:
    from edgepipe.pipeline.stages.deploy import DeployConfig, deploy_to, run_models

    cfg = DeployConfig(
        backends=tuple(args.backend) if args.backend else None,
        profile=args.profile,
        threads=args.threads,
        max_accuracy_drop=args.max_drop,
        rounds=args.rounds,
        seconds=args.seconds,
    )
    targets, own = [Path(t) for t in args.target], set()
    if args.images is None:
        from edgepipe.runtime.inputs.images import CONTRACT_FLAGS

        given = [f"--{k.replace('_', '-')}" for k in (*CONTRACT_FLAGS, "task", "task_opt") if getattr(args, k, None)]
        if given:
            raise EdgepipeError(f"deploy: {' '.join(given)} go with --images DIR (scoring by the task's metric)")
    if len(targets) == 1 and targets[0].is_dir():
        run_dir = targets[0]
        models, own = run_models(run_dir)
        out = Path(args.output or run_dir / "deployment")  # beside manifest.json, not in a stage's folder
        inputs = Path(args.inputs or run_dir / "bench" / "test_split.npz")
    else:
        models = _model_files(targets)
        out = Path(args.output or "deployment")
        if args.inputs is None and args.images is None:
            raise EdgepipeError("deploy: give --images DIR (scored by the task's metric) or --inputs FILE.npz (x, y)")
        inputs = Path(args.inputs) if args.inputs else None
    task = _deploy_task(args, next(iter(models.values()))) if args.images is not None else None
    d = deploy_to(models, inputs, out, cfg, task, own=own)
    print(
        f"deployment: {d['model']} on {d['backend']} ({d['ran']['precision']}); "
        f"run it: edgepipe-runner --deployment {out / 'deploy.json'}"
    )
    return 0


def _model_files(paths: list[Path]) -> dict:
    """{file name: path} of the ONNX files deploy chooses among; one line for a missing or repeated one."""
    models = {}
    for p in paths:
        if not p.is_file():
            raise EdgepipeError(f"{p}: not found (give a run directory, or ONNX files)")
        if p.suffix != ".onnx":
            raise EdgepipeError(f"{p}: not an .onnx file (give a run directory, or ONNX files)")
        if p.name in models:
            raise EdgepipeError(f"{p}: two candidates named {p.name}; rename one (deploy ships the file by its name)")
        models[p.name] = p
    return models


def _deploy_task(args, first: Path) -> dict:
    """The task spec deploy scores with: --task/--task-opt over the first model's own, its images, and the
    input contract (the model's own, or the contract flags over it)."""
    from edgepipe.pipeline.stages.deploy import task_spec
    from edgepipe.runtime.inputs.feeds import model_contract
    from edgepipe.runtime.model.session import open_session
    from edgepipe.runtime.tasks.base import parse_settings

    if not args.images.is_dir():
        raise EdgepipeError(f"{args.images}: not a folder of images")
    contract = model_contract(open_session(first), args)
    return task_spec(args.images, contract, args.task, parse_settings(args.task_opt))


def cmd_devices(args) -> int:
    from edgepipe.devices import detect_host
    from edgepipe.devices.profiles import all_presets, detect_profile, load_profile, presets_table

    if args.show:
        import yaml

        print(yaml.safe_dump(load_profile(args.show).to_dict(), sort_keys=False, allow_unicode=True).rstrip())
        return 0
    host = detect_host()
    presets = all_presets()
    found = detect_profile(host, presets)
    print(presets_table(presets, found))
    print(
        f"\nthis host: {host.cpu_model} ({host.arch}), {host.logical_cores} logical cores, "
        f"{host.memory_mb} MB; int8/bf16 flags: {', '.join(host.flags) or 'none'}"
        + (f"; board: {host.board}" if host.board else "")
        + (f"; GPU: {', '.join(host.gpus)}" if host.gpus else "")
    )
    print(
        f"detected profile: {found.name} (marked *) — {found.quantization.reason}"
        if found
        else "detected profile: none matches; copy the closest preset (`edgepipe devices --show NAME`) and edit it"
    )
    return 0


def cmd_report(args) -> int:

    from edgepipe.devices.base.atomic import write_text_atomic
    from edgepipe.pipeline.report.tables import device_table, load, load_device_result, markdown, table_text

    run_dir = Path(args.run_dir)
    manifest = load(run_dir)
    devices = [load_device_result(Path(d)) for d in args.device or []]
    print(table_text(manifest))
    if devices:
        print("\n" + device_table(devices))
    if args.html:
        from edgepipe.pipeline.report.html import render

        out = Path(args.output or run_dir / "report.html")  # beside manifest.json, not inside a stage's folder
        if out.suffix.lower() not in (".html", ".htm"):
            raise EdgepipeError(f"{out}: --html writes an HTML file; give -o a name ending in .html")
        write_text_atomic(out, render(manifest, run_dir, devices))
        print(f"\nwrote {out}")
    elif args.output:
        write_text_atomic(args.output, markdown(manifest, run_dir, devices))
        print(f"\nwrote {args.output}")
    return 0


def cmd_verify(args) -> int:
    from edgepipe.pipeline.core.manifest import verify_run

    problems = verify_run(Path(args.run_dir))
    for p in problems:
        print(p)
    if not problems:
        print(f"{args.run_dir}: every output matches its sha256 in manifest.json")
    return 1 if problems else 0
