import numpy as np
import paddle
import pytest

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.compress.distill import FeatureHint, kd_loss
from edgepipe.pipeline.models.builtin import ModelSpec, build_model


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


def kd_numpy(s, t, y, T, alpha):
    p_t, log_p_s = np.exp(log_softmax(t / T)), log_softmax(s / T)
    kl = (p_t * (np.log(p_t) - log_p_s)).sum(axis=1).mean()
    ce = -log_softmax(s)[np.arange(len(y)), y].mean()
    return alpha * T * T * kl + (1 - alpha) * ce


def test_mutual_loss_matches_hand_computation_and_keeps_peer_gradients_apart():
    from edgepipe.pipeline.compress.distill import build_cohort, mutual_loss

    paddle.seed(0)
    peers = [build_model(ModelSpec(conv=(4,), fc=(8,)), name_prefix=f"peer{k}_") for k in range(3)]
    cohort = build_cohort(peers, keep=1)
    x = paddle.randn([5, 1, 28, 28])
    y = np.array([0, 1, 2, 3, 4])
    kept = cohort(x)
    z = [o.numpy().astype(np.float64) for o in cohort.outputs]
    np.testing.assert_array_equal(kept.numpy(), z[1])
    T, alpha = 2.0, 0.6
    expected = sum(np.mean([kd_numpy(z[k], z[j], y, T, alpha) for j in range(3) if j != k]) for k in range(3))
    loss = mutual_loss(cohort, T, alpha)(kept, x, paddle.to_tensor(y), None)
    assert float(loss) == pytest.approx(expected, rel=1e-4)
    # peer 0's gradient comes from its own term only: the others' logits are detached targets
    loss.backward()
    g_all = peers[0].fc2.weight.grad.numpy().copy()
    for p in cohort.parameters():
        p.clear_gradient()
    outs = [p(x) for p in peers]
    own = (
        kd_loss(outs[0], outs[1].detach(), paddle.to_tensor(y), T, alpha)
        + kd_loss(outs[0], outs[2].detach(), paddle.to_tensor(y), T, alpha)
    ) / 2
    own.backward()
    np.testing.assert_allclose(g_all, peers[0].fc2.weight.grad.numpy(), rtol=1e-4, atol=1e-7)
    names = [p.name for p in cohort.parameters()]
    assert len(names) == len(set(names))  # one optimizer holds every peer


def test_teacher_logits_cache_is_keyed_by_the_teacher(tmp_path, monkeypatch):
    from edgepipe.pipeline.compress.distill import cached_teacher_logits, soft_target_loss
    from edgepipe.pipeline.core.artifact import save_model

    monkeypatch.setenv("EDGEPIPE_CACHE", str(tmp_path / "cache"))
    spec = ModelSpec(conv=(4,), fc=(8,))
    paddle.seed(0)
    teacher = build_model(spec)
    save_model(tmp_path / "t", teacher, spec)
    x = np.random.default_rng(0).standard_normal((20, 1, 28, 28)).astype(np.float32)
    first, info1 = cached_teacher_logits(teacher, tmp_path / "t", x, "data-a")
    again, info2 = cached_teacher_logits(teacher, tmp_path / "t", x, "data-a")
    assert not info1["hit"] and info2["hit"] and info1["path"] == info2["path"]
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(first, teacher(paddle.to_tensor(x)).numpy(), atol=1e-5)
    # the cached and the live teacher give the same loss on the same rows
    idx = np.array([3, 7, 11])
    s = paddle.randn([3, 10])
    yb = paddle.to_tensor(np.array([1, 2, 3]))
    live = soft_target_loss(teacher, 4.0, 0.9)(s, paddle.to_tensor(x[idx]), yb, idx)
    cached = soft_target_loss(None, 4.0, 0.9, first)(s, paddle.to_tensor(x[idx]), yb, idx)
    assert float(live) == pytest.approx(float(cached), rel=1e-5)
    # a retrained teacher (new weights) or other data never reads the old entry
    with paddle.no_grad():
        teacher.fc2.bias.set_value(teacher.fc2.bias + 1.0)
    save_model(tmp_path / "t", teacher, spec)
    changed, info3 = cached_teacher_logits(teacher, tmp_path / "t", x, "data-a")
    assert not info3["hit"] and info3["path"] != info1["path"]
    np.testing.assert_allclose(changed, first + 1.0, atol=1e-4)
    assert not cached_teacher_logits(teacher, tmp_path / "t", x, "data-b")[1]["hit"]


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "distill.teacher: mode offline needs teacher"),
        ({"mode": "online", "teacher": "teacher"}, "distill.teacher: mode online trains without a pre-trained teacher"),
        ({"mode": "self", "features": [{}]}, "distill.features: feature hints need a teacher"),
        (
            {"teacher": "teacher", "cache_teacher_logits": True},
            "distill.cache_teacher_logits: cached logits are for the unshifted images",
        ),
        ({"mode": "online", "peers": 2, "keep": 2}, "distill.keep: must be 'best' or a peer index below 2"),
        ({"mode": "online", "keep": "worst"}, "distill.keep: expected int or one of 'best'"),
        ({"teacher": "teacher", "seeds": [1, 1]}, "distill.seeds: must not repeat"),
    ],
)
def test_distill_config_errors_name_the_key(body, message):
    from edgepipe.pipeline.core.config import ConfigError
    from edgepipe.pipeline.core.recipe import parse_recipe

    with pytest.raises(ConfigError) as exc:
        parse_recipe({"name": "t", "stages": [{"train": {}}, {"distill": body}]})
    assert message in str(exc.value)
