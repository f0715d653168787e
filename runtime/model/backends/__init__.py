"""Runtime backends: onnxruntime (the default, everywhere) and OpenVINO (the optional `[openvino]`
extra). `open_model` returns a session with the interface the runner uses — get_inputs(),
get_outputs(), run(names, feed), get_providers(), get_modelmeta() — and `describe` says what
really ran: backend, version, device, precision."""

from __future__ import annotations

from pathlib import Path

from edgepipe.devices import EdgepipeError
from edgepipe.runtime.model.modelfile import check_model_file

BACKENDS = ("onnxruntime", "openvino")
PRECISIONS = ("auto", "f32", "bf16", "f16")  # auto: the backend's default for the file


def available(name: str) -> tuple[bool, str]:
    """Whether a backend can run here, and why not."""
    if name == "onnxruntime":
        return True, ""
    if name == "openvino":
        from edgepipe.runtime.model.backends.openvino import available as ov_available

        return ov_available()
    return False, f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})"


def precision_problem(backend: str, precision: str) -> str | None:
    """Why `precision` cannot be asked of `backend` ("VALUE: reason"), or None."""
    if precision not in PRECISIONS:
        return f"{precision!r}: choose from {', '.join(PRECISIONS)}"
    if backend == "onnxruntime" and precision not in ("auto", "f32"):
        return (
            f"{precision}: onnxruntime runs the precision the file stores; quantize it "
            "(edgepipe quantize --mode fp16 or static int8) or use the openvino backend"
        )
    return None


def open_model(
    model: str | Path,
    backend: str = "onnxruntime",
    threads: int = 1,
    inter_threads: int = 1,
    providers: tuple[str, ...] = ("CPUExecutionProvider",),
    optimization: str = "all",
    precision: str = "auto",
    device: str = "CPU",
    spin: bool = True,
):
    """A session for `model` on `backend`, after the ONNX gate (modelfile.py) has admitted the file.
    spin=False: onnxruntime's idle worker threads sleep instead of busy-waiting (for paced work)."""
    ok, why = available(backend)
    if not ok:
        raise EdgepipeError(f"backend {backend}: {why}")
    problem = precision_problem(backend, precision)
    if problem:
        raise EdgepipeError(f"precision {problem}")
    if backend == "onnxruntime":
        from edgepipe.runtime.model.session import open_session

        return open_session(
            model,
            threads=threads,
            inter_threads=inter_threads,
            providers=providers,
            optimization=optimization,
            spin=spin,
        )
    from edgepipe.runtime.model.backends.openvino import OpenVINOSession

    gate = check_model_file(model)
    return OpenVINOSession(gate.path, gate.metadata, threads=threads, device=device, precision=precision)


def describe(session, model: str | Path) -> dict:
    """Backend, version, device and the precision that ran (onnxruntime: what the file stores)."""
    if hasattr(session, "describe"):
        return session.describe()
    import onnxruntime as ort

    from edgepipe.runtime.model.modelfile import file_precision
    from edgepipe.runtime.model.session import GPU_PROVIDERS

    used = session.get_providers()
    return {
        "name": "onnxruntime",
        "version": ort.__version__,
        "device": "GPU" if any(p in used for p in GPU_PROVIDERS) else "CPU",
        "providers": used,
        "precision": file_precision(Path(model)),
        "precision_asked": "auto",
    }


def resolve(
    backend: str | None, precision: str | None, device: str | None, profile, notes: list[str]
) -> tuple[str, str, str]:
    """The backend given, else the profile's first backend installed here (each one skipped is
    noted), else onnxruntime; the precision and device given, else that backend's in the profile."""
    chosen = None
    if backend is None and profile is not None:
        for b in profile.backends:
            ok, why = available(b.name)
            if ok:
                chosen = b
                break
            notes.append(f"profile {profile.name} lists backend {b.name}, but {why}; skipped")
    if chosen is None:  # given, or nothing in the profile runs here
        return backend or "onnxruntime", precision or "auto", device or "CPU"
    return chosen.name, precision or chosen.precision, device or chosen.device
