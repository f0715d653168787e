"""Child process for paddle2onnx: `python -m edgepipe.export._p2o MODEL.json PARAMS OUT.onnx OPSET`.

paddle2onnx aborts the whole process on some ops (SIGABRT), so it never runs in the
caller's process. optimize_tool="None": its default (polygraphy) pip-installs packages at
run time; onnxruntime folds constants itself, so nothing is lost.
"""
import sys


def main() -> int:
    model, params, out, opset = sys.argv[1:5]
    import paddle2onnx

    paddle2onnx.export(
        model, params, save_file=out, opset_version=int(opset),
        auto_upgrade_opset=False, enable_onnx_checker=True, optimize_tool="None",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
