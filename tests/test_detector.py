"""The detector that trains here (models/detector.py) on detection frames: its targets, its loss and the
runtime's decoder agree (a few frames are overfitted to mAP@.5 ≥ 0.9 as the device decodes them), and a
recipe trains it and exports a file the runner decodes and scores with no task flags."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import edgepipe, one_line_error

from edgepipe.pipeline.data.detframes import make_detection_frames, read_split
from edgepipe.pipeline.models.detector import DetectionLoss, PicoDetLite, assign, cell_centres, layer_map
from edgepipe.pipeline.training import fit, seed_everything


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    root = tmp_path_factory.mktemp("det") / "frames"
    make_detection_frames(root, size=64, counts={"train": 16, "val": 4, "test": 4}, max_objects=3, seed=0)
    pixels, boxes = read_split(root / "train", "instances_train.json")
    x = ((np.stack(pixels).astype(np.float32) / 255 - 0.5) / 0.25).transpose(0, 3, 1, 2).copy()
    return x, boxes


def test_every_box_gets_cells_inside_it_and_no_cell_serves_two(frames):
    _, boxes = frames
    centres, steps, level = cell_centres((64, 64), (8, 16))
    assert len(centres) == 8 * 8 + 4 * 4 and steps.tolist().count(8) == 64
    for b in boxes:
        owner = assign(b, centres, steps, level, (8, 16))
        for j, (x1, y1, x2, y2, _) in enumerate(b):
            mine = centres[owner == j]
            assert len(mine) >= 1, (j, b)
            if len(mine) > 1:  # centre sampling: inside the box (a lone fallback cell is merely the nearest)
                assert ((mine[:, 0] > x1) & (mine[:, 0] < x2) & (mine[:, 1] > y1) & (mine[:, 1] < y2)).all()
        assert set(np.unique(owner)) <= set(range(-1, len(b)))  # one owner per cell by construction


@pytest.fixture(scope="module")
def learnt(frames):
    """A detector trained on the 16 frames until it knows them by heart (150 steps, about 15 s)."""
    x, boxes = frames
    rng = seed_everything(0)
    model = PicoDetLite(10, width=16)
    loss = DetectionLoss(boxes, (64, 64), model.strides, model.reg_max)
    hist = fit(model, x, np.arange(len(x)), epochs=150, batch_size=16, lr=0.01, rng=rng, loss_fn=loss,
               accuracy=False, desc="overfit")  # fmt: skip
    return model, hist


def test_the_loss_and_the_runtime_decoder_agree_on_the_boxes(frames, learnt):
    """16 frames learnt by heart: decoded by the runtime's detect task (its strides, cell offset and
    distribution), the boxes score mAP@.5 ≥ 0.9 against the very boxes the loss was given. A sign, a
    stride or an offset that differs between the loss and the decoder keeps this near 0."""
    x, boxes = frames
    model, hist = learnt
    assert hist[-1]["loss"] < hist[0]["loss"] / 3 and "train_acc" not in hist[-1]
    figures = layer_map(model, x, boxes)
    assert figures["map50"] >= 0.9, figures


def test_its_onnx_export_decodes_to_paddles_boxes(frames, learnt, tmp_path):
    """Exported with its task in the metadata, the file decodes (with no settings given) to the boxes the
    Paddle model's outputs decode to."""
    import onnxruntime as ort

    from edgepipe.pipeline.models.detector import predict_levels, task_settings
    from edgepipe.pipeline.stages.export import export_layer_checked
    from edgepipe.runtime.tasks.base import task_of

    x, _ = frames
    model, _ = learnt
    task_meta = {"name": "detect", "settings": task_settings(model)}
    facts = export_layer_checked(model, (3, 64, 64), tmp_path / "d.onnx", x[:8], opset=13, atol=1e-4, rtol=1e-3,
                                 name="d", task=task_meta)  # fmt: skip
    assert facts["parity"]["outputs"] == 4
    session = ort.InferenceSession(str(tmp_path / "d.onnx"), providers=["CPUExecutionProvider"])
    task, image = task_of(session), session.get_inputs()[0].name
    assert task.settings["strides"] == [8, 16] and task.settings["reg_max"] == 7
    names = [o.name for o in session.get_outputs()]
    found = 0
    for i, ref in enumerate(predict_levels(model, x)):
        want = task.decode(dict(zip(names, ref.values())), {"input_hw": (64, 64)})
        got = task.decode(dict(zip(names, session.run(None, {image: x[i : i + 1]}))), {"input_hw": (64, 64)})
        confident = want[:, 4] > 0.2  # the boxes that count; near-ties at the threshold may swap
        assert np.allclose(got[confident], want[confident], atol=1e-3), (got[:3], want[:3])
        found += int(confident.sum())
    assert found >= len(x)  # at least a box a frame compared


RECIPE = """\
name: det
seed: 0
data: {source: frames, size: [64, 64], frames: {objects: 3, count: 60}, test: 12, val: 8, calibration: 0.1}
stages:
  - train:
      model: {python: "edgepipe.pipeline.models.detector:picodet_lite", kwargs: {width: 8}}
      epochs: 1
      batch_size: 16
      augment_shift: 0
      output: detector
  - export: {models: [detector], parity_samples: 8}
  - quantize: {model: detector.onnx, calibration_samples: 8, max_accuracy_drop: 1.0}
"""


def test_a_recipe_trains_a_detector_and_the_runner_decodes_its_file_unaided(tmp_path):
    recipe = tmp_path / "det.yaml"
    recipe.write_text(RECIPE)
    proc = edgepipe("run", recipe, "--runs-dir", tmp_path / "runs")
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "runs" / "det"
    manifest = json.loads((run / "manifest.json").read_text())
    train, export = manifest["stages"]["train"], manifest["stages"]["export"]
    assert train["metrics"]["task"] == "detect" and {"test_map", "test_map50", "val_map50"} <= set(train["metrics"])
    assert "detection frames made from the bundled MNIST digits" in manifest["data"]["source"]
    assert manifest["data"]["counts"] == {"train": 54, "val": 8, "test": 12, "calibration": 6}
    facts = export["metrics"]["detector"]
    assert facts["parity"]["outputs"] == 4 and facts["parity"]["max_abs_diff"] < 1e-4 and "map50" in facts
    meta = {p.key: p.value for p in onnx.load(run / "export" / "detector.onnx").metadata_props}
    task = json.loads(meta["edgepipe.task"])
    assert task == {"name": "detect", "head": "distribution", "strides": [8, 16], "reg_max": 7} | {
        k: v for k, v in task.items() if k not in ("name", "head", "strides", "reg_max")
    }
    test_dir = Path(os.environ["EDGEPIPE_CACHE"]) / "frames" / "det-64-3-60-8-12-0" / "test"  # made by the run
    args = [run / "export" / "detector.onnx", "--images", test_dir, "--profile", "none", "--iters", "3",
            "--min-seconds", "0.01", "--energy-seconds", "0", "--json", tmp_path / "r.json"]  # fmt: skip
    r = subprocess.run([sys.executable, "-m", "edgepipe.runtime", *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    score = json.loads((tmp_path / "r.json").read_text())["task"]
    assert score["task"] == "detect" and score["against"] == "labels", score
    assert score["value"] == pytest.approx(facts["map"], abs=1e-6)  # the runner's mAP is export's
    q = manifest["stages"]["quantize"]["metrics"]
    assert q["metric"] == "mAP@[.5:.95]" and q["accuracy_drop_points"] is not None and "map50" in q
    # deploy scores the candidates by mAP on the test split; one trained for a single epoch finds nothing yet
    # (mAP 0 against the labels), which deploy says in one line rather than choosing among zeros
    recipe.write_text(RECIPE + "  - deploy: {threads: 1}\n")
    proc = edgepipe("run", recipe, "--runs-dir", tmp_path / "runs")
    if facts["map"] == 0:
        line = one_line_error(proc)
        assert "scores mAP@[.5:.95] 0 against the labels of the test split: it finds nothing" in line, line
    else:  # (not with this seed) a detector that finds something is chosen by mAP
        assert proc.returncode == 0, proc.stderr
        chosen = json.loads((run / "manifest.json").read_text())["stages"]["deploy"]["metrics"]["chosen"]
        assert chosen["metric"] == "mAP@[.5:.95]", chosen


def test_bad_detection_data_is_one_line(tmp_path):
    cases = [
        ("{objects: 3, renderings: 2}", "renderings: detection frames (objects:) draw new digits"),
        ("{count: 100}", "count: goes with objects:"),
        ("{objects: 30}", "objects: must be between 1 and 20"),
    ]
    for frames, expected in cases:
        recipe = tmp_path / "bad.yaml"
        recipe.write_text(RECIPE.replace("{objects: 3, count: 60}", frames))
        assert expected in one_line_error(edgepipe("run", recipe, "--runs-dir", tmp_path / "runs"))
    recipe.write_text(RECIPE.replace('{python: "edgepipe.pipeline.models.detector:picodet_lite", kwargs: {width: 8}}',
                                     "{zoo: mobilenet_v3_small, kwargs: {num_classes: 10, scale: 0.5}}"))  # fmt: skip
    line = one_line_error(edgepipe("run", recipe, "--runs-dir", tmp_path / "runs"))
    assert "the data holds boxes (detection frames) but the model is not a detector" in line, line
    assert not (tmp_path / "runs" / "det" / "train").exists()
