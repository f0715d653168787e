"""Data parallelism on Paddle's own engine (`paddle.distributed.launch`, collective mode: gloo on CPUs,
NCCL on GPUs). Under the launcher every rank runs the same recipe; this module is what they share.

- **Who does what.** Rank 0 runs the recipe as one process would and, before each stage, tells the
  other ranks what to do through the launcher's TCP store: reuse the stage, run it with every rank
  (a stage whose config says `trains = True`), or wait while rank 0 alone runs it. The others poll
  the store, so a rank-0-only stage may take any time: gloo's collectives give up after about 30 s
  (measured with Paddle 3.3: a barrier waited 25 s, not 50), so ranks meet in one only when both are
  at the same step of the same training stage (`ready`/`wait_for_ranks` gate each stage's start).
- **Inside a training stage** (`collective()`), `fit` splits every global batch into one contiguous
  shard per rank and sums the shards' gradients in one all-reduce per step, each shard's loss weighted
  by its share of the batch: the step is the one-process step on the whole batch, up to the order of
  floating-point sums. The batch order and the augmentation's random draws are made for the whole
  batch on every rank from the same seed, so they are those of the one-process run too.
  `predict_logits` gives each rank a slice of the rows and gathers the logits.
- **BatchNorm.** Paddle's SyncBatchNorm has no CPU kernel; with gloo each rank normalises by its own
  shard's statistics (as paddle.DataParallel does) and the running statistics are averaged over the
  ranks after every epoch, so every rank holds the same model: close to, not equal to, the one-process
  run. A network without BatchNorm (the default recipe's) trains to the one-process weights.

Outside a launcher, or outside `collective()`, every function here is the one-process identity.
"""

from __future__ import annotations

import os
import pickle
import time
from contextlib import contextmanager

import numpy as np

from edgepipe.devices import EdgepipeError

_COLLECTIVE = False
_STEP = 0  # messages rank 0 has sent (on rank 0) or the others have read


def world() -> int:
    """Ranks the launcher started (1 without one)."""
    return int(os.environ.get("PADDLE_TRAINERS_NUM", "1") or 1)


def rank() -> int:
    return int(os.environ.get("PADDLE_TRAINER_ID", "0") or 0)


def launched() -> bool:
    return world() > 1


def is_main() -> bool:
    return rank() == 0


def init() -> None:
    """Join the launcher's process group (once per process)."""
    import paddle.distributed as dist

    if launched() and not dist.is_initialized():
        dist.init_parallel_env()


def parallel() -> int:
    """The ranks sharing the current work: the world inside a training stage, else 1."""
    return world() if _COLLECTIVE and launched() else 1


@contextmanager
def collective(on: bool = True):
    """Every rank runs the enclosed work together (a training stage)."""
    global _COLLECTIVE
    old, _COLLECTIVE = _COLLECTIVE, bool(on)
    try:
        yield
    finally:
        _COLLECTIVE = old


def shard(n: int) -> slice:
    """This rank's contiguous part of n rows (the first ranks take one more when n does not divide)."""
    size, r = parallel(), rank() if parallel() > 1 else 0
    bounds = np.cumsum([0] + [n // size + (1 if k < n % size else 0) for k in range(size)])
    return slice(int(bounds[r]), int(bounds[r + 1]))


def gather_rows(part: np.ndarray) -> np.ndarray:
    """The ranks' parts (in rank order) concatenated, on every rank."""
    if parallel() == 1:
        return part
    import paddle.distributed as dist

    parts: list = []
    dist.all_gather_object(parts, part)
    return np.concatenate(parts)


def all_sum(values: np.ndarray) -> np.ndarray:
    """Element-wise sum over the ranks (float64 on the wire)."""
    if parallel() == 1:
        return values
    import paddle
    import paddle.distributed as dist

    t = paddle.to_tensor(np.asarray(values, dtype=np.float64))
    dist.all_reduce(t)
    return t.numpy()


def every(flag: bool) -> bool:
    """True when the flag holds on every rank (so that all take the same branch)."""
    return bool(all_sum(np.array([0.0 if flag else 1.0]))[0] == 0)


def sum_gradients(params: list, stats: np.ndarray) -> np.ndarray:
    """Sum every parameter's gradient over the ranks in one all-reduce, with `stats` (the step's
    loss and counts) riding along; returns the summed stats."""
    if parallel() == 1:
        return stats
    import paddle
    import paddle.distributed as dist

    flat = [p.grad.reshape([-1]) if p.grad is not None else paddle.zeros([int(np.prod(p.shape))]) for p in params]
    buf = paddle.concat([f.astype("float32") for f in flat] + [paddle.to_tensor(stats.astype(np.float32))])
    dist.all_reduce(buf)
    at = 0
    for p in params:
        n = int(np.prod(p.shape))
        if p.grad is not None:
            p.grad.set_value(buf[at : at + n].reshape(p.grad.shape).astype(p.grad.dtype))
        at += n
    return buf[at:].numpy().astype(np.float64)


def same_start(model) -> None:
    """Rank 0's parameters and buffers on every rank, before training starts."""
    if parallel() == 1:
        return
    import paddle.distributed as dist

    for t in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(t, src=0)


def average_buffers(model) -> None:
    """Average float buffers (BatchNorm running statistics) over the ranks."""
    if parallel() == 1:
        return
    import paddle
    import paddle.distributed as dist

    for b in model.buffers():
        if b.dtype in (paddle.float32, paddle.float64):
            dist.all_reduce(b)
            b.set_value(b / parallel())


def check_batch(batch_size: int, what: str) -> None:
    if parallel() > 1 and batch_size < parallel():
        raise EdgepipeError(
            f"{what}: batch_size {batch_size} is smaller than the {parallel()} ranks; "
            f"every rank needs a sample of each batch: raise batch_size or use fewer ranks"
        )


# -- rank 0 conducting the others through the launcher's TCP store ----------------------------------


def _store():
    from paddle.base import core

    return core.create_or_get_global_tcp_store()


def _publish(key: str, obj) -> None:
    """Put obj under key in the store, then mark it ready (readers poll the mark)."""
    store = _store()
    store.set(key, pickle.dumps(obj))
    store.add(f"{key}/ready", 1)


def _wait_count(key: str, n: int, deadline: float | None = None) -> None:
    """Poll the store's counter `key` until it reaches n (or time.monotonic() passes `deadline`)."""
    store = _store()
    while store.add(key, 0) < n and (deadline is None or time.monotonic() < deadline):
        time.sleep(0.05)


def _read(key: str):
    """What _publish put under key, once it is there (however long that takes)."""
    _wait_count(f"{key}/ready", 1)
    return pickle.loads(bytes(_store().get(key)))


def tell(message) -> None:
    """Rank 0: the next message to the other ranks (no-op without a launcher)."""
    global _STEP
    if not launched():
        return
    _STEP += 1
    _publish(f"edgepipe/{_STEP}", message)


def hear():
    """The other ranks: wait (for as long as rank 0's stage takes) for rank 0's next message."""
    global _STEP
    _STEP += 1
    return _read(f"edgepipe/{_STEP}")


def bye() -> None:
    """The other ranks: rank 0's last word is read (rank 0 hosts the store, so it must outlive them)."""
    _store().add("edgepipe/bye", 1)


def wait_for_byes(timeout_s: float = 120) -> None:
    """Rank 0: stay until every other rank has read the last message."""
    if launched():
        _wait_count("edgepipe/bye", world() - 1, time.monotonic() + timeout_s)


def ready() -> None:
    """The other ranks: at the start of the stage rank 0 last announced (data loaded, model about to be
    built), so that no collective waits on a rank still reading its data."""
    _store().add(f"edgepipe/{_STEP}/at", 1)


def wait_for_ranks() -> None:
    """Rank 0: until every other rank is at the announced stage's start (polled: however long it takes)."""
    if launched():
        _wait_count(f"edgepipe/{_STEP}/at", world() - 1)


_CALLS = 0  # on_rank0 calls so far, the same count on every rank


def on_rank0(fn, *args, **kwargs):
    """fn(*args, **kwargs) run by rank 0 alone inside a training stage, its result given to every rank:
    for what this machine measures or detects (layer timings, the device profile) and a rank's choices
    depend on, which must be the same on every rank. Passed through the store, so it may take any time."""
    global _CALLS
    if parallel() == 1:
        return fn(*args, **kwargs)
    _CALLS += 1
    key = f"edgepipe/rank0/{_CALLS}"
    if is_main():
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            _publish(key, ("error", f"{type(exc).__name__}: {exc}"))
            raise
        _publish(key, ("ok", result))
        return result
    kind, value = _read(key)
    if kind == "error":
        raise EdgepipeError(f"rank 0 failed: {value}")
    return value
