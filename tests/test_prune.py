import json

import numpy as np
import onnx
import pytest
from conftest import edgepipe, run_recipe
from onnx import numpy_helper

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.compress.sparsity import (
    MagnitudeRule,
    apply_masks,
    gradual_sparsity,
    magnitude_masks,
    prunable_layers,
    sparsity_report,
)
from edgepipe.pipeline.models.builtin import ModelSpec, build_model


def small_model():
    import paddle

    paddle.seed(0)
    return build_model(ModelSpec(conv=(4, 8), fc=(16,)))


def test_threshold_zeroes_exactly_the_weights_below_it():
    model = small_model()
    layers = prunable_layers(model, ("*",))
    before = {n: m.weight.numpy().copy() for n, m in layers.items()}
    t = float(np.median(np.abs(before["fc1"])))
    apply_masks(layers, magnitude_masks(layers, MagnitudeRule(threshold=t)))
    for n, m in layers.items():
        w, w0 = m.weight.numpy(), before[n]
        assert np.array_equal(w == 0, np.abs(w0) < t)
        assert np.array_equal(w[w != 0], w0[np.abs(w0) >= t])  # survivors untouched


def test_layer_scope_reaches_the_sparsity_in_every_layer_and_global_uses_one_threshold():
    model = small_model()
    layers = prunable_layers(model, ("*",))
    masks = magnitude_masks(layers, MagnitudeRule(sparsity=0.7))
    for n, mask in masks.items():
        assert (mask == 0).sum() == round(0.7 * mask.size), n
        w = np.abs(layers[n].weight.numpy())
        assert w[mask == 0].max() <= w[mask == 1].min()  # the smallest ones go
    g = magnitude_masks(layers, MagnitudeRule(sparsity=0.7, scope="global"))
    pruned_max = max(np.abs(layers[n].weight.numpy())[m == 0].max() for n, m in g.items() if (m == 0).any())
    kept_min = min(np.abs(layers[n].weight.numpy())[m == 1].min() for n, m in g.items() if (m == 1).any())
    assert pruned_max <= kept_min
    total = sum(m.size for m in g.values())
    assert sum((m == 0).sum() for m in g.values()) == pytest.approx(0.7 * total, abs=2)
    per_layer = {n: (m == 0).mean() for n, m in g.items()}
    assert max(per_layer.values()) - min(per_layer.values()) > 0.05  # layers differ under one threshold


def test_gradual_schedule_is_cubic_from_zero_to_final_then_held():
    s = [gradual_sparsity(t, 100, 0.8) for t in range(101)]
    assert s[0] == 0.0 and s[75] == pytest.approx(0.8) and s[100] == pytest.approx(0.8)
    assert all(a <= b + 1e-12 for a, b in zip(s, s[1:]))
    assert s[25] == pytest.approx(0.8 * (1 - (1 - 25 / 75) ** 3))


def test_unknown_or_unprunable_layer_names_are_clear_errors():
    model = small_model()
    with pytest.raises(EdgepipeError, match="'nope' matches no layer; prunable layers: conv1, conv2, fc1, fc2"):
        prunable_layers(model, ("nope",))


RECIPE = """\
name: pruneshort
seed: 0
data: {train_limit: 600, test: 300, val: 100, calibration: 64}
stages:
  - train: {model: {conv: [8, 16], fc: [32]}, epochs: 2, output: student}
  - prune: {model: student, sparsity: 0.8, schedule: gradual, frequency: 5, epochs: 2, teacher: previous}
  - prune: {model: student, threshold: 0.05, epochs: 0, output: student_thresh}
  - prune: {model: student, channels: {ratio: 0.5, round_to: 1, per_layer: [{name: fc1, ratio: 0.25}]},
      epochs: 1, teacher: previous, output: student_slim}
  - export: {models: [student, student_pruned, student_thresh, student_slim], parity_samples: 64}
  - report: {}
"""


def test_prune_stage_holds_masks_through_fine_tuning_and_exports(tmp_path):
    _, run_dir, s = run_recipe(tmp_path, RECIPE, "pruneshort")
    m = s["prune"]["metrics"]
    assert {r["layer"] for r in m["layers"]} == {"conv1", "conv2", "fc1", "fc2"}
    for r in m["layers"]:  # the gradual ramp ended at 0.8 and fine-tuning did not regrow a weight
        assert r["sparsity"] == pytest.approx(0.8, abs=0.01), r
    assert m["teacher"] and m["test_acc_pruned"] is None and len(m["history"]) == 2
    # the exported ONNX carries the zeros: same dense bytes, far fewer deflated bytes
    graph = onnx.load(str(run_dir / "export" / "student_pruned.onnx")).graph
    big = [numpy_helper.to_array(t) for t in graph.initializer if numpy_helper.to_array(t).size >= 128]
    assert sum((w == 0).sum() for w in big) / sum(w.size for w in big) > 0.78
    arts = {n: a["meta"] for st in s.values() for n, a in st.get("artifacts", {}).items()}
    dense, pruned = arts["student.onnx"], arts["student_pruned.onnx"]
    assert pruned["bytes"] == dense["bytes"] and pruned["params"] == dense["params"]
    assert pruned["deflated_bytes"] < 0.6 * dense["deflated_bytes"]
    report = (run_dir / "report" / "report.md").read_text()
    assert "## Pruning" in report and "Unstructured magnitude pruning" in report and "| fc1 | 25,088 |" in report
    assert f"deflated (zip) {dense['deflated_bytes']:,} → {pruned['deflated_bytes']:,} bytes" in report
    slim = s["prune3"]["metrics"]
    kept = {g["group"][0]: g.get("kept") for g in slim["groups"]}
    assert kept == {"conv1": 4, "conv2": 8, "fc1": 24, "fc2": None}  # 8, 16 and 32 channels; fc2 makes the logits
    assert slim["params_after"] < 0.5 * slim["params_before"] and len(slim["history"]) == 1
    assert (
        arts["student_slim.onnx"]["bytes"] < 0.5 * dense["bytes"]
        and arts["student_slim.onnx"]["macs"] < 0.5 * dense["macs"]
    )
    assert arts["student_slim.onnx"]["parity"]["max_abs_diff"] < 1e-3
    assert "| conv2 | — | 16 | 8 |" in report and "| fc2 | — | 10 | — | model output |" in report
    sp = slim["speed"]  # measured, both models, interleaved; reported with its spread and where round_to came from
    assert (
        sp["rounds"] == 5
        and sp["p50_before_ms"] > 0
        and sp["p50_after_ms"] > 0
        and slim["rule"]["channels"]["round_to"] == 1
    )
    assert f"×{sp['speedup']:.2f}" in report and "round to 1 from recipe" in report
    # the slim artifact reloads in a fresh process by replaying prune_channels
    again = tmp_path / "again.onnx"
    proc = edgepipe("export", run_dir / "prune3" / "student_slim", "-o", again)
    assert proc.returncode == 0, proc.stderr
    assert again.stat().st_size == arts["student_slim.onnx"]["bytes"]
    thresh = s["prune2"]["metrics"]
    assert thresh["test_acc_pruned"] == thresh["test_acc_after"] and thresh["history"] == []
    assert 0 < thresh["sparsity"] < 1


RES_RECIPE = """\
name: pruneres
seed: 0
data: {train_limit: 600, test: 300, val: 100, calibration: 64}
stages:
  - train: {model: {family: resnet, conv: [8, 16], fc: [], blocks: 2}, epochs: 1, output: res}
  - prune: {model: res, channels: {criterion: taylor, samples: 128, round_to: 1, target: {macs: 0.6}},
      sensitivity: {ratios: [0.25, 0.5, 0.75]}, epochs: 1, teacher: previous, output: res_slim}
  - prune: {model: res, blocks: {count: 1}, epochs: 1, output: res_short}
  - export: {models: [res, res_slim, res_short], parity_samples: 32}
  - report: {}
"""


@pytest.mark.long  # 85 s: block removal has its own quick tests (test_layer_prune.py); `make test-long` runs this
def test_residual_model_sensitivity_target_and_block_removal(tmp_path):
    _, run_dir, s = run_recipe(tmp_path, RES_RECIPE, "pruneres")
    slim = s["prune"]["metrics"]
    assert sorted(slim["sensitivity"]["files"]) == ["sensitivity.json", "sensitivity.png"]
    doc = json.loads((run_dir / "prune" / "sensitivity.json").read_text())
    assert doc["criterion"] == "taylor" and doc["val_samples"] == 100
    assert all(len(grp["points"]) == 3 for grp in doc["groups"])
    assert (run_dir / "prune" / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    alloc = doc["allocation"]
    assert alloc["macs"] <= 0.6 * doc["baseline"]["macs"] and alloc["ratios"]
    # the residual stage's channels (stem + stage1 blocks, tied by the adds) form one group
    groups = {tuple(grp["group"]) for grp in doc["groups"]}
    assert any({"stem.0", "stage1.0.conv2", "stage1.1.conv2"} <= set(grp) for grp in groups), groups
    arts = {n: a["meta"] for st in s.values() for n, a in st.get("artifacts", {}).items()}
    assert arts["res_slim.onnx"]["macs"] < 0.7 * arts["res.onnx"]["macs"]
    short = s["prune2"]["metrics"]
    assert len(short["removed"]) == 1 and short["removed"][0] in {"stage1.0", "stage1.1", "stage2.1"}
    assert {c["block"] for c in short["rounds"][0]["candidates"]} == {"stage1.0", "stage1.1", "stage2.1"}
    assert (
        short["params_after"] < short["params_before"] and arts["res_short.onnx"]["bytes"] < arts["res.onnx"]["bytes"]
    )
    report = (run_dir / "report" / "report.md").read_text()
    assert "`prune/sensitivity.json`, `prune/sensitivity.png`" in report and "Chosen for the target: " in report
    assert (
        "blocks replaced by the identity, chosen by validation accuracy lost when each is bypassed alone: "
        f"{short['removed'][0]}" in report
    )
    again = tmp_path / "again.onnx"  # both artifacts replay their transforms in a fresh process
    for name, folder in (("res_short", "prune2/res_short"), ("res_slim", "prune/res_slim")):
        proc = edgepipe("export", run_dir / folder, "-o", again)
        assert proc.returncode == 0, proc.stderr
        assert again.stat().st_size == arts[f"{name}.onnx"]["bytes"]
    # the sensitivity analysis alone, from the command line
    out = tmp_path / "sens"
    proc = edgepipe(
        "prune",
        run_dir / "train" / "res",
        "--sensitivity",
        "-o",
        out,
        "--ratios",
        "0.5",
        "--val-samples",
        "50",
        "--target",
        "params=0.7",
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["sensitivity.json", "sensitivity.png"]
    assert "per_layer for the prune stage" in proc.stdout and "left alone: fc1 (model output)" in proc.stdout
    for args, message in [
        ((), "add --sensitivity"),
        (("--sensitivity", "--criterion", "tailor"), "did you mean 'taylor'"),
        (("--sensitivity", "--ratios", "0.5,x"), "--ratios 0.5,x"),
        (("--sensitivity", "--target", "params=0.01", "--ratios", "0.5"), "target params 0.01"),
    ]:
        bad = tmp_path / "bad"
        proc = edgepipe("prune", run_dir / "train" / "res", "-o", bad, *args)
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, (args, proc.stderr)
        assert not bad.exists()


@pytest.mark.parametrize(
    "stage, message",
    [
        ("{threshold: 0.1, sparsity: 0.5}", "stages[1].prune.sparsity: give exactly one of threshold"),
        (
            "{channels: {ratio: 0.5}, schedule: gradual}",
            "stages[1].prune.schedule: channel and block pruning are one-shot",
        ),
        ("{channels: {ratio: 0.5, criterion: tailor}}", "stages[1].prune.channels.criterion: 'tailor' is not one of"),
        (
            "{channels: {target: {macs: 0.5, params: 0.5}}}",
            "stages[1].prune.channels.target.target: give exactly one of params",
        ),
        (
            "{sparsity: 0.5, sensitivity: {}}",
            "stages[1].prune.sensitivity: the sensitivity analysis is for structured pruning",
        ),
        (
            "{channels: {}, sensitivity: {ratios: [0.5, 0.3]}}",
            "stages[1].prune.sensitivity.ratios: list them in increasing order",
        ),
        ("{blocks: {count: 1}, threshold: 0.1}", "stages[1].prune.sparsity: give exactly one of"),
        ("{channels: {ratio: 1.0}}", "stages[1].prune.channels.ratio: must be in (0, 1)"),
        ("{threshold: 0.1, scope: global}", "stages[1].prune.scope: global scope ranks weights by sparsity"),
        (
            "{sparsity: 0.5, schedule: gradual, epochs: 0}",
            "stages[1].prune.schedule: gradual pruning happens during fine-tuning",
        ),
        ("{sparsity: 1.5}", "stages[1].prune.sparsity: must be in (0, 1)"),
    ],
)
def test_prune_config_errors_name_the_key(tmp_path, stage, message):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(f"name: bad\nstages:\n  - train: {{output: student}}\n  - prune: {stage}\n")
    proc = edgepipe("run", recipe, "--runs-dir", tmp_path / "runs")
    assert proc.returncode == 2
    assert message in proc.stderr, proc.stderr
    assert not (tmp_path / "runs" / "bad").exists()


def test_sparsity_report_counts_zeros():
    model = small_model()
    layers = prunable_layers(model, ("fc*",))
    apply_masks(layers, magnitude_masks(layers, MagnitudeRule(sparsity=0.5)))
    rows = {r["layer"]: r for r in sparsity_report(layers)}
    assert set(rows) == {"fc1", "fc2"} and rows["fc2"]["zeros"] == 80 and rows["fc2"]["weights"] == 160
