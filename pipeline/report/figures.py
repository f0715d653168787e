"""The HTML report's figures, drawn with matplotlib (object API, Agg backend) from what the manifest
and the bench results hold, each returned as an inline SVG element (text kept as text, no fonts or
scripts referenced, ids stable from run to run). A figure whose data the run lacks returns None.
This module holds the drawing basics and the figures comparing models (trade-off, hops, pruning
sensitivity, deployment candidates); bench_figures.py the figures of each model's bench results."""

from __future__ import annotations

import io
import re

W = 6.4  # inches: 640 px at 100%; the page lets a phone scroll a figure sideways rather than shrink its text
PALETTE = ("#1c7ed6", "#e8590c", "#2b8a3e", "#ae3ec9", "#f59f00", "#0ca678", "#e03131", "#5c940d", "#495057", "#d6336c")


def _figure(w: float, h: float):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    matplotlib.rcParams.update(
        {
            "svg.fonttype": "none",
            "svg.hashsalt": "edgepipe",
            "font.size": 10,
            "font.family": "sans-serif",
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )
    return Figure(figsize=(w, h), dpi=100)


def _svg(fig, alt: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]  # drop the XML prologue and DOCTYPE: the element is inlined in HTML
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


def tradeoff(
    models: list[dict],
    budget_ms: float | None,
    profile: str | None,
    last: str | None,
    last_label: str = "the run's last model",
) -> str | None:
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
        ax.scatter(
            [lat["p50_ms"]],
            [acc],
            s=size,
            color=col[m["name"]],
            alpha=0.55,
            edgecolors="black" if m["name"] == last else col[m["name"]],
            linewidths=2.2 if m["name"] == last else 0.8,
            zorder=3,
        )
        handles.append(
            Line2D(
                [],
                [],
                marker="o",
                ls="",
                color=col[m["name"]],
                markersize=7,
                label=f"{m['label']} ({_bytes(m['bytes'])})" + (f" — {last_label}" if m["name"] == last else ""),
            )
        )
    lo = min(m["bench"]["latency"]["p50_ms"] for m in pts)
    hi = max(m["bench"]["latency"]["p90_ms"] for m in pts)
    if budget_ms:
        ax.axvline(budget_ms, color="#c92a2a", ls="--", lw=1.2)
        ax.text(
            budget_ms,
            0.02,
            f" p90 budget {budget_ms:g} ms\n ({profile})",
            color="#c92a2a",
            fontsize=8,
            transform=ax.get_xaxis_transform(),
            va="bottom",
        )
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
    for ax, (key, title) in zip(
        axes.flat,
        (
            ("bytes", "ONNX bytes"),
            ("deflated_bytes", "ONNX bytes deflated (zlib)"),
            ("params", "parameters"),
            ("macs", "MACs per inference"),
            ("accuracy", "test accuracy, %"),
            ("p50_ms", "p50 latency, ms (batch 1)"),
        ),
    ):
        vals = [m[key] for m in chain]
        if any(v is None for v in vals):
            ax.set_axis_off()
            ax.set_title(f"{title}: not recorded for every hop")
            continue
        shown = [100 * v for v in vals] if key == "accuracy" else vals
        bars = ax.bar(range(len(chain)), shown, color=[PALETTE[i % len(PALETTE)] for i in range(len(chain))], alpha=0.8)
        for i, (b, v) in enumerate(zip(bars, vals)):
            ratio = (
                ""
                if i == 0
                else (
                    f"{100 * (v - vals[0]):+.2f} pt"
                    if key == "accuracy"
                    else f"×{v / vals[0]:.3g}"
                    if v >= vals[0] or not v
                    else f"1/{vals[0] / v:.3g}"
                )
            )
            text = f"{shown[i]:.2f}" if key == "accuracy" else _short(v)
            ax.text(
                b.get_x() + b.get_width() / 2,
                b.get_height(),
                text + (f"\n{ratio}" if ratio else ""),
                ha="center",
                va="bottom",
                fontsize=8 if len(chain) <= 4 else 6.5,
            )
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
    fig.suptitle(
        "above each bar: its value and, from the second on, its ratio to the first\n"
        "(1/N: N times smaller; accuracy: the change in points)",
        fontsize=8.5,
    )
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
        ax.plot(
            [0.0] + [float(r) for r in rs],
            [base] + [100 * g["accuracy"][r] for r in rs],
            marker="o",
            markersize=3,
            color=PALETTE[i % len(PALETTE)],
            ls="-" if i < len(PALETTE) else "--",
            label=f"{label} ({g['channels']} ch)",
        )
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
    ylabel = "test accuracy, %"
    if not pts and any(c.get("task") for c in table):  # no labels: the task's score against the reference
        pts = [c | {"accuracy": c["task"]["vs_reference"]} for c in table if c.get("task")]
        ylabel = f"{table[0]['task']['metric']} against the reference's predictions, %"
    elif pts and pts[0].get("task"):
        ylabel = f"{pts[0]['task']['metric']}, %"
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
        ax.scatter(
            [c["p50_ms"]],
            [acc],
            marker=shape.get(c["backend"], "^"),
            s=140 if c["chosen"] else 60,
            color=col[c["name"]],
            alpha=1.0 if c["eligible"] else 0.35,
            edgecolors="black" if c["chosen"] else "none",
            linewidths=2.2,
            zorder=3,
        )
    if budget_ms:
        ax.axvline(budget_ms, color="#c92a2a", ls="--", lw=1.2)
    ax.set_xscale("log")
    ax.set_xlabel("median p50 over the rounds, ms (line: the rounds' range; log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title("deployment candidates: model × backend × precision")
    ax.grid(alpha=0.25, which="both")
    handles = (
        [Line2D([], [], marker="o", ls="", color=col[n], label=n) for n in names]
        + [
            Line2D([], [], marker=m, ls="", color="#495057", label=b)
            for b, m in shape.items()
            if any(c["backend"] == b for c in pts)
        ]
        + [
            Line2D(
                [],
                [],
                marker="o",
                ls="",
                markerfacecolor="white",
                markeredgecolor="black",
                markeredgewidth=2,
                label="chosen",
            )
        ]
    )
    _legend_below(ax, 4.4, ncol=3, handles=handles)
    return _svg(fig, "deployment candidates: accuracy against latency")
