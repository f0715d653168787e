"""Run a recipe in `runs/<name>/`: one folder per stage plus `manifest.json`.

Crash safety: a stage writes into `.<stage>.partial-<pid>/`; only when it finishes is that
folder swapped in and the manifest (written atomically) updated. A killed run leaves at
most a partial folder, which the next run deletes; the stage is simply redone.
Reuse: a stage is skipped when its config, the hashes of its inputs, and the hashes of its
recorded outputs are all unchanged. The data a stage trains on comes from the `load_data`
function the caller passes (the CLI passes edgepipe.pipeline.data.load.load_dataset).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from edgepipe.devices import EdgepipeError
from edgepipe.devices.base.atomic import sweep_temp, temp_root, write_json_atomic, write_text_atomic
from edgepipe.pipeline.core import distributed
from edgepipe.pipeline.core.manifest import (
    MANIFEST,
    artifact_sha,
    environment,
    hash_tree,
    output_problems,
    read_manifest,
    tree_sha,
    versions,
)
from edgepipe.pipeline.core.recipe import Recipe, plain_name, stage_files
from edgepipe.pipeline.core.registry import stages


@dataclass
class Artifact:
    """A named product of a stage: a paddle model folder or an ONNX file, path relative to the run dir."""

    name: str
    kind: str  # "paddle" | "onnx" | "file"
    path: str
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "path": self.path, "meta": self.meta}


@dataclass
class StageResult:
    metrics: dict
    artifacts: list[Artifact] = field(default_factory=list)


class StageContext:
    def __init__(
        self,
        recipe: Recipe,
        run_dir: Path,
        name: str,
        out_dir: Path,
        artifacts: dict[str, Artifact],
        manifest: dict,
        data=None,
    ):
        self.recipe, self.run_dir, self.name, self.out_dir = recipe, run_dir, name, out_dir
        self.artifacts, self.manifest = artifacts, manifest
        self._data = data

    @property
    def base(self) -> Path | None:
        """The recipe's folder, where relative paths in it start."""
        return self.recipe.base_dir

    @property
    def data(self):
        """The recipe's dataset (splits), for stages whose config says `uses_data`."""
        if self._data is None:
            raise EdgepipeError(f"stage {self.name}: reads data, but its config does not declare uses_data = True")
        return self._data

    def path_of(self, art_name: str) -> Path:
        return self.run_dir / self.artifacts[art_name].path

    def out(self, rel: str) -> Path:
        """A path inside this stage's output folder; the artifact path is `<stage>/<rel>`."""
        path = self.out_dir / rel
        if os.path.isabs(rel) or ".." in Path(rel).parts:
            raise EdgepipeError(f"stage {self.name}: output {rel!r} would leave the run directory")
        return path

    def artifact(self, name: str, kind: str, rel: str, **meta) -> Artifact:
        return Artifact(name, kind, f"{self.name}/{rel}", meta)


class _Lock:
    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"

    def __enter__(self):
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise EdgepipeError(
                f"{self.path.parent}: another edgepipe run is using this run directory; wait for it or use --name"
            ) from None
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _clean_leftovers(run_dir: Path) -> None:
    for p in run_dir.iterdir():
        if (
            p.name != ".tmp"
            and p.name.startswith(".")
            and (".partial-" in p.name or ".trash-" in p.name or p.name.endswith(".tmp"))
        ):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def swap_in(run_dir: Path, partial: Path, name: str) -> None:
    """Put the finished folder `partial` in place as run_dir/name; a folder already there is renamed
    aside first and removed after, so the name always holds a whole folder."""
    final = run_dir / name
    if final.exists():
        trash = run_dir / f".{name}.trash-{os.getpid()}"
        os.replace(final, trash)
        os.replace(partial, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(partial, final)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def preflight(recipe: Recipe) -> None:
    """Before any stage runs: each stage config's optional preflight(input shape, recipe folder) —
    e.g. a user's model built once on zeros of the data's shape — failing with the stage's path."""
    for i, entry in enumerate(recipe.stages):
        check = getattr(entry.config, "preflight", None)
        if check is None:
            continue
        try:
            check(recipe.data.input_shape, recipe.base_dir)
        except EdgepipeError as exc:
            raise EdgepipeError(f"stages[{i}].{entry.kind}.{exc}") from None


def run_recipe(
    recipe: Recipe,
    runs_dir: Path,
    *,
    force: bool = False,
    from_stage: str | None = None,
    load_data: Callable | None = None,
) -> tuple[Path, dict]:
    """Run (or reuse) every stage in order; load_data(recipe.data, recipe folder) -> dataset, called
    once, for the stages that use data. Returns the run directory and the manifest.

    Under `paddle.distributed.launch` this is rank 0's part; the other ranks follow it (core/follow.py)."""
    distributed.init()
    if distributed.launched() and not distributed.is_main():
        from edgepipe.pipeline.core.follow import follow

        return follow(recipe, load_data, StageContext)
    names = [s.name for s in recipe.stages]
    if from_stage is not None and from_stage not in names:
        raise EdgepipeError(f"--from {from_stage}: no such stage in this recipe (stages: {', '.join(names)})")
    if not plain_name(recipe.name):
        raise EdgepipeError(
            f"run name {recipe.name!r}: use letters, digits, '-', '_' or '.', not starting with '.' "
            "(it names one folder inside the runs directory)"
        )
    preflight(recipe)  # before the run directory exists: a model that cannot run leaves nothing behind
    run_dir = _writable_run_dir(Path(runs_dir) / recipe.name)
    with _Lock(run_dir), temp_root(run_dir / ".tmp"):
        _clean_leftovers(run_dir)
        sweep_temp(run_dir / ".tmp")  # the lock says no other run uses this run directory
        sweep_temp(tempfile.gettempdir(), min_age_s=3600, partials=False)  # shared: edgepipe's own, an hour old
        import yaml

        write_text_atomic(run_dir / "recipe.yaml", yaml.safe_dump(recipe.to_dict(), sort_keys=False))
        manifest = read_manifest(run_dir, force=force)
        old_stages = manifest.get("stages", {})
        # Entries of stages not reached yet are kept until redone, so a crash loses nothing.
        manifest = {
            "edgepipe": versions().get("edgepipe"),
            "recipe": recipe.name,
            "environment": environment(),
            "data": manifest.get("data"),
            "stages": {n: old_stages[n] for n in names if n in old_stages},
        }
        state = _RunState(recipe, run_dir, manifest, load_data)
        redo_from = names.index(from_stage) if from_stage else None
        probe = _tell_ranks_start(run_dir)
        for i, entry in enumerate(recipe.stages):
            tag = f"[{i + 1}/{len(names)}] {entry.name}"
            inputs = state.stage_inputs(i, entry)
            prev = old_stages.get(entry.name)
            redo = force or (redo_from is not None and i >= redo_from)
            if not redo and state.reusable(entry, prev, inputs):
                for art_name, a in prev.get("artifacts", {}).items():
                    state.artifacts[art_name] = Artifact(art_name, a["kind"], a["path"], a.get("meta", {}))
                manifest["stages"][entry.name] = prev
                distributed.tell(("skip", entry.name))
                log(f"{tag}: reused (config and inputs unchanged)")
                continue
            trains = distributed.launched() and getattr(entry.config, "trains", False)
            distributed.tell(("train", entry.name, state.artifacts, manifest) if trains else ("skip", entry.name))
            log(f"{tag}: running" + (f" on {distributed.world()} ranks" if trains else ""))
            if trains:
                distributed.wait_for_ranks()
            with distributed.collective(trains):
                wall = state.run_stage(i, entry, inputs)
            if trains:
                manifest["stages"][entry.name]["ranks"] = distributed.world()
            write_json_atomic(run_dir / MANIFEST, manifest)
            log(f"{tag}: done in {wall:.1f}s")
        write_json_atomic(run_dir / MANIFEST, manifest)
        distributed.tell(("end", manifest))
        distributed.wait_for_byes()
        if probe is not None:
            probe.rmdir()
    return run_dir, manifest


def _tell_ranks_start(run_dir: Path) -> Path | None:
    """Under a launcher: tell the other ranks the run directory and a probe folder in it that they must
    see (every machine reads what rank 0 writes there); None without a launcher. A crashed run's probe
    is swept with the run directory's other scratch folders."""
    if not distributed.launched():
        return None
    import secrets

    probe = run_dir / ".tmp" / f"edgepipe-ranks-{os.getpid()}-{secrets.token_hex(8)}"
    probe.mkdir(parents=True)
    distributed.tell(("start", str(run_dir), probe.name))
    return probe


def _writable_run_dir(run_dir: Path) -> Path:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-probe-{os.getpid()}.tmp"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise EdgepipeError(f"{run_dir}: cannot write there ({exc.strerror}); give a writable --runs-dir") from None
    return run_dir


class _RunState:
    """What the stages of one run share as it goes: the manifest, the artifacts made so far and the data
    (loaded once, by the first stage that uses it)."""

    def __init__(self, recipe: Recipe, run_dir: Path, manifest: dict, load_data: Callable | None):
        self.recipe, self.run_dir, self.manifest, self.load_data = recipe, run_dir, manifest, load_data
        self.names = [s.name for s in recipe.stages]
        self.artifacts: dict[str, Artifact] = {}
        self.data = None

    def stage_inputs(self, i: int, entry) -> dict:
        """What a stage's result depends on besides its config: the data's hash, its input artifacts'
        hashes, the files its config names, and (for the report) the metrics of the stages before it."""
        inputs, manifest = {}, self.manifest
        if getattr(entry.config, "uses_data", False):
            if self.data is None:
                if self.load_data is None:
                    raise EdgepipeError(
                        f"stage {entry.name} uses data: pass run_recipe(..., load_data=...) "
                        "(edgepipe.pipeline.data.load.load_dataset)"
                    )
                self.data = self.load_data(self.recipe.data, self.recipe.base_dir)
                manifest["data"] = self.data.summary()
            inputs["data"] = manifest["data"]["sha256"]
        for art_name in entry.config.inputs({n: a.kind for n, a in self.artifacts.items()}).values():
            inputs[art_name] = artifact_sha(self.run_dir, self.artifacts[art_name], manifest["stages"])
        for key, path in stage_files(entry.config, self.recipe.base_dir, entry.name).items():
            inputs[f"file:{key}"] = tree_sha(path)
        if getattr(entry.config, "uses_manifest", False):  # e.g. report: depends on earlier metrics
            upstream = {
                n: {k: e.get(k) for k in ("config_sha", "outputs", "metrics")}
                for n, e in manifest["stages"].items()
                if n in self.names[:i]
            }
            inputs["manifest"] = hashlib.sha256(json.dumps(upstream, sort_keys=True).encode()).hexdigest()
        return inputs

    def reusable(self, entry, prev: dict | None, inputs: dict) -> bool:
        """A stage's earlier result stands when its config and inputs are unchanged and its outputs intact."""
        return bool(
            prev
            and prev.get("config_sha") == entry.sha
            and prev.get("inputs") == inputs
            and not output_problems(self.run_dir, entry.name, prev)
        )

    def run_stage(self, i: int, entry, inputs: dict) -> float:
        """Run one stage into a partial folder, swap it in whole, record it in the manifest; its wall time."""
        run_dir = self.run_dir
        partial = run_dir / f".{entry.name}.partial-{os.getpid()}"
        partial.mkdir()
        ctx = StageContext(self.recipe, run_dir, entry.name, partial, self.artifacts, self.manifest, data=self.data)
        t0 = time.perf_counter()
        try:
            result = stages()[entry.kind].handler(entry.config, ctx)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        wall = time.perf_counter() - t0
        swap_in(run_dir, partial, entry.name)
        for a in result.artifacts:
            self.artifacts[a.name] = a
        self.manifest["stages"][entry.name] = {
            "type": entry.kind,
            "config": self.recipe.to_dict()["stages"][i][entry.kind],
            "config_sha": entry.sha,
            "inputs": inputs,
            "outputs": hash_tree(run_dir, entry.name),
            "artifacts": {a.name: a.to_dict() for a in result.artifacts},
            "metrics": result.metrics,
            "wall_s": round(wall, 3),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "environment": self.manifest["environment"],
        }
        return wall
