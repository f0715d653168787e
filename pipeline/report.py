"""The report: one row per model (accuracy, params, MACs, ONNX bytes, p50 latency, peak RSS),
built from manifest.json alone so `edgepipe report RUN_DIR` works on any finished run."""
from __future__ import annotations

from pathlib import Path

from edgepipe.pipeline.run import read_manifest
from edgepipe.runtime.verdict import fmt_value

COLUMNS = ("model", "accuracy", "params", "MACs", "ONNX bytes", "p50 ms", "p90 ms", "peak RSS MB", "mJ/inf", "verdict")
DEVICE_COLUMNS = ("model", "device", "profile", "providers", "p50 ms", "p90 ms", "peak RSS MB", "mJ/inf", "accuracy", "verdict")


def _rows(manifest: dict) -> list[dict]:
    stages = manifest["stages"].values()
    bench = {}
    for s in stages:
        if s["type"] == "bench":
            bench.update(s["metrics"]["models"])
    rows = []
    for s in stages:
        for name, art in s.get("artifacts", {}).items():
            if art["kind"] != "onnx":
                continue
            m, b = art["meta"], bench.get(name)
            rows.append({
                "name": name,
                "model": f"{m.get('label', name)} {m.get('precision', '')}".strip(),
                "accuracy": m.get("accuracy"),
                "params": m.get("params"),
                "macs": m.get("macs"),
                "bytes": m.get("bytes"),
                "p50_ms": b["latency"]["p50_ms"] if b else None,
                "p90_ms": b["latency"]["p90_ms"] if b else None,
                "peak_rss_mb": b["memory"]["peak_rss_mb"] if b else None,
                "energy": b.get("energy") if b else None,
                "verdict": (b.get("verdict") or {}).get("overall") if b else None,
            })
    return rows


def _fmt(row: dict) -> list[str]:
    def f(v, spec):
        return "—" if v is None else format(v, spec)

    acc = "—" if row["accuracy"] is None else f"{100 * row['accuracy']:.2f}%"
    return [row["model"], acc, f(row["params"], ","), f(row["macs"], ","), f(row["bytes"], ","),
            f(row["p50_ms"], ".3f"), f(row["p90_ms"], ".3f"), f(row["peak_rss_mb"], ".1f"),
            _energy(row["energy"]), row["verdict"] or "—"]


def _energy(e: dict | None) -> str:
    return "—" if not e else f"{e['mj_per_inference']:.3g} ({e['method']})"


def _text_table(columns, rows: list[list[str]]) -> str:
    cells = [list(columns)] + rows
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _md(columns, rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows])


def table_text(manifest: dict) -> str:
    parts = []
    rows = _rows(manifest)
    if rows:
        parts.append(_text_table(COLUMNS, [_fmt(r) for r in rows]))
    kd = distillation_rows(manifest["stages"])
    if kd:
        parts.append("distillation (Paddle test accuracy):\n" + _text_table(DISTILL_COLUMNS, kd))
    return "\n\n".join(parts) or "(no exported models or distillation results in this run yet)"


def _md_table(manifest: dict) -> str:
    return _md(COLUMNS, [_fmt(r) for r in _rows(manifest)])


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
    if not isinstance(r, dict) or r.get("schema") != "edgepipe-bench/1":
        raise EdgepipeError(f"{path}: not an edgepipe-runner result (schema edgepipe-bench/1); rerun edgepipe-runner with --json")
    return r


def _device_row(r: dict) -> list[str]:
    host = r["environment"]["host"]
    one = r["runs"][0]["latency"]
    acc = "—" if r.get("accuracy") is None else f"{100 * r['accuracy']:.2f}%"
    return [Path(r["model"]).name, host.get("board") or f"{host.get('cpu_model')} ({host.get('arch')})",
            r["profile"]["name"] or "—", ",".join(p.removesuffix("ExecutionProvider") for p in r["providers"]["used"]),
            f"{one['p50_ms']:.3f}", f"{one['p90_ms']:.3f}", f"{r['memory']['peak_rss_mb']:.1f}",
            _energy((r.get("energy") or {}).get("primary")), acc, (r.get("verdict") or {}).get("overall", "—")]


def device_table(results: list[dict]) -> str:
    return "measured on devices (edgepipe-runner results):\n" + _text_table(DEVICE_COLUMNS, [_device_row(r) for r in results])


def markdown(manifest: dict, run_dir: Path, devices: list[dict] | None = None) -> str:
    env = manifest.get("environment", {})
    host, ver = env.get("host", {}), env.get("versions", {})
    data = manifest.get("data") or {}
    lines = [f"# edgepipe report: {manifest.get('recipe', run_dir.name)}", ""]
    stages = manifest["stages"]
    exported = bool(_rows(manifest))
    if exported:
        lines += [_md_table(manifest), ""]
    bench = next((s for s in stages.values() if s["type"] == "bench"), None)
    how = ""
    if bench:
        o = bench["config"]
        how = (f" ({o['threads']} intra-op thread(s), batch {o['batches'][0]}, at least {o['iters']} timed runs and "
               f"{o['min_seconds']} s after {o['warmup_iters']} warm-up runs)")
    lines += [] if not exported else ["Accuracy is top-1 on the test split, measured with onnxruntime on the exported file. "
              f"Latency is measured by the on-device runner (`python -m edgepipe.runtime`) in a fresh process{how}; "
              "peak RSS is that process's high-water mark (VmHWM: onnxruntime + numpy + the model). "
              "Energy per inference names its method: a sensor (rapl, nvml, ina3221, pmic) or `estimate` "
              "(CPU time × the profile's power model, ±50%). The verdict judges each model against the device "
              "profile's budgets (p90 latency, peak RSS, bytes, energy).", ""]
    if bench:
        for name, b in bench["metrics"]["models"].items():
            v = b.get("verdict")
            if v:
                lines.append(f"- {name} against `{v['profile']}`: **{v['overall']}** — " + "; ".join(
                    f"{c['budget']} {c['status']}" + (f" ({fmt_value(c['value'], c['unit'])} vs {fmt_value(c['limit'], c['unit'])}, margin {c['margin_pct']:+.0f}%)"
                                                      if c["value"] is not None else "") for c in v["checks"]))
        lines.append("")
    if devices:
        lines += ["## Measured on devices", "", _md(DEVICE_COLUMNS, [_device_row(r) for r in devices]), ""]
    lines += distillation_section(stages) + prune_section(stages) + lowrank_section(stages)
    quant = [s for s in stages.values() if s["type"] == "quantize"]
    if quant:
        lines += ["## Quantization", ""]
    for s in quant:
        m = s["metrics"]
        what = f"`{s['config']['model']}` → {m['mode']}"
        if m["mode"] == "static":
            o, src, g = m["options"], m["options_source"], m["guard"]
            what += (f" {o['format'].upper()}, {o['activation_type']}/{o['weight_type']}, per-channel={o['per_channel']}, "
                     f"reduce_range={o['reduce_range']}, {o['calibration']} calibration on {m['calibration_samples']} samples"
                     + (f", activation ranges from QAT ({src['qat_ranges']} tensors)" if src.get("qat_ranges") else "")
                     + (f"; preset of profile `{src['profile']}` ({src['reason']})" if src.get("profile") else "")
                     + (f"; {src['note']}" if src.get("note") else ""))
            if g["kept_float"]:
                what += (f"; the accuracy guard kept {', '.join(g['kept_float'])} in float "
                         f"({g['latency_cost_ms'] * 1e3:+.0f} µs at batch 1)")
        lines += [f"- {what}: accuracy change {-m['accuracy_drop_points']:+.2f} points, "
                  f"file {m['bytes_ratio_vs_fp32']:.2f}× the fp32 bytes." + "".join(f" Warning: {w}." for w in m.get("warnings", []))]
    if quant:
        lines.append("")
    lines += ["## Run", "",
              f"- data: {data.get('source', '?')}; samples per split: "
              + ", ".join(f"{k} {v}" for k, v in (data.get("counts") or {}).items()),
              f"- host: {host.get('cpu_model', '?')} ({host.get('arch', '?')}), {host.get('logical_cores', '?')} logical cores, "
              f"int8-relevant CPU flags: {', '.join(host.get('flags', [])) or 'none'}",
              "- versions: " + ", ".join(f"{k} {v}" for k, v in ver.items() if v),
              "- stages: " + ", ".join(f"{n} {s['wall_s']:.1f}s" for n, s in stages.items() if s["type"] != "report"),
              "", f"Every figure comes from `{run_dir / 'manifest.json'}`; rerun with `edgepipe run` to reproduce."]
    return "\n".join(lines) + "\n"


def _pm(stats: dict, n: int) -> str:
    """mean ± sample std; a single seed has no spread to show."""
    return f"{100 * stats['mean']:.2f}" + (f" ± {100 * stats['std']:.2f}" if n > 1 else "")


def _seeds(values) -> str:
    return ", ".join(f"{100 * v:.2f}" for v in values)


def distillation_rows(stages: dict) -> list[list[str]]:
    """One row per trained variant of every distill stage: mean ± std (sample std) over its seeds."""
    import numpy as np

    rows = []
    for s in stages.values():
        if s["type"] != "distill":
            continue
        c, m = s["config"], s["metrics"]
        stu = m["student"]
        n = len(m.get("seeds", [0]))
        mode, out = m.get("mode", "offline"), c["output"]
        if "baseline" in m and mode != "self":  # in self mode the baseline is generation 0
            rows.append(["student from scratch", str(n), _pm(m["baseline"], n), _seeds(m["baseline"]["per_seed"]), c["baseline"]])
        if mode == "offline":
            what = f"offline KD (T={c['temperature']:g}, α={c['alpha']:g})"
            if c.get("features"):
                what += " + feature hints " + ", ".join(f"{f['student_layer']}→{f['teacher_layer']}" for f in c["features"])
            rows.append([what, str(n), _pm(stu, n), _seeds(stu["per_seed"]), out])
        elif mode == "online":
            peers = np.asarray(stu["peers_test_acc"])  # seeds × peers
            rows.append([f"online DML, kept peer ({c['peers']} peers, T={c['temperature']:g}, α={c['alpha']:g}; keep={c['keep']})",
                         str(n), _pm(stu, n), _seeds(stu["per_seed"]), out])
            rows.append(["online DML, mean of all peers", str(n),
                         _pm({"mean": peers.mean(axis=1).mean(), "std": peers.mean(axis=1).std(ddof=1) if n > 1 else 0.0}, n),
                         _seeds(peers.mean(axis=1)), "—"])
        else:
            gens = np.asarray(stu["generations_test_acc"])  # seeds × generations
            for g in range(gens.shape[1]):
                col = gens[:, g]
                what = "self (born-again) gen 0: labels only" if g == 0 else f"self (born-again) gen {g} (T={c['temperature']:g}, α={c['alpha']:g})"
                saved = out if g == gens.shape[1] - 1 else (c["baseline"] or "—") if g == 0 else "—"
                rows.append([what, str(n), _pm({"mean": col.mean(), "std": col.std(ddof=1) if n > 1 else 0.0}, n), _seeds(col), saved])
    return rows


DISTILL_COLUMNS = ("student", "seeds", "test acc % (mean ± std)", "per seed", "saved as")


def distillation_section(stages: dict) -> list[str]:
    rows = distillation_rows(stages)
    if not rows:
        return []
    return ["## Distillation", "",
            "Top-1 accuracy of the Paddle model on the test split; ± is the sample standard deviation over seeds. "
            "KD loss: α·T²·KL(teacher ‖ student) on log-probabilities + (1 − α)·cross-entropy. The teacher is trained "
            "once (the recipe's seed); every student variant uses the same data, epochs and optimizer. "
            "The models saved and exported are the first seed's.", "", _md(DISTILL_COLUMNS, rows), ""]


def _tuned(m: dict, c: dict) -> str:
    if not c["epochs"]:
        return ", not fine-tuned"
    return f", fine-tuned {c['epochs']} epoch(s)" + (f" with KD from {m['teacher']}" if m.get("teacher") else " on labels")


def _channel_prune_lines(name: str, m: dict, c: dict) -> list[str]:
    ch = m["rule"]["channels"]
    how = f"ratio {ch['ratio']:g}" if ch.get("ratio") is not None else \
        "per-group ratios for target " + ", ".join(f"{k} {v:g}" for k, v in ch["target"].items())
    lines = [f"`{c['model']}` → `{c.get('output') or c['model'] + '_pruned'}`: channels removed ({how}, "
             f"criterion {ch['criterion']}, round to {ch['round_to']}); parameters {m['params_before']:,} → {m['params_after']:,}; "
             f"test accuracy {100 * m['test_acc_before']:.2f}% → {100 * m['test_acc_pruned']:.2f}% pruned → "
             f"{100 * m['test_acc_after']:.2f}%{_tuned(m, c)}.", ""]
    sens = m.get("sensitivity")
    if sens:
        if sens["files"]:
            lines += [f"Sensitivity (validation accuracy with one group cut alone; baseline {100 * sens['baseline']['accuracy']:.2f}%): "
                      + ", ".join(f"`{name}/{f}`" for f in sens["files"]) + ".", ""]
            ratios = sorted({r for g in sens["groups"] for r in g["accuracy"]}, key=float)
            rows = [[", ".join(g["group"]), str(g["channels"])] + [f"{100 * g['accuracy'][r]:.1f}" if r in g["accuracy"] else ""
                                                                  for r in ratios] for g in sens["groups"]]
            lines += [_md(("group", "channels", *[f"{float(r):g}" for r in ratios]), rows), ""]
        a = sens.get("allocation")
        if a:
            lines += [f"Chosen for the target: {', '.join(f'{k} {v:g}' for k, v in a['ratios'].items())} "
                      f"({a['params']:,} params, {a['macs']:,} MACs"
                      + (f", measured p50 {a['latency']['pruned_ms']:.3f} vs {a['latency']['unpruned_ms']:.3f} ms" if a.get("latency") else "")
                      + f"; predicted loss {100 * a['predicted_loss']:.2f} pt from the groups' curves).", ""]
    rows = [[", ".join(g["group"]), ", ".join(g["tied"]) or "—", str(g["channels"]),
             str(g["kept"]) if "kept" in g else "—", g.get("skip", "")] for g in m["groups"]]
    return lines + [_md(("channels made by", "cut with them", "channels", "kept", "left alone because"), rows), ""]


def prune_section(stages: dict) -> list[str]:
    out = []
    for name, s in stages.items():
        if s["type"] != "prune":
            continue
        m, c = s["metrics"], s["config"]
        if not out:
            out = ["## Pruning", ""]
        if "groups" in m:
            out += _channel_prune_lines(name, m, c)
            continue
        if "removed" in m:
            measure = c["blocks"].get("measure", "accuracy")
            out += [f"`{c['model']}` → `{c.get('output') or c['model'] + '_pruned'}`: blocks replaced by the identity, chosen by "
                    f"{'validation accuracy lost' if measure == 'accuracy' else 'relative change of the logits'} when each is "
                    f"bypassed alone: {', '.join(m['removed'])}; parameters {m['params_before']:,} → {m['params_after']:,}; test "
                    f"accuracy {100 * m['test_acc_before']:.2f}% → {100 * m['test_acc_pruned']:.2f}% removed → "
                    f"{100 * m['test_acc_after']:.2f}%{_tuned(m, c)}.", ""]
            key = "drop" if measure == "accuracy" else "output_change"
            rows = [[str(i + 1), e["block"], f"{100 * e[key]:.2f}" if key == "drop" else f"{e[key]:.3f}",
                     "removed" if e["block"] == r["removed"] else ""] for i, r in enumerate(m["rounds"]) for e in r["candidates"]]
            out += [_md(("round", "block", "val acc lost (pt)" if key == "drop" else "logit change", ""), rows), ""]
            continue
        if not any(line.startswith("Unstructured magnitude pruning") for line in out):
            out += ["Unstructured magnitude pruning zeroes weights but keeps the architecture: the dense ONNX file has "
                    "the same bytes and runs no faster on dense kernels; it only compresses better (deflated bytes).", ""]
        r = m["rule"]
        how = (f"threshold {r['threshold']:g}" if r["threshold"] is not None else f"sparsity {r['sparsity']:g} ({r['scope']})") + f", {r['schedule']}"
        tuned = _tuned(m, c)
        pruned = "" if m["test_acc_pruned"] is None or not c["epochs"] else f"{100 * m['test_acc_pruned']:.2f}% pruned → "
        out.append(f"`{c['model']}` → `{c.get('output') or c['model'] + '_pruned'}` ({how}): {m['zeros']:,} of {m['weights']:,} "
                   f"weights zero ({100 * m['sparsity']:.1f}%); test accuracy {100 * m['test_acc_before']:.2f}% → {pruned}"
                   f"{100 * m['test_acc_after']:.2f}%{tuned}.")
        onnx = {n: a["meta"] for st in stages.values() for n, a in st.get("artifacts", {}).items() if n.endswith(".onnx")}
        src, dst = onnx.get(f"{c['model']}.onnx"), onnx.get(f"{c.get('output') or c['model'] + '_pruned'}.onnx")
        if src and dst and "deflated_bytes" in src and "deflated_bytes" in dst:
            out.append("")
            out.append(f"Exported: {src['bytes']:,} → {dst['bytes']:,} bytes dense; deflated (zip) {src['deflated_bytes']:,} → "
                       f"{dst['deflated_bytes']:,} bytes ({src['deflated_bytes'] / dst['deflated_bytes']:.1f}× smaller).")
        out += ["", _md(("layer", "weights", "zeros", "sparsity"),
                        [[x["layer"], f"{x['weights']:,}", f"{x['zeros']:,}", f"{100 * x['sparsity']:.1f}%"] for x in m["layers"]]), ""]
    return out


def lowrank_section(stages: dict) -> list[str]:
    out = []
    for name, s in stages.items():
        if s["type"] != "lowrank":
            continue
        m, c = s["metrics"], s["config"]
        if not out:
            out = ["## Low-rank decomposition", ""]
        teacher = _tuned(m, c)
        out.append(f"`{c['model']}` → `{c.get('output') or c['model'] + '_lowrank'}`: parameters {m['params_before']:,} → "
                   f"{m['params_after']:,}; test accuracy {100 * m['test_acc_before']:.2f}% → {100 * m['test_acc_factored']:.2f}% "
                   f"factorised → {100 * m['test_acc_after']:.2f}%{teacher}.")
        out.append("")
        rows = []
        for r in m["layers"]:
            if "skip" in r:
                rows.append([r["layer"], "left alone", "—", "—", "—", r["skip"]])
                continue
            rows.append([r["layer"], r["method"], "×".join(map(str, r["ranks"])), f"{100 * r['energy_kept']:.1f}%",
                         f"{r['params_before']:,} → {r['params_after']:,} ({r['params_before'] / r['params_after']:.1f}× fewer)",
                         f"{r['macs_before'] / r['macs_after']:.1f}× fewer MACs"])
        out += [_md(("layer", "method", "rank", "energy kept", "weights", "cost"), rows), ""]
    return out


def load(run_dir: Path) -> dict:
    return read_manifest(Path(run_dir))
