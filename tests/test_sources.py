"""A user's own model: a `python:` factory beside the recipe, a `zoo:` model, `weights:` state dicts,
a paddle.jit.save output and an ONNX file, through recipes and commands run with the real CLI."""

import json
import textwrap

import pytest
from conftest import edgepipe, one_line_error, run_recipe

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.core.recipe import DataConfig, parse_recipe
from edgepipe.pipeline.models.load import load_source
from edgepipe.pipeline.models.sources import ZooModel, parse_source

# A user's module, written beside the recipe by the tests (not importable from the tests' folder).
USER_NETS = textwrap.dedent("""\
    import paddle
    import paddle.nn as nn


    class Net(nn.Layer):
        def __init__(self, num_classes=10, width=8, channels=1):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2D(channels, width, 3, padding=1), nn.BatchNorm2D(width), nn.ReLU(), nn.MaxPool2D(2),
                nn.Conv2D(width, 2 * width, 3, padding=1), nn.BatchNorm2D(2 * width), nn.ReLU(),
                nn.AdaptiveAvgPool2D(1))
            self.head = nn.Linear(2 * width, num_classes)

        def forward(self, x):
            return self.head(paddle.flatten(self.features(x), 1))


    def build(num_classes=10, width=8, channels=1):
        return Net(num_classes, width, channels)


    def not_a_layer():
        return 42
    """)

DATA = {"train_limit": 300, "test": 200, "val": 100, "calibration": 64}
DATA_YAML = "{train_limit: 300, test: 200, val: 100, calibration: 64}"


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A folder holding the user's module; this process imports it from there too, as a recipe would."""
    (tmp_path / "mynets.py").write_text(USER_NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def user_net(width: int, seed: int):
    import importlib

    import paddle

    paddle.seed(seed)
    return importlib.import_module("mynets").build(num_classes=10, width=width)


def test_python_factory_trains_prunes_exports_and_reloads_in_a_fresh_process(user_dir):
    recipe = f"""\
name: mine
data: {DATA_YAML}
stages:
  - train: {{model: {{python: "mynets:build", kwargs: {{num_classes: 10, width: 16}}}}, epochs: 1}}
  - prune: {{model: teacher, channels: {{ratio: 0.3}}, epochs: 0}}
  - export: {{models: [teacher, teacher_pruned], parity_samples: 16}}
  - report: {{}}
"""
    _, run_dir, s = run_recipe(user_dir, recipe, "mine")
    info = json.loads((run_dir / "prune" / "teacher_pruned" / "model.json").read_text())
    assert info["spec"] == {
        "python": "mynets:build",
        "kwargs": {"num_classes": 10, "width": 16},
        "search_path": str(user_dir),
    }
    assert info["input_shape"] == [1, 28, 28] and info["transforms"][0]["type"] == "prune_channels"
    full, pruned = s["export"]["metrics"]["teacher"], s["export"]["metrics"]["teacher_pruned"]
    assert pruned["params"] < full["params"] and pruned["macs"] < full["macs"]
    # a fresh process, started elsewhere, rebuilds the factory's Layer and replays the cut
    out = user_dir / "again.onnx"
    proc = edgepipe("export", run_dir / "prune" / "teacher_pruned", "-o", out, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size == pruned["bytes"]
    # the user's module is one of the stage's inputs: an edit to it reruns the stages built from it
    with open(user_dir / "mynets.py", "a") as f:
        f.write("\n# a changed line\n")
    proc = edgepipe("run", user_dir / "mine.yaml", "--runs-dir", user_dir / "runs")
    assert proc.returncode == 0 and "[1/4] train: running" in proc.stderr, proc.stderr


def prune_recipe(name: str, weights: str) -> str:
    return (
        f"name: {name}\ndata: {DATA_YAML}\nstages:\n"
        f"  - prune: {{model: {{python: 'mynets:build', kwargs: {{width: 16}}, "
        f"weights: {weights}}}, channels: {{ratio: 0.3}}, epochs: 0}}\n"
    )


def test_user_weights_are_loaded_hashed_and_checked(user_dir):
    import paddle

    from edgepipe.pipeline.data.load import load_dataset
    from edgepipe.pipeline.training import evaluate

    trained = user_net(16, seed=1)
    paddle.save(trained.state_dict(), str(user_dir / "w.pdparams"))
    _, run_dir, s = run_recipe(user_dir, prune_recipe("w", "w.pdparams"), "w")
    x, y = load_dataset(DataConfig(**DATA)).split("test")
    assert s["prune"]["metrics"]["test_acc_before"] == pytest.approx(
        evaluate(trained.eval(), x, y)
    )  # the user's weights
    assert (run_dir / "prune" / "build_pruned" / "model.json").is_file()
    assert "reused" in edgepipe("run", user_dir / "w.yaml", "--runs-dir", user_dir / "runs").stderr
    paddle.save(user_net(16, seed=2).state_dict(), str(user_dir / "w.pdparams"))  # the file changes: the stage reruns
    proc = edgepipe("run", user_dir / "w.yaml", "--runs-dir", user_dir / "runs")
    assert proc.returncode == 0 and "[1/1] prune: running" in proc.stderr, proc.stderr

    paddle.save(user_net(8, seed=0).state_dict(), str(user_dir / "narrow.pdparams"))  # another architecture
    (user_dir / "bad.yaml").write_text(prune_recipe("bad", "narrow.pdparams"))
    line = one_line_error(edgepipe("run", user_dir / "bad.yaml", "--runs-dir", user_dir / "runs"))
    assert (
        "narrow.pdparams: weights do not match the model spec" in line
        and "shapes ['features.0.weight [8, 1, 3, 3] vs [16, 1, 3, 3]'" in line
    )
    assert not (user_dir / "runs" / "bad" / "prune").exists()
    assert not [p for p in (user_dir / "runs" / "bad").iterdir() if ".partial-" in p.name]
    (user_dir / "gone.yaml").write_text(prune_recipe("gone", "missing.pdparams"))
    line = one_line_error(edgepipe("run", user_dir / "gone.yaml", "--runs-dir", user_dir / "runs"))
    assert "stages[0].prune.model.weights:" in line and "missing.pdparams not found" in line
    assert not (user_dir / "runs" / "gone").exists()  # refused before anything ran


def test_zoo_models_build_and_misspellings_are_named():
    layer = load_source(parse_source({"zoo": "LeNet", "kwargs": {"num_classes": 10}}))
    import paddle

    assert list(layer(paddle.zeros([2, 1, 28, 28])).shape) == [2, 10]
    for bad, message in [
        ({"zoo": "mobilenetv3_small"}, "did you mean 'mobilenet_v3_small'"),
        ({"zoo": "LeNet", "pretrained": True, "weights": "w.pdparams"}, "pretrained: true or weights:"),
        ({"zoo": "LeNet", "python": "a:b"}, "give exactly one of family, zoo, python, inference, onnx"),
        ({"python": "no colon"}, "write it as 'module:callable'"),
        ({"onnx": "model.pdmodel"}, "must be an .onnx file"),
    ]:
        with pytest.raises(EdgepipeError, match=message):
            parse_source(bad)
    with pytest.raises(EdgepipeError, match="LeNet.*unexpected keyword argument"):
        load_source(ZooModel(zoo="LeNet", kwargs={"scale": 0.5}))


def test_pretrained_weights_offline_are_one_line_pointing_at_weights(monkeypatch):
    import paddle.vision.models.mobilenetv3 as mnv3

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'paddle-hapi.bj.bcebos.com'")

    monkeypatch.setattr(mnv3, "get_weights_path_from_url", offline)  # what Paddle's downloader raises here
    with pytest.raises(EdgepipeError, match="could not download its pretrained weights.*give weights: PATH.pdparams"):
        load_source(ZooModel(zoo="mobilenet_v3_small", pretrained=True))


def test_a_saved_graph_and_an_onnx_file_go_through_export_quantize_and_bench(user_dir):
    import paddle
    from paddle.static import InputSpec

    net = user_net(8, seed=0)
    net.eval()
    paddle.jit.save(net, str(user_dir / "saved" / "model"), input_spec=[InputSpec([None, 1, 28, 28], "float32", "x")])
    bench = (
        "{iters: 10, min_seconds: 0.05, warmup_iters: 2, warmup_seconds: 0.01, energy_seconds: 0, idle_seconds: 0, "
        "roofline: false}"
    )
    recipe = f"""\
name: saved
data: {DATA_YAML}
stages:
  - export: {{models: [{{inference: saved}}], parity_samples: 16}}
  - quantize: {{model: saved.onnx, calibration_samples: 32, max_accuracy_drop: null}}
  - bench: {bench}
  - report: {{}}
"""
    _, run_dir, s = run_recipe(user_dir, recipe, "saved")
    assert s["export"]["metrics"]["saved"]["parity"]["max_abs_diff"] < 1e-4
    assert set(s["bench"]["metrics"]["models"]) == {"saved.onnx", "saved.int8.onnx"}
    # the same file as a user's ONNX model, straight into quantize and bench
    exported = run_dir / "export" / "saved.onnx"
    recipe = f"""\
name: fromonnx
data: {DATA_YAML}
stages:
  - quantize: {{model: {{onnx: {exported}}}, calibration_samples: 32, max_accuracy_drop: null}}
  - bench: {{models: [saved.int8.onnx, {{onnx: {exported}}}], iters: 10, min_seconds: 0.05, warmup_iters: 2,
      warmup_seconds: 0.01, energy_seconds: 0, idle_seconds: 0, roofline: false}}
"""
    _, run2, s2 = run_recipe(user_dir, recipe, "fromonnx")
    assert s2["quantize"]["metrics"]["accuracy"] == pytest.approx(s["quantize"]["metrics"]["accuracy"])
    assert set(s2["bench"]["metrics"]["models"]) == {"saved.int8.onnx", "saved.onnx"}
    # the user's own file is a deploy candidate beside the int8 made from it: nothing slower can be chosen
    from edgepipe.pipeline.stages.deploy import run_models

    models, own = run_models(run2)
    assert set(models) == {"saved.int8.onnx", "saved.onnx"} and models["saved.onnx"] == exported
    assert own == {"saved.onnx"}
    # this untrained net scores at chance on the labelled digits: deploy says so instead of choosing
    proc = edgepipe("deploy", run2, "--inputs", run2 / "bench" / "test_split.npz", "--rounds", "2", "--seconds",
                    "0.05", "--backend", "onnxruntime", "-o", user_dir / "dep")  # fmt: skip
    assert "no better than guessing among 10 classes" in one_line_error(proc) and not (user_dir / "dep").exists()
    # the command on the saved folder: a parity-checked ONNX beside it
    proc = edgepipe("export", user_dir / "saved")
    assert proc.returncode == 0 and (user_dir / "saved" / "model.onnx").is_file(), proc.stderr


def test_refusals_are_one_line_before_or_at_the_stage(user_dir):
    (user_dir / "saved").mkdir()
    for stages, message in [
        (
            "- prune: {model: {inference: saved}, channels: {ratio: 0.3}}",
            "stages[0].prune.model: inference: a saved graph cannot be changed",
        ),
        (
            "- train: {model: {onnx: m.onnx}}",
            "stages[0].train.model: a saved graph (inference:, onnx:) cannot be trained",
        ),
        ("- quantize: {model: {python: 'mynets:build'}}", "stages[0].quantize.model: quantize takes an ONNX model"),
        (
            "- train: {model: {conv: [8], in_channels: 3, input_size: 32}}",
            "stages[0].train.model: the model takes inputs of shape [3, 32, 32]",
        ),
        ("- export: {models: [{inference: saved}]}", "saved: expected one paddle.jit.save output"),
    ]:
        (user_dir / "r.yaml").write_text(f"name: r\ndata: {DATA_YAML}\nstages:\n  {stages}\n")
        assert message in one_line_error(edgepipe("run", user_dir / "r.yaml", "--runs-dir", user_dir / "runs"))
        assert not (user_dir / "runs").exists()
    for model, message in [
        ('{python: "mynets:not_a_layer"}', "returned int, not a paddle.nn.Layer"),
        ('{python: "nonesuch:build"}', "cannot import 'nonesuch'"),
        ('{python: "mynets:build", kwargs: {channels: 3}}', "cannot take the data's inputs of shape [1, 28, 28]"),
        ('{python: "mynets:build", kwargs: {num_classes: 4}}', "set num_classes: 10"),
    ]:
        (user_dir / "r.yaml").write_text(
            f"name: r\ndata: {DATA_YAML}\nstages:\n  - train: {{model: {model}, epochs: 1}}\n"
        )
        assert message in one_line_error(edgepipe("run", user_dir / "r.yaml", "--runs-dir", user_dir / "runs"))
        assert not (user_dir / "runs" / "r" / "train").exists()


def test_paths_in_a_recipe_are_relative_to_its_folder(user_dir, tmp_path):
    (user_dir / "w.pdparams").write_bytes(b"x")
    raw = {"name": "p", "stages": [{"train": {"model": {"python": "mynets:build", "weights": "w.pdparams"}}}]}
    assert parse_recipe(raw, user_dir).base == str(user_dir.resolve())
    with pytest.raises(EdgepipeError, match="stages.0..train.model.weights: .*elsewhere/w.pdparams not found"):
        parse_recipe(raw, tmp_path / "elsewhere")
