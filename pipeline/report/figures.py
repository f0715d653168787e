"""The HTML report's figures, drawn with matplotlib (object API, Agg backend) from what the manifest
and the bench results hold, each returned as an inline SVG element (text kept as text, no fonts or
scripts referenced, ids stable from run to run). A figure whose data the run lacks returns None."""
from __future__ import annotations

import io
import math
import re

from edgepipe.pipeline.report.collect import BUDGETS

KINDS = (("integer", "#2b8a3e"), ("float compute", "#1c7ed6"), ("quantize/dequantize", "#e8590c"), ("other", "#adb5bd"))
W = 6.4  # inches: 640 px at 100%; the page lets a phone scroll a figure sideways rather than shrink its text
PALETTE = ("#1c7ed6", "#e8590c", "#2b8a3e", "#ae3ec9", "#f59f00", "#0ca678", "#e03131", "#5c940d", "#495057", "#d6336c")


def _figure(w: float, h: float):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "edgepipe", "font.size": 10,
                                "font.family": "sans-serif", "axes.spines.top": False, "axes.spines.right": False})
    return Figure(figsize=(w, h), dpi=100)


def _svg(fig, alt: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML prologue and DOCTYPE: the element is inlined in HTML
    svg = re.sub(r"<svg ", f'<svg role="img" aria-label="{_attr(alt)}" ', svg, count=1)
    return svg


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def _legend_below(ax, fig_h: float, ncol: int = 2, **kw) -> None:
    """A legend under the x label, whatever the figure's height (the offset is in axes units)."""
    off = 0.62 / max(fig_h - 0.9, 0.5)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -off), ncol=ncol, frameon=False, **kw)


def colours(models: list[dict]) -> dict[str, str]:
    return {m["name"]: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}


def tradeoff(models: list[dict], budget_ms: float | None, profile: str | None, last: str | None,
             last_label: str = "the run's last model") -> str | None:
    """Accuracy against p50 latency (a line to p90), marker area by ONNX bytes, the p90 budget."""
    from matplotlib.lines import Line2D

    pts = [m for m in models if m["bench"] and m["accuracy"] is not None]
    if not pts:
        return None
    col = colours(models)
    fig = _figure(W, 4.4)
    ax = fig.add_subplot()
    biggest = max(m["bytes"] or 1 for m in pts)
    handles = []
    for m in pts:
        lat = m["bench"]["latency"]
        acc = 100 * m["accuracy"]
        size = 40 + 900 * (m["bytes"] or 0) / biggest
        ax.plot([lat["p50_ms"], lat["p90_ms"]], [acc, acc], color=col[m["name"]], lw=1.5, alpha=0.7)
        ax.scatter([lat["p50_ms"]], [acc], s=size, color=col[m["name"]], alpha=0.55,
                   edgecolors="black" if m["name"] == last else col[m["name"]], linewidths=2.2 if m["name"] == last else 0.8, zorder=3)
        handles.append(Line2D([], [], marker="o", ls="", color=col[m["name"]], markersize=7,
                              label=f"{m['label']} ({_bytes(m['bytes'])})" + (f" — {last_label}" if m["name"] == last else "")))
    lo = min(m["bench"]["latency"]["p50_ms"] for m in pts)
    hi = max(m["bench"]["latency"]["p90_ms"] for m in pts)
    if budget_ms:
        ax.axvline(budget_ms, color="#c92a2a", ls="--", lw=1.2)
        ax.text(budget_ms, 0.02, f" p90 budget {budget_ms:g} ms\n ({profile})", color="#c92a2a", fontsize=8,
                transform=ax.get_xaxis_transform(), va="bottom")
        hi = max(hi, budget_ms)
    ax.set_xscale("log")
    ax.set_xlim(lo / 1.6, hi * 1.6)
    accs = [100 * m["accuracy"] for m in pts]
    pad = max(0.5, (max(accs) - min(accs)) * 0.25)
    ax.set_ylim(min(accs) - pad, min(100.0, max(accs) + pad))
    ax.set_xlabel("latency, ms (dot: p50, line to p90; batch 1; log scale)")
    ax.set_ylabel("test accuracy, %")
    ax.set_title("accuracy against latency (marker area: ONNX bytes)")
    ax.grid(alpha=0.25, which="both")
    _legend_below(ax, 4.4, ncol=1, handles=handles)
    return _svg(fig, "accuracy against p50 latency for every model of the run")


def _bytes(n: int | None) -> str:
    if n is None:
        return "? bytes"
    for unit, div in (("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n} B"


def hops(chain: list[dict]) -> str | None:
    """Bytes (and deflated), parameters, MACs, accuracy and p50 at each hop from the root model to
    the leaf, with the ratio to the root above each bar."""
    if len(chain) < 2:
        return None
    fig = _figure(W, 7.2)
    axes = fig.subplots(3, 2)
    names = [m["short"] for m in chain]
    for ax, (key, title) in zip(axes.flat, (("bytes", "ONNX bytes"), ("deflated_bytes", "ONNX bytes deflated (zlib)"),
                                             ("params", "parameters"), ("macs", "MACs per inference"),
                                             ("accuracy", "test accuracy, %"), ("p50_ms", "p50 latency, ms (batch 1)"))):
        vals = [m[key] for m in chain]
        if any(v is None for v in vals):
            ax.set_axis_off()
            ax.set_title(f"{title}: not recorded for every hop")
            continue
        shown = [100 * v for v in vals] if key == "accuracy" else vals
        bars = ax.bar(range(len(chain)), shown, color=[PALETTE[i % len(PALETTE)] for i in range(len(chain))], alpha=0.8)
        for i, (b, v) in enumerate(zip(bars, vals)):
            ratio = "" if i == 0 else (f"{100 * (v - vals[0]):+.2f} pt" if key == "accuracy" else
                                       f"×{v / vals[0]:.3g}" if v >= vals[0] or not v else f"1/{vals[0] / v:.3g}")
            text = f"{shown[i]:.2f}" if key == "accuracy" else _short(v)
            ax.text(b.get_x() + b.get_width() / 2, b.get_height(), text + (f"\n{ratio}" if ratio else ""), ha="center",
                    va="bottom", fontsize=8 if len(chain) <= 4 else 6.5)
        if key == "accuracy":
            ax.set_ylim(max(0.0, min(shown) - 5), 100)
        elif min(shown) > 0 and max(shown) / min(shown) > 20:  # a 100x chain: linear bars would hide the last hops
            ax.set_yscale("log")
            ax.set_ylim(min(shown) / 2, max(shown) * 8)
            title += " (log scale)"
        else:
            ax.set_ylim(0, max(shown) * 1.35)
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(len(chain)), names, rotation=20, ha="right", fontsize=8)
        ax.yaxis.set_major_formatter(_short_formatter())
    fig.suptitle("above each bar: its value and, from the second on, its ratio to the first\n"
                 "(1/N: N times smaller; accuracy: the change in points)",
                 fontsize=8.5)
    fig.tight_layout()
    return _svg(fig, "what each compression hop bought: " + " to ".join(names))


def _short(v: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}"


def _short_formatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: _short(v))


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
        ax.set_title(f"{m['label']}: p50 {lat['p50_ms']:.3g}, p90 {lat['p90_ms']:.3g}, p99 {lat['p99_ms']:.3g} ms, "
                     f"{lat['n']} runs" + (f", first {cold:.3g} ms" if cold else "") + (f"; {beyond} slower off the axis" if beyond else ""),
                     loc="left", fontsize=8.5)
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
    pts = [m for m in models if m["bench"] and m["bench"].get("explain") and sum(m["bench"]["explain"]["ms_by_kind"].values()) > 0]
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
        out.append({"budget": c["budget"], "label": BUDGETS.get(c["budget"], c["budget"]), "ratio": ratio,
                    "lo": lo, "hi": hi, "status": c["status"], "value": c["value"], "limit": c["limit"], "unit": c["unit"]})
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
            ax.barh(y, 100 * r["ratio"], height=step * 0.85, color=col[m["name"]], alpha=0.8,
                    label=m["label"] if i == order.index(next(x for x in order if x in by)) else None,
                    hatch="//" if r["status"] != "pass" else None)
            if r["hi"] > r["lo"]:
                ax.errorbar(100 * r["ratio"], y, xerr=[[100 * (r["ratio"] - r["lo"])], [100 * (r["hi"] - r["ratio"])]],
                            color="black", lw=0.8, capsize=2)
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
            ax.barh(i, e["net_mj_per_inference"], color=col[m["name"]], alpha=0.85,
                    label="above idle power" if i == 0 else None)
        if u:
            ax.errorbar(v, i, xerr=v * u, color="black", lw=0.8, capsize=3, label=f"±{100 * u:.0f}% (method's uncertainty)" if i == 0 else None)
        ax.text(v * (1 + u) * 1.02, i, f"{v:.3g} mJ ({e['method']})", va="center", fontsize=8)
    ax.set_yticks(range(len(pts)), [m["label"] for m in pts], fontsize=8)
    ax.invert_yaxis()
    top = max(m["bench"]["energy"]["mj_per_inference"] * (1 + (m["bench"]["energy"].get("uncertainty_rel") or 0)) for m in pts)
    ax.set_xlim(0, top * 1.45)
    ax.set_xlabel("mJ per inference (whole bar: total; dark part: above idle)")
    ax.set_title("energy per inference — method: " + ", ".join(methods))
    ax.grid(alpha=0.25, axis="x")
    _legend_below(ax, fig_h)
    return _svg(fig, "energy per inference per model")


def sensitivity(sens: dict, title: str) -> str | None:
    """Validation accuracy with one channel group cut alone, per share of its channels removed."""
    groups = sens.get("groups") or []
    if not groups:
        return None
    fig = _figure(W, 4.2)
    ax = fig.add_subplot()
    base = 100 * sens["baseline"]["accuracy"]
    for i, g in enumerate(groups):
        rs = sorted(g["accuracy"], key=float)
        label = ", ".join(g["group"][:2]) + (f" +{len(g['group']) - 2}" if len(g["group"]) > 2 else "")
        ax.plot([0.0] + [float(r) for r in rs], [base] + [100 * g["accuracy"][r] for r in rs], marker="o", markersize=3,
                color=PALETTE[i % len(PALETTE)], ls="-" if i < len(PALETTE) else "--", label=f"{label} ({g['channels']} ch)")
    ax.set_xlabel("share of the group's channels removed")
    ax.set_ylabel("validation accuracy, %")
    ax.set_title(title)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8, loc="lower left", ncol=2 if len(groups) > 8 else 1)
    return _svg(fig, title)


def candidates(table: list[dict], budget_ms: float | None) -> str | None:
    """The deploy stage's candidates: accuracy against median p50 (a line over the rounds' range),
    one marker shape per backend, the chosen one outlined, the losers faded."""
    from matplotlib.lines import Line2D

    pts = [c for c in table if c.get("accuracy") is not None]
    if not pts:
        return None
    names = list(dict.fromkeys(c["name"] for c in pts))
    col = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    shape = {"onnxruntime": "o", "openvino": "s"}
    fig = _figure(W, 4.4)
    ax = fig.add_subplot()
    for c in pts:
        lo, hi = c["p50_range_ms"]
        acc = 100 * c["accuracy"]
        ax.plot([lo, hi], [acc, acc], color=col[c["name"]], lw=1.2, alpha=0.6)
        ax.scatter([c["p50_ms"]], [acc], marker=shape.get(c["backend"], "^"), s=140 if c["chosen"] else 60,
                   color=col[c["name"]], alpha=1.0 if c["eligible"] else 0.35,
                   edgecolors="black" if c["chosen"] else "none", linewidths=2.2, zorder=3)
    if budget_ms:
        ax.axvline(budget_ms, color="#c92a2a", ls="--", lw=1.2)
    ax.set_xscale("log")
    ax.set_xlabel("median p50 over the rounds, ms (line: the rounds' range; log scale)")
    ax.set_ylabel("test accuracy, %")
    ax.set_title("deployment candidates: model × backend × precision")
    ax.grid(alpha=0.25, which="both")
    handles = [Line2D([], [], marker="o", ls="", color=col[n], label=n) for n in names] + \
        [Line2D([], [], marker=m, ls="", color="#495057", label=b) for b, m in shape.items() if any(c["backend"] == b for c in pts)] + \
        [Line2D([], [], marker="o", ls="", markerfacecolor="white", markeredgecolor="black", markeredgewidth=2, label="chosen")]
    _legend_below(ax, 4.4, ncol=3, handles=handles)
    return _svg(fig, "deployment candidates: accuracy against latency")
