"""The on-device runner: `python -m edgepipe.runtime MODEL.onnx` (or `edgepipe-runner`).

Needs only onnxruntime, numpy, psutil, PyYAML and platformdirs (never paddle). In one clean process it measures
cold start and latency at each batch size (measure/bench.py), memory (peak RSS, RSS growth from session
creation, GPU memory through NVML when a GPU provider runs), energy per inference (measure/energy.py),
MAC/s against the host's GEMM peak (measure/roofline.py) and, given an .npz with labels, accuracy on the
device; then judges the result against a device profile's budgets. Prints a summary; --json and
--csv write it, and `edgepipe report RUN --device result.json` merges it into a run's report.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgepipe.devices import EdgepipeError, detect_host
from edgepipe.devices.base.atomic import write_bytes_atomic, write_json_atomic, write_text_atomic
from edgepipe.devices.base.errors import run_guarded
from edgepipe.runtime.inputs.npzfile import ShapeGroups
from edgepipe.runtime.inputs.source import CHUNK_BYTES, Source, image_source, inputs_memory, npz_source
from edgepipe.runtime.measure.bench import Bench, BenchOptions
from edgepipe.runtime.measure.memory import gpu_memory_mb, peak_rss, rss_mb
from edgepipe.runtime.model.session import GPU_PROVIDERS
from edgepipe.runtime.present import csv_text, predictions, predictions_text, summary  # noqa: F401

SCHEMA = "edgepipe-bench/1"


def check_writable(path: Path, flag: str) -> None:
    """One line now, rather than a traceback after the measurement, when `path` cannot be written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise EdgepipeError(f"{flag} {path}: is a folder; give a file name")
    if not parent.is_dir():
        raise EdgepipeError(f"{flag} {path}: folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise EdgepipeError(f"{flag} {path}: not writable here; give a path you can write")


def environment() -> dict:
    import onnxruntime

    return {
        "host": detect_host().to_dict(),
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_build_providers": onnxruntime.get_available_providers(),
        "onnxruntime_device": onnxruntime.get_device(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


@dataclass
class Request:
    """What a runner call measures beyond latency, and where its inputs come from (the runner's flags,
    parsed; `execute` builds it)."""

    inputs: Path | None = None  # an .npz of model inputs (or a folder of images)
    images: Path | None = None  # a folder of images, preprocessed by the model's contract
    profile: object = None  # a DeviceProfile, whose budgets judge the result
    profile_source: str = "none"
    strict_providers: bool = True
    energy_seconds: float = 1.0
    idle_seconds: float = 0.5
    roofline: bool = True
    macs: int | None = None
    save_outputs: Path | None = None
    want_predictions: bool = False
    loadgen: tuple[Path, float] | None = None  # (log folder, seconds)
    contract_args: object = None  # the contract flags, for a model that carries no contract
    task: str | None = None  # --task: decode and score the outputs as this task (runtime/tasks/)
    task_opt: tuple = ()  # --task-opt KEY=VALUE items
    reference: Path | None = None  # --reference: the float model the task scores against without labels


def run(model: Path, opts: BenchOptions, req: Request | None = None) -> dict:
    """Benchmark first (memory is read right after it, so it reflects a deployed process), then
    energy, then the optional accuracy pass over every labelled input (and each input's prediction).
    An .npz of inputs is never held whole: its headers and labels are read, every row is checked
    a few MB at a time, each batch size reads only its first rows, and the accuracy pass reads
    CHUNK_BYTES of rows at a time (so the memory figures are the model's, not the file's)."""
    req = req or Request()
    rss_start = rss_mb()
    src = npz_source(req.inputs)
    bench = Bench(model, opts, strict_providers=req.strict_providers)
    rss_session = rss_mb()
    if req.images is not None or (req.inputs is not None and req.inputs.is_dir()):
        src = image_source(model, bench.session, req.images or req.inputs, req.contract_args)
    from edgepipe.runtime.tasks import task_from_args

    task = task_from_args(bench.session, req.task, list(req.task_opt))  # its settings checked before measuring
    rows = src.rows
    held = [min(b, rows.n) for b in opts.batches] if rows is not None else []  # input rows in memory at once

    def feed(b: int) -> dict:  # only the rows batch b takes (bench.feed repeats them if the file has fewer)
        return bench.feed(b, rows.head(b) if rows is not None else None, str(src.origin))

    env = environment()
    runs = [bench.measure(feed(b)) for b in opts.batches]
    for group in rows.others() if isinstance(rows, ShapeGroups) else []:  # the next sizes, at batch 1 each
        runs.append(bench.measure(bench.feed(1, {k: v[:1] for k, v in group.items()}, str(src.origin))))
    result = {
        "schema": SCHEMA,
        "model": str(model),
        "model_bytes": Path(model).stat().st_size,
        "options": asdict(opts),
        "backend": bench.backend,
        "providers": bench.providers,
        "cold_start": bench.cold_start(),
        "runs": runs,
        **({"notes": src.notes} if src.notes else {}),
    }
    if req.loadgen is not None:  # MLPerf LoadGen's SingleStream on the same session
        from edgepipe.runtime.measure.loadgen import sample_count, single_stream

        one = next((r for r in runs if r["batch"] == 1), runs[0])
        samples = rows.head(sample_count(rows.n, rows.row_bytes)) if rows is not None else None
        held += [len(next(iter(samples.values())))] if samples else []
        result["loadgen"] = single_stream(
            bench, samples, str(src.origin), req.loadgen[0], req.loadgen[1], one["latency"]["p90_ms"]
        )
        del samples
    result["memory"] = _memory(bench, rss_start, rss_session, rows, held)
    gpu = any(p in GPU_PROVIDERS for p in bench.providers["used"])
    if req.roofline:
        result["macs"] = _roofline(model, bench, opts, env, runs, req.macs)
    if req.energy_seconds > 0:
        result["energy"] = _energy(bench, feed(opts.batches[0]), opts.batches[0], req, gpu)
    if rows is not None and (
        src.labels is not None or req.save_outputs or src.files is not None or req.want_predictions
    ):
        decoded = task is not None and task.name != "classify" and src.files is not None  # the task's pass
        _outputs_pass(bench, src, req, result, predicts=not decoded)
    _task_pass(bench, src, req, result, task)
    profile = req.profile
    result["profile"] = {
        "name": profile.name if profile else None,
        "source": req.profile_source,
        "config": profile.to_dict() if profile else None,
    }
    if profile is not None:
        from edgepipe.runtime.judge.verdict import judge

        result["verdict"] = judge(result, profile.to_dict())
    result["environment"] = env
    return result


def _memory(bench: Bench, rss_start: float, rss_session: float, rows, held: list[int]) -> dict:
    mem = {"rss_before_session_mb": rss_start, "rss_after_session_mb": rss_session, "rss_after_mb": rss_mb()}
    mem["rss_growth_mb"] = mem["rss_after_mb"] - rss_start
    mem["peak_rss_mb"], mem["peak_rss_source"] = peak_rss()
    if rows is not None:
        mem |= inputs_memory(rows, max(held))
    if any(p in GPU_PROVIDERS for p in bench.providers["used"]):
        mem |= gpu_memory_mb()
    return mem


def _roofline(model: Path, bench: Bench, opts: BenchOptions, env: dict, runs: list[dict], macs: int | None) -> dict:
    """MAC/s of each run against the host's peak (sets each run's "roofline"); returns the MAC count."""
    from edgepipe.runtime.measure.roofline import host_peaks, model_costs
    from edgepipe.runtime.measure.roofline import roofline as roof

    count, precision, how = model_costs(Path(model), macs)
    precision = (
        bench.backend["precision"] if bench.backend["precision"] in ("fp32", "int8", "bf16", "fp16") else precision
    )
    peaks = host_peaks(env["host"], opts.threads, backend=opts.backend, precision=precision)
    for r in runs:
        r["roofline"] = roof(count, precision, r["batch"], r["latency"]["mean_ms"], peaks)
    return {"per_inference": count, "source": how}


def _energy(bench: Bench, energy_feed: dict, batch: int, req: Request, gpu: bool) -> dict:
    from edgepipe.runtime.measure.energy import energy_summary, measure, probe_meters

    profile = req.profile
    meters, missing = probe_meters(profile.power if profile else None, profile.name if profile else "", gpu=gpu)

    def work() -> int:
        bench.run_once(energy_feed)
        return batch

    readings = measure(meters, work, req.energy_seconds, req.idle_seconds, failed=missing) if meters else []
    for r in readings:
        r["batch"] = batch
    return energy_summary(readings, missing)


def _task_pass(bench: Bench, src: Source, req: Request, result: dict, task) -> None:
    """With images and a task other than classify (given, or named by the model): each image decoded by
    the task, scored by its metric against the folder's labels (result["task"]), and its prediction
    recorded for --predictions."""
    from edgepipe.runtime.inputs.feeds import signature
    from edgepipe.runtime.tasks.evaluate import labels_for, predict, sample_feeds, scored

    if task is None or src.files is None or (task.name == "classify" and req.reference is None):
        return
    feeds, metas, files, class_labels = sample_feeds(src.origin, src.contract, signature(bench.session))
    preds = predict(bench.session, task, feeds, metas)
    labels = labels_for(task, src.origin, files, class_labels)
    reference = None
    if labels is None and req.reference is not None:
        from edgepipe.runtime.model.session import open_session

        reference = predict(open_session(req.reference), task, feeds, metas)
    r = scored(task, preds, labels, reference)
    result["task"] = r | {"settings": {k: v for k, v in task.settings.items() if k != "characters"}}
    if labels is None and reference is None:
        result.setdefault("notes", []).append(
            f"task {task.name}: no labels in {src.origin} ({task.labels_hint}); --reference FLOAT.onnx scores "
            "against a float model's predictions instead"
        )
    if req.want_predictions and task.name != "classify":  # a classifier's come from the outputs pass
        result["predictions"] = task.records(preds, files)


def _outputs_pass(bench: Bench, src: Source, req: Request, result: dict, predicts: bool = True) -> None:
    """Every input through the model once more, after memory was read: accuracy with labels, each input's
    top classes (unless `predicts` is False: a task decodes the predictions), and the raw outputs for
    --save-outputs."""
    notes = result.setdefault("notes", [])
    logits = outputs_of(bench, src.rows, str(src.origin))
    if logits is None:
        if isinstance(src.rows, ShapeGroups):  # images of several sizes into a model whose output follows the size
            notes.append(
                "no accuracy, predictions or saved outputs: the model's outputs differ in size from input "
                "to input (they are not N×classes)"
            )
        return
    labels, want = src.labels, predicts and (src.files is not None or req.want_predictions)
    if labels is not None and logits.ndim == 2:
        result["accuracy"] = float((logits.argmax(axis=1) == labels).mean())
        result["accuracy_samples"] = int(len(labels))
    elif labels is not None:  # a detector's or other task's metric needs --images with its labels
        notes.append(f"no accuracy: labels are classes; the first output is {list(logits.shape)}, not N×classes")
    if want and logits.ndim == 2:  # a classifier's top classes
        result["predictions"] = predictions(logits, src.classes, labels, src.files, src.origin if src.files else None)
    elif want:
        notes.append(f"no predictions: the model's output has shape {list(logits.shape)}, not N×classes")
    if req.save_outputs:
        buf = io.BytesIO()
        np.savez_compressed(buf, outputs=logits)
        write_bytes_atomic(req.save_outputs, buf.getvalue())
    if not notes:
        del result["notes"]


def outputs_of(bench: Bench, src, source: str) -> np.ndarray:
    """The model's first output for every input, fed CHUNK_BYTES of rows at a time (and at most the batch a
    fixed-batch model takes) through its inputs."""
    from edgepipe.runtime.inputs.feeds import batch_size, signature

    spec, outs = signature(bench.session), []
    for _, part in src.chunks(CHUNK_BYTES):
        n = len(next(iter(part.values())))
        step = batch_size(spec, n)
        for i in range(0, n, step):
            rows = {k: v[i : i + step] for k, v in part.items()}
            outs.append(bench.run_once(bench.feed(len(next(iter(rows.values()))), rows, source))[0])
    return np.concatenate(outs, axis=0) if len({o.shape[1:] for o in outs}) == 1 else None


def resolve_profile(arg: str | None):
    from edgepipe.devices.profiles import detect_profile, load_profile

    if arg == "none":
        return None, "none"
    if arg:
        return load_profile(arg), "given"
    found = detect_profile(detect_host())
    return found, "detected" if found else "none (no preset matches this host)"


def main(argv: list[str] | None = None) -> int:
    from edgepipe.runtime.args import build_parser

    return execute(build_parser().parse_args(argv))


def execute(args: argparse.Namespace) -> int:
    """Run the runner from parsed arguments (`edgepipe bench` parses the same ones)."""
    return run_guarded(
        "edgepipe-runner",
        lambda: _execute(args),
        debug=bool(os.environ.get("EDGEPIPE_DEBUG")),
        debug_hint="set EDGEPIPE_DEBUG=1 for the traceback",
    )


def _execute(args: argparse.Namespace) -> int:
    for flag, path in (
        ("--json", args.json),
        ("--csv", args.csv),
        ("--predictions", args.predictions),
        ("--save-outputs", args.save_outputs),
        ("--events", args.events),
    ):
        if path is not None:
            check_writable(path, flag)  # before measuring, so a bad path never costs the measurement
    from edgepipe.runtime.deployment import apply_deployment

    apply_deployment(args)
    profile, source = resolve_profile(args.profile)
    opts, notes = _options(args, profile)
    from edgepipe.runtime.measure.loadgen import prepare

    loadgen = prepare(args)
    if args.stream is not None:
        from edgepipe.runtime.stream import run_stream
        from edgepipe.runtime.stream import summary as stream_summary

        r = run_stream(args, opts.threads, opts.backend, opts.precision, opts.device, notes, profile)
        if args.json:
            write_json_atomic(args.json, r)
        if not args.quiet:
            print(stream_summary(r), file=sys.stderr if args.watch and not args.events else sys.stdout)
        return 0
    if (args.save_outputs or args.predictions) and not (args.inputs or args.images):
        raise EdgepipeError("--save-outputs and --predictions need --inputs or --images (the outputs of which inputs?)")
    if args.inputs and args.images:
        raise EdgepipeError("give --inputs or --images, not both")
    req = Request(
        inputs=args.inputs,
        images=args.images,
        profile=profile,
        profile_source=source,
        strict_providers=bool(args.provider),
        energy_seconds=args.energy_seconds,
        idle_seconds=args.idle_seconds,
        roofline=not args.no_roofline,
        macs=args.macs,
        save_outputs=args.save_outputs,
        want_predictions=bool(args.predictions),
        loadgen=loadgen,
        contract_args=args,
        task=args.task,
        task_opt=tuple(args.task_opt),
        reference=getattr(args, "reference", None),
    )
    result = run(args.model, opts, req)
    result["notes"] = notes + result.get("notes", [])
    if args.json:
        write_json_atomic(args.json, result)
    if args.csv:
        write_text_atomic(args.csv, csv_text(result))
    if args.predictions:
        write_text_atomic(args.predictions, predictions_text(result.get("predictions", []), args.predictions))
    if not args.quiet:
        print(summary(result))
    return 0


def _options(args: argparse.Namespace, profile) -> tuple[BenchOptions, list[str]]:
    """The benchmark's options from the flags and the profile, and notes on what was capped.
    A profile's thread count is for its device, --threads for whatever the user had in mind; on a
    host with fewer logical CPUs either is capped (more threads than CPUs only oversubscribe)."""
    cpus = os.cpu_count() or 1
    asked, whose = (args.threads, "--threads") if args.threads else (profile.threads if profile else 1, "the profile")
    threads, inter = min(asked, cpus), min(args.inter_threads, cpus)
    notes = []
    if threads < asked:
        notes.append(f"{whose} asks for {asked} threads; this host has {cpus} logical CPUs, so {threads} are used")
    if inter < args.inter_threads:
        notes.append(f"--inter-threads {args.inter_threads} capped to this host's {cpus} logical CPUs")
    from edgepipe.runtime.model.backends import resolve

    backend, precision, device = resolve(args.backend, args.precision, args.device, profile, notes)
    opts = BenchOptions(
        threads=threads,
        inter_threads=inter,
        batches=tuple(args.batch or (1,)),
        graph_optimization=args.optimization,
        warmup_iters=args.warmup,
        warmup_seconds=args.warmup_seconds,
        iters=args.iters,
        min_seconds=args.min_seconds,
        max_seconds=args.max_seconds,
        providers=tuple(args.provider or (profile.providers if profile else ("CPUExecutionProvider",))),
        dims=tuple(args.dim),
        shapes=tuple(args.shape),
        backend=backend,
        precision=precision,
        device=device,
    )
    return opts, notes


if __name__ == "__main__":
    sys.exit(main())
