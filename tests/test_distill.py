import numpy as np
import paddle
import pytest

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.distill import FeatureHint, kd_loss
from edgepipe.pipeline.models import ModelSpec, build_model


def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_kd_loss_matches_hand_computation():
    s = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    t = np.array([[3.0, 1.0, 0.0], [-1.0, 0.0, 2.0]])
    y = np.array([0, 1])
    T, alpha = 2.0, 0.7
    p_t, log_p_s = np.exp(log_softmax(t / T)), log_softmax(s / T)
    kl = (p_t * (np.log(p_t) - log_p_s)).sum(axis=1).mean()  # KL(teacher || student), batch mean
    ce = -log_softmax(s)[np.arange(2), y].mean()
    expected = alpha * T * T * kl + (1 - alpha) * ce
    got = kd_loss(paddle.to_tensor(s, "float32"), paddle.to_tensor(t, "float32"), paddle.to_tensor(y), T, alpha)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_kd_loss_is_zero_soft_term_when_student_equals_teacher():
    z = paddle.to_tensor(np.random.default_rng(0).standard_normal((4, 10)), "float32")
    y = paddle.to_tensor(np.zeros(4, np.int64))
    assert float(kd_loss(z, z, y, 4.0, 1.0)) == pytest.approx(0.0, abs=1e-5)  # float32 rounding × T²


def test_feature_hint_adapts_mismatched_shapes():
    paddle.seed(0)
    teacher, student = build_model(ModelSpec(conv=(8, 16), fc=(128,))), build_model(ModelSpec(conv=(4, 8), fc=(32,)))
    probe = paddle.to_tensor(np.zeros((2, 1, 28, 28), np.float32))
    hint = FeatureHint(teacher, student, "fc1", "fc1", probe)
    assert hint.shapes == {"teacher": [2, 128], "student": [2, 32]}
    teacher(probe), student(probe)
    loss = hint.loss()
    loss.backward()
    assert hint.adapter.weight.grad is not None and float(loss) >= 0
    conv_hint = FeatureHint(teacher, student, "conv2", "conv1", probe)  # 4@28×28 -> 16@14×14
    teacher(probe), student(probe)
    assert conv_hint.loss().shape == []
    hint.remove(), conv_hint.remove()


def test_feature_hint_rejects_unknown_or_incompatible_layers():
    teacher, student = build_model(ModelSpec(conv=(8, 16))), build_model(ModelSpec(conv=(4, 8)))
    probe = paddle.to_tensor(np.zeros((1, 1, 28, 28), np.float32))
    with pytest.raises(EdgepipeError, match="student has no layer named 'fc9'"):
        FeatureHint(teacher, student, "fc1", "fc9", probe)
    with pytest.raises(EdgepipeError, match="pick two dense layers or two conv layers"):
        FeatureHint(teacher, student, "fc1", "conv1", probe)


def test_adapter_parameters_never_share_a_name_with_the_student():
    """The adapter trains in the student's optimizer, whose state is keyed by parameter name."""
    teacher, student = build_model(ModelSpec(conv=(8, 16), fc=(128,))), build_model(ModelSpec(conv=(4, 8), fc=(32,)))
    probe = paddle.to_tensor(np.zeros((1, 1, 28, 28), np.float32))
    hint = FeatureHint(teacher, student, "fc1", "fc1", probe)
    names = [p.name for p in list(student.parameters()) + list(hint.adapter.parameters())]
    assert len(names) == len(set(names))
    hint.remove()
