"""Paddle Layer -> ONNX, always followed by a parity check against Paddle (optimum's habit)."""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.devices.base.atomic import temp_dir, write_bytes_atomic
from edgepipe.devices.base.child import run_child
from edgepipe.runtime.model.session import open_session, predict

DEFAULT_OPSET = 13


class ParityError(EdgepipeError):
    """The exported ONNX model does not reproduce Paddle's outputs within tolerance."""


def _run_paddle2onnx(model_json: Path, params: Path, out: Path, opset: int, name: str) -> None:
    cmd = [sys.executable, "-m", "edgepipe.export._p2o", str(model_json), str(params), str(out), str(opset)]
    proc = run_child(cmd)
    if proc.returncode == 0 and out.is_file():
        return
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    tail = [ansi.sub("", ln).strip() for ln in (proc.stdout + "\n" + proc.stderr).splitlines() if ln.strip()]
    tail = [
        ln for ln in tail if not re.match(r"(.*\[(WARNING|INFO)\])|([WI]\d{4} )", ln)
    ]  # paddle's and glog's chatter
    hint = next((ln for ln in tail if "[ERROR]" in ln), None) or next(
        (ln for ln in tail if ("rror:" in ln and "signal` is detected" not in ln) or "not support" in ln.lower()),
        tail[-1] if tail else "",
    )
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        raise EdgepipeError(
            f"paddle2onnx crashed ({sig}) converting {name}: {hint[:240]}; "
            "the model uses an op paddle2onnx cannot convert - replace that op, "
            "or export the float model and quantize in ONNX"
        )
    raise EdgepipeError(f"paddle2onnx failed converting {name}: {hint[:240]}")


def constants_to_initializers(model) -> int:
    """Move Constant nodes holding tensors into graph initializers; returns how many moved.

    paddle2onnx (without its optimizer) emits every weight as a Constant node; onnxruntime's
    quantizer and most tools only recognise weights that are initializers.
    """
    keep, moved = [], 0
    for node in model.graph.node:
        attr = node.attribute[0] if node.op_type == "Constant" and len(node.attribute) == 1 else None
        if attr is not None and attr.name == "value":
            tensor = attr.t
            tensor.name = node.output[0]
            model.graph.initializer.append(tensor)
            moved += 1
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return moved


def basic_optimize(src: Path, dst: Path) -> Path:
    """onnxruntime's basic, provider-independent graph optimisations, saved as a plain ONNX file.

    Constant folding, Identity elimination and Conv/Add fusions: what paddle2onnx's own
    optimizer would do, without the packages it installs at run time. The result runs on
    any onnxruntime build and execution provider.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(dst)
    opts.log_severity_level = 3
    ort.InferenceSession(str(src), sess_options=opts, providers=["CPUExecutionProvider"])
    return dst


def export_layer(
    layer,
    input_shape: tuple[int, ...],
    out: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    name: str = "model",
    metadata: dict[str, str] | None = None,
) -> Path:
    """jit.save `layer` (batch dim dynamic) and convert it to ONNX at `out`, atomically, with
    `metadata` in its metadata_props (the input contract)."""
    import paddle
    from paddle.static import InputSpec

    from edgepipe.export.paddle_fix import uneven_adaptive_pools

    layer.eval()
    layer, replaced = uneven_adaptive_pools(layer, tuple(input_shape))
    if replaced:
        print(
            f"{name}: adaptive pooling of {', '.join(replaced)} exported as matrix products (paddle2onnx's AveragePool "
            "would have zero strides at this input size)",
            file=sys.stderr,
        )
    with temp_dir("export") as tmp:
        prefix = os.path.join(tmp, "model")
        spec = [InputSpec([None, *input_shape], "float32", "x")]
        try:
            paddle.jit.save(layer, prefix, input_spec=spec)
        except Exception as exc:
            msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise EdgepipeError(f"paddle.jit.save failed for {name}: {msg[:240]}") from None
        model_json = Path(prefix + ".json")
        if not model_json.is_file():  # older (non-PIR) paddle writes .pdmodel
            model_json = Path(prefix + ".pdmodel")
        return export_saved(model_json, Path(prefix + ".pdiparams"), out, opset=opset, name=name, metadata=metadata)


def export_saved(
    graph: Path,
    params: Path,
    out: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    name: str = "model",
    metadata: dict[str, str] | None = None,
) -> Path:
    """Convert a paddle.jit.save output (NAME.json or NAME.pdmodel + NAME.pdiparams) to ONNX at `out`,
    atomically: paddle2onnx in a child process, weights as initializers, basic optimisations, checker,
    `metadata` in its metadata_props."""
    import onnx

    from edgepipe.export.metadata import merge
    from edgepipe.export.repair import repair

    out = Path(out)
    with temp_dir("export") as tmp:
        tmp_out = Path(tmp) / "model.onnx"
        _run_paddle2onnx(Path(graph), Path(params), tmp_out, opset, name)
        model = onnx.load(str(tmp_out))
        constants_to_initializers(model)
        for note in repair(model):
            print(f"{name}: repaired paddle2onnx's output: {note}", file=sys.stderr)
        onnx.save(model, str(tmp_out))
        model = onnx.load(str(basic_optimize(tmp_out, Path(tmp) / "model.opt.onnx")))
        try:
            onnx.checker.check_model(model)
        except Exception as exc:
            raise EdgepipeError(f"the ONNX exported for {name} fails onnx.checker: {str(exc)[:240]}") from None
        merge(model, metadata or {})
        write_bytes_atomic(out, model.SerializeToString())
    return out


def _compare(
    got: np.ndarray, reference: np.ndarray, *, atol: float, rtol: float, name: str, output: str, samples: int
) -> float:
    """The largest |difference| of one output against Paddle's; ParityError when a shape, a non-finite
    value or a difference beyond atol + rtol*|ref| says the conversion is wrong."""
    if got.shape != reference.shape:
        raise ParityError(f"{name}: ONNX {output} has shape {list(got.shape)}, Paddle gave {list(reference.shape)}")
    for label, arr in (("Paddle's", reference), ("onnxruntime's", got)):
        if (
            arr.dtype.kind == "f" and not np.isfinite(arr).all()
        ):  # NaN compares false to everything: a NaN model would pass
            raise ParityError(
                f"{name}: {label} {output} holds NaN or inf on {samples} held-out inputs; the model's "
                "weights are not finite (did training diverge?), so nothing is exported"
            )
    if got.dtype.kind not in "fc":
        if not np.array_equal(got, reference):
            raise ParityError(
                f"{name}: ONNX {output} ({got.dtype}) differs from Paddle's on {samples} inputs; "
                "the exporter mis-converted an op - check paddle2onnx's warnings or try another opset"
            )
        return 0.0
    diff = np.abs(got.astype(np.float64) - reference)
    allowed = atol + rtol * np.abs(reference)
    worst = float(diff.max()) if diff.size else 0.0
    if np.any(diff > allowed):
        raise ParityError(
            f"{name}: ONNX {output} differs from Paddle by up to {worst:.3g} "
            f"(tolerance {atol:g} + {rtol:g}*|ref|) on {samples} held-out inputs; "
            "the exporter mis-converted an op - check paddle2onnx's warnings or try another opset"
        )
    return worst


def check_parity(
    onnx_path: str | Path,
    reference: np.ndarray,
    inputs: np.ndarray,
    *,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    name: str = "model",
) -> dict:
    """Compare onnxruntime's output on `inputs` with Paddle's `reference`; raise ParityError if off."""
    got = predict(open_session(onnx_path), inputs)
    worst = _compare(got, reference, atol=atol, rtol=rtol, name=name, output="output 0", samples=len(inputs))
    agree = float((got.argmax(1) == reference.argmax(1)).mean()) if got.ndim == 2 else None
    return {"max_abs_diff": worst, "samples": int(len(inputs)), "top1_agreement": agree, "atol": atol, "rtol": rtol}


def check_parity_feeds(
    onnx_path: str | Path,
    reference: list[list[np.ndarray]],
    feeds: list[dict],
    *,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    name: str = "model",
) -> dict:
    """Every output of onnxruntime on each feed against Paddle's `reference` outputs for it (by position:
    paddle2onnx renames them); raise ParityError at the first one off."""
    from edgepipe.runtime.inputs import feeds as fd

    session = open_session(onnx_path)
    n = fd.count(feeds)
    worst, agree = 0.0, []
    for feed, ref in zip(feeds, reference):
        got = session.run(None, feed)
        if len(got) != len(ref):
            raise ParityError(f"{name}: the ONNX file has {len(got)} outputs, Paddle's program {len(ref)}")
        for k, (g, r) in enumerate(zip(got, ref)):
            worst = max(worst, _compare(g, r, atol=atol, rtol=rtol, name=name, output=f"output {k}", samples=n))
        if got[0].ndim == 2 and got[0].shape[1] > 1:
            agree.append(got[0].argmax(1) == ref[0].argmax(1))
    shapes = sorted({"x".join(map(str, v.shape[1:])) for f in feeds for v in f.values() if v.ndim > 1})
    return {
        "max_abs_diff": worst,
        "samples": n,
        "outputs": len(reference[0]) if reference else 0,
        "input_shapes": shapes,
        "top1_agreement": float(np.concatenate(agree).mean()) if agree else None,
        "atol": atol,
        "rtol": rtol,
    }
