"""report: report.md and report.html in the run directory (the summary table is also printed by the CLI)."""

from __future__ import annotations

from dataclasses import dataclass

from edgepipe.devices.base.atomic import write_text_atomic
from edgepipe.pipeline.core.registry import register_stage
from edgepipe.pipeline.core.run import StageResult


@dataclass(frozen=True)
class ReportConfig:
    html: bool = True  # report.html beside report.md: the figures, one self-contained file

    uses_data = False
    uses_manifest = True  # the table reads earlier stages' metrics

    def inputs(self, available) -> dict[str, str]:
        return {f"artifacts[{i}]": n for i, n in enumerate(available)}

    def outputs(self) -> dict[str, str]:
        return {"report": "file", **({"report_html": "file"} if self.html else {})}


@register_stage("report", ReportConfig)
def run_report(cfg: ReportConfig, ctx) -> StageResult:
    """Write report.md (one row per model with accuracy, size, cost, latency, memory; every
    section) and report.html (the same with its figures)."""
    from edgepipe.pipeline.report.tables import markdown, table_text

    write_text_atomic(ctx.out("report.md"), markdown(ctx.manifest, ctx.run_dir))
    artifacts = [ctx.artifact("report", "file", "report.md")]
    if cfg.html:
        from edgepipe.pipeline.report.html import render

        write_text_atomic(ctx.out("report.html"), render(ctx.manifest, ctx.run_dir))
        artifacts.append(ctx.artifact("report_html", "file", "report.html"))
    return StageResult(metrics={"table": table_text(ctx.manifest).splitlines()}, artifacts=artifacts)
