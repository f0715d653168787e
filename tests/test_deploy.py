"""The deploy stage: the fastest model × backend × precision that keeps the accuracy and the budgets,
measured side by side, written as deploy.json, and run as chosen by the runner."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import one_line_error

from edgepipe.pipeline.core.manifest import verify_run
from edgepipe.pipeline.stages.choice import choose, resolution_note, too_many_flips
from edgepipe.runtime.model.backends import available


def cand(name, acc, p50, precision="fp32", backend="onnxruntime", p90=None, nbytes=1000, preds=None, n=None):
    return {
        "name": name,
        "backend": backend,
        "accuracy": acc,
        "p50_ms": p50,
        "p90_ms": p90 or p50 * 1.2,
        "bytes": nbytes,
        "ran": {"precision": precision},
        "predictions": preds,
        "accuracy_samples": n,
    }


def test_choose_takes_the_fastest_that_keeps_accuracy_and_budgets():
    cands = [
        cand("float.onnx", 0.970, 0.10),
        cand("int8.onnx", 0.975, 0.15, "int8"),
        cand("tiny.onnx", 0.950, 0.05),
        cand("fast_big.onnx", 0.971, 0.06, nbytes=10**9),
        cand("slow_tail.onnx", 0.97, 0.07, p90=30.0),
    ]
    best, table = choose(cands, max_drop=1.0, budgets={"latency_p90_ms": 20.0, "model_bytes": 10**8})
    assert best["name"] == "float.onnx" and [c["name"] for c in table if c["chosen"]] == ["float.onnx"]
    why = {c["name"]: " ".join(c["why_not"]) for c in table}
    assert "slower: p50 ×1.50" in why["int8.onnx"]
    assert "below 96.10%" in why["tiny.onnx"]  # best float 97.1% − 1 pt
    assert "bytes over" in why["fast_big.onnx"] and "over the 20 ms budget" in why["slow_tail.onnx"]
    best, _ = choose(cands, max_drop=3.0, budgets={})
    assert best["name"] == "tiny.onnx"  # with room for 3 points and no budgets, the fastest wins
    assert choose([cand("a", 0.5, 1.0, p90=50.0)], 1.0, {"latency_p90_ms": 20.0})[0] is None


def test_a_lucky_bf16_run_neither_raises_the_bar_nor_passes_when_it_changes_the_predictions():
    """The case measured on a weak (random-backbone) MobileNetV2: bf16 scored 24.2% against fp32's
    20.3% on 128 validation digits while agreeing with fp32 on under half of them."""
    fp32 = [i % 10 for i in range(100)]
    flipped = [(p + 1) % 10 if i % 2 else p for i, p in enumerate(fp32)]  # half the predictions changed
    cands = [
        cand("net.onnx", 0.203, 6.0, preds=fp32),
        cand("net.onnx", 0.203, 6.2, "fp32", "openvino", preds=fp32),
        cand("net.onnx", 0.242, 3.6, "bf16", "openvino", preds=flipped),
    ]
    best, table = choose(cands, max_drop=1.0, budgets={})
    assert best is cands[0] and cands[0]["reference"]  # the floor is fp32's 20.3% − 1, not bf16's 24.2% − 1
    assert "bf16 changes the predictions" in " ".join(cands[2]["why_not"]) and "50.0%" in " ".join(cands[2]["why_not"])
    assert cands[2]["agreement_with_reference"] == 0.5
    kept = [p if i else (p + 1) % 10 for i, p in enumerate(fp32)]  # 1 change in 100: within a 1-pt margin
    best, _ = choose(cands[:2] + [cand("net.onnx", 0.203, 3.6, "bf16", "openvino", preds=kept)], 1.0, {})
    assert best["ran"]["precision"] == "bf16"


def test_without_labels_the_floor_is_agreement_with_the_first_fp32_model():
    ref = [i % 10 for i in range(200)]
    close = [(p + 1) % 10 if i < 1 else p for i, p in enumerate(ref)]  # 99.5% agreement
    far = [(p + 1) % 10 if i < 10 else p for i, p in enumerate(ref)]  # 95%
    cands = [
        cand("float.onnx", None, 1.0, preds=ref),
        cand("int8.onnx", None, 0.5, "int8", preds=far),
        cand("pruned.onnx", None, 0.7, preds=close),
    ]
    best, _ = choose(cands, max_drop=1.0, budgets={})
    assert best["name"] == "pruned.onnx" and cands[0]["reference"]
    assert (
        "agrees on 95.0% of the inputs with float.onnx on onnxruntime (fp32): more changes than 1% allows"
        in " ".join(cands[1]["why_not"])
    )
    assert choose(cands, max_drop=5.0, budgets={})[0]["name"] == "int8.onnx"


def test_too_few_test_inputs_for_the_budget_is_noted():
    ref = [i % 10 for i in range(256)]
    other = [(p + 1) % 10 if i < 40 else p for i, p in enumerate(ref)]  # 40 of 256 disagree: 2·sqrt(40/256²) = ±4.9 pt
    cands = [cand("a.onnx", 0.50, 1.0, preds=ref, n=256), cand("b.onnx", 0.496, 0.5, preds=other, n=256)]
    best, _ = choose(cands, 1.0, {})
    note = resolution_note(best, cands[0], 1.0)
    assert best["name"] == "b.onnx" and "on 256 inputs, on 40 of which the two disagree" in note and "±4.9 pt" in note
    cands[1]["predictions"] = [p if i else (p + 1) % 10 for i, p in enumerate(ref)]  # 1 disagreement: resolved
    choose(cands, 1.0, {})
    assert resolution_note(cands[1], cands[0], 1.0) is None


def test_short_run_deploys_its_fastest_candidate_and_the_runner_runs_it(short_run, tmp_path):
    run_dir, proc = short_run
    d = json.loads((run_dir / "deploy" / "deploy.json").read_text())
    assert d["schema"] == "edgepipe-deployment/1" and (run_dir / "deploy" / d["model"]).is_file()
    table = d["candidates"]
    backends = {c["backend"] for c in table}
    assert backends == ({"onnxruntime", "openvino"} if available("openvino")[0] else {"onnxruntime"})
    assert len(table) == 4 * len({(c["backend"], c["precision"]) for c in table})  # every model on every pairing
    chosen = [c for c in table if c["chosen"]]
    fastest = min((c for c in table if c["eligible"]), key=lambda c: c["time_vs_reference"])
    # the fastest, or one tied with it within the rounds' noise and preferred by the tie rule (choice.break_tie),
    # which the fastest's why_not then says
    assert len(chosen) == 1 and (chosen[0] is fastest or str(fastest.get("why_not")).startswith("['tied:")), (
        chosen[0]["name"],
        fastest["name"],
        fastest.get("why_not"),
    )
    ref = [c for c in table if c["reference"]]
    assert len(ref) == 1 and ref[0]["time_vs_reference"] == 1.0 and ref[0]["ran"]["precision"] == "fp32"
    assert d["input_contract"] and "deployment:" in proc.stdout
    assert verify_run(run_dir) == []
    out = tmp_path / "r.json"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgepipe.runtime",
            "--deployment",
            run_dir / "deploy" / "deploy.json",
            "--inputs",
            run_dir / "bench" / "test_split.npz",
            "--iters",
            "5",
            "--min-seconds",
            "0",
            "--energy-seconds",
            "0",
            "--json",
            out,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["backend"]["name"] == d["backend"] and res["options"]["threads"] == d["threads"]
    assert abs(res["accuracy"] - d["accuracy"]) < 1e-9  # the same session type on the same test split
    md = (run_dir / "report" / "report.md").read_text()
    assert "## Deployment" in md and "**chosen**" in md


def test_a_bad_deployment_file_is_one_line(tmp_path):
    bad = tmp_path / "deploy.json"
    bad.write_text('{"schema": "edgepipe-deployment/1", "model": "../x.onnx"}')
    r = subprocess.run(
        [sys.executable, "-m", "edgepipe.runtime", "--deployment", bad], capture_output=True, text=True, timeout=120
    )
    assert "must be a file name beside deploy.json" in one_line_error(r)
    r = subprocess.run([sys.executable, "-m", "edgepipe.runtime"], capture_output=True, text=True, timeout=120)
    assert "--deployment" in one_line_error(r)


def test_deploy_command_on_a_finished_run(short_run, tmp_path):
    from conftest import edgepipe

    run_dir, _ = short_run
    out = tmp_path / "dep"
    proc = edgepipe(
        "deploy",
        run_dir,
        "--rounds",
        "1",
        "--seconds",
        "0.02",
        "--max-drop",
        "100",
        "--backend",
        "onnxruntime",
        "-o",
        out,
    )
    assert proc.returncode == 0, proc.stderr
    d = json.loads((out / "deploy.json").read_text())
    assert (out / d["model"]).is_file() and {c["backend"] for c in d["candidates"]} == {"onnxruntime"}
    assert sorted(p.name for p in out.iterdir()) == sorted(["deploy.json", d["model"]])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial folder left
    line = one_line_error(edgepipe("deploy", run_dir, "--inputs", tmp_path / "none.npz", "-o", tmp_path / "d2"))
    assert "none.npz: test inputs not found" in line and not (tmp_path / "d2").exists()


def test_candidates_are_ranked_by_their_time_paired_with_the_reference_round_by_round():
    from edgepipe.runtime.measure.compare import paired_ratio

    drift = [1.0, 1.0, 3.0, 1.0, 2.0]  # the host's speed from round to round
    assert paired_ratio([1.1 * d for d in drift], drift) == pytest.approx(1.1)  # drift cancels
    assert paired_ratio([1.1, 1.1, 1.1, 1.1, 9.0], [1.0] * 5) == pytest.approx(1.1)  # one stalled round is cut
    ref = cand("float.onnx", 0.97, 1.0)
    fast = cand("int8.onnx", 0.97, 1.0, "int8")
    ref["p50_rounds_ms"] = drift
    fast["p50_rounds_ms"] = [0.8 * d for d in drift]
    best, table = choose([ref, fast], 1.0, {})
    assert best is fast and fast["time_vs_reference"] == pytest.approx(0.8) and ref["time_vs_reference"] == 1.0
    assert "slower: p50 ×1.25 of the chosen one" in ref["why_not"]


def test_a_tie_within_the_rounds_spread_goes_to_the_smaller_file_then_the_users_own_model():
    drift = [1.0, 1.2, 1.0, 1.1, 1.0]
    ref = cand("float.onnx", 0.97, 1.0, nbytes=4000)
    ref["own"] = True
    q = cand("int8.onnx", 0.97, 1.0, "int8", nbytes=1000)  # 2% slower on the median, faster in two rounds
    ref["p50_rounds_ms"], q["p50_rounds_ms"] = drift, [d * r for d, r in zip(drift, [1.05, 0.98, 1.02, 0.99, 1.04])]
    best, _ = choose([ref, q], 1.0, {})
    assert best is q and "tied with float.onnx" in q["tie"] and "the smaller file chosen" in q["tie"]
    assert ref["why_not"][0].startswith("tied: p50 ×")
    q["p50_rounds_ms"] = [d * 1.05 for d in drift]  # slower in every round: no tie, the faster one wins
    best, _ = choose([ref, q], 1.0, {})
    assert best is ref and "slower: p50 ×1.05" in q["why_not"][0] and "tie" not in ref
    plain = cand("other.onnx", 0.97, 1.0, nbytes=4000)  # the same size, not the user's, a little faster
    plain["p50_rounds_ms"] = [d * r for d, r in zip(drift, [0.97, 1.01, 0.98, 1.02, 0.99])]
    best, _ = choose([ref, plain], 1.0, {})
    assert best is ref and "the user's own model chosen" in plain["why_not"][0]
    ov = cand("float.onnx", 0.97, 1.0, backend="openvino", nbytes=4000)  # the same file on another backend
    ov["own"], ov["p50_rounds_ms"] = True, plain["p50_rounds_ms"]
    best, _ = choose([ref, ov], 1.0, {})
    assert (
        best is ov
        and "tie" not in ov
        and ref["why_not"][0].startswith("tied")
        and "faster p50 chosen" in ref["why_not"][0]
    )


def test_changed_predictions_are_judged_by_a_binomial_test_sized_by_the_inputs():
    assert [k for k in range(10) if too_many_flips(1 - k / 128, 128, 1.0)][0] == 4  # 3 changes in 128 pass at 1 pt
    assert [k for k in range(30) if too_many_flips(1 - k / 1000, 1000, 1.0)][0] == 16
    assert too_many_flips(0.99, 100, 0.0) and not too_many_flips(1.0, 100, 0.0)


def test_the_reference_and_the_checks_hold_when_candidates_are_odd():
    # no fp32 candidate: the most accurate of all is the reference, and the message names what it is
    a, b = cand("a.int8.onnx", 0.50, 1.0, "int8"), cand("b.int8.onnx", 0.10, 0.5, "int8")
    best, _ = choose([a, b], 1.0, {})
    assert best is a and a["reference"] and "(a.int8.onnx on onnxruntime (int8) − 1 pt)" in b["why_not"][0]
    # a candidate without an accuracy where the others have one is not waved through
    c = cand("c.onnx", None, 0.1)
    best, _ = choose([cand("f.onnx", 0.9, 1.0), c], 1.0, {})
    assert best["name"] == "f.onnx" and c["why_not"] == ["no accuracy was measured for it"]
    # without labels, a candidate with no predictions to compare is not waved through either
    ref = [i % 10 for i in range(100)]
    d = cand("d.onnx", None, 0.1, "int8")
    best, _ = choose([cand("f.onnx", None, 1.0, preds=ref), d], 1.0, {})
    assert best["name"] == "f.onnx" and "no predictions to compare" in d["why_not"][0]
    # the bf16 run is held to the same backend's fp32 run when there is one
    ov = [p if i else (p + 1) % 10 for i, p in enumerate(ref)]  # OpenVINO f32 differs from onnxruntime on one input
    cands = [
        cand("f.onnx", 0.9, 1.0, preds=ref),
        cand("f.onnx", 0.9, 1.1, "fp32", "openvino", preds=ov),
        cand("f.onnx", 0.9, 0.5, "bf16", "openvino", preds=ov),
    ]
    best, _ = choose(cands, 0.0, {})
    assert best is cands[2]  # identical to its own backend's fp32 run, so no change is charged to it


def test_peers_bench_against_counts_the_ratios_that_moved(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
    from peers_bench import against

    def row(peer, r, kept):
        return {
            "model": "m",
            "threads": 1,
            "peer": peer,
            "ratio_to_fastest_peer": r,
            "ratio_to_fastest_accurate_peer": kept,
            "host_load": {"max_busy_share": 0.0},
        }

    old = [row("a", 1.0, 1.0), row("b", 2.0, 1.0)]
    new = [row("a", 1.0, 1.0), row("b", 2.6, 1.1)]
    text = against(new, old, tmp_path / "old.json")
    assert "ratio_to_fastest_peer: 1 of 2 within 15%" in text and "m, 1 thread(s), b: ×2.00 then ×2.60 (+30%" in text
    assert "ratio_to_fastest_accurate_peer: 2 of 2 within 15%" in text
