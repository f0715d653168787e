"""The two extension points of a run: stages (one frozen config dataclass + one handler each)
and model transforms (replayed when an artifact is loaded).

The core never imports a stage or a technique. Each one registers itself with the decorators
below when its module is imported, and the modules are named in `pyproject.toml` as entry
points (groups `edgepipe.stages` and `edgepipe.transforms`), which are imported on first use.
A plugin package adds a stage or a transform the same way. Adding a stage = a dataclass with
`inputs()`/`outputs()` + a handler registered here + one entry point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

STAGES: dict[str, "StageDef"] = {}
TRANSFORMS: dict[str, Callable] = {}
STAGE_GROUP = "edgepipe.stages"
TRANSFORM_GROUP = "edgepipe.transforms"
_loaded: set[str] = set()


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


def register_transform(name: str):
    """Register fn(layer, **params) -> layer, replayed when an artifact is loaded."""

    def deco(fn):
        TRANSFORMS[name] = fn
        return fn

    return deco


def _load_group(group: str, table: dict) -> None:
    """Import every module the installed entry points of `group` name; each must register its name."""
    if group in _loaded:
        return
    from importlib.metadata import entry_points

    eps = entry_points(group=group)
    if not eps:
        raise RuntimeError(
            f"no '{group}' entry points are installed; install edgepipe (pip install -e .) "
            "rather than running it from a source folder"
        )
    for ep in eps:
        ep.load()
        if ep.name not in table:
            raise RuntimeError(f"entry point {group}:{ep.name} ({ep.value}) was imported but registered no '{ep.name}'")
    _loaded.add(group)


def stages() -> dict[str, StageDef]:
    """Every stage: the installed ones, plus any registered in this process."""
    _load_group(STAGE_GROUP, STAGES)
    return STAGES


def transforms() -> dict[str, Callable]:
    """Every model transform: the installed ones, plus any registered in this process."""
    _load_group(TRANSFORM_GROUP, TRANSFORMS)
    return TRANSFORMS
