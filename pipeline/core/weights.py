"""Weight files that cannot run code.

edgepipe's own model folders hold `model.safetensors` (a header of names, dtypes and shapes, then
raw bytes: reading it executes nothing). A user's `.pdparams` — and a model folder written before
safetensors — is a pickle, and unpickling runs whatever the file names; so it is read here with an
unpickler that admits only the numpy reconstructors Paddle's `paddle.save(state_dict)` writes and
plain containers, and refuses anything else in one line naming the file and the object it asked for.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from edgepipe.devices import EdgepipeError
from edgepipe.devices.base.atomic import atomic_path

# What paddle.save(layer.state_dict()) pickles (Paddle 2.x and 3.x, numpy 1 and 2): ndarrays rebuilt
# by numpy's own reconstructor, numpy scalars, and ordered dicts. Nothing here calls user code.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
}
# Bookkeeping entries paddle.save adds beside the tensors; they are not weights.
_PADDLE_EXTRA = ("StructuredToParameterName@@",)


def _plain(dtype) -> bool:
    """A dtype a weight tensor can have: a plain number, no fields, no sub-arrays, no objects."""
    return dtype.kind in "biufc" and dtype.names is None and dtype.subdtype is None and not dtype.hasobject


def _dtype(code, align=False, copy=True):
    """numpy.dtype as a state-dict pickle uses it: a plain number type, always a fresh copy (a pickle
    asking for copy=False would get numpy's shared float32 itself, and could then rewrite it)."""
    if not isinstance(code, str) or not _CODE.fullmatch(code) or align is not False:
        raise _Refused(f"an array type {str(code)[:40]!r}")
    return np.dtype(code, False, True)


_CODE = __import__("re").compile(r"[<>|=]?(?:[biu][1248]|f[248]|c(?:8|16)|b1|\?)")


class _StateUnpickler(pickle._Unpickler):  # the Python one, so BUILD can be checked before it applies
    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module, name):
        if (module, name) == ("numpy", "dtype"):
            return _dtype
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid):
        raise _Refused(f"persistent id {str(pid)[:40]!r}")

    def load_build(self):
        # A dtype's state can give it fields, flags or an object type, after which an array's raw bytes
        # would be read as pointers: a dtype's state must be a plain number's, checked before it applies.
        obj, state = self.stack[-2], self.stack[-1]
        if isinstance(obj, np.dtype) and not (
            isinstance(state, tuple)
            and len(state) == 8
            and state[0] == 3
            and state[1] in ("<", ">", "|", "=")
            and state[2:] == (None, None, None, -1, -1, 0)
        ):
            raise _Refused(f"an array type with the state {str(state)[:80]}")
        pickle._Unpickler.load_build(self)
        if isinstance(obj, np.dtype) and not _plain(obj):
            raise _Refused(f"an array type {str(obj)[:60]!r}")
        if isinstance(obj, np.ndarray) and not _plain(obj.dtype):
            raise _Refused(f"an array of {str(obj.dtype)[:60]!r}")

    dispatch[pickle.BUILD[0]] = load_build


class _Refused(Exception):
    pass


def _from_pickle(path: Path) -> dict:
    data = path.read_bytes()
    try:
        state = _StateUnpickler(io.BytesIO(data)).load()
    except _Refused as exc:
        if "_codecs" in str(exc):
            raise EdgepipeError(
                f"{path}: written with pickle protocol 2 (paddle.save(..., protocol=2)), which edgepipe "
                "does not read; re-save it with the default protocol 4"
            ) from None
        raise EdgepipeError(
            f"{path}: refused: the pickle asks for {exc}, which a Paddle state dict never holds "
            "(loading it could run code); re-save the weights with paddle.save(model.state_dict(), "
            "PATH) or as .safetensors"
        ) from None
    if not isinstance(state, dict):
        raise EdgepipeError(f"{path}: holds a {type(state).__name__}, not a state dict; save model.state_dict()")
    if "UnpackBigParamInfor@@" in state:
        raise EdgepipeError(
            f"{path}: written with pickle protocol 2/3 slicing of big tensors; re-save it with "
            "paddle.save(model.state_dict(), PATH) (protocol 4, the default)"
        )
    out = {}
    for k, v in state.items():
        if k in _PADDLE_EXTRA:
            continue
        if not isinstance(k, str) or not isinstance(v, np.ndarray) or not _plain(v.dtype):
            raise EdgepipeError(
                f"{path}: entry {str(k)[:60]!r} is a {type(v).__name__}, not a tensor; save model.state_dict()"
            )
        out[k] = v
    return out


def _from_safetensors(path: Path) -> dict:
    from safetensors.numpy import load_file

    return dict(load_file(str(path)))


def read_state(path: str | Path) -> dict:
    """A state dict {name: ndarray} from a .safetensors file or a (Paddle) pickle, executing nothing.
    Damage is one line naming the file."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(9)
        # safetensors: an 8-byte little-endian header length, then the JSON header
        if path.suffix == ".safetensors" or head[8:9] == b"{":
            return _from_safetensors(path)
        return _from_pickle(path)
    except EdgepipeError:
        raise
    except Exception as exc:
        raise EdgepipeError(
            f"{path}: cannot read weights "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}); "
            "the file is damaged or not a state dict"
        ) from None


def write_state(path: str | Path, state: dict) -> None:
    """Write {name: tensor or ndarray} as safetensors, atomically (temp file in the same folder, renamed)."""
    from safetensors.numpy import save_file

    arrays = {k: np.ascontiguousarray(v.numpy() if hasattr(v, "numpy") else np.asarray(v)) for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp))
