"""YAML (recipes, device profiles) -> typed, frozen config objects, validated on load.

Import-light (no paddle, no onnx): the on-device runner loads device profiles with it.
Every error names its path in the file, e.g.
`stages[1].distill.temprature: unknown key; did you mean 'temperature'?`.
A stage config is a frozen dataclass; `__post_init__` checks raise FieldError(field, msg).

Tagged unions: a field typed `A | B | C` of dataclasses that each name a `TAG` class attribute
(a key only that class has, e.g. `zoo` or `python`) takes the class whose tag key the mapping
holds; a mapping with none takes the class whose tag has a default. Fields declared with
`field(metadata=OPTIONAL)` are left out of `to_dict` while at their default, so adding one to a
config leaves the config sha of every existing recipe unchanged.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from edgepipe.devices.base.errors import EdgepipeError, FieldError


class ConfigError(EdgepipeError):
    pass


OPTIONAL = {"omit_default": True}


def require(cond: bool, field: str, message: str) -> None:
    if not cond:
        raise FieldError(field, message)


def _key(k) -> str:
    """A key as it appears in an error's path: as written, or quoted when it would not read as one
    line (a newline, a control character, leading or trailing blanks, empty)."""
    text = str(k)
    return text if text and text.isprintable() and text.strip() == text else repr(text)


def _type_name(tp) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def convert(tp, value, path: str):
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        tagged = [a for a in options if dataclasses.is_dataclass(a) and getattr(a, "TAG", None)]
        if tagged and isinstance(value, dict):
            return convert(_pick_tagged(tagged, value, path), value, path)
        options = [a for a in options if a not in tagged] or options
        errors = []
        for a in options:
            try:
                return convert(a, value, path)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{path}: expected {' or '.join(_type_name(a) for a in options)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{path}: {value!r} is not {_type_name(tp)}{hint}")
        return value
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping of keys, got {type(value).__name__} {value!r}")
        key_t, val_t = args or (str, Any)
        return {
            convert(key_t, k, f"{path}.{_key(k)}"): convert(val_t, v, f"{path}.{_key(k)}") for k, v in value.items()
        }
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        item = args[0] if args else Any
        return tuple(convert(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        try:
            value = float(value)
        except OverflowError:
            raise ConfigError(
                f"{path}: {str(value)[:20]}… is too large for a number; give an ordinary number"
            ) from None
        if not math.isfinite(value):  # YAML's .inf / .nan: a learning rate or weight that can only diverge
            raise ConfigError(f"{path}: {value!r} is not a finite number; give an ordinary number")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported config type {tp}")  # a bug in a config class


def _pick_tagged(classes, value: dict, path: str):
    """The class of a tagged union whose tag key `value` holds (exactly one), else the default one."""
    tags = [c.TAG for c in classes]
    present = [c for c in classes if c.TAG in value]
    if len(present) > 1:
        raise ConfigError(f"{path}: give exactly one of {', '.join(tags)}, not {' and '.join(c.TAG for c in present)}")
    if present:
        return present[0]
    default = [
        c
        for c in classes
        if any(f.name == c.TAG and f.default is not dataclasses.MISSING for f in dataclasses.fields(c))
    ]
    if not default:
        raise ConfigError(f"{path}: give one of {', '.join(tags)}")
    return default[0]


def from_dict(cls, data, path: str = ""):
    where = path or "recipe"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {type(data).__name__} {data!r}")
    hints = get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        sub = f"{path}.{_key(key)}" if path else _key(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(fields)}"
            raise ConfigError(f"{sub}: unknown key{hint}")
        kwargs[key] = convert(hints[key], value, sub)
    try:
        return cls(**kwargs)
    except FieldError as exc:
        raise ConfigError(f"{path + '.' if path else ''}{exc.field}: {exc.message}") from None
    except TypeError as exc:  # a required key is missing
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.init
            and f.name not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ConfigError(
                f"{where}: missing key{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)}; "
                f"add {'them' if len(missing) > 1 else 'it'}"
            ) from None
        raise ConfigError(f"{where}: {exc}") from None


def _at_default(f, value) -> bool:
    if f.default is not dataclasses.MISSING:
        return value == f.default
    return f.default_factory is not dataclasses.MISSING and value == f.default_factory()


def to_dict(cfg) -> dict:
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {
                f.name: plain(getattr(v, f.name))
                for f in dataclasses.fields(v)
                if not (f.metadata.get("omit_default") and _at_default(f, getattr(v, f.name)))
            }
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def config_sha(kind: str, cfg) -> str:
    blob = json.dumps({"type": kind, "config": to_dict(cfg)}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def read_yaml(path: str | Path, what: str = "recipe") -> Any:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} file not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8); give the {what} YAML file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nests too deeply to be a {what}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        what = " ".join(str(getattr(exc, "problem", None) or exc).split())[:200]  # one line, whatever the parser said
        raise ConfigError(f"{path}: not valid YAML{where} ({what})") from None


__all__ = ["ConfigError", "FieldError", "OPTIONAL", "require", "from_dict", "to_dict", "config_sha", "read_yaml"]
