"""Model sources: the `model:` mapping of a recipe says how the float architecture is built —
exactly one of `family` (built-in), `zoo` (a paddle.vision.models function), `python` (the user's
own nn.Layer factory), `inference` (a paddle.jit.save output) or `onnx` (a float ONNX file).

The first three build a paddle Layer (`build`) and take `weights:` (a state dict the user trained).
`inference` and `onnx` hold a finished graph: export, quantize and bench use them as they are, and a
technique that must rebuild the architecture refuses them with one line. Relative paths are
relative to the recipe's folder (`base`); an artifact records its source's architecture
(`architecture`), so it is rebuilt in a fresh process and its transforms replayed on top.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Union

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.core.config import OPTIONAL, from_dict, require, to_dict
from edgepipe.pipeline.core.config import resolve_path as resolve
from edgepipe.pipeline.models.builtin import ModelSpec, build_model


def zoo_names() -> list[str]:
    """The models of paddle.vision.models: its functions (resnet18, mobilenet_v3_small...) and classes (LeNet...)."""
    import paddle.vision.models as zoo

    return list(zoo.__all__)


@dataclass(frozen=True)
class ZooModel:
    TAG: ClassVar[str] = "zoo"
    zoo: str = ""  # a function (or class) of paddle.vision.models, e.g. mobilenet_v3_small, LeNet
    kwargs: dict[str, Any] = field(default_factory=dict)  # its arguments, e.g. {num_classes: 10, scale: 0.5}
    pretrained: bool = False  # Paddle's own downloader (needs internet)
    weights: str | None = None  # a state dict (.pdparams) to start from

    def __post_init__(self):
        names = zoo_names()
        close = difflib.get_close_matches(self.zoo, names, n=1)
        require(
            self.zoo in names,
            "zoo",
            f"'{self.zoo}' is not a model of paddle.vision.models"
            + (f"; did you mean '{close[0]}'?" if close else f" (known: {', '.join(names)})"),
        )
        require("pretrained" not in self.kwargs, "kwargs", "give pretrained: as its own key, not inside kwargs")
        require(not (self.pretrained and self.weights), "pretrained", "give pretrained: true or weights:, not both")

    @property
    def name(self) -> str:
        return self.zoo


@dataclass(frozen=True)
class PythonModel:
    TAG: ClassVar[str] = "python"
    python: str = ""  # "package.module:callable" returning an nn.Layer
    kwargs: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    search_path: str | None = field(default=None, metadata=OPTIONAL)  # where the module was found (artifacts)

    def __post_init__(self):
        mod, _, fn = self.python.partition(":")
        require(
            bool(mod) and bool(fn) and all(p.isidentifier() for p in mod.split(".") + fn.split(".")),
            "python",
            f"'{self.python}': write it as 'module:callable' (e.g. mynets:build), the module importable "
            "from the recipe's folder or the Python path",
        )

    @property
    def name(self) -> str:
        return self.python.partition(":")[2].rsplit(".", 1)[-1]


@dataclass(frozen=True)
class InferenceModel:
    TAG: ClassVar[str] = "inference"
    inference: str = (
        ""  # a paddle.jit.save output: its folder, or its path prefix (model.json / model.pdmodel + .pdiparams)
    )

    @property
    def name(self) -> str:
        return Path(self.inference).name.removesuffix(".json").removesuffix(".pdmodel") or "model"


@dataclass(frozen=True)
class OnnxModel:
    TAG: ClassVar[str] = "onnx"
    onnx: str = ""  # a float .onnx file

    def __post_init__(self):
        require(self.onnx.endswith(".onnx"), "onnx", f"'{self.onnx}' must be an .onnx file")

    @property
    def name(self) -> str:
        return Path(self.onnx).stem


ModelSource = Union[ModelSpec, ZooModel, PythonModel, InferenceModel, OnnxModel]
LAYER_SOURCES = (ModelSpec, ZooModel, PythonModel)


@dataclass(frozen=True)
class _Holder:
    model: ModelSource = field(default_factory=ModelSpec)


def parse_source(d: dict, path: str = "spec") -> ModelSource:
    """A source from its mapping (as a recipe or model.json writes it)."""
    try:
        return from_dict(_Holder, {"model": d}).model
    except EdgepipeError as exc:
        raise EdgepipeError(f"{path}: {str(exc).removeprefix('model: ').removeprefix('model.')}") from None


def source_files(source: ModelSource, base: Path | None) -> dict[str, Path]:
    """The user files a source reads ({config key: path}), hashed into a stage's inputs."""
    if isinstance(source, InferenceModel):
        graph, params = inference_files(resolve(base, source.inference))
        return {"inference": graph, "inference.params": params}
    if isinstance(source, OnnxModel):
        return {"onnx": resolve(base, source.onnx)}
    out = {}
    if isinstance(source, PythonModel):  # the user's code: an edit to it reruns the stage
        module = module_file(source, base)
        if module is not None:
            out["python"] = module
    weights = getattr(source, "weights", None)
    return out | ({"weights": resolve(base, weights)} if weights else {})


def module_file(source: PythonModel, base: Path | None) -> Path | None:
    """The file (or package folder) of a python: source's module, found without importing it: in the
    recipe's folder or the folder it was imported from, else on the Python path (None if nowhere)."""
    import importlib.util

    parts = source.python.partition(":")[0].split(".")
    for root in (p for p in (base, source.search_path) if p):
        for cand in (Path(root).joinpath(*parts).with_suffix(".py"), Path(root).joinpath(*parts)):
            if cand.exists():
                return cand
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        return None
    origin = Path(spec.origin)
    return origin.parent if origin.name == "__init__.py" else origin


def inference_files(p: Path) -> tuple[Path, Path]:
    """(graph, params) of a paddle.jit.save output given as its folder or its path prefix."""
    if p.is_dir():
        found = sorted(p.glob("*.json")) + sorted(p.glob("*.pdmodel"))
        graphs = [g for g in found if g.with_suffix(".pdiparams").is_file()]
        lone = [g for g in found if g.suffix == ".pdmodel" and g not in graphs]
        if not graphs and lone:
            raise EdgepipeError(
                f"{lone[0]}: its weights, {lone[0].with_suffix('.pdiparams').name}, are not beside it; "
                "copy the whole inference folder"
            )
        if len(graphs) != 1:
            raise EdgepipeError(
                f"{p}: expected one paddle.jit.save output (NAME.json or NAME.pdmodel beside "
                f"NAME.pdiparams), found {len(graphs) or 'none'}"
                + (f": {', '.join(g.name for g in graphs)}" if graphs else "")
            )
        return graphs[0], graphs[0].with_suffix(".pdiparams")
    prefix = Path(str(p).removesuffix(".json").removesuffix(".pdmodel").removesuffix(".pdiparams"))
    for suffix in (".json", ".pdmodel"):
        graph = prefix.with_name(prefix.name + suffix)
        if graph.is_file():
            params = prefix.with_name(prefix.name + ".pdiparams")
            if not params.is_file():
                raise EdgepipeError(f"{params}: not found; paddle.jit.save writes it beside {graph.name}")
            return graph, params
    raise EdgepipeError(f"{p}: no paddle.jit.save output here (NAME.json or NAME.pdmodel with NAME.pdiparams)")


def _import_factory(source: PythonModel, base: Path | None):
    mod_name, _, attr = source.python.partition(":")
    search = [p for p in (source.search_path, str(base) if base else None) if p]
    added = [p for p in search if p not in sys.path]
    sys.path[:0] = added
    try:
        module = importlib.import_module(mod_name)
    except Exception as exc:
        where = f" (looked in {', '.join(search)} and the Python path)" if search else ""
        raise EdgepipeError(
            f"python: cannot import '{mod_name}'{where}: {type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    finally:
        for p in added:
            if p in sys.path:
                sys.path.remove(p)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise EdgepipeError(f"python: module '{mod_name}' has no '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise EdgepipeError(f"python: '{source.python}' is not callable")
    return obj, module


def build(
    source: ModelSource, base: Path | None = None, *, technique: str = "this stage", name_prefix: str | None = None
):
    """The float Layer of a source, with fresh parameter names (see builtin.build_model; name_prefix
    keeps several models trained by one optimizer apart); no weights loaded."""
    import paddle
    import paddle.nn as nn

    if isinstance(source, ModelSpec):
        return build_model(source, name_prefix)
    if isinstance(source, (InferenceModel, OnnxModel)):
        raise EdgepipeError(
            f"{source.TAG}: {getattr(source, source.TAG)} is a saved graph: {technique} must rebuild the "
            "architecture; give its python: or zoo: source with weights: instead"
        )
    with paddle.utils.unique_name.guard(name_prefix):
        if isinstance(source, ZooModel):
            import paddle.vision.models as zoo

            try:
                layer = getattr(zoo, source.zoo)(**source.kwargs, **({"pretrained": True} if source.pretrained else {}))
            except TypeError as exc:
                raise EdgepipeError(f"zoo: {source.zoo}({', '.join(source.kwargs)}): {exc}") from None
            except Exception as exc:
                if source.pretrained:
                    raise EdgepipeError(
                        f"zoo: {source.zoo}: Paddle could not download its pretrained weights "
                        f"({type(exc).__name__}); offline, download them elsewhere and give weights: PATH.pdparams"
                    ) from None
                raise
        else:
            factory, _ = _import_factory(source, base)
            try:
                layer = factory(**source.kwargs)
            except Exception as exc:
                raise EdgepipeError(
                    f"python: {source.python}(**kwargs) failed: {type(exc).__name__}: {str(exc)[:200]}"
                ) from None
    if not isinstance(layer, nn.Layer):
        raise EdgepipeError(
            f"{source.TAG}: {source.python if isinstance(source, PythonModel) else source.zoo} returned "
            f"{type(layer).__name__}, not a paddle.nn.Layer"
        )
    return layer


def architecture(source: ModelSource, base: Path | None = None) -> dict:
    """What a model folder records of its source: enough to rebuild the architecture in a fresh
    process (no weights path, no download; a python source keeps the folder it was imported from)."""
    if isinstance(source, ZooModel):
        source = replace(source, pretrained=False, weights=None)
    elif isinstance(source, PythonModel):
        _, module = _import_factory(source, base)
        file = Path(module.__file__).resolve()  # the folder the top-level package or module sits in
        levels = source.python.partition(":")[0].count(".") + (file.name == "__init__.py")
        source = replace(source, weights=None, search_path=str(file.parents[levels]))
    elif isinstance(source, ModelSpec):
        source = replace(source, weights=None)
    d = to_dict(source)
    return d if isinstance(source, ModelSpec) else {k: v for k, v in d.items() if v is not None}
