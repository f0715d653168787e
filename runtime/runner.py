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
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edgepipe.devices import EdgepipeError, detect_host, os_error_line
from edgepipe.devices.base.atomic import write_bytes_atomic, write_json_atomic, write_text_atomic
from edgepipe.runtime.inputs.npzfile import (LABEL_KEYS, SCAN_BYTES, ArrayInputs, NpzInputs, ShapeGroups,  # noqa: F401
                                             chunk_rows, load_npz)
from edgepipe.runtime.measure.bench import Bench, BenchOptions
from edgepipe.runtime.measure.memory import gpu_memory_mb, peak_rss, rss_mb
from edgepipe.runtime.model.session import GPU_PROVIDERS, predict
from edgepipe.runtime.present import csv_text, predictions, predictions_text, summary  # noqa: F401

SCHEMA = "edgepipe-bench/1"
CHUNK_BYTES = 16 << 20  # input rows held at a time by the accuracy / predictions / --save-outputs pass


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

    return {"host": detect_host().to_dict(), "onnxruntime": onnxruntime.__version__,
            "onnxruntime_build_providers": onnxruntime.get_available_providers(),
            "onnxruntime_device": onnxruntime.get_device(), "python": platform.python_version(),
            "numpy": np.__version__}


def run(model: Path, opts: BenchOptions, inputs: Path | None = None, profile=None, profile_source: str = "none",
        strict_providers: bool = True, energy_seconds: float = 1.0, idle_seconds: float = 0.5,
        roofline: bool = True, macs: int | None = None, save_outputs: Path | None = None,
        images: Path | None = None, want_predictions: bool = False, loadgen: tuple[Path, float] | None = None,
        contract_args=None) -> dict:
    """Benchmark first (memory is read right after it, so it reflects a deployed process), then
    energy, then the optional accuracy pass over every labelled input (and each input's prediction).
    An .npz of inputs is never held whole: its headers and labels are read, every row is checked
    a few MB at a time, each batch size reads only its first rows, and the accuracy pass reads
    CHUNK_BYTES of rows at a time (so the memory figures are the model's, not the file's)."""
    from edgepipe.runtime.measure.energy import energy_summary, measure, probe_meters

    rss_start = rss_mb()
    src, files, classes = None, None, ()
    if inputs is not None and inputs.is_dir():
        images, inputs = inputs, None
    notes = []
    if inputs is not None:
        src = NpzInputs(inputs)
        notes += [f"{inputs}: '{k}' is float64; converted to the model's float type" for k, d in src.dtypes.items()
                  if d == np.float64]
        if src.labels is not None and len(src.labels) != src.n:
            raise EdgepipeError(f"{inputs}: {len(src.labels)} labels for {src.n} inputs")
    bench = Bench(model, opts, strict_providers=strict_providers)
    rss_session = rss_mb()
    if images is not None:
        from edgepipe.runtime.inputs.feeds import model_contract
        from edgepipe.runtime.inputs.images import folder_inputs

        contract = model_contract(bench.session, contract_args, note=notes.append)
        if contract is None:
            raise EdgepipeError(f"{model}: carries no input contract (exported by another tool, or by edgepipe before it "
                                "wrote one), so its images cannot be preprocessed here: give it with --size HxW (and "
                                "--mean/--std/--keep-ratio/--bgr), write it once with `edgepipe contract`, or pass "
                                "--inputs FILE.npz of model inputs")
        if contract.fixed_size:
            x, labels, files = folder_inputs(images, contract)
            src = ArrayInputs({"x": x}, labels)
        else:  # each image at its own size: one group per size, each measured
            from edgepipe.runtime.inputs.feeds import folder_feeds, signature

            groups, labels, files = folder_feeds(images, contract, signature(bench.session), batch=1 << 30)
            src = ShapeGroups(groups, labels)
        classes, inputs = contract.classes, images
    labels = src.labels if src is not None else None
    held = [min(b, src.n) for b in opts.batches] if src is not None else []  # input rows in memory at once

    def feed(b: int) -> dict:  # only the rows batch b takes (bench.feed repeats them if the file has fewer)
        return bench.feed(b, src.head(b) if src is not None else None, str(inputs))

    env = environment()
    runs = [bench.measure(feed(b)) for b in opts.batches]
    for group in src.others() if isinstance(src, ShapeGroups) else []:  # the next sizes, at batch 1 each
        runs.append(bench.measure(bench.feed(1, {k: v[:1] for k, v in group.items()}, str(inputs))))
    result = {"schema": SCHEMA, "model": str(model), "model_bytes": Path(model).stat().st_size,
              "options": asdict(opts), "backend": bench.backend, "providers": bench.providers,
              "cold_start": bench.cold_start(), "runs": runs,
              **({"notes": notes} if notes else {})}

    if loadgen is not None:  # (log folder, seconds); MLPerf LoadGen's SingleStream on the same session
        from edgepipe.runtime.measure.loadgen import sample_count, single_stream

        one = next((r for r in runs if r["batch"] == 1), runs[0])
        samples = src.head(sample_count(src.n, src.row_bytes)) if src is not None else None
        held += [len(next(iter(samples.values())))] if samples else []
        result["loadgen"] = single_stream(bench, samples, str(inputs), loadgen[0], loadgen[1], one["latency"]["p90_ms"])
        del samples

    mem = {"rss_before_session_mb": rss_start, "rss_after_session_mb": rss_session, "rss_after_mb": rss_mb()}
    mem["rss_growth_mb"] = mem["rss_after_mb"] - rss_start
    mem["peak_rss_mb"], mem["peak_rss_source"] = peak_rss()
    if src is not None:
        mem |= inputs_memory(src, max(held))
    gpu = any(p in GPU_PROVIDERS for p in bench.providers["used"])
    if gpu:
        mem |= gpu_memory_mb()
    result["memory"] = mem

    if roofline:
        from edgepipe.runtime.measure.roofline import host_peaks, model_costs
        from edgepipe.runtime.measure.roofline import roofline as roof

        count, precision, how = model_costs(Path(model), macs)
        precision = bench.backend["precision"] if bench.backend["precision"] in ("fp32", "int8", "bf16", "fp16") else precision
        peaks = host_peaks(env["host"], opts.threads, backend=opts.backend, precision=precision)
        for r in runs:
            r["roofline"] = roof(count, precision, r["batch"], r["latency"]["mean_ms"], peaks)
        result["macs"] = {"per_inference": count, "source": how}

    if energy_seconds > 0:
        meters, missing = probe_meters(profile.power if profile else None, profile.name if profile else "", gpu=gpu)
        energy_feed = feed(opts.batches[0])

        def work() -> int:
            bench.run_once(energy_feed)
            return opts.batches[0]

        readings = measure(meters, work, energy_seconds, idle_seconds, failed=missing) if meters else []
        for r in readings:
            r["batch"] = opts.batches[0]
        result["energy"] = energy_summary(readings, missing)

    logits = None
    if src is not None and (labels is not None or save_outputs or files is not None or want_predictions):
        logits = outputs_of(bench, src, str(inputs))
    if logits is None and isinstance(src, ShapeGroups):  # images of several sizes into a model whose output follows the size
        result.setdefault("notes", []).append("no accuracy, predictions or saved outputs: the model's outputs differ in "
                                              "size from input to input (they are not N×classes)")
    elif src is not None and (labels is not None or save_outputs or files is not None or want_predictions):
        if labels is not None:
            result["accuracy"] = float((logits.argmax(axis=1) == labels).mean())
            result["accuracy_samples"] = int(len(labels))
        if (files is not None or want_predictions) and logits.ndim == 2:  # a classifier's top classes
            result["predictions"] = predictions(logits, classes, labels, files, images)
        elif files is not None or want_predictions:
            result.setdefault("notes", []).append(f"no predictions: the model's output has shape {list(logits.shape)}, "
                                                   "not N×classes")
        if save_outputs:
            buf = io.BytesIO()
            np.savez_compressed(buf, outputs=logits)
            write_bytes_atomic(save_outputs, buf.getvalue())
    result["profile"] = {"name": profile.name if profile else None, "source": profile_source,
                         "config": profile.to_dict() if profile else None}
    if profile is not None:
        from edgepipe.runtime.judge.verdict import judge

        result["verdict"] = judge(result, profile.to_dict())
    result["environment"] = env
    return result


def inputs_memory(src, rows_held: int) -> dict:
    """Beside the memory figures: the inputs file's size, the most of the inputs held in memory at once
    until memory was read (those figures include it), and how the inputs were read."""
    if src.file_bytes is None:  # decoded images
        return {"inputs_held_mb": src.n * src.row_bytes / 2**20, "inputs_read": "decoded whole into memory"}
    return {"inputs_file_mb": src.file_bytes / 2**20, "inputs_held_mb": rows_held * src.row_bytes / 2**20,
            "inputs_read": f"streamed from the .npz, never whole: every row checked {SCAN_BYTES >> 20} MB at a "
                           f"time, its first {rows_held} rows held while measuring, then "
                           f"{chunk_rows(src.row_bytes, CHUNK_BYTES)} rows at a time for accuracy, predictions or "
                           "outputs (after memory was read)"}


def outputs_of(bench: Bench, src, source: str) -> np.ndarray:
    """The model's output for every input, fed CHUNK_BYTES of rows at a time through its first input."""
    outs = []
    for _, part in src.chunks(CHUNK_BYTES):
        x = next(iter(bench.feed(len(next(iter(part.values()))), part, source).values()))
        outs.append(predict(bench.session, x))
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
    try:
        for flag, path in (("--json", args.json), ("--csv", args.csv), ("--predictions", args.predictions),
                           ("--save-outputs", args.save_outputs), ("--events", args.events)):
            if path is not None:
                check_writable(path, flag)  # before measuring, so a bad path never costs the measurement
        from edgepipe.runtime.deployment import apply_deployment

        apply_deployment(args)
        profile, source = resolve_profile(args.profile)
        # A profile's thread count is for its device, --threads for whatever the user had in mind; on a
        # host with fewer logical CPUs either is capped (more threads than CPUs only oversubscribe).
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
            threads=threads, inter_threads=inter,
            batches=tuple(args.batch or (1,)), graph_optimization=args.optimization,
            warmup_iters=args.warmup, warmup_seconds=args.warmup_seconds, iters=args.iters,
            min_seconds=args.min_seconds, max_seconds=args.max_seconds,
            providers=tuple(args.provider or (profile.providers if profile else ("CPUExecutionProvider",))),
            dims=tuple(args.dim), shapes=tuple(args.shape), backend=backend, precision=precision, device=device,
        )
        from edgepipe.runtime.measure.loadgen import prepare

        loadgen = prepare(args)
        if args.stream is not None:
            from edgepipe.runtime.stream import run_stream
            from edgepipe.runtime.stream import summary as stream_summary

            r = run_stream(args, threads, opts.backend, opts.precision, opts.device, notes, profile)
            if args.json:
                write_json_atomic(args.json, r)
            if not args.quiet:
                print(stream_summary(r), file=sys.stderr if args.watch and not args.events else sys.stdout)
            return 0
        if (args.save_outputs or args.predictions) and not (args.inputs or args.images):
            raise EdgepipeError("--save-outputs and --predictions need --inputs or --images (the outputs of which inputs?)")
        if args.inputs and args.images:
            raise EdgepipeError("give --inputs or --images, not both")
        result = run(args.model, opts, args.inputs, profile, source, strict_providers=bool(args.provider),
                     energy_seconds=args.energy_seconds, idle_seconds=args.idle_seconds,
                     roofline=not args.no_roofline, macs=args.macs, save_outputs=args.save_outputs,
                     images=args.images, want_predictions=bool(args.predictions),
                     loadgen=loadgen, contract_args=args)
        result["notes"] = notes + result.get("notes", [])
        if args.json:
            write_json_atomic(args.json, result)
        if args.csv:
            write_text_atomic(args.csv, csv_text(result))
        if args.predictions:
            write_text_atomic(args.predictions, predictions_text(result.get("predictions", []), args.predictions))
    except EdgepipeError as exc:
        print(f"edgepipe-runner: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"edgepipe-runner: error: {os_error_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug or an unexpected library failure: one line, the traceback on request
        if os.environ.get("EDGEPIPE_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        print(f"edgepipe-runner: internal error: {type(exc).__name__}: {first} (set EDGEPIPE_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1
    if not args.quiet:
        print(summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
