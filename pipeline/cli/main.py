"""The `edgepipe` command line: the argument parser and main(), which turns every error into one
line and a non-zero exit (--debug: the traceback). The commands themselves are in commands.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgepipe.pipeline.cli import commands, contract_command, model_commands, optimize_command
from edgepipe.runtime.args import add_contract_args, add_shape_arg, add_task_args


def _add_run(sub) -> None:
    r = sub.add_parser("run", help="run a recipe (default: the built-in MNIST teacher/student recipe)")
    r.add_argument("recipe", nargs="?", help="recipe YAML (default: built-in mnist_kd.yaml)")
    r.add_argument("--runs-dir", default="runs", help="where run directories go (default: runs)")
    r.add_argument("--name", help="run name (default: the recipe's name)")
    r.add_argument("--force", action="store_true", help="redo every stage")
    r.add_argument("--from", dest="from_stage", metavar="STAGE", help="redo this stage and the ones after it")
    d = r.add_argument_group("data-parallel training (paddle.distributed.launch; see docs/distributed.md)")
    d.add_argument("--nproc", type=int, help="processes (ranks) on this machine; training stages split each batch")
    d.add_argument("--nnodes", type=int, help="machines in the run (default 1)")
    d.add_argument("--master", metavar="HOST:PORT", help="with --nnodes: the machine of --rank 0, a free port there")
    d.add_argument("--rank", type=int, help="with --nnodes: this machine's rank, 0 to nnodes-1")
    d.add_argument("--devices", help="GPUs to use, e.g. 0,1 (NCCL); default: CPU processes with gloo")
    d.add_argument(
        "--master-timeout", type=float, default=120, help="seconds a machine of rank > 0 waits for the master"
    )
    r.set_defaults(fn=commands.cmd_run)


def _add_export(sub) -> None:
    e = sub.add_parser(
        "export", help="export an edgepipe model folder or a Paddle inference model to ONNX, parity-checked"
    )
    e.add_argument(
        "model",
        help="an edgepipe model folder (e.g. runs/mnist-kd/distill/student), or a Paddle inference "
        "model (PaddleOCR/PaddleClas/PaddleDetection's, or paddle.jit.save's): its folder or its path "
        "prefix (NAME.pdmodel or NAME.json + NAME.pdiparams)",
    )
    e.add_argument("-o", "--output", help="output .onnx (default: MODEL/model.onnx, or NAME.onnx beside a saved graph)")
    e.add_argument("--opset", type=int, default=13)
    e.add_argument(
        "--parity-samples",
        type=int,
        default=64,
        help="random inputs compared against Paddle (Paddle Inference for inference models)",
    )
    e.add_argument("--atol", type=float, default=1e-4)
    e.add_argument("--rtol", type=float, default=1e-3)
    add_shape_arg(e)
    add_contract_args(e)
    e.set_defaults(fn=model_commands.cmd_export)


def _add_quantize(sub) -> None:
    q = sub.add_parser(
        "quantize", help="quantize an ONNX model with onnxruntime (static int8/int4/a16w8, dynamic, fp16, 4-bit MatMul)"
    )
    q.add_argument("model", help="fp32 .onnx")
    q.add_argument("-o", "--output", help="output (default: MODEL.<int8|int4|a16w8|dyn8|fp16|mm4>.onnx)")
    q.add_argument("--mode", choices=["static", "dynamic", "fp16", "matmul4"], default="static")
    q.add_argument("--profile", help="device profile whose int8 preset gives the defaults (default: this host's)")
    q.add_argument(
        "--calibration",
        help="a folder of images (decoded by the model's input contract, or the one the flags "
        "below give) or an .npz of inputs (one array per input name, or 'x'); default, for "
        "a 1×28×28 model only: the bundled MNIST calibration split",
    )
    q.add_argument(
        "--samples",
        type=int,
        default=200,
        help="calibration samples, taken evenly across the inputs (every size a folder holds; default 200)",
    )
    q.add_argument("--method", choices=["minmax", "entropy", "percentile"], default="minmax", help="calibration method")
    q.add_argument("--percentile", type=float, default=99.999, help="for --method percentile (default 99.999)")
    q.add_argument("--format", choices=["qdq", "qoperator"], help="default: the profile's (qdq)")
    q.add_argument("--per-tensor", action="store_true", help="per-tensor weights (default: the profile's, per-channel)")
    q.add_argument("--activation-type", choices=["u8", "s8", "u16", "s16"], help="default: the profile's")
    q.add_argument("--weight-type", choices=["s8", "u8", "s4", "u4"], help="default: the profile's")
    q.add_argument(
        "--reduce-range", action="store_true", help="7-bit weights (avoids u8s8 saturation on CPUs without VNNI)"
    )
    q.add_argument("--exclude", action="append", metavar="NODE", help="keep this ONNX node in float (repeatable)")
    q.add_argument(
        "--op-types",
        metavar="OP,OP",
        help="quantize only these op types (e.g. Conv,MatMul,Gemm: the element-wise ops stay float)",
    )
    q.add_argument(
        "--eval",
        help="held-out inputs for the accuracy guard and the fidelity printed: an image folder (class "
        "folders give labels) or an .npz of inputs (labels 'y' optional)",
    )
    q.add_argument(
        "--max-drop",
        type=float,
        help="accuracy-guard budget in points of the task's metric (top-1 accuracy, word accuracy, mAP, hmean; "
        "against the float model's predictions without labels)",
    )
    q.add_argument(
        "--float-box-head",
        action="store_true",
        help="--task detect: keep the box-regression head's last layers in float (the usual cause of int8 mAP loss)",
    )
    q.add_argument("--max-float-layers", type=int, default=4, help="at most this many guard steps (default 4)")
    q.add_argument(
        "--compact-names",
        action="store_true",
        help="short internal tensor and node names: the same graph in fewer bytes (outputs checked identical)",
    )
    add_shape_arg(q)
    add_contract_args(q)
    add_task_args(q)
    q.set_defaults(fn=model_commands.cmd_quantize)


def _add_contract(sub) -> None:
    c = sub.add_parser(
        "contract",
        help="show an ONNX file's input contract and task, or write them into its metadata once (for "
        "models exported elsewhere), so every later command and the device use them",
    )
    c.add_argument("model", help=".onnx model")
    c.add_argument("-o", "--output", help="write the file with its contract here (default: in place)")
    add_contract_args(c)
    add_task_args(c)
    c.set_defaults(fn=contract_command.cmd_contract)


def _add_prune(sub) -> None:
    pr = sub.add_parser(
        "prune", help="structured-pruning sensitivity: validation accuracy of each channel group vs ratio (JSON + PNG)"
    )
    pr.add_argument("model", help="model folder, e.g. runs/mnist-kd/distill/student")
    pr.add_argument("--sensitivity", action="store_true", help="run the sensitivity analysis (required)")
    pr.add_argument("-o", "--output", help="output folder (default: MODEL/sensitivity)")
    pr.add_argument(
        "--criterion", default="l1", help="channel importance: l1 l2 fpgm bn_scale taylor apoz activation (default l1)"
    )
    pr.add_argument("--ratios", help="comma-separated ratios (default 0.1,0.2,...,0.9)")
    pr.add_argument(
        "--round-to",
        type=int,
        help="kept channel counts rounded to a multiple of this "
        "(default: the detected device profile's channel_multiple, 8)",
    )
    pr.add_argument("--layers", action="append", metavar="GLOB", help="only groups holding these layers (repeatable)")
    pr.add_argument(
        "--skip", action="append", metavar="GLOB", help="leave groups holding these layers alone (repeatable)"
    )
    pr.add_argument(
        "--samples", type=int, default=512, help="training samples for taylor/apoz/activation (default 512)"
    )
    pr.add_argument(
        "--data",
        help="the model's data: an image folder (root/<class>/*.png) or an .npz of pixels x and "
        "labels y (default: the bundled MNIST splits)",
    )
    pr.add_argument("--layout", choices=["nchw", "nhwc"], help="how x of a --data .npz is laid out")
    pr.add_argument(
        "--val-samples", type=int, default=0, help="validation samples evaluated (default: the whole split)"
    )
    pr.add_argument(
        "--target",
        metavar="KIND=SHARE",
        help="also choose per-group ratios keeping this share: params=, macs= or latency=",
    )
    pr.add_argument("--no-plot", action="store_true", help="JSON only")
    pr.set_defaults(fn=commands.cmd_prune)


def _add_frames(sub) -> None:
    f = sub.add_parser(
        "frames",
        help="write camera-like RGB frames made from the bundled digits as an image folder "
        "(a stand-in for a camera's classes)",
    )
    f.add_argument("output", help="a new folder; frames go to OUTPUT/<digit>/<n>.png")
    f.add_argument("--size", type=int, help="frame side in pixels (default 96; with --objects 160)")
    f.add_argument("--per-class", type=int, help="digits per class, at most 500 (default 100)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument(
        "--held-out",
        nargs=2,
        type=int,
        metavar=("TEST", "VAL"),
        help="per class: hold out TEST and VAL digits, "
        "one frame each, to OUTPUT/test/<digit>/ and OUTPUT/val/<digit>/; the rest go to OUTPUT/train/<digit>/",
    )
    f.add_argument("--renderings", type=int, default=1, help="with --held-out: frames per training digit (default 1)")
    f.add_argument(
        "--objects",
        type=int,
        metavar="MAX",
        help="detection frames instead: 1 to MAX digits per frame with COCO boxes, in OUTPUT/{train,val,test}/ "
        "with instances_<split>.json, test/val digits held out by source",
    )
    f.add_argument(
        "--splits",
        nargs=3,
        type=int,
        metavar=("TRAIN", "VAL", "TEST"),
        help="with --objects: frames per split (default 600 100 100)",
    )
    f.set_defaults(fn=commands.cmd_frames)


def _add_explain(sub) -> None:
    x = sub.add_parser(
        "explain", help="why an (int8) ONNX model is fast or slow: time per op, unfused Q/DQ, float fallbacks"
    )
    x.add_argument("model", help=".onnx model")
    x.add_argument("--threads", type=int, default=1)
    x.add_argument("--batch", type=int, default=1)
    x.add_argument("--seconds", type=float, default=1.0, help="profile for at least this long (default 1)")
    x.add_argument("--json", help="write the full analysis here")
    x.set_defaults(fn=commands.cmd_explain)


def _add_bench(sub) -> None:
    from edgepipe.runtime.args import build_parser as runner_parser

    b = sub.add_parser(
        "bench",
        parents=[runner_parser(add_help=False)],
        help="latency, memory, energy and a budget verdict for an ONNX model (the on-device runner)",
        description="Same arguments and output as the on-device runner, edgepipe-runner.",
    )
    b.set_defaults(fn=commands.cmd_bench)


def _add_deploy(sub) -> None:
    dp = sub.add_parser(
        "deploy",
        help="choose what to ship: the fastest model × backend × precision that keeps the accuracy (or the "
        "task's metric), measured on this machine, among a finished run's models or the ONNX files given",
    )
    dp.add_argument(
        "target",
        nargs="+",
        help="a run directory (e.g. runs/mnist-kd), or ONNX files to choose among (e.g. model.onnx model.int8.onnx)",
    )
    dp.add_argument("--profile", help="device profile whose budgets, threads and backends apply (default: detected)")
    dp.add_argument(
        "--backend",
        action="append",
        choices=["onnxruntime", "openvino"],
        help="backends to try (repeatable; default: the profile's installed ones)",
    )
    dp.add_argument("--inputs", help="labelled test inputs (.npz with x, y; default: RUN_DIR/bench/test_split.npz)")
    dp.add_argument(
        "--images",
        type=Path,
        help="score the candidates by their task's metric on this folder of images (its labels file, class "
        "folders, or no labels: then against the first fp32 candidate's predictions)",
    )
    dp.add_argument(
        "--max-drop",
        type=float,
        default=1.0,
        help="points allowed below the best fp32 model, in top-1 accuracy or the task's metric (without labels: "
        "points of agreement with the first fp32 model; default 1)",
    )
    dp.add_argument("--threads", type=int, help="threads (default: the profile's, capped to this host)")
    dp.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    dp.add_argument("--seconds", type=float, default=0.3, help="seconds per candidate per round (default 0.3)")
    dp.add_argument(
        "-o",
        "--output",
        help="folder for deploy.json and the chosen model (default RUN_DIR/deployment, or ./deployment)",
    )
    add_task_args(dp, reference=False)  # the reference is the first fp32 candidate
    add_contract_args(dp)
    dp.set_defaults(fn=commands.cmd_deploy)


def _add_devices(sub) -> None:
    d = sub.add_parser("devices", help="list the device profiles and detect this host")
    d.add_argument("--show", metavar="PROFILE", help="print one profile (a preset name or a YAML file) in full")
    d.set_defaults(fn=commands.cmd_devices)


def _add_report(sub) -> None:
    rp = sub.add_parser("report", help="print the summary table of a run (and write markdown with -o)")
    rp.add_argument("run_dir", help="run directory, e.g. runs/mnist-kd")
    rp.add_argument("-o", "--output", help="write the markdown report here (with --html: the HTML report)")
    rp.add_argument(
        "--html",
        action="store_true",
        help="write the self-contained HTML report with its figures (default RUN_DIR/report.html)",
    )
    rp.add_argument(
        "--device",
        action="append",
        metavar="RESULT.json",
        help="merge a runner result measured on a device (edgepipe-runner --json); repeatable",
    )
    rp.set_defaults(fn=commands.cmd_report)


def _add_verify(sub) -> None:
    v = sub.add_parser("verify", help="re-hash a run's outputs against its manifest")
    v.add_argument("run_dir")
    v.set_defaults(fn=commands.cmd_verify)


# One function per subcommand adds its parser, in the order `edgepipe --help` lists them.
SUBCOMMANDS = (
    _add_run,
    _add_export,
    _add_quantize,
    _add_contract,
    _add_prune,
    _add_frames,
    _add_explain,
    _add_bench,
    _add_deploy,
    optimize_command.add_optimize,
    _add_devices,
    _add_report,
    _add_verify,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgepipe",
        description="Compress a Paddle model, export it to int8 ONNX, and measure it for an edge device.",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    import os

    # Paddle's C++ side logs warnings through glog (e.g. while tracing a model to its static graph);
    # they are not the user's concern and would break the one-line error contract. Errors still show.
    os.environ.setdefault("GLOG_minloglevel", "2")
    import warnings

    warnings.filterwarnings("ignore", message="No ccache found")  # paddle's, on import; about building C++ extensions
    args = build_parser().parse_args(argv)
    from edgepipe.devices.base.errors import run_guarded

    return run_guarded(
        "edgepipe",
        lambda: args.fn(args),
        debug=args.debug,
        on_interrupt="interrupted; rerun the same command to resume",
    )


if __name__ == "__main__":
    sys.exit(main())
