"""Property-based fuzzing of everything that parses what a user hands edgepipe: recipes, device
profiles and ONNX files. Every outcome must be a valid object or one clean line (EdgepipeError
without a newline) — never another exception, never a traceback."""

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgepipe.devices import EdgepipeError

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # the same cases on every CI run
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Keys that exist somewhere in a recipe or a profile, so the fuzzer reaches past "unknown key".
RECIPE_KEYS = [
    "name",
    "seed",
    "data",
    "stages",
    "source",
    "path",
    "test",
    "val",
    "calibration",
    "size",
    "channels",
    "train_limit",
    "augment",
    "frames",
    "per_class",
    "train",
    "distill",
    "prune",
    "export",
    "quantize",
    "bench",
    "report",
    "lowrank",
    "qat",
    "model",
    "conv",
    "fc",
    "family",
    "zoo",
    "kwargs",
    "epochs",
    "lr",
    "batch_size",
    "output",
    "teacher",
    "student",
    "temperature",
    "alpha",
    "ratio",
    "mode",
    "models",
    "weights",
    "baseline",
    "seeds",
    "crop",
    "mean",
    "std",
    "resize",
]
PROFILE_KEYS = [
    "name",
    "arch",
    "threads",
    "providers",
    "quant",
    "power",
    "budgets",
    "detect",
    "per_channel",
    "reduce_range",
    "activation_type",
    "weight_type",
    "format",
    "latency_p90_ms",
    "peak_rss_mb",
    "model_bytes",
    "energy_mj_per_inference",
    "idle_w",
    "active_w",
    "uncertainty",
    "flags_all",
    "cpu_model",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["teacher", "student", "..", "/etc/passwd", "x86_64", "qdq", "u8"])
)


def documents(keys):
    key = st.sampled_from(keys) | st.text(max_size=8)
    return st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(key, inner, max_size=5), max_leaves=25
    )


def recipes():
    stage = st.dictionaries(
        st.sampled_from(
            ["train", "distill", "prune", "export", "quantize", "bench", "report", "lowrank", "qat", "nope"]
        ),
        documents(RECIPE_KEYS),
        min_size=1,
        max_size=1,
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "name": scalars,
            "seed": scalars,
            "data": documents(RECIPE_KEYS),
            "stages": st.lists(stage, max_size=3) | documents(RECIPE_KEYS),
        },
    )


def clean(exc: EdgepipeError) -> None:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text, text


@SETTINGS
@given(recipes() | documents(RECIPE_KEYS))
def test_any_recipe_document_parses_or_fails_in_one_line(doc):
    from edgepipe.pipeline.core.recipe import parse_recipe

    try:
        parse_recipe(doc)
    except EdgepipeError as exc:
        clean(exc)


@SETTINGS
@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_any_text_as_a_recipe_file_loads_or_fails_in_one_line(tmp_path, text):
    from edgepipe.pipeline.core.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        load_recipe(path)
    except EdgepipeError as exc:
        clean(exc)


@SETTINGS
@given(
    documents(PROFILE_KEYS)
    | st.fixed_dictionaries(
        {"name": st.text(min_size=1, max_size=8)}, optional={k: documents(PROFILE_KEYS) for k in PROFILE_KEYS[1:8]}
    )
)
def test_any_device_profile_loads_or_fails_in_one_line(tmp_path, doc):
    from edgepipe.devices.profiles import load_profile

    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        load_profile(path)
    except EdgepipeError as exc:
        clean(exc)


@pytest.fixture(scope="module")
def real_model(tmp_path_factory):
    from onnx_models import conv_mlp

    return conv_mlp(tmp_path_factory.mktemp("fuzz") / "m.onnx").read_bytes()


def _gate(tmp_path: Path, data: bytes):
    from edgepipe.runtime.model.modelfile import check_model_file

    path = tmp_path / "f.onnx"
    path.write_bytes(data)
    try:
        return check_model_file(path)
    except EdgepipeError as exc:
        clean(exc)
        return None


@SETTINGS
@given(st.binary(max_size=400))
def test_random_bytes_as_a_model_pass_the_gate_cleanly_or_not_at_all(tmp_path, data):
    admitted = _gate(tmp_path, data)
    assert admitted is None or admitted.size == len(data) > 0  # an empty file is never admitted


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8), st.integers(0, 10**6))
def test_a_damaged_real_model_passes_the_gate_cleanly_or_not_at_all(tmp_path, real_model, flips, cut):
    data = bytearray(real_model)
    for pos, value in flips:
        data[pos % len(data)] = value
    admitted = _gate(tmp_path, bytes(data[: max(1, len(data) - cut % len(data))]))
    if admitted is not None:  # what the gate admits, onnxruntime either opens or refuses in one line
        from edgepipe.runtime.model.session import open_session

        try:
            open_session(admitted.path)
        except EdgepipeError as exc:
            clean(exc)


def test_the_gate_admits_the_real_model(tmp_path, real_model):
    admitted = _gate(tmp_path, real_model)
    assert admitted is not None and admitted.size == len(real_model) and admitted.external == ()
