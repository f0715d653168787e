"""Channel pruning across paddle.vision's classifiers, every model measured in this one run.

For each architecture (random weights, seeded: no pretrained weights can be downloaded here, so
this measures structure and speed, not accuracy): trace, plan and cut at channel ratio 0.3 with
`round_to` from the detected device profile; channel groups pruned and left alone (with the
commonest reasons), parameters and MACs before and after, and fp32 p50 of the unpruned and the
pruned model (onnxruntime, batch 1, 1 thread) from interleaved rounds in one process, with the
spread of the per-round speed-ups.

    .venv/bin/python benchmarks/zoo_prune_bench.py [--only NAME ...] [--rounds N] [--out FILE] [--table JSON]

--only measures those models again and replaces their rows in an existing results file.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_zoo_prune import NAMES, _zoo  # noqa: E402  (one list of architectures and input sizes, shared with the tests)


def measure(name: str, rounds: int) -> dict:
    import paddle

    from edgepipe.pipeline.compress.channels.prune import ChannelRule, prune_channels, resolved
    from edgepipe.pipeline.compress.channels.sensitivity import estimate, geometry
    from edgepipe.pipeline.compress.channels.speed import channel_multiple, compare

    make, shape = _zoo(name)
    paddle.seed(0)
    model = make()
    model.eval()
    parent = copy.deepcopy(model)
    params0, macs0 = estimate(model, geometry(model, shape), {})
    rule = resolved(ChannelRule(ratio=0.3))
    t0 = time.perf_counter()
    model, changes, rows = prune_channels(model, shape, rule)
    cut_s = time.perf_counter() - t0
    params1, macs1 = estimate(model, geometry(model, shape), {})
    big = macs0 > 2e9  # VGG, AlexNet at 224: fewer iterations per round
    speed = compare(parent, model, shape, rounds=rounds, seconds=0.1 if big else 0.3, iters=3 if big else 20)
    left = Counter(r["skip"].split(" (")[0] for r in rows if "skip" in r)
    return {
        "model": name,
        "input": list(shape),
        "round_to": rule.round_to,
        "round_to_from": channel_multiple()[1],
        "groups": len(rows),
        "groups_pruned": sum("kept" in r and r["kept"] < r["channels"] for r in rows),
        "groups_left_alone": sum("skip" in r for r in rows),
        "left_alone_because": left.most_common(3),
        "layers_cut": len(changes),
        "params": [params0, params1],
        "macs": [macs0, macs1],
        "cut_s": cut_s,
        "speed": speed,
    }


def _m(n: float) -> str:
    return f"{n / 1e6:.0f}M" if n >= 1e8 else f"{n / 1e6:.2g}M"


def table(results: list[dict]) -> None:
    print("\nchannel ratio 0.3, random weights, onnxruntime fp32 p50 at batch 1, 1 thread, interleaved rounds")
    print("| model | input | groups pruned / left alone | params | MACs | p50 ms | speed-up (spread) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        s = r["speed"]
        lo, hi = s["speedup_range"]
        print(
            f"| {r['model']} | {r['input'][1]}×{r['input'][2]} | {r['groups_pruned']} / {r['groups_left_alone']} | "
            f"{r['params'][0] / 1e6:.2f}M → {r['params'][1] / 1e6:.2f}M | {_m(r['macs'][0])} → {_m(r['macs'][1])} "
            f"({r['macs'][1] / r['macs'][0]:.2f}×) | {s['p50_before_ms']:.2f} → {s['p50_after_ms']:.2f} | "
            f"×{s['speedup']:.2f} ({lo:.2f}–{hi:.2f}){' SLOWER' if s['slower'] else ''} |"
        )
    for r in results:
        if r["left_alone_because"]:
            print(
                f"  {r['model']}: left alone because " + "; ".join(f"{why} ×{n}" for why, n in r["left_alone_because"])
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=NAMES, help="these architectures only")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds per model (default 7)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "zoo_prune_bench.json")
    ap.add_argument("--table", type=Path, metavar="JSON", help="print the table of an earlier run's results and stop")
    args = ap.parse_args()
    if args.table:
        table(json.loads(args.table.read_text())["models"])
        return 0
    results = []
    for name in args.only or NAMES:
        print(f"  {name} ...", file=sys.stderr, flush=True)
        results.append(measure(name, args.rounds))
    if args.only and args.out.is_file():  # a partial run replaces those models' rows in the earlier results
        earlier = {r["model"]: r for r in json.loads(args.out.read_text())["models"]}
        earlier.update({r["model"]: r for r in results})
        results = [earlier[n] for n in NAMES if n in earlier]
    table(results)
    from edgepipe.runtime.runner import environment

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"models": results, "rounds": args.rounds, "environment": environment()}, indent=1) + "\n"
    )
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
