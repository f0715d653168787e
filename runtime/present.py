"""How a runner result is shown: the terminal summary, one CSV row per batch size, and the predictions
file (each input's top class and score)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from edgepipe.runtime.model.session import softmax


def predictions(logits: np.ndarray, classes, labels, files, root) -> list[dict]:
    """Each input's top class (its name where the model names its classes) and softmax score."""
    p = softmax(logits)
    top = p.argmax(axis=1)
    out = []
    for i, k in enumerate(top):
        row = {
            "input": str(files[i].relative_to(root)) if files is not None else i,
            "class": classes[k] if k < len(classes) else int(k),
            "score": round(float(p[i, k]), 6),
        }
        if labels is not None:
            row["label"] = classes[labels[i]] if labels[i] < len(classes) else int(labels[i])
        out.append(row)
    return out


def predictions_text(rows: list[dict], path: Path) -> str:
    """The predictions as JSON when the file name ends in .json, else CSV (tab-separated for .tsv); in CSV a
    nested value (a detector's boxes) is one JSON cell."""
    import json

    if path.suffix == ".json":
        return json.dumps(rows, indent=1) + "\n"
    out = io.StringIO()
    fields = list(rows[0]) if rows else ["input", "class", "score"]
    w = csv.DictWriter(out, fieldnames=fields, lineterminator="\n", delimiter="\t" if path.suffix == ".tsv" else ",")
    w.writeheader()
    w.writerows({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()} for r in rows)
    return out.getvalue()


CSV_FIELDS = (
    "model",
    "profile",
    "batch",
    "backend",
    "precision",
    "providers",
    "threads",
    "n",
    "mean_ms",
    "std_ms",
    "min_ms",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "throughput_per_s",
    "session_create_ms",
    "first_inference_ms",
    "peak_rss_mb",
    "model_bytes",
    "macs_per_inference",
    "fraction_of_peak",
    "energy_method",
    "mj_per_inference",
    "accuracy",
    "verdict",
    "arch",
    "cpu_model",
    "cpu_flags",
    "governor",
    "onnxruntime",
)


def csv_text(r: dict) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    e = (r.get("energy") or {}).get("primary") or {}
    host = r["environment"]["host"]
    for run_ in r["runs"]:
        roof = run_.get("roofline") or {}
        w.writerow(
            {
                "model": r["model"],
                "profile": r["profile"]["name"],
                "batch": run_["batch"],
                "backend": r["backend"]["name"],
                "precision": r["backend"]["precision"],
                "providers": " ".join(r["providers"]["used"]),
                "threads": r["options"]["threads"],
                **run_["latency"],
                "throughput_per_s": run_["throughput_per_s"],
                **r["cold_start"],
                "peak_rss_mb": r["memory"]["peak_rss_mb"],
                "model_bytes": r["model_bytes"],
                "macs_per_inference": roof.get("macs_per_inference"),
                "fraction_of_peak": roof.get("fraction_of_peak"),
                "energy_method": e.get("method") if e.get("batch") == run_["batch"] else None,
                "mj_per_inference": e.get("mj_per_inference") if e.get("batch") == run_["batch"] else None,
                "accuracy": r.get("accuracy"),
                "verdict": (r.get("verdict") or {}).get("overall"),
                "arch": host.get("arch"),
                "cpu_model": host.get("cpu_model"),
                "cpu_flags": " ".join(host.get("flags", [])),
                "governor": host.get("governor"),
                "onnxruntime": r["environment"]["onnxruntime"],
            }
        )
    return out.getvalue()


def summary(r: dict) -> str:
    from edgepipe.runtime.measure.hostload import contended

    mem, prov, be = r["memory"], r["providers"], r["backend"]
    lines = [
        f"model      {r['model']} ({r['model_bytes'] / 1024:.1f} KiB)",
        f"device     profile {r['profile']['name'] or 'none'} ({r['profile']['source']}); "
        f"{be['name']} {be['version']} ({', '.join(prov['used'])}), {be['precision']}; "
        f"{r['options']['threads']} thread(s)",
    ]
    for note in r.get("notes", []):
        lines.append(f"  note: {note}")
    for u in prov["unavailable"]:
        lines.append(f"  note: {u['provider']} requested but {u['reason']}")
    for p in prov.get("failed_to_initialise", []):
        lines.append(f"  note: {p} failed to initialise; onnxruntime ran without it")
    lines.append(
        f"cold start session {r['cold_start']['session_create_ms']:.1f} ms, "
        f"first inference {r['cold_start']['first_inference_ms']:.2f} ms"
    )
    for run_ in r["runs"]:
        lat = run_["latency"]
        roof = run_.get("roofline") or {}
        frac = (
            f", {100 * roof['fraction_of_peak']:.1f}% of the {roof['precision']} peak ({roof['peak_kernel']})"
            if roof.get("fraction_of_peak")
            else ""
        )
        at = f" at {run_['input_shape']}" if len({x.get("input_shape") for x in r["runs"]}) > 1 else ""
        lines.append(
            f"latency    batch {run_['batch']}{at}: p50 {lat['p50_ms']:.3f} ms  "
            f"p90 {lat['p90_ms']:.3f}  p99 {lat['p99_ms']:.3f}  "
            f"mean {lat['mean_ms']:.3f} ± {lat['std_ms']:.3f}  (n={lat['n']}), {run_['throughput_per_s']:.1f}/s{frac}"
        )
        load = run_.get("host_load") or {}
        if contended(load, r["options"]["threads"]):
            lines.append(
                f"  note: while batch {run_['batch']} was timed, "
                f"other processes took {100 * (load['others_cpu_share'] or 0):.0f}% "
                f"of this machine's CPU and the hypervisor stole {100 * (load['steal_share'] or 0):.0f}%: "
                "these figures are likely slow; rerun on a quieter machine"
            )
    lines.append(
        f"memory     peak RSS {mem['peak_rss_mb']:.1f} MB, growth from session {mem['rss_growth_mb']:.1f} MB"
        + (f", GPU {mem['gpu_memory_mb']:.1f} MB" if mem.get("gpu_memory_mb") is not None else "")
        + (
            f" (inputs streamed from a {mem['inputs_file_mb']:.1f} MB file, {mem['inputs_held_mb']:.1f} MB of "
            "them held)"
            if mem.get("inputs_file_mb") is not None
            else ""
        )
    )
    if r.get("energy"):
        from edgepipe.runtime.measure.energy import energy_lines

        lines += energy_lines(r["energy"])
    if "accuracy" in r:
        lines.append(f"accuracy   {100 * r['accuracy']:.2f}% on {r['accuracy_samples']} labelled inputs")
    if r.get("task"):
        from edgepipe.runtime.tasks.evaluate import summary_line

        lines.append(f"task       {r['task']['task']}: {summary_line(r['task'])}")
    elif r.get("predictions"):
        counts: dict = {}
        for row in r["predictions"]:
            counts[row["class"]] = counts.get(row["class"], 0) + 1
        lines.append(
            f"predicted  {len(r['predictions'])} unlabelled inputs: "
            + ", ".join(f"{k} ×{v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:8])
        )
    if r.get("loadgen"):
        from edgepipe.runtime.measure.loadgen import summary_line

        lines.append(summary_line(r["loadgen"]))
    if r.get("verdict"):
        from edgepipe.runtime.judge.verdict import verdict_lines

        lines += verdict_lines(r["verdict"])
    return "\n".join(lines)
