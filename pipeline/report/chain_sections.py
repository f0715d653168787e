"""The report's sections on what a compression chain ends with, from manifest metrics: what each hop
of a chain bought (bytes, accuracy, latency against the first model) and the deploy stage's
candidates, the chosen one first, with why each other one lost."""

from __future__ import annotations

from edgepipe.pipeline.report.format import md

DEPLOY_COLUMNS = (
    "model",
    "backend",
    "ran as",
    "p50 ms (range over rounds)",
    "time vs the reference",
    "p90 ms",
    "accuracy",
    "agreement with the reference",
    "bytes",
    "outcome",
)


# a task's second figure beside its metric, where it has one
TASK_EXTRA = {"edit_similarity": "edit similarity", "map50": "mAP@.5", "precision": "precision", "recall": "recall"}


def task_scores(cands: list[dict]) -> dict | None:
    """The task figures of the first candidate scored by a task (None: scored by top-1 on the test split)."""
    return next((c["task"] for c in cands if c.get("task")), None)


def _task_columns(cands: list[dict]) -> tuple[tuple, list[str]]:
    """The table's columns for candidates scored by a task: its metric in place of accuracy, its other
    figures beside it, and agreement as the metric against the reference's predictions."""
    t = task_scores(cands)
    if t is None:
        return DEPLOY_COLUMNS, []
    extra = [k for k in TASK_EXTRA if t.get(k) is not None]
    cols = list(DEPLOY_COLUMNS)
    i = cols.index("accuracy")
    cols[i : i + 2] = [t["metric"], *(TASK_EXTRA[k] for k in extra), "score against the first fp32 run"]
    return tuple(cols), extra


def _percent(v) -> str:
    return "—" if v is None else f"{100 * v:.2f}%"


def deployment_section(stages: dict) -> list[str]:
    """The deploy stage's candidates, the chosen one first, with why each other one lost."""
    out = []
    for name, s in stages.items():
        if s["type"] not in ("deploy", "optimize"):
            continue
        m, c = s["metrics"], s["config"]
        ch = m["chosen"]
        columns, extra = _task_columns(m["candidates"])
        rows = []
        for x in sorted(m["candidates"], key=lambda x: (not x["chosen"], x.get("time_vs_reference") or x["p50_ms"])):
            lo, hi = x["p50_range_ms"]
            acc = [_percent(x["accuracy"])] + [
                f"{x['task'][k]:.3f}" if x["task"].get(k) is not None else "—" for k in extra
            ]
            agree = x["task"].get("vs_reference") if x.get("task") else x.get("agreement_with_reference")
            outcome = (
                ("**chosen**" + (f" ({x['tie']})" if x.get("tie") else "")) if x["chosen"] else "; ".join(x["why_not"])
            )
            asked = {"f32": "fp32", "f16": "fp16"}.get(x["precision"], x["precision"])
            ran = x["ran"]["precision"] + ("" if asked in ("auto", x["ran"]["precision"]) else f" (asked {asked})")
            vs = "—" if x.get("time_vs_reference") is None else f"×{x['time_vs_reference']:.2f}"
            rows.append(
                [
                    x["name"],
                    x["backend"],
                    ran,
                    f"{x['p50_ms']:.3f} ({lo:.3f}–{hi:.3f})",
                    vs,
                    f"{x['p90_ms']:.3f}",
                    *acc,
                    _percent(agree),
                    f"{x['bytes']:,}",
                    outcome + (" (the reference)" if x.get("reference") else ""),
                ]
            )
        out += [
            "## Deployment",
            "",
            f"`{name}`: **{ch['name']} on {ch['backend']} ({ch['ran_precision']})**, p50 {ch['p50_ms']:.3f} ms"
            + (f", {_metric(ch)} {100 * ch['accuracy']:.2f}%" if ch["accuracy"] is not None else "")
            + f" — {'a tie-break' if ch.get('tie') else 'the fastest'} of {len(m['candidates'])} candidates "
            f"{_floor_text(m, c)} and {_budgets_text(c, m)}. Measured here at batch 1, "
            f"{m['threads']} thread(s), in one process: {c['rounds']} interleaved rounds of {c['seconds']:g} s per "
            "candidate, ranked by each one's p50 over the reference's in the same round (a trimmed geometric "
            "mean over rounds, so drift that slows a round cancels); "
            + _scored_on(m, c)
            + f" `edgepipe-runner --deployment RUN_DIR/{name}/deploy.json` runs it as chosen."
            + "".join(f" Note: {n}." for n in m.get("notes", [])),
            "",
            *_optimize_lines(m),
            md(columns, rows),
            "",
        ]
    return out


HOP_COLUMNS = (
    "model",
    "ONNX bytes",
    "deflated bytes",
    "smaller than the first",
    "test accuracy",
    "vs the first",
    "p50 ms",
    "speed-up",
)


def hop_rows(chain: list[dict]) -> list[list[str]]:
    """One row per model of a chain (root first, each made from the one before): bytes and their
    deflated copy, accuracy and p50, and from the second on the ratio to the first model."""
    root = chain[0]

    def ratio(a, b, spec=".1f"):
        return "—" if not a or not b else f"×{a / b:{spec}}"

    rows = []
    for i, m in enumerate(chain):
        acc, ms = m["accuracy"], m["p50_ms"]
        dacc = "—" if i == 0 or acc is None or root["accuracy"] is None else f"{100 * (acc - root['accuracy']):+.2f} pt"
        bytes_ratio = (
            "—"
            if i == 0
            else ratio(root["bytes"], m["bytes"])
            + " (deflated "
            + ratio(root["deflated_bytes"], m["deflated_bytes"])
            + ")"
        )
        rows.append(
            [
                m["label"],
                "—" if m["bytes"] is None else f"{m['bytes']:,}",
                "—" if m["deflated_bytes"] is None else f"{m['deflated_bytes']:,}",
                bytes_ratio,
                "—" if acc is None else f"{100 * acc:.2f}%",
                dacc,
                "—" if ms is None else f"{ms:.3f}",
                "—" if i == 0 else ratio(root["p50_ms"], ms, ".2f"),
            ]
        )
    return rows


def hops_section(chains: list[list[dict]]) -> list[str]:
    """A table per chain of compression hops, the run's last model's chain first."""
    out = []
    for chain in chains:
        if len(chain) < 3:  # one hop is the model table's row already
            continue
        out += [
            "## What each hop bought: " + " → ".join(m["short"] for m in chain),
            "",
            "Each model is made from the one above it. Bytes are the ONNX file's and its deflated (zlib level 6) "
            "copy's; accuracy is top-1 on the test split with onnxruntime; p50 from the bench stage's runner; "
            "ratios are to the first model (bytes: how many times smaller; p50: how many times faster).",
            "",
            md(HOP_COLUMNS, hop_rows(chain)),
            "",
        ]
    return out


def _metric(chosen: dict) -> str:
    m = chosen.get("metric", "accuracy")
    return "test accuracy" if m == "accuracy" else m


def _scored_on(m: dict, c: dict) -> str:
    """What the candidates' accuracy column was measured on."""
    t = m.get("task") or task_scores(m["candidates"])
    if not t:
        return "accuracy through each candidate's own session on the test split."
    name = t.get("name") or t.get("task")
    against = "its labels" if t.get("against") == "labels" else "the reference's predictions (no labels)"
    where = f" in `{c['images']}`" if c.get("images") else ""
    return (
        f"scored by the {name} task's metric, {t['metric']}, through each candidate's own session on "
        f"{t.get('samples') or 'the'} images{where}, against {against}."
    )


def _optimize_lines(m: dict) -> list[str]:
    """An optimize stage's own facts: the user's model, what each quantizer made, the speed-up over it."""
    if "quantizers" not in m:
        return []
    made = []
    for q in m["quantizers"]:
        if q["quantizer"] == "edgepipe":
            kept = f", kept in float: {', '.join(q['kept_float'])}" if q.get("kept_float") else ""
            ops = f", only {', '.join(q['op_types'])} quantized" if q.get("op_types") else ""
            verdict = "within the budget" if q["met"] else "over the budget, left out"
            made.append(f"edgepipe int8 ({q['format']}): {q['drop_points']:+.2f} points, {verdict}{ops}{kept}")
        elif q["quantizer"] == "static shapes":
            fixed = ", ".join(f"{k} {'×'.join(map(str, v))}" for k, v in q["fixed"].items())
            made.append(f"a static-shape copy ({fixed}; {q['nodes_before']} → {q['nodes_after']} nodes)")
        else:
            made.append(f"NNCF {q['version']} int8 ({q['preset']} preset, {q['samples']} calibration images)")
    speed = m.get("speedup_vs_source")
    return [
        f"Your model: `{m['source']}`. Made from it: "
        + "; ".join(made)
        + "."
        + (f" The choice runs **×{speed:.2f}** as fast as your model on its fastest backend here." if speed else ""),
        "",
    ]


def _budgets_text(c: dict, m: dict) -> str:
    """Which latency and bytes budgets the choice was held to: the profile's, the ones given, or none."""
    given = c.get("budgets")
    if given is None and ("budget_p90_ms" in c or "budget_bytes" in c):  # optimize's own flags
        given = {k: v for k, v in (("p90", c.get("budget_p90_ms")), ("bytes", c.get("budget_bytes"))) if v}
    if given is None:
        return f"inside the `{m['profile']}` latency and bytes budgets"
    if not given:
        return "with no latency or bytes budget (none was given)"
    units = {"latency_p90_ms": " ms p90", "p90": " ms p90", "model_bytes": " bytes", "bytes": " bytes"}
    return "inside the budgets given (" + ", ".join(f"{v:,g}{units.get(k, '')}" for k, v in given.items()) + ")"


def _floor_text(m: dict, c: dict) -> str:
    """The accuracy rule the candidates were held to, in the metric they were scored by."""
    drop = c["max_accuracy_drop"]
    t = task_scores(m["candidates"])
    metric = t["metric"].split(" against ")[0] if t else "top-1 accuracy"
    if any(x["accuracy"] is not None for x in m["candidates"]):
        return (
            f"within {drop:g} point(s) of {metric} of the best fp32 one (the reference; a bf16/fp16 run must also "
            "keep its own fp32 run's predictions to that margin)"
        )
    return (
        f"whose predictions score within {drop:g} point(s) of 100% {metric} against the first fp32 run's (no "
        "labels: fidelity is the floor)"
    )
