"""deploy's choice among measured candidates: the accuracy floor (or, without labels, fidelity to the
first fp32 candidate, judged by a binomial test of flipped top-1 predictions or by the task's metric
against its predictions), a bf16/fp16 run held to its own fp32 run, the device's budgets, then the
fastest by paired per-round p50 ratios."""

from __future__ import annotations

import math

import numpy as np

from edgepipe.devices import EdgepipeError

FLOAT = ("fp32", "fp16", "bf16")


def _agreement(a: dict, b: dict) -> float | None:
    pa, pb = a.get("predictions"), b.get("predictions")
    return None if pa is None or pb is None or len(pa) != len(pb) else float(np.mean(np.asarray(pa) == np.asarray(pb)))


def _fidelity(c: dict, base: dict, max_drop: float, key: str = "vs_reference") -> tuple[float | None, str | None]:
    """c's agreement with base and what is wrong with it: "missing" (base has predictions, c
    none to compare), "changed" (too_many_flips), or None. Candidates scored by a task (c["task"]) have
    their metric against base's predictions under `key` instead ("vs_reference", "vs_own_fp32"): changed
    when it is more than max_drop points below 100%, the score of base's own predictions (mAP and
    hmean are not means of per-image scores, so no flip count applies)."""
    if "task" in c:
        v = c["task"].get(key)
        return (None, "missing") if v is None else (v, "changed" if v < 1 - max_drop / 100 - 1e-9 else None)
    agree = _agreement(c, base)
    if base.get("predictions") is None:
        return agree, None
    if agree is None:
        return None, "missing"
    return agree, "changed" if too_many_flips(agree, len(base["predictions"]), max_drop) else None


def _agrees_text(c: dict, value: float) -> str:
    if "task" in c:
        return f"scores {100 * value:.1f}% {c['task']['metric'].split(' against ')[0]} against"
    return f"agrees on {100 * value:.1f}% of the inputs with"


def too_many_flips(agreement: float, n: int, max_drop: float) -> bool:
    """Whether a run changed significantly more than max_drop % of n top-1 predictions: a one-sided
    binomial test at 5% (P(X ≥ k) with k the changed ones, X ~ Binomial(n, max_drop / 100)). So on
    128 inputs with a 1-point margin 4 changes fail and 3 pass; on 1,000, 16 fail."""
    k, p = round((1 - agreement) * n), max_drop / 100
    if k == 0:
        return False
    if p <= 0:
        return True
    return log_tail(k, n, p) < math.log(0.05)


def at_chance(accuracy: float, n: int, classes: int, level: float = 0.01) -> bool:
    """Whether an accuracy on n labelled inputs is not significantly above guessing among `classes`:
    P(X ≥ correct) ≥ level for X ~ Binomial(n, 1 / classes). 25% on 4 classes is; 40% of 100 is not."""
    if classes < 2 or n < 1:
        return False
    return log_tail(round(accuracy * n), n, 1 / classes) >= math.log(level)


def log_tail(k: int, n: int, p: float) -> float:
    """log P(X ≥ k) for X ~ Binomial(n, p), summed in log space (exact for any n a test split holds)."""
    if k <= 0:
        return 0.0
    if p >= 1:
        return 0.0
    logs = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p)
        for i in range(k, n + 1)
    ]
    top = max(logs)
    return top + math.log(sum(math.exp(v - top) for v in logs))


def reference(cands: list[dict]) -> dict | None:
    """What the accuracy floor is measured from: the most accurate candidate that ran in fp32 (bf16 and
    fp16 runs approximate a float model, so a lucky one must not raise the bar; only when no candidate
    ran in fp32, the most accurate float one, then the most accurate of all); without labels, the
    first of those (the run's first model), whose predictions the others must keep."""
    for pool in (
        [c for c in cands if c["ran"]["precision"] == "fp32"],
        [c for c in cands if c["ran"]["precision"] in FLOAT],
        cands,
    ):
        if pool:
            scored = [c for c in pool if c["accuracy"] is not None]
            return max(scored, key=lambda c: c["accuracy"]) if scored else pool[0]
    return None


def choose(cands: list[dict], max_drop: float, budgets: dict) -> tuple[dict | None, list[dict]]:
    """Mark each candidate with why it lost (or that it won) and return the winner: the accuracy floor
    (the reference's accuracy − max_drop; without labels, top-1 agreement with the reference), a
    bf16/fp16 run that changes its own fp32 run's predictions (the same backend's, else any), each
    judged by too_many_flips; the latency (p90) and bytes budgets; then the fastest, by each
    candidate's p50 over the reference's in the same rounds (paired, so drift that slows a round
    cancels)."""
    ref = reference(cands)
    floor = None if ref is None or ref["accuracy"] is None else ref["accuracy"] - max_drop / 100
    what = "" if ref is None else f"{ref['name']} on {ref['backend']} ({ref['ran']['precision']})"
    own_fp32 = {}
    for c in cands:
        if c["ran"]["precision"] == "fp32":
            own_fp32.setdefault((c["name"], c["backend"]), c)
            own_fp32.setdefault(c["name"], c)
    for c in cands:
        why = []
        c["agreement_with_reference"] = None if ref is None or "task" in c else _agreement(c, ref)
        if floor is not None and c["accuracy"] is None:
            why.append("no accuracy was measured for it")
        elif floor is not None and c["accuracy"] < floor - 1e-9:
            why.append(
                f"{metric_name(c)} {100 * c['accuracy']:.2f}% is below {100 * floor:.2f}% ({what} − {max_drop:g} pt)"
            )
        if floor is None and ref is not None and c is not ref:
            agree, problem = _fidelity(c, ref, max_drop)
            if problem == "missing":
                why.append("no predictions to compare with the reference's (no labels: fidelity is the floor)")
            elif problem == "changed":
                why.append(
                    f"{_agrees_text(c, agree)} {what}: more changes than {max_drop:g}% "
                    "allows (no labels: fidelity is the floor)"
                )
        base = own_fp32.get((c["name"], c["backend"])) or own_fp32.get(c["name"])
        if base is not None and c["ran"]["precision"] in ("bf16", "fp16"):
            own, problem = _fidelity(c, base, max_drop, "vs_own_fp32")
            if problem == "missing":
                why.append("no predictions to compare with this file's fp32 run's")
            elif problem == "changed":
                why.append(
                    f"{c['ran']['precision']} changes the predictions: {_agrees_text(c, own)} this file's fp32 run "
                    f"on {base['backend']}, more changes than {max_drop:g}% allows"
                )
        if budgets.get("latency_p90_ms") and c["p90_ms"] > budgets["latency_p90_ms"]:
            why.append(f"p90 {c['p90_ms']:.3f} ms over the {budgets['latency_p90_ms']:g} ms budget")
        if budgets.get("model_bytes") and c["bytes"] > budgets["model_bytes"]:
            why.append(f"{c['bytes']:,} bytes over the {budgets['model_bytes']:,} budget")
        c["eligible"], c["why_not"] = not why, why
    for c in cands:
        c["time_vs_reference"] = None if ref is None else time_ratio(c, ref)
    ok = sorted((c for c in cands if c["eligible"]), key=lambda c: (c["time_vs_reference"], c["bytes"]))
    best, tied = break_tie(ok)
    for c in cands:
        c["chosen"], c["reference"] = c is best, c is ref
        if best is not None and c["eligible"] and c is not best:  # the ranking's own figures, so the two always agree
            r = c["time_vs_reference"] / best["time_vs_reference"]
            c["why_not"] = [f"slower: p50 ×{r:.2f} of the chosen one"]
            if id(c) in tied:
                c["why_not"] = [f"tied: p50 ×{r:.2f} of the chosen one, within the rounds' spread; {tied[id(c)]}"]
            elif r < 1:
                c["why_not"] = [f"p50 ×{r:.2f} of the chosen one, but surely slower than the one it ties"]
    return best, cands


def round_spread(a: dict, b: dict) -> tuple[float, float] | None:
    """The range of a's p50 over b's across the rounds they were timed in together, the highest and lowest
    20% of rounds cut as in paired_ratio (None without at least 3 shared rounds)."""
    ra, rb = a.get("p50_rounds_ms"), b.get("p50_rounds_ms")
    if not ra or not rb or len(ra) != len(rb) or len(ra) < 3:
        return None
    r = sorted(x / y for x, y in zip(ra, rb))
    cut = int(0.2 * len(r))
    inner = r[cut : len(r) - cut]
    return inner[0], inner[-1]


def break_tie(ranked: list[dict]) -> tuple[dict | None, dict]:
    """The choice among candidates ranked fastest first, and {id of each tied one: why it lost the tie}. A
    candidate is tied with the fastest when in some rounds (of the trimmed range) it ran at least as fast:
    the difference is within what the machine's noise makes of two equal runs, so noise must not decide.
    Among tied ones the smaller file wins, then the user's own model ("own"), then the faster p50."""
    if not ranked:
        return None, {}
    fastest = ranked[0]
    pool = [fastest] + [c for c in ranked[1:] if (s := round_spread(c, fastest)) is not None and s[0] <= 1.0]
    best = min(pool, key=lambda c: (c["bytes"], not c.get("own"), c["time_vs_reference"]))
    why = {}
    for c in pool:
        if c is not best:
            if best["bytes"] < c["bytes"]:
                why[id(c)] = "the smaller file chosen"
            elif best.get("own") and not c.get("own"):
                why[id(c)] = "the user's own model chosen"
            else:
                why[id(c)] = "the faster p50 chosen"
    if best is not fastest:
        best["tie"] = (
            f"tied with {fastest['name']} on {fastest['backend']} within the rounds' spread; " + why[id(fastest)]
        )
    return best, why


def metric_name(c: dict) -> str:
    """What a candidate's "accuracy" is: top-1 accuracy, or its task's metric (word accuracy, mAP, hmean)."""
    return c["task"]["metric"] if c.get("task") else "accuracy"


def time_ratio(a: dict, b: dict) -> float:
    """a's p50 over b's, paired round by round when both were timed in the same rounds (runtime/measure/compare.py)."""
    from edgepipe.runtime.measure.compare import paired_ratio

    ra, rb = a.get("p50_rounds_ms"), b.get("p50_rounds_ms")
    return paired_ratio(ra, rb) if ra and rb and len(ra) == len(rb) else a["p50_ms"] / b["p50_ms"]


def resolution_note(best: dict, ref: dict | None, max_drop: float) -> str | None:
    """A note when the test inputs are too few to hold the budget for the chosen candidate: the
    standard error of its paired accuracy difference from the reference is at most sqrt(d / n), with
    d the fraction of inputs on which the two disagree."""
    n, agree = best.get("accuracy_samples"), best.get("agreement_with_reference")
    if ref is None or best is ref or not n or agree is None or best["accuracy"] is None or "task" in best:
        return None
    se = 100 * float(np.sqrt((1 - agree) / n))
    if 2 * se <= max_drop:
        return None
    diff = 100 * (best["accuracy"] - ref["accuracy"])
    return (
        f"the chosen model's accuracy {'gain' if diff > 0 else 'drop'} against {ref['name']} "
        f"({diff:+.2f} pt) is measured "
        f"on {n} inputs, on {round((1 - agree) * n)} of which the two disagree: known to about ±{2 * se:.1f} pt, wider "
        f"than the {max_drop:g} pt budget; more test inputs would resolve it"
    )


def not_at_chance(measured: list[dict], y, task: dict | None) -> None:
    """One line, instead of a choice, when the reference (the best fp32 run) scores no better than guessing on
    labelled classes: the labels do not mean what the outputs mean (class folders in another order, or named
    otherwise than the model's classes), and every candidate would be judged against noise."""
    ref = reference(measured)
    if ref is None or ref["accuracy"] is None:
        return
    t = ref.get("task") or {}
    if t.get("task", "classify") != "classify":  # a task's metric of exactly 0 against labels: nothing found
        if t.get("against") == "labels" and ref["accuracy"] == 0:
            raise EdgepipeError(
                f"deploy: {ref['name']} scores {t.get('metric')} 0 against the labels of "
                f"{(task or {}).get('what') or (task or {}).get('images') or 'the test split'}: "
                "it finds nothing they hold, so every candidate would be judged against nothing; train it further, "
                "or check that the labels are the model's (its classes, its input size)"
            )
        return
    classes = ref["task"].get("classes") if ref.get("task") else len(np.unique(y)) if y is not None else 0
    n = ref.get("accuracy_samples") or 0
    if at_chance(ref["accuracy"], n, classes or 0):
        where = f" of {task['images']}" if task else ""
        raise EdgepipeError(
            f"deploy: {ref['name']} scores {100 * ref['accuracy']:.1f}% on {n} labelled images{where}, no better "
            f"than guessing among {classes} classes: the labels do not mean what the model's outputs mean. Name the "
            "class folders by the model's classes in output order (--classes A,B,… writes them into the contract), "
            "or give images without class folders to judge against the model's own predictions"
        )
