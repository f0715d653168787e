"""report: report.md in the run directory (the summary table is also printed by the CLI)."""
from __future__ import annotations

from dataclasses import dataclass

from edgepipe.pipeline.core.registry import register_stage
from edgepipe.pipeline.core.run import StageResult
from edgepipe.runtime.atomic import write_text_atomic


@dataclass(frozen=True)
class ReportConfig:
    uses_data = False
    uses_manifest = True  # the table reads earlier stages' metrics

    def inputs(self, available) -> dict[str, str]:
        return {f"artifacts[{i}]": n for i, n in enumerate(available)}

    def outputs(self) -> dict[str, str]:
        return {"report": "file"}


@register_stage("report", ReportConfig)
def run_report(cfg: ReportConfig, ctx) -> StageResult:
    """Write report.md: one row per model with accuracy, size, cost, latency, memory."""
    from edgepipe.pipeline.report.tables import markdown, table_text

    write_text_atomic(ctx.out("report.md"), markdown(ctx.manifest, ctx.run_dir))
    return StageResult(metrics={"table": table_text(ctx.manifest).splitlines()},
                       artifacts=[ctx.artifact("report", "file", "report.md")])
