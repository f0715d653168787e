"""Judge a benchmark result against a device profile's budgets, with margins.

Each budget gets pass / fail / marginal / not measured. "marginal" means the reading passes but
the budget lies inside the reading's stated uncertainty (an energy estimate is ±50%), so it
cannot be promised. The overall verdict is fail if any check fails, else incomplete if any
budget was not measured, else marginal if any check is marginal, else pass.
"""

from __future__ import annotations


def _check(
    name: str, value, budget, unit: str, uncertainty: float = 0.0, where: str = "", at_least: bool = False
) -> dict | None:
    """A budget is an upper bound, or with `at_least` a lower one (frames per second)."""
    if budget is None:
        return None
    c = {"budget": name, "value": value, "limit": budget, "unit": unit, "where": where}
    if value is None:
        return c | {"status": "not measured", "margin": None, "margin_pct": None}
    sign = -1 if at_least else 1
    margin = sign * (budget - value)
    if margin < 0:
        status = "fail"
    elif sign * (value * (1 + sign * uncertainty) - budget) > 0:
        status = "marginal"
    else:
        status = "pass"
    return c | {"status": status, "margin": margin, "margin_pct": 100.0 * margin / budget}


def _overall(profile: dict, checks: list) -> dict:
    checks = [c for c in checks if c is not None]
    statuses = {c["status"] for c in checks}
    overall = (
        "fail"
        if "fail" in statuses
        else "incomplete"
        if "not measured" in statuses
        else "marginal"
        if "marginal" in statuses
        else "pass"
        if checks
        else "no budgets"
    )
    return {"profile": profile.get("name"), "overall": overall, "checks": checks}


def fmt_value(v: float, unit: str) -> str:
    return f"{v:,.0f} {unit}" if unit == "bytes" else f"{v:.4g} {unit}"


def judge(result: dict, profile: dict) -> dict:
    b = profile.get("budgets") or {}
    runs = sorted(result.get("runs", []), key=lambda r: r["batch"])
    one = next((r for r in runs if r["batch"] == 1), None)
    energy = (result.get("energy") or {}).get("primary")
    checks = [
        _check(
            "latency_p90_ms",
            one["latency"]["p90_ms"] if one else None,
            b.get("latency_p90_ms"),
            "ms",
            where="p90 at batch 1" if one else "no batch-1 run",
        ),
        _check(
            "peak_rss_mb",
            (result.get("memory") or {}).get("peak_rss_mb"),
            b.get("peak_rss_mb"),
            "MB",
            where="peak RSS of the runner process",
        ),
        _check("model_bytes", result.get("model_bytes"), b.get("model_bytes"), "bytes", where="ONNX file on disk"),
        _check(
            "energy_mj_per_inference",
            energy["mj_per_inference"] if energy else None,
            b.get("energy_mj_per_inference"),
            "mJ",
            uncertainty=energy["uncertainty_rel"] if energy else 0.0,
            where=f"{energy['method']}, batch {energy.get('batch', '?')}" if energy else "energy not measured",
        ),
    ]
    return _overall(profile, checks)


def judge_stream(result: dict, profile: dict) -> dict:
    """The camera mode against the profile: the fps budget by the frames kept up with, memory and
    the file. On the camera's clock (--fps F) the sustained rate is F × the share of frames not
    dropped, exact counts; a clock below the budget cannot show it is met. As fast as it goes, it
    is the throughput, marginal when the p90 frame time would not keep pace."""
    b = profile.get("budgets") or {}
    fps, asked = result.get("sustained_fps"), result.get("fps_asked")
    if asked and b.get("fps") and asked < b["fps"]:
        fps_check = _check(
            "fps",
            None,
            b["fps"],
            "fps",
            where=f"camera clock {asked:g} fps is below the budget; run with --fps {b['fps']:g} to judge it",
        )
    elif asked:
        fps_check = _check(
            "fps",
            fps,
            b.get("fps"),
            "fps",
            where=f"{result['frames_dropped']} of "
            f"{result['frames_dropped'] + result['frames_processed']} frames dropped at {asked:g} fps",
            at_least=True,
        )
    else:
        p90 = result["latency"]["p90_ms"]
        u = max(1 - 1e3 / p90 / fps, 0.0) if fps and p90 else 0.0
        fps_check = _check(
            "fps",
            fps,
            b.get("fps"),
            "fps",
            uncertainty=u,
            at_least=True,
            where="throughput as fast as it goes (p90 frame time: " + (f"{1e3 / p90:.4g} fps)" if p90 else "?)"),
        )
    return _overall(
        profile,
        [
            fps_check,
            _check(
                "peak_rss_mb",
                (result.get("memory") or {}).get("peak_rss_mb"),
                b.get("peak_rss_mb"),
                "MB",
                where="peak RSS of the runner process",
            ),
            _check("model_bytes", result.get("model_bytes"), b.get("model_bytes"), "bytes", where="ONNX file on disk"),
        ],
    )


def verdict_lines(v: dict) -> list[str]:
    out = [f"verdict    {v['overall'].upper()} against profile '{v['profile']}'"]
    for c in v["checks"]:
        if c["value"] is None:
            out.append(f"  {c['budget']:<24} not measured ({c['where']}); budget {fmt_value(c['limit'], c['unit'])}")
        else:
            out.append(
                f"  {c['budget']:<24} {c['status']:<8} {fmt_value(c['value'], c['unit'])} vs "
                f"{fmt_value(c['limit'], c['unit'])} (margin {c['margin_pct']:+.0f}%, {c['where']})"
            )
    return out
