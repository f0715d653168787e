"""`edgepipe optimize MODEL --images DIR`: the user's float model, edgepipe's int8 and NNCF's int8 on every
backend here, scored by the model's task on the user's images; a run directory with a manifest, a report
and a deploy.json the runner runs. Never slower than the user's own model: it is always a candidate."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import edgepipe, one_line_error
from test_tasks import squares_folder

FAST = ("--rounds", "2", "--seconds", "0.05", "--samples", "6")


def optimize_squares(tmp_path, *extra):
    """`edgepipe optimize` on the hand-made square detector and a folder of squares with their boxes:
    (the CLI's result, the run directory, the model, the images)."""
    pytest.importorskip("pycocotools")
    from onnx_models import square_detector

    model = square_detector(tmp_path / "det.onnx")
    images = squares_folder(tmp_path / "squares")
    run = tmp_path / "run"
    proc = edgepipe(
        "optimize", model, "--images", images, "-o", run, "--size", "64", "--mean", "0,0,0", "--std", "1,1,1",
        "--task", "detect", *extra, *FAST,
    )  # fmt: skip
    return proc, run, model, images


def test_optimize_a_detector_by_map_with_the_users_model_among_the_candidates(tmp_path):
    proc, run, _, images = optimize_squares(tmp_path)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((run / "manifest.json").read_text())
    assert list(m["stages"]) == ["optimize", "report"]
    o = m["stages"]["optimize"]["metrics"]
    names = {c["name"] for c in o["candidates"]}
    assert {"det.onnx", "det.int8.onnx"} <= names  # the user's own file (its copy with the contract) and ours
    assert all(c["task"]["metric"] == "mAP@[.5:.95]" and c["task"]["against"] == "labels" for c in o["candidates"])
    own = [c for c in o["candidates"] if c["name"] == "det.onnx"]
    assert len(own) == len({c["backend"] for c in o["candidates"]})  # on every backend measured
    chosen = next(c for c in o["candidates"] if c["chosen"])
    assert chosen["time_vs_reference"] <= min(c["time_vs_reference"] for c in own) + 1e-12
    assert o["speedup_vs_source"] >= 1.0 and o["chosen"]["metric"] == "mAP@[.5:.95]"
    assert "mAP@[.5:.95]" in proc.stdout and "chosen" in proc.stdout
    report = (run / "report" / "report.md").read_text()
    assert "## Deployment" in report and "| mAP@[.5:.95] | mAP@.5 |" in report and "Your model:" in report
    assert (run / "report" / "report.html").is_file()
    deployment = run / "optimize" / "deploy.json"
    for c in json.loads(deployment.read_text())["candidates"]:  # every candidate named where it now lies
        assert Path(c["model"]).is_file(), c["model"]
    r = tmp_path / "r.json"
    proc = edgepipe(
        "bench", "--deployment", deployment, "--images", images, "--iters", "3", "--min-seconds", "0",
        "--energy-seconds", "0", "--json", r,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(r.read_text())["task"]["value"] == pytest.approx(chosen["task"]["value"])


def brightness_classifier(prefix):
    """A Paddle inference model that classifies images by their mean brightness (dark, mid, bright): a
    global average pool and a linear layer with set weights, saved with paddle.jit.save."""
    import paddle
    from paddle.static import InputSpec

    class Net(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.pool = paddle.nn.AdaptiveAvgPool2D(1)
            self.fc = paddle.nn.Linear(3, 3)
            w = np.array([[-10 / 3, 0, 10 / 3]] * 3, np.float32)  # the channels' mean, times -10, 0, 10
            self.fc.weight.set_value(w)
            self.fc.bias.set_value(np.array([3, 0, -7], np.float32))

        def forward(self, x):
            return self.fc(paddle.flatten(self.pool(x), 1))

    net = Net()
    net.eval()
    paddle.jit.save(net, str(prefix), input_spec=[InputSpec([None, 3, 16, 16], "float32", "x")])


def grey_folders(root, per_class=4, names=("0dark", "1mid", "2bright")):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, level in zip(names, (0.1, 0.5, 0.9)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            arr = np.clip(level + rng.normal(0, 0.03, (16, 16, 3)), 0, 1)
            Image.fromarray((255 * arr).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def test_optimize_exports_a_paddle_inference_model_and_scores_top1_on_class_folders(tmp_path):
    brightness_classifier(tmp_path / "saved" / "model")
    images = grey_folders(tmp_path / "images")
    run = tmp_path / "run"
    common = ("--images", images, "--size", "16", "--mean", "0,0,0", "--std", "1,1,1", *FAST)
    proc = edgepipe("optimize", tmp_path / "saved", "-o", run, "--quantizer", "edgepipe", *common)
    assert proc.returncode == 0, proc.stderr
    assert (run / "input" / "saved.onnx").is_file()  # exported, parity-checked, the contract written
    o = json.loads((run / "manifest.json").read_text())["stages"]["optimize"]["metrics"]
    assert o["chosen"]["metric"] == "top-1 accuracy" and o["task"]["name"] == "classify"
    own = [c for c in o["candidates"] if c["name"] == "saved.onnx"]
    assert own and all(c["accuracy"] == pytest.approx(1.0) for c in own)  # the true accuracy, 12 images
    assert {q["quantizer"] for q in o["quantizers"]} == {"edgepipe", "static shapes"}
    static = next(q for q in o["quantizers"] if q["quantizer"] == "static shapes")
    assert static["fixed"] == {"x": [1, 3, 16, 16]}  # the dynamic batch fixed to the device's one image
    assert {c["name"] for c in o["candidates"]} >= {"saved.onnx", "saved.int8.onnx", "saved.static.onnx"}

    # class folders that do not mean what the outputs mean: said in one line, not chosen from
    swapped = grey_folders(tmp_path / "swapped", names=("2dark", "1mid", "0bright"))  # dark images labelled 2
    line = one_line_error(edgepipe("optimize", run / "input" / "saved.onnx", "--images", swapped, "-o",
                                   tmp_path / "r1", "--quantizer", "edgepipe", *FAST))  # fmt: skip
    assert "saved.onnx scores 33.3% on 12 labelled images" in line and "no better than guessing among 3 classes" in line
    assert not (tmp_path / "r1").exists()

    line = one_line_error(edgepipe("optimize", tmp_path / "nonesuch.onnx", "-o", tmp_path / "r2", *common))
    assert "nonesuch.onnx: not found" in line
    line = one_line_error(edgepipe("optimize", tmp_path / "saved", "-o", tmp_path / "r3", "--images", tmp_path / "no"))
    assert "--images" in line and "not a folder" in line
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()


def test_a_time_limit_spent_leaves_the_quantizers_out_and_says_so(tmp_path):
    """--time-limit bounds the quantizers: past it none starts (and the guard starts no step), the notes say
    which were left out, and the user's own model still stands as a candidate."""
    proc, run, model, images = optimize_squares(tmp_path, "--time-limit", "0.000001")
    assert proc.returncode == 0, proc.stderr
    o = json.loads((run / "manifest.json").read_text())["stages"]["optimize"]["metrics"]
    notes = " ".join(o["notes"])
    assert "edgepipe's int8 left out: the 1e-06 s time limit was spent" in notes, notes
    assert "NNCF's int8 left out" in notes, notes
    assert "det.int8.onnx" not in {c["name"] for c in o["candidates"]} and o["quantizers"] == [
        r for r in o["quantizers"] if r["quantizer"] == "static shapes"
    ]
    assert any(c["name"] == "det.onnx" for c in o["candidates"]) and o["speedup_vs_source"] >= 1.0
    line = one_line_error(edgepipe("optimize", model, "--images", images, "-o", tmp_path / "r2", "--time-limit", "0"))
    assert "time_limit" in line and "must be positive" in line, line
