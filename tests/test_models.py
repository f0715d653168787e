import numpy as np
import pytest

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.core.artifact import count_parameters, save_model
from edgepipe.pipeline.core.registry import TRANSFORMS, register_transform
from edgepipe.pipeline.models.builtin import ModelSpec, build_model
from edgepipe.pipeline.models.load import load_model
from edgepipe.pipeline.training import predict_logits


def test_seed_teacher_and_student_shapes():
    teacher, student = build_model(ModelSpec()), build_model(ModelSpec(conv=(16, 32)))
    # conv1 32·9+32, conv2 64·32·9+64, fc1 3136·128+128, fc2 128·10+10
    assert count_parameters(teacher) == 320 + 18496 + 401536 + 1290
    assert count_parameters(student) == 160 + 4640 + 200832 + 1290
    x = np.zeros((3, 1, 28, 28), np.float32)
    assert predict_logits(teacher, x).shape == (3, 10)
    assert {"conv1", "conv2", "fc1", "fc2"} <= {n for n, _ in teacher.named_sublayers()}


def test_spec_is_validated():
    with pytest.raises(ValueError, match=r"divisible by 2\*\*5"):
        ModelSpec(conv=(8, 8, 8, 8, 8))  # 28 is not divisible by 2**5


def test_artifact_round_trip_reproduces_outputs(tmp_path):
    spec = ModelSpec(conv=(4, 8), fc=(16,))
    model = build_model(spec)
    x = np.random.default_rng(0).standard_normal((5, 1, 28, 28)).astype(np.float32)
    save_model(tmp_path / "m", model, spec, meta={"label": "x"})
    loaded, info = load_model(tmp_path / "m")
    np.testing.assert_allclose(predict_logits(loaded, x), predict_logits(model, x), rtol=0, atol=0)
    assert info["params"] == count_parameters(model) and info["input_shape"] == [1, 28, 28]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "model.safetensors"]


def test_transforms_are_replayed_on_load(tmp_path):
    """A stage that changes the architecture records a transform; loading replays it."""
    import paddle.nn as nn

    if "test_widen_fc1" not in TRANSFORMS:

        @register_transform("test_widen_fc1")
        def widen(layer, out_features):
            layer.fc1 = nn.Linear(layer.fc1.weight.shape[0], out_features)
            layer.fc2 = nn.Linear(out_features, layer.fc2.weight.shape[1])
            return layer

    spec = ModelSpec(conv=(4, 8), fc=(16,))
    model = TRANSFORMS["test_widen_fc1"](build_model(spec), out_features=24)
    save_model(tmp_path / "m", model, spec, transforms=[{"type": "test_widen_fc1", "params": {"out_features": 24}}])
    loaded, _ = load_model(tmp_path / "m")
    assert list(loaded.fc1.weight.shape) == [392, 24]
    x = np.ones((2, 1, 28, 28), np.float32)
    np.testing.assert_array_equal(predict_logits(loaded, x), predict_logits(model, x))


def test_broken_artifacts_give_clear_errors(tmp_path):
    spec = ModelSpec(conv=(4, 8), fc=(16,))
    save_model(tmp_path / "m", build_model(spec), spec, transforms=[])
    with pytest.raises(EdgepipeError, match="model description not found"):
        load_model(tmp_path / "missing")
    params = tmp_path / "m" / "model.safetensors"
    params.write_bytes(params.read_bytes()[:50])
    with pytest.raises(EdgepipeError, match="model.safetensors: cannot read weights"):
        load_model(tmp_path / "m")
    params.unlink()
    with pytest.raises(EdgepipeError, match="weights not found"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / "model.json").write_text(
        '{"format": "edgepipe-model/1", "spec": {"conv": [4, 8], "fc": [16]}, "transforms": [{"type": "nope"}]}'
    )
    with pytest.raises(EdgepipeError, match="unknown transform 'nope'"):
        load_model(tmp_path / "m")


def test_weights_of_another_shape_are_refused(tmp_path):
    small, big = ModelSpec(conv=(4, 8), fc=(16,)), ModelSpec(conv=(4, 8), fc=(32,))
    save_model(tmp_path / "m", build_model(small), small)
    import json

    info = json.loads((tmp_path / "m" / "model.json").read_text())
    info["spec"] = big.to_dict()
    (tmp_path / "m" / "model.json").write_text(json.dumps(info))
    with pytest.raises(EdgepipeError, match="do not match the model spec"):
        load_model(tmp_path / "m")


def test_parameter_names_do_not_depend_on_process_history():
    """paddle2onnx and paddle.save write parameter names into the files; a model must get the
    same names whether or not other models were built first in the process."""
    first = sorted(p.name for p in build_model(ModelSpec(conv=(4, 8), fc=(16,))).parameters())
    build_model(ModelSpec())  # advance any global counter
    again = sorted(p.name for p in build_model(ModelSpec(conv=(4, 8), fc=(16,))).parameters())
    assert first and first == again
