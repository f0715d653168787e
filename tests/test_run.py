"""The run engine: manifest, reuse, --force/--from, crash safety, verify. Uses two light
stages registered through the real registry, so these tests need no training."""

import json
import os
from dataclasses import dataclass

import pytest

from edgepipe.devices import EdgepipeError
from edgepipe.devices.base.atomic import write_bytes_atomic, write_json_atomic
from edgepipe.pipeline.core.manifest import verify_run
from edgepipe.pipeline.core.recipe import parse_recipe
from edgepipe.pipeline.core.registry import STAGES, register_stage
from edgepipe.pipeline.core.run import StageResult, run_recipe

CALLS = []


@dataclass(frozen=True)
class MakeConfig:
    text: str = "hello"
    fail: bool = False
    uses_data = False

    def inputs(self, available):
        return {}

    def outputs(self):
        return {"greeting": "file"}


@dataclass(frozen=True)
class UpperConfig:
    source: str = "greeting"
    uses_data = False

    def inputs(self, available):
        return {"source": self.source}

    def outputs(self):
        return {"upper": "file"}


if "t_make" not in STAGES:

    @register_stage("t_make", MakeConfig)
    def _make(cfg, ctx):
        CALLS.append("make")
        write_bytes_atomic(ctx.out("g.txt"), cfg.text.encode())
        if cfg.fail:
            raise EdgepipeError("t_make: asked to fail")
        return StageResult({"length": len(cfg.text)}, [ctx.artifact("greeting", "file", "g.txt")])

    @register_stage("t_upper", UpperConfig)
    def _upper(cfg, ctx):
        CALLS.append("upper")
        text = ctx.path_of(cfg.source).read_text().upper()
        write_bytes_atomic(ctx.out("u.txt"), text.encode())
        return StageResult({"text": text}, [ctx.artifact("upper", "file", "u.txt")])


def recipe(text="hello", fail=False):
    return parse_recipe({"name": "t", "stages": [{"t_make": {"text": text, "fail": fail}}, {"t_upper": {}}]})


@pytest.fixture(autouse=True)
def clear_calls():
    CALLS.clear()


def test_manifest_records_config_hashes_metrics_and_environment(tmp_path):
    run_dir, m = run_recipe(recipe(), tmp_path)
    assert (run_dir / "t_upper" / "u.txt").read_text() == "HELLO"
    on_disk = json.loads((run_dir / "manifest.json").read_text())
    assert on_disk == m
    st = m["stages"]["t_upper"]
    assert st["config"] == {"source": "greeting"} and st["metrics"] == {"text": "HELLO"}
    assert set(st["inputs"]) == {"greeting"} and list(st["outputs"]) == ["t_upper/u.txt"]
    assert st["wall_s"] >= 0 and st["environment"]["versions"]["python"]
    assert {"paddlepaddle", "paddle2onnx", "onnx", "onnxruntime"} <= set(m["environment"]["versions"])
    assert m["environment"]["host"]["cpu_model"]
    assert (run_dir / "recipe.yaml").read_text().startswith("name: t")
    assert verify_run(run_dir) == []


def test_second_run_reuses_everything_with_same_hashes(tmp_path):
    _, first = run_recipe(recipe(), tmp_path)
    CALLS.clear()
    _, second = run_recipe(recipe(), tmp_path)
    assert CALLS == []
    assert {k: v["outputs"] for k, v in first["stages"].items()} == {
        k: v["outputs"] for k, v in second["stages"].items()
    }


def test_changed_config_redoes_that_stage_and_what_depends_on_it(tmp_path):
    run_recipe(recipe(), tmp_path)
    CALLS.clear()
    run_dir, m = run_recipe(recipe("bye"), tmp_path)
    assert CALLS == ["make", "upper"] and m["stages"]["t_upper"]["metrics"]["text"] == "BYE"


def test_force_and_from(tmp_path):
    run_recipe(recipe(), tmp_path)
    CALLS.clear()
    run_recipe(recipe(), tmp_path, force=True)
    assert CALLS == ["make", "upper"]
    CALLS.clear()
    run_recipe(recipe(), tmp_path, from_stage="t_upper")
    assert CALLS == ["upper"]
    with pytest.raises(EdgepipeError, match="--from nope: no such stage"):
        run_recipe(recipe(), tmp_path, from_stage="nope")


def test_tampered_output_is_detected_and_redone(tmp_path):
    run_dir, _ = run_recipe(recipe(), tmp_path)
    (run_dir / "t_make" / "g.txt").write_text("tampered")
    assert verify_run(run_dir) == ["t_make/g.txt: sha256 differs from the manifest (stage t_make)"]
    CALLS.clear()
    run_recipe(recipe(), tmp_path)
    assert CALLS == ["make"]  # t_upper's input is back to the same bytes, so it is reused
    assert verify_run(run_dir) == []


def test_failed_stage_leaves_no_partial_and_keeps_previous_result(tmp_path):
    run_dir, _ = run_recipe(recipe(), tmp_path)
    with pytest.raises(EdgepipeError, match="asked to fail"):
        run_recipe(recipe("other", fail=True), tmp_path)
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "manifest.json", "recipe.yaml", "t_make", "t_upper"]
    assert (run_dir / "t_make" / "g.txt").read_text() == "hello" and verify_run(run_dir) == []


def test_leftovers_of_a_killed_run_are_cleaned(tmp_path):
    run_dir, _ = run_recipe(recipe(), tmp_path)
    (run_dir / ".t_upper.partial-99999").mkdir()
    (run_dir / ".t_upper.partial-99999" / "half.txt").write_text("x")
    (run_dir / ".manifest.json.abc.tmp").write_text("{")
    run_recipe(recipe(), tmp_path)
    assert not any(p.name.startswith(".t_") or p.name.endswith(".tmp") for p in run_dir.iterdir())


def test_corrupt_manifest_is_a_clear_error(tmp_path):
    run_dir, _ = run_recipe(recipe(), tmp_path)
    (run_dir / "manifest.json").write_text("{not json")
    with pytest.raises(EdgepipeError, match="manifest.json: not a valid edgepipe manifest"):
        run_recipe(recipe(), tmp_path)


def test_atomic_write_never_leaves_half_a_file(tmp_path):
    target = tmp_path / "a.json"
    write_json_atomic(target, {"v": 1})

    with pytest.raises(TypeError):
        write_json_atomic(target, {"v": object()})
    assert json.loads(target.read_text()) == {"v": 1}
    assert os.listdir(tmp_path) == ["a.json"]
