"""Candidates for a deployment measured side by side: several (model file, backend, precision)
sessions opened in one process, timed at batch 1 in interleaved rounds (each round visits every
candidate, in a rotated order, so drift on a shared machine hits them alike), and each one's
accuracy measured through the same session on the same labelled inputs.

    python -m edgepipe.runtime.measure.compare SPEC.json OUT.json   # paddle-free; what the deploy stage runs

SPEC: {"candidates": [{"id", "model", "backend", "precision"}], "inputs": "test.npz", "threads": 1,
       "rounds": 5, "seconds": 0.3, "task": null | {"name", "settings", "images": DIR, "contract": JSON | null}}
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.devices.base.atomic import write_json_atomic
from edgepipe.runtime.inputs.feeds import from_array, signature
from edgepipe.runtime.measure.bench import interleaved_rounds, latency_stats, timed_runs
from edgepipe.runtime.model.backends import describe, open_model
from edgepipe.runtime.model.session import resolve_feed


def measure(
    candidates: list[dict],
    x: np.ndarray | None,
    y: np.ndarray | None,
    threads: int = 1,
    rounds: int = 5,
    seconds: float = 0.3,
    warmup_seconds: float = 0.1,
    task: dict | None = None,
) -> list[dict]:
    """Per candidate: p50 of each round (p50_rounds_ms), the median of those and their range, p90 over every timed run,
    the top-1 prediction for every input (for agreement between candidates; None when the output is
    not one row of class scores per input), accuracy (with labels), and what ran (backend, precision).
    With `task` ({"name", "settings", "images", "contract"}: runtime/tasks/evaluate.CandidateScores) each
    candidate is scored by the task's metric on that folder of images instead (its "task" figures; its
    accuracy is the metric's value against labels), and timed on the folder's first image."""
    opened, judge = [], None
    for i, c in enumerate(candidates):
        t0 = time.perf_counter_ns()
        s = open_model(c["model"], c["backend"], threads=threads, precision=c.get("precision", "auto"))
        create_ms = (time.perf_counter_ns() - t0) / 1e6
        names = [o.name for o in s.get_outputs()]
        if task is not None:
            judge = judge or _task_judge(s, task)
            judge.add(str(i), s)
            feed, acc, pred = judge.timing_feed(), None, None
        else:
            feed = resolve_feed(s, {"x": x[:1]}, c["model"])
            acc, pred = _top1(s, names, x, y)
        opened.append(
            {
                "c": c,
                "run": (lambda s=s, f=feed, n=names: s.run(n, f)),
                "create_ms": create_ms,
                "accuracy": acc,
                "predictions": pred,
                "ran": describe(s, c["model"]),
            }
        )
    if judge is not None:
        ran = {str(i): {**o["c"], "precision": o["ran"]["precision"]} for i, o in enumerate(opened)}
        for key, sc in judge.scores(ran).items():
            o = opened[int(key)]
            o["task"] = sc["task"] | {"vs_reference": sc["vs_reference"], "vs_own_fp32": sc["vs_own_fp32"]}
            o["accuracy"] = sc["task"]["value"] if sc["task"].get("against") == "labels" else None
    for o in opened:
        timed_runs(o["run"], 1, warmup_seconds)
    runs = {i: o["run"] for i, o in enumerate(opened)}
    p50s, every, _ = interleaved_rounds(runs, rounds, seconds)
    for i, o in enumerate(opened):
        o["p50"], o["all"] = p50s[i], every[i]
    out = []
    for o in opened:
        p50, lat = o["p50"], latency_stats(o["all"])
        # p50_ms is the median of the rounds' p50s (what deploy pairs round by round); "latency" the summary
        # over every timed run, with the key names of the runner's and the stream's
        out.append(
            {
                **o["c"],
                "p50_ms": float(np.median(p50)),
                "p50_range_ms": [min(p50), max(p50)],
                "rounds": rounds,
                "p50_rounds_ms": p50,
                "latency": lat,
                "p90_ms": lat["p90_ms"],
                "runs": lat["n"],
                "session_create_ms": o["create_ms"],
                "accuracy": o["accuracy"],
                "predictions": o["predictions"],
                "accuracy_samples": _samples(o, y),
                **({"task": o["task"]} if "task" in o else {}),
                "ran": o["ran"],
                "bytes": Path(o["c"]["model"]).stat().st_size,
            }
        )
    return out


def _top1(s, names: list[str], x: np.ndarray, y: np.ndarray | None) -> tuple[float | None, list | None]:
    """(accuracy with labels, each input's top-1 class) of a session whose first output is one row of class
    scores per input; (None, None) for any other output."""
    feeds = from_array(signature(s), x, batch=256)  # a fixed batch of 1: one sample a feed
    parts = [s.run(names[:1], f)[0] for f in feeds]
    out = np.concatenate(parts) if len({p.shape[1:] for p in parts}) == 1 and all(p.ndim for p in parts) else None
    scores = out is not None and out.ndim == 2 and out.shape[1] > 1 and len(out) == len(x)
    pred = out.argmax(axis=1) if scores else None  # class scores only (not an NMS output's k boxes)
    acc = None if y is None or pred is None else float((pred == y).mean())
    return acc, None if pred is None else pred.tolist()


def _task_judge(session, task: dict):
    from edgepipe.runtime.inputs.feeds import model_contract
    from edgepipe.runtime.inputs.images import Contract
    from edgepipe.runtime.tasks.evaluate import CandidateScores

    contract = Contract.from_json(task["contract"]) if task.get("contract") else model_contract(session)
    if contract is None:
        raise EdgepipeError(
            "the candidates carry no input contract, so the images cannot be preprocessed: give it "
            "(--size, --keep-ratio, …) or write it once with `edgepipe contract`"
        )
    return CandidateScores(session, task.get("name"), task.get("settings") or {}, Path(task["images"]), contract)


def _samples(o: dict, y) -> int | None:
    if "task" in o:
        return o["task"].get("samples")
    return None if y is None else int(len(y))


def paired_ratio(a: list[float], b: list[float]) -> float:
    """How many times slower a is than b, from p50s taken in the same rounds: the ratio in each round
    (drift that slows a whole round cancels), then their geometric mean with the highest and lowest
    20% of rounds cut — none below 5 rounds (on a shared host the ratio of two identical sessions
    jumps between modes, ×0.9 and ×1.25 in alternate rounds, where a median flips with whichever
    mode holds the majority)."""
    if not len(a) or len(a) != len(b):
        raise ValueError(f"paired_ratio: {len(a)} and {len(b)} rounds; give the same non-zero number")
    r = np.sort(np.log(np.asarray(a, dtype=float) / np.asarray(b, dtype=float)))
    cut = int(0.2 * len(r))
    return float(np.exp(r[cut : len(r) - cut].mean()))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        spec = json.loads(Path(argv[0]).read_text())
        x = y = None
        if spec.get("inputs"):
            with np.load(spec["inputs"], allow_pickle=False) as z:
                x, y = z["x"], z["y"] if "y" in z.files else None
        res = measure(
            spec["candidates"],
            x,
            y,
            threads=spec.get("threads", 1),
            rounds=spec.get("rounds", 5),
            seconds=spec.get("seconds", 0.3),
            task=spec.get("task"),
        )
        write_json_atomic(argv[1], {"candidates": res})
    except EdgepipeError as exc:
        print(f"edgepipe-compare: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
