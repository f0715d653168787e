"""report.html: the markdown report's sections with the figures a user decides from between them,
laid out by a Jinja2 template into one self-contained file (inline SVG, inline CSS, no script, no
request to anywhere), readable from a phone's width up."""

from __future__ import annotations

from pathlib import Path

from edgepipe.pipeline.report import bench_figures, collect, figures
from edgepipe.pipeline.report.tables import sections

TEMPLATES = Path(__file__).with_name("templates")


def _markdown():
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table")  # html off: text from the run is escaped


def _profile_budget(models: list[dict]) -> tuple[float | None, str | None]:
    for m in models:
        v = (m["bench"] or {}).get("verdict")
        for c in (v or {}).get("checks", []):
            if c["budget"] == "latency_p90_ms" and c["limit"]:
                return c["limit"], v["profile"]
    return None, None


def figure_sections(manifest: dict) -> dict[str, list[dict]]:
    """{report section key: [{title, caption, svg}]} for every figure whose data this run holds."""
    models = collect.onnx_models(manifest)
    budget_ms, profile = _profile_budget(models)
    out: dict[str, list[dict]] = {}

    def add(key, title, caption, svg):
        if svg:
            out.setdefault(key, []).append({"title": title, "caption": caption, "svg": svg})

    deploy = next((s for s in manifest["stages"].values() if s["type"] in ("deploy", "optimize")), None)
    last = deploy["metrics"]["chosen"]["name"] if deploy else collect.last_model(models)
    add(
        "models",
        "Trade-off",
        "Test accuracy (onnxruntime, the exported file) against latency at batch 1; marker area is the "
        "ONNX file's size. The outlined marker is "
        + ("the deployment's choice." if deploy else "the run's last model (what the pipeline ends with)."),
        figures.tradeoff(
            models, budget_ms, profile, last, "the deployment's choice" if deploy else "the run's last model"
        ),
    )
    if deploy:
        add(
            "deployment",
            "Deployment candidates",
            "Every model × backend × precision the deploy stage measured, side by side in "
            "one process; faded markers lost (on accuracy or a budget, see the table), the outlined one was chosen.",
            figures.candidates(deploy["metrics"]["candidates"], budget_ms),
        )
    for chain in collect.model_chains(manifest):
        add(
            "hops",
            "What each hop bought: " + " → ".join(m["short"] for m in chain),
            "One bar per model on the way from the first to the last, each made from the one before it.",
            figures.hops(chain),
        )
    add(
        "latency",
        "Latency distribution",
        "Every timed inference of the runner (a histogram in 2% steps), one row per model; "
        "the triangle is the session's first inference (cold start).",
        bench_figures.latency_distribution(models),
    )
    add(
        "time",
        "Where the time goes",
        "Each model's p50 latency split by the share of kernel time each kind of op took "
        "under onnxruntime's profiler, on the graph as it runs (after its fusions). "
        "A quantized model with a large orange "
        "(quantize/dequantize) or blue (float compute) share pays for conversions its integer kernels do not win back.",
        bench_figures.time_by_kind(models),
    )
    add(
        "verdicts",
        "Share of each budget used",
        "Each budget of the device profile as the share used (100% = the limit). Latency's whisker is "
        "the 95% interval of this run's p90 (it does not include drift between runs); energy's is the method's stated "
        "uncertainty; memory and bytes are single readings.",
        bench_figures.budgets(models),
    )
    add(
        "verdicts",
        "Energy",
        "Millijoules per inference by the method named; the dark part is the energy above the idle "
        "power, the whisker the method's uncertainty.",
        bench_figures.energy(models),
    )
    for name, s in manifest["stages"].items():
        sens = s["metrics"].get("sensitivity") if s["type"] == "prune" else None
        if sens:
            add(
                "pruning",
                f"Pruning sensitivity ({name})",
                "Validation accuracy with one channel group cut alone, per share of its channels removed.",
                figures.sensitivity(sens, f"pruning sensitivity per channel group ({name})"),
            )
    return out


def render(manifest: dict, run_dir: Path, devices: list[dict] | None = None) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
    from markupsafe import Markup

    mdit = _markdown()
    figs = figure_sections(manifest)

    def part(key, text=""):
        return {
            "key": key,
            "html": Markup(mdit.render(text)) if text else "",
            "figures": [dict(f, svg=Markup(f["svg"])) for f in figs.pop(key, [])],
        }

    parts, title = [], ""
    texts = sections(manifest, run_dir, devices)
    keys = {k for k, _ in texts}
    for key, text in texts:
        if key == "title":
            title = text.removeprefix("# ").strip()
            continue
        parts.append(part(key, text))
        # the model table, then what each hop bought (its table where report.md has one), then the
        # latency distributions and the time by op kind
        if key == "hops" or (key == "models" and "hops" not in keys):
            parts += [part(k) for k in ("hops", "latency", "time") if k in figs]
    parts += [part(k) for k in list(figs)]  # figures of a section the markdown lacks
    env = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]), undefined=StrictUndefined
    )
    return env.get_template("report.html.j2").render(title=title, parts=parts, version=manifest.get("edgepipe") or "")
