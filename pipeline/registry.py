"""Stage registry: one frozen config dataclass + one handler per technique.

Adding a stage = a dataclass with `inputs()`/`outputs()` + a handler registered here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

STAGES: dict[str, "StageDef"] = {}


@dataclass(frozen=True)
class StageDef:
    kind: str
    config_cls: type
    handler: Callable
    summary: str


def register_stage(kind: str, config_cls: type):
    def deco(fn):
        if kind in STAGES:
            raise RuntimeError(f"stage '{kind}' registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        STAGES[kind] = StageDef(kind, config_cls, fn, doc[0] if doc else "")
        return fn

    return deco


def load_builtin_stages() -> dict[str, StageDef]:
    # Importing the modules registers them; cheap (no paddle import at module level).
    from edgepipe.pipeline.stages import bench, distill, export, lowrank, prune, qat, quantize, report, train  # noqa: F401

    return STAGES
