"""bench: latency and peak memory of every ONNX model, each in a fresh process running the
on-device runner (so peak RSS is that of a clean process with onnxruntime only)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.devices.base.child import run_child
from edgepipe.devices.base.errors import FieldError
from edgepipe.pipeline.core.registry import register_stage
from edgepipe.pipeline.core.run import StageResult
from edgepipe.pipeline.stages.modelref import ModelRef, TakesModels, graph_kind, ref_inputs, ref_name
from edgepipe.runtime.measure.bench import BenchOptions


@dataclass(frozen=True)
class BenchConfig(BenchOptions, TakesModels):
    """The runner's options (validated there) plus which models to measure."""

    models: tuple[ModelRef, ...] | None = None  # ONNX artifacts (or onnx: files) to measure; null = all of them
    profile: str | None = None  # device profile (preset name or YAML path) to judge against; null = detect
    warmup_iters: int = 20
    iters: int = 200
    max_seconds: float = 10.0
    energy_seconds: float = 1.0
    idle_seconds: float = 0.5
    roofline: bool = True
    explain_seconds: float = 0.5  # onnxruntime's profiler on each model: kernel time by op kind (0 = skip)

    uses_data = True

    def __post_init__(self):
        super().__post_init__()
        if self.models is not None and not all(isinstance(m, str) or graph_kind(m) == "onnx" for m in self.models):
            raise FieldError("models", "bench measures ONNX files: name ONNX artifacts or give onnx: PATH")
        if self.explain_seconds < 0:
            raise FieldError("explain_seconds", "must be >= 0 (0 skips the per-op profile)")

    def refs(self, available) -> list:
        return list(self.models) if self.models is not None else [n for n, k in available.items() if k == "onnx"]

    def inputs(self, available) -> dict[str, str]:
        return {k: v for i, m in enumerate(self.refs(available)) for k, v in ref_inputs(f"models[{i}]", m).items()}

    def model_refs(self) -> dict:
        return {f"models[{i}]": m for i, m in enumerate(self.models or ())}

    def outputs(self) -> dict[str, str]:
        return {}


def runner_command(model, out_json, cfg: BenchConfig, inputs=None) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "edgepipe.runtime",
        str(model),
        "--json",
        str(out_json),
        "--quiet",
        "--threads",
        str(cfg.threads),
        "--inter-threads",
        str(cfg.inter_threads),
        "--optimization",
        cfg.graph_optimization,
        "--warmup",
        str(cfg.warmup_iters),
        "--warmup-seconds",
        str(cfg.warmup_seconds),
        "--iters",
        str(cfg.iters),
        "--min-seconds",
        str(cfg.min_seconds),
        "--max-seconds",
        str(cfg.max_seconds),
        "--energy-seconds",
        str(cfg.energy_seconds),
        "--idle-seconds",
        str(cfg.idle_seconds),
    ]
    cmd += [a for b in cfg.batches for a in ("--batch", str(b))]
    cmd += [a for p in cfg.providers for a in ("--provider", p)] if cfg.backend == "onnxruntime" else []
    cmd += ["--backend", cfg.backend, "--precision", cfg.precision, "--device", cfg.device]
    cmd += [a for d in cfg.dims for a in ("--dim", d)]
    cmd += ["--profile", cfg.profile] if cfg.profile else []
    cmd += [] if cfg.roofline else ["--no-roofline"]
    return cmd + (["--inputs", str(inputs)] if inputs else [])


def time_by_kind(path, cfg: BenchConfig) -> dict:
    """`edgepipe explain`'s summary for the report: kernel time per run by op kind (integer,
    quantize/dequantize, float compute, other) from onnxruntime's profiler, and the unfused Q/DQ count."""
    from edgepipe.export.explain import explain

    r = explain(path, threads=cfg.threads, seconds=cfg.explain_seconds, batch=cfg.batches[0])
    return {
        "runs": r["runs"],
        "batch": r["batch"],
        "threads": r["threads"],
        "ms_by_kind": r["ms_by_kind"],
        "top_ops": [{k: x[k] for k in ("op", "kind", "ms_per_run")} for x in r["time_by_op"][:8]],
        "unfused_qdq": len(r["unfused_qdq"]),
        "integer_kernels": len(r["integer_kernels"]),
        "how": "onnxruntime profiler, kernel time per run (the graph as executed, after fusions)",
    }


@register_stage("bench", BenchConfig)
def run_bench(cfg: BenchConfig, ctx) -> StageResult:
    """Latency (p50/p90/p99, mean), cold start and peak RSS per model, in clean processes."""
    from edgepipe.pipeline.models.sources import resolve

    refs = cfg.refs({n: a.kind for n, a in ctx.artifacts.items()})
    names = [ref_name(m) if isinstance(m, str) else f"{m.name}.onnx" for m in refs]
    x, y = ctx.data.split("test")
    samples = ctx.out("test_split.npz")  # also what a device needs for its own accuracy check
    # a detection split's labels are its rows' numbers, not classes: its inputs alone
    np.savez_compressed(samples, **({"x": x} if ctx.data.task == "detect" else {"x": x, "y": y}))
    metrics = {}
    for ref, name in zip(refs, names):
        out = ctx.out(f"{name.removesuffix('.onnx')}.bench.json")
        path = ctx.path_of(ref) if isinstance(ref, str) else resolve(ctx.base, ref.onnx)
        proc = run_child(runner_command(path, out, cfg, samples))
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise EdgepipeError(f"bench {name}: the runner failed: {last}")
        r = json.loads(out.read_text())
        first = r["runs"][0]
        metrics[name] = {
            "latency": first["latency"],
            "cold_start": r["cold_start"],
            "memory": r["memory"],
            "throughput_per_s": first["throughput_per_s"],
            "runs": r["runs"],
            "device_accuracy": r.get("accuracy"),
            "model_bytes": r["model_bytes"],
            "energy": (r.get("energy") or {}).get("primary"),
            "verdict": r.get("verdict"),
            "profile": r["profile"]["name"],
            "providers": r["providers"]["used"],
            "backend": r["backend"],
        }
        if cfg.explain_seconds > 0 and cfg.backend == "onnxruntime":  # the profile is onnxruntime's
            metrics[name]["explain"] = time_by_kind(path, cfg)
        e = metrics[name]["energy"]
        print(
            f"  {name}: p50 {first['latency']['p50_ms']:.3f} ms, peak RSS {r['memory']['peak_rss_mb']:.1f} MB"
            + (f", {e['mj_per_inference']:.3f} mJ/inference ({e['method']})" if e else "")
            + (f", verdict {r['verdict']['overall']} ({r['profile']['name']})" if r.get("verdict") else ""),
            file=sys.stderr,
        )
    return StageResult(
        metrics={
            "models": metrics,
            "host": ctx.manifest["environment"]["host"],
            "options": vars(cfg) | {"models": names},
        }
    )
