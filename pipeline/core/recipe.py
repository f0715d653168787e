"""The recipe: data, seed and an ordered list of stages, each `- <type>: {config}`, parsed into
typed configs and checked (keys, types, which earlier stage makes each input) before anything runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from edgepipe.devices import EdgepipeError
from edgepipe.pipeline.core.config import ConfigError, config_sha, from_dict, read_yaml, require, resolve_path, to_dict
from edgepipe.pipeline.core.dataspec import DataConfig
from edgepipe.pipeline.core.registry import stages


@dataclass(frozen=True)
class StageEntry:
    name: str  # folder in the run directory and the name --from takes
    kind: str
    config: object

    @property
    def sha(self) -> str:
        return config_sha(self.kind, self.config)


@dataclass(frozen=True)
class Recipe:
    name: str
    seed: int
    data: DataConfig
    stages: tuple[StageEntry, ...] = field(default_factory=tuple)
    base: str | None = None  # the recipe file's folder: relative paths in it are relative to this

    @property
    def base_dir(self) -> Path | None:
        return Path(self.base) if self.base else None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "seed": self.seed,
            "data": to_dict(self.data),
            "stages": [{s.kind: to_dict(s.config)} for s in self.stages],
        }


@dataclass(frozen=True)
class _Top:
    name: str = "run"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self):
        require(
            plain_name(self.name),
            "name",
            "use letters, digits, '-', '_' or '.', not starting with '.' (it names the run folder)",
        )


def plain_name(name) -> bool:
    """A name that stays one entry inside its folder: letters, digits, '-', '_', '.', not starting
    with '.' (so never '..', a hidden file, a path or an absolute path)."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= 128
        and not name.startswith(".")
        and name.replace("-", "").replace("_", "").replace(".", "").isalnum()
        and name.isascii()
    )


def parse_recipe(raw, base: str | Path | None = None) -> Recipe:
    """Typed, checked recipe from its YAML mapping; `base` is the folder relative paths start from."""
    stages_def = stages()
    base = Path(base).resolve() if base is not None else None
    if raw is None:
        raw = {}
    raw_stages = raw.get("stages", []) if isinstance(raw, dict) else None
    if isinstance(raw, dict) and not isinstance(raw_stages, list):
        raise ConfigError(f"stages: expected a list of '- <stage>: {{...}}' items, got {type(raw_stages).__name__}")
    top = from_dict(_Top, {k: v for k, v in raw.items() if k != "stages"} if isinstance(raw, dict) else raw)
    if not raw_stages:
        raise ConfigError("stages: the recipe has no stages; list at least one of " + ", ".join(stages_def))
    for key in ("path", "test", "val", "calibration"):
        value = getattr(top.data, key)
        if isinstance(value, str):
            _must_exist(f"data.{key}", resolve_path(base, value), base)
    entries, produced, seen = [], {}, {}
    for i, item in enumerate(raw_stages):
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError(f"stages[{i}]: each stage is one mapping '<type>: {{config}}', got {item!r}")
        ((kind, body),) = item.items()
        path = f"stages[{i}].{kind}"
        if kind not in stages_def:
            import difflib

            close = difflib.get_close_matches(str(kind), stages_def, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known stages: {', '.join(stages_def)}"
            raise ConfigError(f"stages[{i}]: unknown stage type '{kind}'{hint}")
        cfg = from_dict(stages_def[kind].config_cls, body, path)
        for key, art in cfg.inputs(produced).items():
            if art not in produced:
                have = ", ".join(produced) or "none yet"
                raise ConfigError(f"{path}.{key}: no earlier stage produces '{art}' (available: {have})")
        for key, shape in getattr(cfg, "input_shapes", dict)().items():
            if tuple(shape) != top.data.input_shape:
                raise ConfigError(
                    f"{path}.{key}: the model takes inputs of shape {list(shape)} (channels, height, width), "
                    f"the data gives {list(top.data.input_shape)}; make in_channels and input_size match the data"
                )
        for key, file in stage_files(cfg, base, path).items():
            _must_exist(f"{path}.{key}", file, base)
        seen[kind] = seen.get(kind, 0) + 1
        name = kind if seen[kind] == 1 else f"{kind}{seen[kind]}"
        for art, art_kind in cfg.outputs().items():
            if not plain_name(art):
                raise ConfigError(
                    f"{path}.output: {art!r} is not a plain file name (letters, digits, '-', '_', '.', "
                    "not starting with '.'); outputs stay inside the stage's folder of the run directory"
                )
            if art in produced:
                raise ConfigError(
                    f"{path}.output: '{art}' is already produced by an earlier stage; give this one another output name"
                )
            produced[art] = art_kind
        entries.append(StageEntry(name, kind, cfg))
    return Recipe(top.name, top.seed, top.data, tuple(entries), str(base) if base else None)


def _must_exist(key: str, file: Path, base: Path | None) -> None:
    if not file.exists():
        where = f" (relative paths start at the recipe's folder, {base})" if base else ""
        raise ConfigError(f"{key}: {file} not found{where}")


def stage_files(cfg, base: Path | None, path: str = "") -> dict[str, Path]:
    """The user files a stage config reads ({config key: path}; its optional `files(base)`), which
    the run hashes into the stage's inputs so that an edited file reruns the stage."""
    files = getattr(cfg, "files", None)
    if files is None:
        return {}
    try:
        return files(base)
    except ConfigError:
        raise
    except EdgepipeError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def default_recipe_path() -> Path:
    return Path(str(resources.files("edgepipe.pipeline") / "recipes" / "mnist_kd.yaml"))


def load_recipe(path: str | Path | None = None) -> Recipe:
    path = Path(path) if path else default_recipe_path()
    raw = read_yaml(path)
    try:
        return parse_recipe(raw, path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
