"""The report's sections per technique: distillation (per seed, mean ± std), pruning (parameter,
channel and block, with the sensitivity table) and low-rank factorisation, from manifest metrics
(what each hop of a compression chain bought, and the deployment, are in chain_sections.py)."""

from __future__ import annotations

from edgepipe.pipeline.report.format import md


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
            rows.append(
                [
                    "student from scratch",
                    str(n),
                    _pm(m["baseline"], n),
                    _seeds(m["baseline"]["per_seed"]),
                    c["baseline"],
                ]
            )
        if mode == "offline":
            what = f"offline KD (T={c['temperature']:g}, α={c['alpha']:g})"
            if c.get("features"):
                what += " + feature hints " + ", ".join(
                    f"{f['student_layer']}→{f['teacher_layer']}" for f in c["features"]
                )
            rows.append([what, str(n), _pm(stu, n), _seeds(stu["per_seed"]), out])
        elif mode == "online":
            peers = np.asarray(stu["peers_test_acc"])  # seeds × peers
            rows.append(
                [
                    f"online DML, kept peer ({c['peers']} peers, T={c['temperature']:g}, "
                    f"α={c['alpha']:g}; keep={c['keep']})",
                    str(n),
                    _pm(stu, n),
                    _seeds(stu["per_seed"]),
                    out,
                ]
            )
            rows.append(
                [
                    "online DML, mean of all peers",
                    str(n),
                    _pm(
                        {"mean": peers.mean(axis=1).mean(), "std": peers.mean(axis=1).std(ddof=1) if n > 1 else 0.0}, n
                    ),
                    _seeds(peers.mean(axis=1)),
                    "—",
                ]
            )
        else:
            gens = np.asarray(stu["generations_test_acc"])  # seeds × generations
            for g in range(gens.shape[1]):
                col = gens[:, g]
                what = (
                    "self (born-again) gen 0: labels only"
                    if g == 0
                    else f"self (born-again) gen {g} (T={c['temperature']:g}, α={c['alpha']:g})"
                )
                saved = out if g == gens.shape[1] - 1 else (c["baseline"] or "—") if g == 0 else "—"
                rows.append(
                    [
                        what,
                        str(n),
                        _pm({"mean": col.mean(), "std": col.std(ddof=1) if n > 1 else 0.0}, n),
                        _seeds(col),
                        saved,
                    ]
                )
    return rows


DISTILL_COLUMNS = ("student", "seeds", "test acc % (mean ± std)", "per seed", "saved as")


def distillation_section(stages: dict) -> list[str]:
    rows = distillation_rows(stages)
    if not rows:
        return []
    return [
        "## Distillation",
        "",
        "Top-1 accuracy of the Paddle model on the test split; ± is the sample standard deviation over seeds. "
        "KD loss: α·T²·KL(teacher ‖ student) on log-probabilities + (1 − α)·cross-entropy. The teacher is trained "
        "once (the recipe's seed); every student variant uses the same data, epochs and optimizer. "
        "The models saved and exported are the first seed's.",
        "",
        md(DISTILL_COLUMNS, rows),
        "",
    ]


def model_text(ref) -> str:
    """A stage's `model:` as the report names it: the artifact name, or the source mapping's key."""
    if isinstance(ref, str):
        return f"`{ref}`"
    return ", ".join(f"{k}: `{v}`" for k, v in ref.items() if k in ("family", "zoo", "python", "inference", "onnx"))


def _output(s: dict) -> str:
    """The model artifact a stage made (its manifest entry records it)."""
    return next(iter(s.get("artifacts") or {"?": None}))


def _hop(s: dict) -> str:
    return f"{model_text(s['config']['model'])} → `{_output(s)}`"


def _tuned(m: dict, c: dict) -> str:
    if not c["epochs"]:
        return ", not fine-tuned"
    return f", fine-tuned {c['epochs']} epoch(s)" + (
        f" with KD from {m['teacher']}" if m.get("teacher") else " on labels"
    )


def _channel_prune_lines(name: str, s: dict) -> list[str]:
    m, c = s["metrics"], s["config"]
    ch = m["rule"]["channels"]
    how = (
        f"ratio {ch['ratio']:g}"
        if ch.get("ratio") is not None
        else "per-group ratios for target " + ", ".join(f"{k} {v:g}" for k, v in ch["target"].items())
    )
    lines = [
        f"{_hop(s)}: channels removed ({how}, "
        f"criterion {ch['criterion']}, round to {ch['round_to']}); "
        f"parameters {m['params_before']:,} → {m['params_after']:,}; "
        f"test accuracy {100 * m['test_acc_before']:.2f}% → {100 * m['test_acc_pruned']:.2f}% pruned → "
        f"{100 * m['test_acc_after']:.2f}%{_tuned(m, c)}.",
        "",
    ]
    sp = m.get("speed")
    if sp and "error" in sp:
        lines[-1:-1] = [f"Speed: not measured ({sp['error']})."]
    elif sp:
        lo, hi = sp["speedup_range"]
        lines[-1:-1] = [
            f"Speed ({sp['how']}): p50 {sp['p50_before_ms']:.3f} → {sp['p50_after_ms']:.3f} ms, "
            f"×{sp['speedup']:.2f} ({lo:.2f}–{hi:.2f} over {sp['rounds']} rounds)"
            + (" — **slower than the unpruned model in every round**; raise round_to (8 or 16)" if sp["slower"] else "")
            + f"; round to {ch['round_to']} from {ch.get('round_to_from', 'the recipe')}."
        ]
    sens = m.get("sensitivity")
    if sens:
        if sens["files"]:
            lines += [
                "Sensitivity (validation accuracy with one group cut alone; "
                f"baseline {100 * sens['baseline']['accuracy']:.2f}%): "
                + ", ".join(f"`{name}/{f}`" for f in sens["files"])
                + ".",
                "",
            ]
            ratios = sorted({r for g in sens["groups"] for r in g["accuracy"]}, key=float)
            rows = [
                [", ".join(g["group"]), str(g["channels"])]
                + [f"{100 * g['accuracy'][r]:.1f}" if r in g["accuracy"] else "" for r in ratios]
                for g in sens["groups"]
            ]
            lines += [md(("group", "channels", *[f"{float(r):g}" for r in ratios]), rows), ""]
        a = sens.get("allocation")
        if a:
            lines += [
                f"Chosen for the target: {', '.join(f'{k} {v:g}' for k, v in a['ratios'].items())} "
                f"({a['params']:,} params, {a['macs']:,} MACs"
                + (
                    f", measured p50 {a['latency']['pruned_ms']:.3f} vs {a['latency']['unpruned_ms']:.3f} ms"
                    if a.get("latency")
                    else ""
                )
                + f"; predicted loss {100 * a['predicted_loss']:.2f} pt from the groups' curves).",
                "",
            ]
    rows = [
        [
            ", ".join(g["group"]),
            ", ".join(g["tied"]) or "—",
            str(g["channels"]),
            str(g["kept"]) if "kept" in g else "—",
            g.get("skip", ""),
        ]
        for g in m["groups"]
    ]
    return lines + [md(("channels made by", "cut with them", "channels", "kept", "left alone because"), rows), ""]


def prune_section(stages: dict) -> list[str]:
    """The pruning section: each prune stage's channel, block or unstructured magnitude pruning."""
    out = []
    for name, s in stages.items():
        if s["type"] != "prune":
            continue
        m = s["metrics"]
        if not out:
            out = ["## Pruning", ""]
        if "groups" in m:
            out += _channel_prune_lines(name, s)
            continue
        if "removed" in m:
            out += _block_prune_lines(s)
            continue
        if not any(line.startswith("Unstructured magnitude pruning") for line in out):
            out += [
                "Unstructured magnitude pruning zeroes weights but keeps the architecture: the dense ONNX file has "
                "the same bytes and runs no faster on dense kernels; it only compresses better (deflated bytes).",
                "",
            ]
        out += _magnitude_prune_lines(s, stages)
    return out


def _block_prune_lines(s: dict) -> list[str]:
    """A block-pruning stage: the blocks it replaced by the identity, and each round's candidates."""
    m, c = s["metrics"], s["config"]
    measure = c["blocks"].get("measure", "accuracy")
    out = [
        f"{_hop(s)}: blocks replaced by the identity, chosen by "
        f"{'validation accuracy lost' if measure == 'accuracy' else 'relative change of the logits'} "
        f"when each is bypassed alone: {', '.join(m['removed'])}; "
        f"parameters {m['params_before']:,} → {m['params_after']:,}; test "
        f"accuracy {100 * m['test_acc_before']:.2f}% → {100 * m['test_acc_pruned']:.2f}% removed → "
        f"{100 * m['test_acc_after']:.2f}%{_tuned(m, c)}.",
        "",
    ]
    key = "drop" if measure == "accuracy" else "output_change"
    rows = [
        [
            str(i + 1),
            e["block"],
            f"{100 * e[key]:.2f}" if key == "drop" else f"{e[key]:.3f}",
            "removed" if e["block"] == r["removed"] else "",
        ]
        for i, r in enumerate(m["rounds"])
        for e in r["candidates"]
    ]
    return out + [md(("round", "block", "val acc lost (pt)" if key == "drop" else "logit change", ""), rows), ""]


def _magnitude_prune_lines(s: dict, stages: dict) -> list[str]:
    """An unstructured magnitude-pruning stage: its sparsity, the exported files' bytes, and per layer."""
    m, c = s["metrics"], s["config"]
    r = m["rule"]
    how = (
        f"threshold {r['threshold']:g}" if r["threshold"] is not None else f"sparsity {r['sparsity']:g} ({r['scope']})"
    ) + f", {r['schedule']}"
    tuned = _tuned(m, c)
    pruned = "" if m["test_acc_pruned"] is None or not c["epochs"] else f"{100 * m['test_acc_pruned']:.2f}% pruned → "
    out = [
        f"{_hop(s)} ({how}): {m['zeros']:,} of {m['weights']:,} "
        f"weights zero ({100 * m['sparsity']:.1f}%); test accuracy {100 * m['test_acc_before']:.2f}% → {pruned}"
        f"{100 * m['test_acc_after']:.2f}%{tuned}."
    ]
    onnx = {n: a["meta"] for st in stages.values() for n, a in st.get("artifacts", {}).items() if n.endswith(".onnx")}
    src, dst = (onnx.get(f"{c['model']}.onnx") if isinstance(c["model"], str) else None, onnx.get(f"{_output(s)}.onnx"))
    if src and dst and "deflated_bytes" in src and "deflated_bytes" in dst:
        out.append("")
        out.append(
            f"Exported: {src['bytes']:,} → {dst['bytes']:,} bytes dense; "
            f"deflated (zip) {src['deflated_bytes']:,} → "
            f"{dst['deflated_bytes']:,} bytes ({src['deflated_bytes'] / dst['deflated_bytes']:.1f}× smaller)."
        )
    return out + [
        "",
        md(
            ("layer", "weights", "zeros", "sparsity"),
            [[x["layer"], f"{x['weights']:,}", f"{x['zeros']:,}", f"{100 * x['sparsity']:.1f}%"] for x in m["layers"]],
        ),
        "",
    ]


def lowrank_section(stages: dict) -> list[str]:
    out = []
    for name, s in stages.items():
        if s["type"] != "lowrank":
            continue
        m, c = s["metrics"], s["config"]
        if not out:
            out = ["## Low-rank decomposition", ""]
        teacher = _tuned(m, c)
        out.append(
            f"{_hop(s)}: parameters {m['params_before']:,} → "
            f"{m['params_after']:,}; test accuracy {100 * m['test_acc_before']:.2f}% → "
            f"{100 * m['test_acc_factored']:.2f}% "
            f"factorised → {100 * m['test_acc_after']:.2f}%{teacher}."
        )
        out.append("")
        rows = []
        for r in m["layers"]:
            if "skip" in r:
                rows.append([r["layer"], "left alone", "—", "—", "—", r["skip"]])
                continue
            t = r.get("latency")
            rows.append(
                [
                    r["layer"],
                    r["method"],
                    "×".join(map(str, r["ranks"])),
                    f"{100 * r['energy_kept']:.1f}%",
                    f"{r['params_before']:,} → {r['params_after']:,} "
                    f"({r['params_before'] / r['params_after']:.1f}× fewer)",
                    f"{r['macs_before'] / r['macs_after']:.1f}× fewer MACs"
                    + (f"; measured {t['layer_ms']:.4f} → {t['chosen_ms']:.4f} ms (×{t['speedup']:.2f})" if t else ""),
                ]
            )
        out += [md(("layer", "method", "rank", "energy kept", "weights", "cost"), rows), ""]
        if any("latency" in r for r in m["layers"]):
            out += [
                "Ranks chosen by measured latency (`target: latency`): each layer and its candidate factorisations "
                "timed alone at the layer's input shape (onnxruntime fp32, batch 1, 1 thread, interleaved rounds); "
                "a layer whose factorisation is not faster (within `ratio` of its time, when given) is left alone.",
                "",
            ]
    return out
