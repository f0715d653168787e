"""Progress on long work: a callback (done, total) that draws a tqdm bar on stderr."""

from __future__ import annotations


def progress_bar(desc: str):
    """A progress callback (done, total) drawing a tqdm bar on stderr."""
    import sys

    from tqdm import tqdm

    state = {}

    def progress(done: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = tqdm(total=total, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True, disable=None)
        state["bar"].update(done - state["bar"].n)
        if done >= total:
            state["bar"].close()

    return progress
