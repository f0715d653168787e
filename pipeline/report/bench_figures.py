"""The HTML report's figures of the bench stage's results per model: the latency distribution, the
time by op kind, the share of each budget used and the energy per inference — drawn with the shared
basics of figures.py, each returned as an inline SVG element, or None when the run lacks its data."""

from __future__ import annotations

import math

from edgepipe.pipeline.report.collect import BUDGETS
from edgepipe.pipeline.report.figures import W, _figure, _legend_below, _svg, colours

KINDS = (("integer", "#2b8a3e"), ("float compute", "#1c7ed6"), ("quantize/dequantize", "#e8590c"), ("other", "#adb5bd"))


def latency_distribution(models: list[dict]) -> str | None:
    """Each model's per-iteration times (the runner's fine histogram), p50/p90/p99 marked, and the
    session's first (cold) inference. The axis ends past the slowest 0.1% (their count is printed)."""
    pts = [m for m in models if m["bench"] and (m["bench"].get("runs") or [{}])[0].get("histogram")]
    if not pts:
        return None
    col = colours(models)
    fig = _figure(W, 0.6 + 1.25 * len(pts))
    axes = fig.subplots(len(pts), 1, sharex=True, squeeze=False)[:, 0]
    lo, hi = math.inf, 0.0
    for m in pts:
        h = m["bench"]["runs"][0]["histogram"]
        total, acc = sum(h["counts"]) or 1, 0
        for edge, c in zip(h["edges_ms"][1:], h["counts"]):
            acc += c
            if acc >= 0.999 * total:
                break
        cold = (m["bench"].get("cold_start") or {}).get("first_inference_ms") or 0.0
        lo, hi = min(lo, h["edges_ms"][0]), max(hi, edge, cold)
    for ax, m in zip(axes, pts):
        run = m["bench"]["runs"][0]
        h, lat = run["histogram"], run["latency"]
        edges, counts = h["edges_ms"], h["counts"]
        total = sum(counts) or 1
        share = [100 * c / total for c in counts]
        ax.stairs(share, edges, fill=True, color=col[m["name"]], alpha=0.45)
        ax.stairs(share, edges, color=col[m["name"]], lw=0.8)
        for q, ls in (("p50", "-"), ("p90", "--"), ("p99", ":")):
            ax.axvline(lat[f"{q}_ms"], color="black", ls=ls, lw=0.9)
        cold = (m["bench"].get("cold_start") or {}).get("first_inference_ms")
        top = max(share) or 1
        if cold:
            ax.plot([cold], [top * 0.6], marker="v", color="#c92a2a", markersize=6)
        beyond = sum(c for e, c in zip(edges[:-1], counts) if e > hi * 1.15)
        ax.set_ylim(0, top * 1.15)
        ax.set_title(
            f"{m['label']}: p50 {lat['p50_ms']:.3g}, p90 {lat['p90_ms']:.3g}, p99 {lat['p99_ms']:.3g} ms, "
            f"{lat['n']} runs"
            + (f", first {cold:.3g} ms" if cold else "")
            + (f"; {beyond} slower off the axis" if beyond else ""),
            loc="left",
            fontsize=8.5,
        )
        ax.set_ylabel("% runs", fontsize=8)
        ax.tick_params(labelsize=8)
    axes[0].set_xscale("log")
    axes[0].set_xlim(lo / 1.1, hi * 1.15)
    axes[-1].set_xlabel("ms per inference (log); p50 solid, p90 dashed, p99 dotted; ▼ first inference")
    fig.tight_layout(h_pad=0.4)
    return _svg(fig, "latency distribution per model")


def time_by_kind(models: list[dict]) -> str | None:
    """Each model's benchmark p50, split by the share of kernel time each op kind took under
    onnxruntime's profiler (the profiler's own overhead makes its absolute times longer, so only
    its shares are used)."""
    pts = [
        m
        for m in models
        if m["bench"] and m["bench"].get("explain") and sum(m["bench"]["explain"]["ms_by_kind"].values()) > 0
    ]
    if not pts:
        return None
    fig = _figure(W, 1.4 + 0.45 * len(pts))
    ax = fig.add_subplot()
    labelled = set()
    for i, m in enumerate(pts):
        by = m["bench"]["explain"]["ms_by_kind"]
        total, p50 = sum(by.values()), 1e3 * m["bench"]["latency"]["p50_ms"]
        left = 0.0
        for kind, colour in KINDS:
            v = p50 * by.get(kind, 0.0) / total
            if v > 0:
                ax.barh(i, v, left=left, color=colour, label=None if kind in labelled else kind)
                labelled.add(kind)
                left += v
        ax.text(left, i, f" {p50:.0f} µs", va="center", fontsize=8)
    ax.set_yticks(range(len(pts)), [m["label"] for m in pts], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(1e3 * m["bench"]["latency"]["p50_ms"] for m in pts) * 1.2)
    ax.set_xlabel("µs per inference (benchmark p50), split by op kind's share of kernel time")
    ax.grid(alpha=0.25, axis="x")
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, frameon=False)
    return _svg(fig, "time per inference by op kind per model")


def budget_rows(m: dict) -> list[dict]:
    """One row per budget of the model's verdict: used/limit with its uncertainty as (low, high) ratios.

    Latency: the 95% interval of the p90 from this run's samples; energy: the method's stated
    relative uncertainty; memory and bytes are single exact readings."""
    b = m["bench"]
    out = []
    for c in (b.get("verdict") or {}).get("checks", []):
        if c["value"] is None or not c["limit"]:
            continue
        ratio = c["value"] / c["limit"]
        lo = hi = ratio
        if c["budget"] == "latency_p90_ms":
            ci = ((b.get("runs") or [{}])[0].get("latency_ci95_ms") or {}).get("p90")
            if ci:
                lo, hi = ci[0] / c["limit"], ci[1] / c["limit"]
        elif c["budget"] == "energy_mj_per_inference" and b.get("energy"):
            u = b["energy"].get("uncertainty_rel") or 0.0
            lo, hi = ratio * (1 - u), ratio * (1 + u)
        out.append(
            {
                "budget": c["budget"],
                "label": BUDGETS.get(c["budget"], c["budget"]),
                "ratio": ratio,
                "lo": lo,
                "hi": hi,
                "status": c["status"],
                "value": c["value"],
                "limit": c["limit"],
                "unit": c["unit"],
            }
        )
    return out


def budgets(models: list[dict]) -> str | None:
    """Used / budget for each budget and model (log scale, 100% = the limit), uncertainty as whiskers."""
    pts = [(m, budget_rows(m)) for m in models if m["bench"]]
    pts = [(m, rows) for m, rows in pts if rows]
    if not pts:
        return None
    col = colours(models)
    order = [k for k in BUDGETS if any(r["budget"] == k for _, rows in pts for r in rows)]
    fig_h = 0.9 + 0.22 * len(order) * len(pts) + 0.25 * len(order)
    fig = _figure(W, fig_h)
    ax = fig.add_subplot()
    step = 1.0 / (len(pts) + 1)
    for j, (m, rows) in enumerate(pts):
        by = {r["budget"]: r for r in rows}
        for i, k in enumerate(order):
            r = by.get(k)
            if r is None:
                continue
            y = i + j * step
            ax.barh(
                y,
                100 * r["ratio"],
                height=step * 0.85,
                color=col[m["name"]],
                alpha=0.8,
                label=m["label"] if i == order.index(next(x for x in order if x in by)) else None,
                hatch="//" if r["status"] != "pass" else None,
            )
            if r["hi"] > r["lo"]:
                ax.errorbar(
                    100 * r["ratio"],
                    y,
                    xerr=[[100 * (r["ratio"] - r["lo"])], [100 * (r["hi"] - r["ratio"])]],
                    color="black",
                    lw=0.8,
                    capsize=2,
                )
    ax.axvline(100, color="#c92a2a", ls="--", lw=1.2)
    ax.set_xscale("log")
    ratios = [100 * r["ratio"] for _, rows in pts for r in rows]
    ax.set_xlim(max(min(ratios) / 3, 1e-4), max(max(ratios), 100) * 2)
    ax.set_yticks([i + (len(pts) - 1) * step / 2 for i in range(len(order))], [BUDGETS[k] for k in order])
    ax.invert_yaxis()
    ax.set_xlabel("% of the profile's budget (log; dashed: the limit; hatched: over it)")
    ax.grid(alpha=0.25, axis="x", which="both")
    _legend_below(ax, fig_h)
    return _svg(fig, "share of each budget used by each model")


def energy(models: list[dict]) -> str | None:
    """mJ per inference with its uncertainty band; the part above the idle power hatched apart."""
    pts = [m for m in models if m["bench"] and m["bench"].get("energy")]
    if not pts:
        return None
    col = colours(models)
    fig_h = 0.9 + 0.42 * len(pts)
    fig = _figure(W, fig_h)
    ax = fig.add_subplot()
    methods = sorted({m["bench"]["energy"]["method"] for m in pts})
    for i, m in enumerate(pts):
        e = m["bench"]["energy"]
        v, u = e["mj_per_inference"], e.get("uncertainty_rel") or 0.0
        ax.barh(i, v, color=col[m["name"]], alpha=0.35)
        if e.get("net_mj_per_inference") is not None:
            ax.barh(
                i,
                e["net_mj_per_inference"],
                color=col[m["name"]],
                alpha=0.85,
                label="above idle power" if i == 0 else None,
            )
        if u:
            ax.errorbar(
                v,
                i,
                xerr=v * u,
                color="black",
                lw=0.8,
                capsize=3,
                label=f"±{100 * u:.0f}% (method's uncertainty)" if i == 0 else None,
            )
        ax.text(v * (1 + u) * 1.02, i, f"{v:.3g} mJ ({e['method']})", va="center", fontsize=8)
    ax.set_yticks(range(len(pts)), [m["label"] for m in pts], fontsize=8)
    ax.invert_yaxis()
    top = max(
        m["bench"]["energy"]["mj_per_inference"] * (1 + (m["bench"]["energy"].get("uncertainty_rel") or 0)) for m in pts
    )
    ax.set_xlim(0, top * 1.45)
    ax.set_xlabel("mJ per inference (whole bar: total; dark part: above idle)")
    ax.set_title("energy per inference — method: " + ", ".join(methods))
    ax.grid(alpha=0.25, axis="x")
    _legend_below(ax, fig_h)
    return _svg(fig, "energy per inference per model")
