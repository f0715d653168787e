"""deploy.json, the deploy stage's choice, read by the runner: `edgepipe-runner --deployment
deploy.json` runs its model on its backend, precision, threads and profile, each overridable by
the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgepipe.devices import EdgepipeError

SCHEMA = "edgepipe-deployment/1"


def apply_deployment(args: argparse.Namespace) -> None:
    """Fill the model, backend, precision, threads and profile a deploy.json chose, where the command
    line leaves them out."""
    if args.deployment is None:
        if args.model is None:
            raise EdgepipeError("give the model to run (MODEL.onnx) or --deployment deploy.json")
        return
    path = Path(args.deployment)
    if not path.is_file():
        raise EdgepipeError(
            f"--deployment {path}: not found; give the deploy.json a deploy stage wrote (runs/NAME/deploy/)"
        )
    try:
        d = json.loads(path.read_text())
    except ValueError:
        raise EdgepipeError(f"--deployment {path}: not valid JSON; copy deploy.json again") from None
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        raise EdgepipeError(f"--deployment {path}: not an edgepipe deployment (schema edgepipe-deployment/1)")
    name = Path(str(d.get("model", "")))
    if name.name != str(name) or not name.name:
        raise EdgepipeError(f"--deployment {path}: its model {str(name)!r} must be a file name beside deploy.json")
    args.model = args.model or path.parent / name
    args.backend = args.backend or d.get("backend")
    args.precision = args.precision or d.get("precision")
    args.threads = args.threads or d.get("threads")
    if args.profile is None and d.get("profile"):
        args.profile = d["profile"]
