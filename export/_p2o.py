"""Child process for paddle2onnx: `python -m edgepipe.export._p2o MODEL PARAMS OUT.onnx OPSET`, MODEL a
Paddle 3 `.json` (PIR) or a legacy `.pdmodel`.

paddle2onnx aborts the whole process on some ops (SIGABRT), so it never runs in the caller's
process. The program is first made convertible (export/pir_fix.py). optimize_tool="None": its
default (polygraphy) pip-installs packages at run time; onnxruntime folds constants itself.
"""

import sys
import tempfile
from pathlib import Path


def main() -> int:
    model, params, out, opset = sys.argv[1:5]
    import paddle2onnx

    from edgepipe.export.pir_fix import convertible

    with tempfile.TemporaryDirectory(prefix="edgepipe-p2o-") as work:
        graph, params, fixed = convertible(Path(model), Path(params), Path(work))
        if fixed:
            print(f"note: {fixed} interpolation scale attribute(s) retyped as float for paddle2onnx", file=sys.stderr)
        try:
            paddle2onnx.export(
                str(graph),
                str(params),
                save_file=out,
                opset_version=int(opset),
                auto_upgrade_opset=False,
                enable_onnx_checker=True,
                optimize_tool="None",
            )
        except SystemExit as exc:  # paddle2onnx exits on a failed conversion, after logging why
            return int(exc.code) if isinstance(exc.code, int) and exc.code else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
