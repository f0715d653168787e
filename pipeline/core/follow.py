"""The ranks other than 0 under `paddle.distributed.launch`: they do what rank 0 tells them, stage by
stage (core/distributed.py). A training stage they run with rank 0, writing into a scratch folder of
their own that is dropped after (rank 0 alone writes the run directory and the manifest); for every
other stage they wait for rank 0's next word, however long the stage takes."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path
from typing import Callable

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.core import distributed
from edgepipe.pipeline.core.recipe import Recipe
from edgepipe.pipeline.core.registry import stages


def follow(recipe: Recipe, load_data: Callable | None, context: type) -> tuple[Path, dict]:
    """Rank 0's run, from another rank: returns the run directory and rank 0's final manifest.
    `context` is run.py's StageContext (passed in: run.py imports this module)."""
    _, where, probe = distributed.hear()
    run_dir = Path(where)
    if not (run_dir / ".tmp" / probe).is_dir():
        raise EdgepipeError(
            f"rank {distributed.rank()} on {socket.gethostname()}: cannot see the run directory {run_dir} that "
            "rank 0 writes; give --runs-dir a folder every machine shares (the same path on each, e.g. over NFS)"
        )
    entries = {e.name: e for e in recipe.stages}
    data = None
    while True:
        message = distributed.hear()
        if message[0] == "end":
            distributed.bye()
            return run_dir, message[1]
        if message[0] == "skip":  # reused, or rank 0's alone: the next word comes when it is done
            continue
        _, name, artifacts, manifest = message
        entry = entries[name]
        if data is None and getattr(entry.config, "uses_data", False):
            data = load_data(recipe.data, recipe.base_dir)
        distributed.ready()
        with tempfile.TemporaryDirectory(prefix=f"edgepipe-rank{distributed.rank()}-") as scratch:
            ctx = context(recipe, run_dir, name, Path(scratch), dict(artifacts), manifest, data=data)
            with distributed.collective(True):
                stages()[entry.kind].handler(entry.config, ctx)
