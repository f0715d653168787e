"""The `edgepipe` commands that take one model file: export (an edgepipe model folder or a Paddle inference
model to ONNX), quantize and contract — with the helpers they share to read a model's signature, its
input contract and the feeds of its calibration and evaluation data. Heavy imports happen inside each."""

from __future__ import annotations

import sys
from pathlib import Path


def cmd_export(args) -> int:
    import numpy as np

    from edgepipe.devices import EdgepipeError
    from edgepipe.export.paddle_config import read_inference_config
    from edgepipe.pipeline.core.artifact import read_model_info, weights_file
    from edgepipe.pipeline.models.sources import inference_files
    from edgepipe.pipeline.stages.export import export_checked, export_saved_checked
    from edgepipe.runtime.inputs.images import CONTRACT_FLAGS

    model = Path(args.model)
    rng = np.random.default_rng(0)
    common = dict(opset=args.opset, atol=args.atol, rtol=args.rtol, name=str(model))
    if args.parity_samples < 1:
        raise EdgepipeError(
            f"--parity-samples {args.parity_samples}: the export is checked against Paddle on at least "
            "1 sample (default 64); an unchecked ONNX file is never written"
        )
    saved = weights_file(model) is None and (
        model.is_dir() or any(Path(f"{model}{suffix}").is_file() for suffix in (".json", ".pdmodel"))
    )
    if not saved:  # an edgepipe model folder
        flags = [f"--{k.replace('_', '-')}" for k in (*CONTRACT_FLAGS, "shape") if getattr(args, k, None)]
        if flags:
            raise EdgepipeError(
                f"{' '.join(flags)}: an edgepipe model folder carries its own input contract and shape; "
                "these flags are for Paddle inference models"
            )
        out = Path(args.output or model / "model.onnx")
        _onnx_name(out)
        shape = read_model_info(model)["input_shape"]
        x = rng.standard_normal((args.parity_samples, *shape)).astype("float32")
        facts = export_checked(model, out, x, **common)
    else:  # a Paddle inference model: its folder or its path prefix
        try:
            graph, params = inference_files(model)
        except EdgepipeError as exc:
            if "not beside it" in str(exc):
                raise
            raise EdgepipeError(
                f"{model}: neither an edgepipe model folder (model.json + model.safetensors) nor a "
                "Paddle inference model (NAME.json or NAME.pdmodel + NAME.pdiparams)"
            ) from None
        out = Path(args.output or graph.with_suffix(".onnx"))
        _onnx_name(out)
        config = read_inference_config(graph)  # the deployment config released folders carry (inference.yml)
        hw = config["contract"].get("size") if config else None  # the parity check's size for a dynamic one
        facts = export_saved_checked(
            graph, params, out, shapes=args.shape, samples=args.parity_samples, default_hw=hw, **common
        )
        try:
            saved_contract(out, args, config)
        except BaseException:
            out.unlink(missing_ok=True)
            raise
    macs = f"{facts['macs']:,} MACs" + (
        f" at {'x'.join(map(str, next(iter(facts['macs_at'].values()))))}" if facts.get("macs_at") else ""
    )
    print(
        f"{out}: {facts['bytes']:,} bytes, {facts['params']:,} params, "
        f"{macs if facts['macs'] is not None else 'MACs unknown'}; "
        f"parity max |diff| {facts['parity']['max_abs_diff']:.2e} on {facts['parity']['samples']} random inputs"
        + (f" of {', '.join(facts['parity']['input_shapes'])}" if facts["parity"].get("input_shapes") else "")
    )
    return 0


def saved_contract(out: Path, args, config: dict | None = None):
    """Write the input contract of an exported inference model into its metadata (the deployment config's
    `config`, else its image input's fixed size and channels, or --size / --shape, with the normalisation
    given or the default; contract flags override either) and say what it is; a model whose image size
    nobody gives gets none, with a note. The config's task goes into the metadata too."""
    from edgepipe.devices import EdgepipeError
    from edgepipe.export.metadata import write_metadata
    from edgepipe.export.paddle_config import config_contract, write_config_task
    from edgepipe.pipeline.stages.export import contract_metadata
    from edgepipe.runtime.inputs import feeds as fd
    from edgepipe.runtime.inputs.images import contract_from_args
    from edgepipe.runtime.model.session import open_session

    if config is not None:  # its task, and the line saying what was read from which file
        write_config_task(config, out, args)
    spec = fd.signature(open_session(out))
    image = fd.image_input(spec)
    if image is None:
        print(
            f"no input contract written: the model has no single image input ({', '.join(s.name for s in spec)})",
            file=sys.stderr,
        )
        return None
    shape = fd.parse_shapes(args.shape, spec).get(image.name)
    channels = (shape or image.shape)[3 if (args.layout or "").lower() == "nhwc" else 1]
    base = config_contract(config, image.shape, shape) if config is not None else None  # flags go over it
    if base is None and channels not in (1, 3) and not args.channels:
        print(f"no input contract written: input '{image.name}' has {channels} channels, not images", file=sys.stderr)
        return None
    args.channels = args.channels or (channels if base is None else None)  # the flags now describe a contract
    try:
        contract = contract_from_args(args, base, image.shape, shape)
    except EdgepipeError as exc:
        print(f"no input contract written ({exc}); `edgepipe contract {out} --size HxW ...` adds one", file=sys.stderr)
        return None
    write_metadata(out, contract_metadata(contract.to_dict()))
    c = contract
    print(
        f"input contract: {c.channels}×{c.size[0]}×{c.size[1]}{' (keep ratio)' if c.keep_ratio else ''}, "
        f"mean {list(c.mean)}, "
        f"std {list(c.std)}"
        + (f", resize {c.resize}" if c.resize else "")
        + (", BGR" if c.bgr else "")
        + (f", classes {', '.join(c.classes[:5])}{'…' if len(c.classes) > 5 else ''}" if c.classes else "")
        + " (give --size/--mean/--std/--keep-ratio/--classes… if it was trained otherwise)",
        file=sys.stderr,
    )
    return contract


def _onnx_name(out: Path) -> None:
    from edgepipe.devices import EdgepipeError

    if out.suffix != ".onnx":
        raise EdgepipeError(f"{out}: the output name must end in .onnx")


def cmd_quantize(args) -> int:
    """Quantize an ONNX file (static int8 under the accuracy guard, dynamic, fp16 or 4-bit MatMul weights)."""
    from edgepipe.devices import EdgepipeError
    from edgepipe.export.quantize import convert_fp16, quantize_dynamic, quantize_matmul_4bit
    from edgepipe.pipeline.stages.quantize import QuantizeConfig
    from edgepipe.runtime.model.cost import describe

    src = Path(args.model)
    cfg = QuantizeConfig(
        model=src.name,
        mode=args.mode,
        profile=args.profile,
        format=args.format,
        per_channel=False if args.per_tensor else None,
        calibration=args.method,
        percentile=args.percentile,
        calibration_samples=args.samples,
        activation_type=args.activation_type,
        weight_type=args.weight_type,
        reduce_range=True if args.reduce_range else None,
        max_accuracy_drop=args.max_drop,
    )
    out = Path(args.output or src.with_name(cfg.output_name))
    if out.suffix != ".onnx":
        raise EdgepipeError(f"{out}: the output name must end in .onnx")
    if args.mode == "static":
        _quantize_static(src, out, cfg, args)
    elif args.mode == "dynamic":
        for w in quantize_dynamic(src, out):
            print(f"warning: {w}", file=sys.stderr)
    elif args.mode == "fp16":
        for w in convert_fp16(src, out):
            print(f"note: {w}", file=sys.stderr)
    else:
        n = quantize_matmul_4bit(src, out)
        print(f"{n} MatMul weight(s) converted to 4-bit blocks")
    if args.compact_names:
        _compact_names(src, out, args)
    facts = describe(out)
    print(f"{out}: {facts['bytes']:,} bytes ({facts['bytes'] / src.stat().st_size:.2f}× of {src.name})")
    return 0


def _quantize_static(src: Path, out: Path, cfg, args) -> None:
    """Quantize `src` to static int8 at `out` under the accuracy guard, with the input contract it was
    calibrated under written into it; the output is removed when the guard cannot meet --max-drop."""
    from edgepipe.devices import EdgepipeError
    from edgepipe.export.guard import guarded_quantize
    from edgepipe.pipeline.stages.quantize import resolve_options
    from edgepipe.runtime.inputs import feeds as fd

    spec, contract, shapes = model_signature(src, args)
    calib = fd.spread(calibration_for(src, args.calibration, contract, spec), args.samples)
    opts, source = resolve_options(cfg)
    from dataclasses import replace

    if args.exclude:
        opts = replace(opts, nodes_to_exclude=tuple(args.exclude))
    if args.op_types:
        opts = replace(opts, op_types=tuple(t.strip() for t in args.op_types.split(",") if t.strip()))
    x = y = None
    task, judge = task_judge(src, args, contract)
    if args.float_box_head:
        opts = replace(opts, nodes_to_exclude=tuple(opts.nodes_to_exclude) + box_head_nodes(src, task))
    if args.eval:
        x, y = feeds_from(Path(args.eval), contract, spec, "--eval")
    elif args.max_drop is not None and judge is None:
        raise EdgepipeError("--max-drop needs --eval: held-out images (class folders give labels) or an .npz of inputs")
    g = guarded_quantize(
        src,
        out,
        calib,
        opts,
        x if x is not None else fd.spread(calib, 64),
        y,
        args.max_drop,
        max_float_layers=args.max_float_layers,
        judge=judge,
    )
    _print_guarded(g, opts, source, fd.count(calib), args.eval)
    if not g["met"]:
        out.unlink(missing_ok=True)
        raise EdgepipeError(
            f"{out.name}: drop {g['drop_points']:.2f} points exceeds --max-drop {args.max_drop} even with "
            f"{len(g['kept_float'])} node(s) in float; try --method entropy/percentile or QAT"
        )
    from edgepipe.export.metadata import write_metadata
    from edgepipe.pipeline.stages.export import contract_metadata

    # the contract it was calibrated under, and the task it was judged by, travel with it
    props = contract_metadata(contract.to_dict()) if contract is not None else {}
    write_metadata(out, props | (task.metadata_props() if task is not None else {}))


def box_head_nodes(src: Path, task) -> tuple[str, ...]:
    """--float-box-head: the detector's box-regression layers (the last compute nodes before its box outputs)."""
    from edgepipe.devices import EdgepipeError
    from edgepipe.export.guard_search import producers_of

    outputs = task.box_head_outputs() if task is not None and task.name == "detect" else None
    if not outputs:
        raise EdgepipeError(
            "--float-box-head: needs --task detect on a model whose box regression is an output of its own "
            "(a PicoDet/GFL distribution or decoded boxes; a graph ending in NMS has none to keep)"
        )
    nodes = tuple(producers_of(src, outputs))
    print(f"box head kept in float: {', '.join(nodes) or 'no compute node found'} (before {', '.join(outputs)})")
    return nodes


def task_judge(src: Path, args, contract):
    """(the model's task or None, a FolderJudge of its metric or None): a task other than classify and
    fidelity is judged on --eval's images, else on the --calibration folder's (against the float model)."""
    from edgepipe.devices import EdgepipeError
    from edgepipe.runtime.model.session import open_session
    from edgepipe.runtime.tasks import task_from_args
    from edgepipe.runtime.tasks.evaluate import FolderJudge

    task = task_from_args(open_session(src), args.task, args.task_opt)
    if task is None or task.name in ("classify", "fidelity"):
        return task, None
    folder = next((Path(p) for p in (args.eval, args.calibration) if p and Path(p).is_dir()), None)
    if folder is None or contract is None:
        raise EdgepipeError(
            f"--task {task.name}: its metric ({task.metric}) is measured on images: give --eval DIR "
            f"({task.labels_hint}) or a --calibration folder of images, with the model's input contract"
        )
    from edgepipe.pipeline.core.progress import progress_bar

    return task, FolderJudge(task, folder, contract, src, progress=progress_bar(f"{task.name} reference"))


def _print_guarded(g: dict, opts, source: dict, samples: int, evaluated: str | None) -> None:
    """Print a guarded quantization's options, its last step's fidelity and the nodes it kept in float."""
    print(
        f"options: {opts.format} {opts.bits}, per-channel={opts.per_channel}, reduce_range={opts.reduce_range}, "
        f"{opts.calibration} calibration on {samples} samples"
        + (f" (preset of profile '{source['profile']}': {source['reason']})" if source["profile"] else "")
    )
    last = g["steps"][g.get("chosen_step", -1)]
    print(
        f"on {evaluated or 'the calibration samples'}: "
        + (f"top-1 agreement with fp32 {100 * last['agreement']:.2f}%, " if last["agreement"] is not None else "")
        + "output SQNR "
        + ", ".join(f"{k} {v:.1f} dB" if v is not None else f"{k} —" for k, v in last["outputs_sqnr_db"].items())
        + "".join(
            f"; {k} changed size on {n} input(s) (e.g. NMS kept other boxes)"
            for k, n in last.get("outputs_changed_size", {}).items()
        )
        + (
            f", accuracy {100 * last['accuracy']:.2f}% ({-last['drop_points']:+.2f} points)"
            if "accuracy" in last
            else ""
        )
    )
    if "task_metric" in last:
        from edgepipe.runtime.tasks.evaluate import summary_line

        t = last["task_metric"]
        print(
            f"task {t['task']}: {summary_line(t)}; float model {100 * t['reference_value']:.2f}%, "
            f"drop {t['drop_points']:+.2f} points"
        )
    if last.get("op_types"):
        print(f"quantized only {', '.join(last['op_types'])} (every other op kept in float)")
    if g["kept_float"]:
        print(
            f"accuracy guard kept in float: {', '.join(g['kept_float'])} "
            f"({1e3 * g['latency_cost_ms']:+.0f} µs at batch 1)"
        )
    if "search" in last:  # the guard's second phase found them
        s = last["search"]
        print(
            f"found by searching {s['candidates']} compute nodes in {len(s['trials'])} judged trials; "
            f"{1e3 * s['cost_ms']:+.0f} µs at batch 1 against step {s['from_step']}, the one searched from"
        )


def _compact_names(src: Path, out: Path, args) -> None:
    """Rename the tensors of the quantized `out` to short names, checked against random feeds of `src`'s inputs."""
    from edgepipe.export.compact import compact_in_place
    from edgepipe.runtime.inputs import feeds as fd

    spec = fd.signature(open_session_of(src))
    c = compact_in_place(out, fd.random_feeds(spec, 8, fd.parse_shapes(args.shape, spec), what=str(src)))
    print(
        f"compact names: {c['tensors_renamed']} tensors renamed, "
        f"{c['bytes_before']:,} → {c['bytes_after']:,} bytes (outputs checked identical)"
    )


def open_session_of(src: Path):
    from edgepipe.runtime.model.session import open_session

    return open_session(src)


def model_signature(src: Path, args):
    """(the model's inputs, the input contract images are decoded by — the file's own, with the
    command line's contract flags over it —, the --shape sizes) of an ONNX file."""
    from edgepipe.runtime.inputs import feeds as fd

    session = open_session_of(src)
    spec = fd.signature(session)
    shapes = fd.parse_shapes(getattr(args, "shape", None), spec)
    image = fd.image_input(spec)
    contract = fd.model_contract(
        session,
        args,
        shapes.get(image.name) if image else None,
        note=lambda text: print(f"note: {text}", file=sys.stderr),
    )
    return spec, contract, shapes


def feeds_from(path: Path, contract, spec, what: str):
    """(feeds, labels or None) from a folder of images (decoded by `contract`; class folders give
    labels) or an .npz of model inputs (named by input, or 'x'; labels 'y' optional)."""
    from edgepipe.devices import EdgepipeError
    from edgepipe.pipeline.core.progress import progress_bar
    from edgepipe.runtime.inputs import feeds as fd
    from edgepipe.runtime.inputs.npzfile import load_npz

    if path.is_dir():
        if contract is None:
            raise EdgepipeError(
                f"{path}: {what}: decoding images needs the model's input contract, which this model does "
                "not carry: give it with --size HxW (and --mean/--std/--keep-ratio/--bgr as the model was "
                "trained), or write it once with `edgepipe contract MODEL.onnx …`"
            )
        feeds, labels, _ = fd.folder_feeds(path, contract, spec, progress=progress_bar(what.lstrip("-")))
        return feeds, labels
    arrays, labels = load_npz(path)
    return fd.npz_feeds(arrays, spec, f"{path}: {what}"), labels


def calibration_for(src: Path, given: str | None, contract, spec):
    """Calibration feeds for `edgepipe quantize`: a folder of images decoded by the model's input
    contract, an .npz of inputs, or — for a 1×28×28 model with no data given — the bundled MNIST split."""
    from edgepipe.devices import EdgepipeError
    from edgepipe.runtime.inputs import feeds as fd

    if given:
        return feeds_from(Path(given), contract, spec, "--calibration")[0]
    image = fd.image_input(spec) if len(spec) > 1 else spec[0]
    if image is not None and image.shape[1:] == (1, 28, 28) and (contract is None or contract.size == (28, 28)):
        from edgepipe.pipeline.core.recipe import DataConfig
        from edgepipe.pipeline.data.load import load_dataset

        print("calibration: the bundled MNIST calibration split (the model takes 1×28×28 inputs)", file=sys.stderr)
        return fd.from_array(spec, load_dataset(DataConfig()).split("calibration")[0])
    how = (
        f"a folder of images (decoded by the input contract: {contract.channels}×{contract.size[0]}×{contract.size[1]})"
        if contract
        else "a folder of images with the input contract's flags (--size HxW …), or an .npz of model inputs"
    )
    raise EdgepipeError(
        f"{src}: calibration data needed for a model taking "
        f"{', '.join(f'{s.name} {s.text()}' for s in spec)}: give --calibration, {how}"
    )
