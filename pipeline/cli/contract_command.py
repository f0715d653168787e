"""`edgepipe contract MODEL.onnx`: show what a model file carries for the device (its input contract and
its task), or write them into its metadata (in place, or to -o) for a model exported without them."""

from __future__ import annotations

from pathlib import Path

from edgepipe.pipeline.cli.model_commands import _onnx_name, model_signature


def cmd_contract(args) -> int:
    """Show an ONNX file's input contract and task, or write them into its metadata."""
    from edgepipe.devices import EdgepipeError
    from edgepipe.devices.base.atomic import write_bytes_atomic
    from edgepipe.export.metadata import write_metadata
    from edgepipe.pipeline.stages.export import contract_metadata
    from edgepipe.runtime.inputs.images import CONTRACT_FLAGS
    from edgepipe.runtime.model.session import open_session
    from edgepipe.runtime.tasks import task_from_args

    src = Path(args.model)
    given = [k for k in CONTRACT_FLAGS if getattr(args, k, None) not in (None, False)]
    spec, contract, _ = model_signature(src, args)
    task = task_from_args(open_session(src), args.task, args.task_opt)
    props = contract_metadata(contract.to_dict()) if given else {}
    props |= task.metadata_props() if task is not None and (args.task or args.task_opt) else {}
    if props:
        out = Path(args.output or src)
        _onnx_name(out)
        if out != src:
            write_bytes_atomic(out, src.read_bytes())
        try:
            write_metadata(out, props)
        except BaseException:
            if out != src:
                out.unlink(missing_ok=True)
            raise
        what = [w for w, on in (("input contract", given), ("task", task is not None and args.task)) if on]
        print(f"{out}: {' and '.join(what) or 'task settings'} written")
    elif contract is None and task is None:
        raise EdgepipeError(
            f"{src}: carries no input contract; write one with --size HxW (and --mean/--std/--keep-ratio/"
            "--bgr/--classes as the model was trained), and its task with --task"
        )
    print(f"inputs: {', '.join(f'{s.name} {s.text()}' for s in spec)}")
    if contract is not None:
        shown = ", ".join(f"{k} {v}" for k, v in contract.to_dict().items() if v not in ((), [], None))
        print(f"contract: {shown}")
    if task is not None:
        settings = ", ".join(f"{k} {v}" for k, v in task.settings.items() if v is not None)
        print(f"task: {task.name} ({task.metric})" + (f"; {settings}" if settings else ""))
    return 0
