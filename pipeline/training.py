"""The training loop every stage and data-driven technique shares: seeded, Adam with cosine decay,
the data's augmentation per batch, a progress bar showing loss and accuracy and evaluation."""

from __future__ import annotations

import math
import sys
from typing import Callable

import numpy as np

from edgepipe.devices import EdgepipeError


def seed_everything(seed: int) -> np.random.Generator:
    import paddle

    paddle.seed(seed)
    return np.random.default_rng(seed)


def predict_logits(model, x: np.ndarray, batch: int = 500) -> np.ndarray:
    """The model's outputs on every row of x; inside a data-parallel stage each rank computes a slice
    of the rows and every rank gets them all."""
    import paddle

    from edgepipe.pipeline.core import distributed

    model.eval()
    part = x[distributed.shard(len(x))]
    with paddle.no_grad():
        outs = [model(paddle.to_tensor(part[i : i + batch])).numpy() for i in range(0, len(part), batch)]
    if not outs:  # this rank's slice is empty: an empty block of the right width
        with paddle.no_grad():
            outs = [model(paddle.to_tensor(x[:1])).numpy()[:0]]
    return distributed.gather_rows(np.concatenate(outs))


def evaluate(model, x: np.ndarray, y: np.ndarray) -> float:
    return float((predict_logits(model, x).argmax(1) == y).mean())


def _backward(model, x, y, idx, rng, augment, loss_fn, params, accuracy: bool = True) -> np.ndarray:
    """One batch's forward and backward; [sum of the losses, correct predictions] over the whole batch.
    Data-parallel, this rank takes its shard of the batch (augmented whole, on every rank, so the random
    draws are the one-process run's), weights its loss by its share, and the ranks' gradients are summed."""
    import paddle

    from edgepipe.pipeline.core import distributed

    batch = augment(x[idx], rng) if augment is not None else x[idx]
    part = distributed.shard(len(idx))
    weight = (part.stop - part.start) / len(idx)  # this rank's share of the batch's mean loss
    if weight == 0:  # fewer rows than ranks: run one row at weight 0, for the same graph's gradients
        part = slice(0, 1)
    xb, yb = paddle.to_tensor(batch[part]), paddle.to_tensor(y[idx[part]])
    logits = model(xb)
    loss = loss_fn(logits, xb, yb, idx[part])
    (loss * weight if weight != 1 else loss).backward()
    hits = int((logits.argmax(1) == yb).astype("int64").sum()) if weight and accuracy else 0
    return distributed.sum_gradients(params, np.array([float(loss) * weight * len(idx), hits]))


def _cross_entropy(logits, xb, yb, idx):
    import paddle.nn.functional as F

    return F.cross_entropy(logits, yb)


def _epoch_record(model, desc: str, epoch: int, epochs: int, loss: float, train_acc, val) -> dict:
    """The epoch's record (printed as one line): its loss, train accuracy (None: not a classifier), and the
    val split's accuracy (val = (x, y)) or the figures val(model) returns (a dict, e.g. a detector's mAP)."""
    record = {"epoch": epoch + 1, "loss": loss}
    if train_acc is not None:
        record["train_acc"] = train_acc
    if callable(val):
        record |= val(model)
    elif val is not None:
        record["val_acc"] = evaluate(model, *val)
    figures = [f"{k.replace('_', ' ')} {v:.4f}" for k, v in record.items() if k != "epoch"]
    print(f"  {desc} epoch {epoch + 1}/{epochs}: " + ", ".join(figures), file=sys.stderr, flush=True)
    return record


def fit(
    model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    rng: np.random.Generator,
    augment: Callable | None = None,
    loss_fn: Callable | None = None,
    extra_parameters: list | None = None,
    desc: str = "train",
    val: tuple[np.ndarray, np.ndarray] | None = None,
    after_step: Callable | None = None,
    accuracy: bool = True,
) -> list[dict]:
    """Train `model` in place. loss_fn(logits, xb, yb, idx) -> loss (default: CE); idx are the
    batch's row numbers in `x` (for per-sample lookups such as cached teacher logits);
    augment(xb, rng) -> xb augments each batch (Dataset.augmenter).
    after_step(step, total_steps) runs after every optimizer step (pruning masks, schedules).

    Returns one record per epoch: mean loss, train accuracy (unless accuracy=False: outputs that are not
    class logits), and val accuracy if val is (x, y), or the figures val(model) returns if it is callable.
    """
    import paddle
    from tqdm import tqdm

    from edgepipe.pipeline.core import distributed

    distributed.check_batch(batch_size, desc)
    params = [p for p in list(model.parameters()) + list(extra_parameters or []) if not p.stop_gradient]
    distributed.same_start(model)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    schedule = paddle.optimizer.lr.CosineAnnealingDecay(learning_rate=lr, T_max=max(steps, 1))
    opt = paddle.optimizer.Adam(parameters=params, learning_rate=schedule)
    history = []
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(x))
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(
            range(0, len(x), batch_size),
            desc=f"{desc} {epoch + 1}/{epochs}",
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
            disable=None,
        )
        for start in bar:
            idx = order[start : start + batch_size]
            stats = _backward(model, x, y, idx, rng, augment, loss_fn or _cross_entropy, params, accuracy)
            value = stats[0] / len(idx)
            if not math.isfinite(value):  # one step further and every weight is NaN
                bar.close()
                raise EdgepipeError(
                    f"{desc}: the loss became {value} at epoch {epoch + 1}, step {start // batch_size + 1} "
                    f"(lr {lr:g}); training diverged: lower lr, or check the data for NaN or huge values"
                )
            opt.step()
            opt.clear_grad()
            schedule.step()
            if after_step is not None:
                after_step(int(schedule.last_epoch), steps)
            total_loss += float(stats[0])
            correct += int(stats[1])
            seen += len(idx)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", **({"acc": f"{correct / seen:.3f}"} if accuracy else {}))
        distributed.average_buffers(model)
        bar.close()
        history.append(
            _epoch_record(model, desc, epoch, epochs, total_loss / seen, correct / seen if accuracy else None, val)
        )
    model.eval()
    return history
