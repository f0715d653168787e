"""What paddle2onnx 2.1 needs done to a Paddle program before it can convert it (run in its child process).

- A legacy ProgramDesc (`inference.pdmodel`, what PaddleOCR, PaddleClas and PaddleDetection publish)
  is translated to Paddle 3's PIR `.json` here, with the same steps paddle2onnx takes inside, so
  that the fix below applies to it too.
- Paddle 3 declares the interpolation ops' `scale` as `double[]`, so the translation (and
  `paddle.jit.save`) writes it as an array of doubles; paddle2onnx's interpolate mapper reads it
  as floats and stops with "the 0th elementwise MUST be ir::FloatAttribute" (the PP-OCRv4 text
  detector's `nearest_interp_v2`). A copy of the json gets those elements typed as floats: a
  legacy program stores them as float32, so nothing is lost.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def float_interp_scales(program: dict) -> int:
    """Retype the double elements of every *_interp op's `scale` array as floats, in place (nested
    regions of control-flow ops included); returns how many attributes changed."""
    changed = 0

    def walk(regions):
        nonlocal changed
        for region in regions or []:
            for block in region.get("blocks", []):
                for op in block.get("ops", []):
                    if str(op.get("#", "")).endswith("_interp"):
                        for attr in op.get("A") or []:
                            at = attr.get("AT", {}) if isinstance(attr, dict) else {}
                            if attr.get("N") == "scale" and at.get("#") == "0.a_array":
                                hits = [e for e in at.get("D", []) if isinstance(e, dict) and e.get("#") == "0.a_f64"]
                                for e in hits:
                                    e["#"] = "0.a_f32"
                                changed += bool(hits)
                    if isinstance(op.get("regions"), list):
                        walk(op["regions"])

    walk(program.get("program", {}).get("regions"))
    return changed


def legacy_to_pir(pdmodel: Path, pdiparams: Path, out_dir: Path) -> tuple[Path, Path]:
    """Translate a legacy inference program and its parameters to PIR (out_dir/inference.json + .pdiparams)."""
    import paddle

    prefix = str(Path(out_dir) / "inference")
    paddle.enable_static()
    with paddle.static.scope_guard(paddle.static.Scope()):
        exe = paddle.static.Executor(paddle.CPUPlace())
        with paddle.pir_utils.OldIrGuard():
            prog, _, _ = paddle.static.load_inference_model(
                None, exe, model_filename=Path(pdmodel).read_bytes(), params_filename=Path(pdiparams).read_bytes()
            )
        pir_prog = paddle.pir.translate_to_pir(prog.desc)
        params = [
            v
            for v in pir_prog.list_vars()
            if v.persistable and (v.is_parameter or v.get_defining_op().name() in ("builtin.parameter", "pd_op.data"))
        ]
        paddle.base.libpaddle.pir.create_loaded_parameter(params, paddle.static.global_scope(), exe._default_executor)
        feeds, fetches = [], []
        for op in pir_prog.global_block().ops:
            if op.name() == "pd_op.feed":
                feeds.extend(op.results())
            if op.name() in ("pd_op.fetch", "builtin.shadow_output"):
                fetches.extend(op.operands_source())
        with paddle.pir_utils.IrGuard():
            paddle.static.save_inference_model(prefix, feeds, fetches, exe, program=pir_prog)
    return Path(prefix + ".json"), Path(prefix + ".pdiparams")


def convertible(graph: Path, params: Path, work: Path) -> tuple[Path, Path, int]:
    """(json, params, attributes fixed): a PIR program paddle2onnx can read, in `work` where it had to change."""
    graph, params = Path(graph), Path(params)
    if graph.suffix == ".pdmodel":
        graph, params = legacy_to_pir(graph, params, work)
    program = json.loads(graph.read_text(encoding="utf-8"))
    fixed = float_interp_scales(program)
    if fixed:
        if graph.parent != Path(work):
            graph = shutil.copy(graph, Path(work) / "fixed.json") and Path(work) / "fixed.json"
        graph.write_text(json.dumps(program, separators=(",", ":")), encoding="utf-8")
    return graph, params, fixed
