"""A run directory's record: manifest.json (read, verified against the disk) and the hashes a stage's
reuse is decided by (its inputs' and outputs' files), with the versions and host it ran on."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from edgepipe.devices import EdgepipeError, detect_host

MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_sha(path: Path) -> str:
    """sha256 of a user's file, or of every file under a folder (names and contents)."""
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise EdgepipeError(f"{path}: not found; the recipe names it")
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return hashlib.sha256(json.dumps({str(p.relative_to(path)): sha256_file(p) for p in files}).encode()).hexdigest()


def hash_tree(run_dir: Path, rel: str) -> dict[str, str]:
    """sha256 of every file under run_dir/rel (a file or a folder), keyed by relative path."""
    root = run_dir / rel
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(run_dir)): sha256_file(p) for p in files}


def artifact_sha(run_dir: Path, art, stages: dict) -> str:  # art: an Artifact
    """Digest of an artifact's files, from the hashes its producing stage recorded.

    Those hashes were computed when the stage ran, or re-verified against the disk when it
    was reused, so the files are not read again here.
    """
    outputs = stages[art.path.split("/", 1)[0]]["outputs"]
    tree = {rel: sha for rel, sha in outputs.items() if rel == art.path or rel.startswith(art.path + "/")}
    if not tree:
        raise EdgepipeError(f"{run_dir / art.path}: artifact '{art.name}' is missing; re-run with --force")
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("edgepipe", "paddlepaddle", "paddle2onnx", "onnx", "onnxruntime", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def environment() -> dict:
    return {"versions": versions(), "host": detect_host().to_dict()}


def read_manifest(run_dir: Path, *, force: bool = False) -> dict:
    """The run's manifest ({"stages": {}} when there is none yet; with force, also when it is damaged)."""
    path = run_dir / MANIFEST
    if not path.exists():
        return {"stages": {}}
    try:
        data = json.loads(path.read_text())
        if not isinstance(data.get("stages"), dict):
            raise ValueError
        return data
    except (ValueError, UnicodeDecodeError, AttributeError):
        if force:
            return {"stages": {}}
        raise EdgepipeError(
            f"{path}: not a valid edgepipe manifest (damaged or edited); to recover, remove that file "
            "(every stage is redone on the next run; its outputs are re-checked, not trusted) or run "
            "with --force, or use another --name"
        ) from None


def verify_run(run_dir: Path) -> list[str]:
    """Re-hash every output recorded in the manifest; returns the problems found (empty = all good)."""
    if not run_dir.is_dir():
        raise EdgepipeError(f"{run_dir}: no such run directory; give the folder `edgepipe run` printed (runs/<name>)")
    if not (run_dir / MANIFEST).is_file():
        raise EdgepipeError(
            f"{run_dir}: holds no {MANIFEST}, so it is not an edgepipe run directory (or no stage "
            "has finished in it yet)"
        )
    manifest = read_manifest(run_dir)
    if not manifest["stages"]:
        return [f"{run_dir / MANIFEST}: no finished stages recorded"]
    problems = [p for name, entry in manifest["stages"].items() for p in output_problems(run_dir, name, entry)]
    for name, entry in manifest["stages"].items():  # files a stage folder holds that its entry does not list
        listed = set(entry.get("outputs", {}))
        folder = run_dir / name
        if folder.is_dir():
            for f in sorted(folder.rglob("*")):
                rel = str(f.relative_to(run_dir))
                if (f.is_file() or f.is_symlink()) and rel not in listed:
                    problems.append(f"{rel}: not recorded in the manifest (stage {name}); something else wrote it")
    return problems


def output_problems(run_dir: Path, name: str, entry: dict) -> list[str]:
    """Outputs a stage's manifest entry records that are missing or changed on disk."""
    problems = []
    for rel, sha in entry.get("outputs", {}).items():
        p = run_dir / rel
        if not p.is_file():
            problems.append(f"{rel}: missing (stage {name})")
        elif sha256_file(p) != sha:
            problems.append(f"{rel}: sha256 differs from the manifest (stage {name})")
    return problems
