"""The report: one row per model (accuracy, params, MACs, ONNX bytes, p50 latency, peak RSS),
the devices' rows, and report.md with every section, built from manifest.json alone so
`edgepipe report RUN_DIR` works on any finished run."""

from __future__ import annotations

from pathlib import Path

from edgepipe.pipeline.core.manifest import read_manifest
from edgepipe.pipeline.report.chain_sections import HOP_COLUMNS, deployment_section, hop_rows, hops_section
from edgepipe.pipeline.report.collect import BUDGETS, model_chains, onnx_models
from edgepipe.pipeline.report.format import md, text_table
from edgepipe.pipeline.report.sections import (
    DISTILL_COLUMNS,
    distillation_rows,
    distillation_section,
    lowrank_section,
    model_text,
    prune_section,
)
from edgepipe.runtime.judge.verdict import fmt_value

COLUMNS = (
    "model",
    "accuracy",
    "vs float: agree·cos·SQNR",
    "params",
    "MACs",
    "ONNX bytes",
    "p50 ms",
    "p90 ms",
    "peak RSS MB",
    "mJ/inf",
    "verdict",
)
DEVICE_COLUMNS = (
    "model",
    "device",
    "profile",
    "providers",
    "p50 ms",
    "p90 ms",
    "peak RSS MB",
    "mJ/inf",
    "accuracy",
    "verdict",
)


def _rows(manifest: dict) -> list[dict]:
    """The summary table's figures for every ONNX model of the run (collect.onnx_models)."""
    rows = []
    for m in onnx_models(manifest):
        b = m["bench"]
        rows.append(
            {
                "name": m["name"],
                "model": m["label"],
                "accuracy": m["accuracy"],
                "metric": m.get("metric"),
                "fidelity": m["fidelity"],
                "params": m["params"],
                "macs": m["macs"],
                "bytes": m["bytes"],
                "p50_ms": m["p50_ms"],
                "p90_ms": b["latency"]["p90_ms"] if b else None,
                "peak_rss_mb": b["memory"]["peak_rss_mb"] if b else None,
                "energy": b.get("energy") if b else None,
                "verdict": (b.get("verdict") or {}).get("overall") if b else None,
            }
        )
    return rows


def _fmt(row: dict) -> list[str]:
    def f(v, spec):
        return "—" if v is None else format(v, spec)

    acc = "—" if row["accuracy"] is None else f"{100 * row['accuracy']:.2f}%"
    if row.get("metric") and row["accuracy"] is not None:  # a task's metric, named: "mAP@[.5:.95] 12.30%"
        acc = f"{row['metric']} {acc}"
    return [
        row["model"],
        acc,
        fidelity_text(row["fidelity"]),
        f(row["params"], ","),
        f(row["macs"], ","),
        f(row["bytes"], ","),
        f(row["p50_ms"], ".3f"),
        f(row["p90_ms"], ".3f"),
        f(row["peak_rss_mb"], ".1f"),
        _energy(row["energy"]),
        row["verdict"] or "—",
    ]


def fidelity_text(fid: dict | None) -> str:
    """Top-1 agreement, cosine similarity and SQNR of a model's outputs against its float model's."""
    if not fid:
        return "—"
    agree = "—" if fid.get("top1_agreement") is None else f"{100 * fid['top1_agreement']:.1f}%"
    return f"{agree} · {fid['cosine']:.3f} · {fid['sqnr_db']:.0f} dB"


def _energy(e: dict | None) -> str:
    return "—" if not e else f"{e['mj_per_inference']:.3g} ({e['method']})"


def table_text(manifest: dict) -> str:
    parts = []
    rows = _rows(manifest)
    if rows:
        parts.append(text_table(COLUMNS, [_fmt(r) for r in rows]))
    for chain in model_chains(manifest)[:1]:
        if len(chain) >= 3:
            parts.append(
                "what each hop bought (ratios to the first model):\n" + text_table(HOP_COLUMNS, hop_rows(chain))
            )
    kd = distillation_rows(manifest["stages"])
    if kd:
        parts.append("distillation (Paddle test accuracy):\n" + text_table(DISTILL_COLUMNS, kd))
    for s in manifest["stages"].values():
        if s["type"] in ("deploy", "optimize"):
            c, n = s["metrics"]["chosen"], len(s["metrics"]["candidates"])
            parts.append(
                f"deployment: {c['name']} on {c['backend']} ({c['ran_precision']}), p50 {c['p50_ms']:.3f} ms"
                + (f", {c.get('metric', 'accuracy')} {100 * c['accuracy']:.2f}%" if c["accuracy"] is not None else "")
                + f" — the fastest of {n} candidates (model × backend × precision) within the accuracy and budgets"
            )
    return "\n\n".join(parts) or "(no exported models or distillation results in this run yet)"


def _md_table(manifest: dict) -> str:
    return md(COLUMNS, [_fmt(r) for r in _rows(manifest)])


def load_device_result(path: Path) -> dict:
    """A runner result (edgepipe-runner --json) measured on a device, checked before it is merged."""
    import json

    from edgepipe.devices import EdgepipeError

    if not path.is_file():
        raise EdgepipeError(f"{path}: device result not found; write one with edgepipe-runner MODEL --json {path}")
    try:
        r = json.loads(path.read_text())
    except ValueError:
        raise EdgepipeError(f"{path}: not valid JSON; rerun edgepipe-runner with --json") from None
    from edgepipe.runtime.runner import SCHEMA

    if not isinstance(r, dict) or r.get("schema") != SCHEMA:
        raise EdgepipeError(
            f"{path}: not an edgepipe-runner result (schema {SCHEMA}); rerun edgepipe-runner with --json"
        )
    return r


def _device_row(r: dict) -> list[str]:
    host = r["environment"]["host"]
    one = r["runs"][0]["latency"]
    acc = "—" if r.get("accuracy") is None else f"{100 * r['accuracy']:.2f}%"
    return [
        Path(r["model"]).name,
        host.get("board") or f"{host.get('cpu_model')} ({host.get('arch')})",
        r["profile"]["name"] or "—",
        ",".join(p.removesuffix("ExecutionProvider") for p in r["providers"]["used"]),
        f"{one['p50_ms']:.3f}",
        f"{one['p90_ms']:.3f}",
        f"{r['memory']['peak_rss_mb']:.1f}",
        _energy((r.get("energy") or {}).get("primary")),
        acc,
        (r.get("verdict") or {}).get("overall", "—"),
    ]


def device_table(results: list[dict]) -> str:
    return "measured on devices (edgepipe-runner results):\n" + text_table(
        DEVICE_COLUMNS, [_device_row(r) for r in results]
    )


def sections(manifest: dict, run_dir: Path, devices: list[dict] | None = None) -> list[tuple[str, str]]:
    """The report's parts in order, as (key, markdown); report.md joins them and report.html
    renders each between its figures."""
    env = manifest.get("environment", {})
    host, ver = env.get("host", {}), env.get("versions", {})
    data = manifest.get("data") or {}
    stages = manifest["stages"]
    out = [("title", f"# edgepipe report: {manifest.get('recipe', run_dir.name)}\n")]
    # a run that only optimized (no export, no bench) has no figures of its own for the models table
    exported = any(r["accuracy"] is not None or r["p50_ms"] is not None for r in _rows(manifest))
    bench = next((s for s in stages.values() if s["type"] == "bench"), None)
    how = ""
    if bench:
        o = bench["config"]
        how = (
            f" ({o['threads']} intra-op thread(s), batch {o['batches'][0]}, at least {o['iters']} timed runs and "
            f"{o['min_seconds']} s after {o['warmup_iters']} warm-up runs)"
        )
    if exported:
        out.append(
            (
                "models",
                _md_table(manifest) + "\n\n"
                "Accuracy is top-1 on the test split, measured with onnxruntime on the exported file. "
                "*vs float* compares a compressed or quantized model's outputs with those of the model it was made "
                "from (quantized: its fp32 file; pruned, factorised, QAT: the model before that stage; distilled: the "
                "teacher) on the same test inputs, without labels: top-1 agreement, cosine similarity, SQNR. "
                f"Latency is measured by the on-device runner (`python -m edgepipe.runtime`) in a fresh process{how}; "
                "peak RSS is that process's high-water mark (VmHWM: onnxruntime + numpy + the model). "
                "Energy per inference names its method: a sensor (rapl, nvml, ina3221, pmic) or `estimate` "
                "(CPU time × the profile's power model, ±50%). The verdict judges each model against the device "
                "profile's budgets (p90 latency, peak RSS, bytes, energy).\n",
            )
        )
    hops = hops_section(model_chains(manifest)) if exported else []
    if hops:
        out.append(("hops", "\n".join(hops)))
    verdicts = verdict_table(bench["metrics"]["models"]) if bench else ""
    if verdicts:
        out.append(("verdicts", "## Budgets\n\n" + verdicts + "\n"))
    if devices:
        out.append(
            ("devices", "## Measured on devices\n\n" + md(DEVICE_COLUMNS, [_device_row(r) for r in devices]) + "\n")
        )
    for key, lines in (
        ("deployment", deployment_section(stages)),
        ("distillation", distillation_section(stages)),
        ("pruning", prune_section(stages)),
        ("lowrank", lowrank_section(stages)),
        ("quantization", quantization_section(stages)),
    ):
        if lines:
            out.append((key, "\n".join(lines)))
    out.append(
        (
            "run",
            "\n".join(
                [
                    "## Run",
                    "",
                    (
                        f"- data: {data.get('source', '?')}; samples per split: "
                        + ", ".join(f"{k} {v}" for k, v in (data.get("counts") or {}).items())
                        if data
                        else "- data: no data set loaded (every stage read its own files)"
                    ),
                    f"- host: {host.get('cpu_model', '?')} ({host.get('arch', '?')}), "
                    f"{host.get('logical_cores', '?')} logical cores, "
                    f"int8-relevant CPU flags: {', '.join(host.get('flags', [])) or 'none'}",
                    "- versions: " + ", ".join(f"{k} {v}" for k, v in ver.items() if v),
                    "- stages: "
                    + ", ".join(f"{n} {s['wall_s']:.1f}s" for n, s in stages.items() if s["type"] != "report"),
                    "",
                    f"Every figure comes from `{run_dir / 'manifest.json'}`; rerun with `edgepipe run` to reproduce.",
                    "",
                ]
            ),
        )
    )
    return out


def markdown(manifest: dict, run_dir: Path, devices: list[dict] | None = None) -> str:
    return "\n".join(text for _, text in sections(manifest, run_dir, devices))


def verdict_table(bench_models: dict) -> str:
    """One row per benchmarked model: the verdict, then each budget as `used / limit (margin) status`."""
    rows = []
    for name, b in bench_models.items():
        v = b.get("verdict")
        if not v:
            continue
        checks = {c["budget"]: c for c in v["checks"]}

        def cell(key):
            c = checks.get(key)
            if c is None:
                return "—"
            if c["value"] is None:
                return f"{c['status']} (not measured)"
            return (
                f"{fmt_value(c['value'], c['unit'])} / {fmt_value(c['limit'], c['unit'])} "
                f"({c['margin_pct']:+.0f}%) {c['status']}"
            )

        rows.append([name, f"`{v['profile']}`", f"**{v['overall']}**", *[cell(k) for k in BUDGETS]])
    if not rows:
        return ""
    return (
        md(("model", "profile", "verdict", *BUDGETS.values()), rows)
        + "\n\nEach budget: measured / the profile's limit (margin left: positive = under budget) and its status.\n"
    )


def quantization_section(stages: dict) -> list[str]:
    quant = [s for s in stages.values() if s["type"] == "quantize"]
    if not quant:
        return []
    lines = ["## Quantization", ""]
    for s in quant:
        m = s["metrics"]
        what = f"{model_text(s['config']['model'])} → {m['mode']}"
        if m["mode"] == "static":
            o, src, g = m["options"], m["options_source"], m["guard"]
            what += (
                f" {o['format'].upper()}, {o['activation_type']}/{o['weight_type']}, per-channel={o['per_channel']}, "
                f"reduce_range={o['reduce_range']}, "
                f"{o['calibration']} calibration on {m['calibration_samples']} samples"
                + (f", activation ranges from QAT ({src['qat_ranges']} tensors)" if src.get("qat_ranges") else "")
                + (f"; preset of profile `{src['profile']}` ({src['reason']})" if src.get("profile") else "")
                + (f"; {src['note']}" if src.get("note") else "")
            )
            if g["kept_float"]:
                what += (
                    f"; the accuracy guard kept {', '.join(g['kept_float'])} in float "
                    f"({g['latency_cost_ms'] * 1e3:+.0f} µs at batch 1)"
                )
        lines += [
            f"- {what}: accuracy change {0.0 - m['accuracy_drop_points']:+.2f} points, "
            f"file {m['bytes_ratio_vs_fp32']:.2f}× the fp32 bytes."
            + "".join(f" Warning: {w}." for w in m.get("warnings", []))
        ]
    return lines + [""]


def load(run_dir: Path) -> dict:
    """A finished run's manifest, or one line saying the folder is not a run directory."""
    from edgepipe.devices import EdgepipeError

    run_dir = Path(run_dir)
    if not (run_dir / "manifest.json").is_file():
        raise EdgepipeError(f"{run_dir}: no manifest.json here; pass a run directory made by `edgepipe run`")
    return read_manifest(run_dir)
