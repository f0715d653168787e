"""Device profiles: what a target device is, how to run a model on it, and what it must meet.

A profile is a YAML file (presets ship in devices/profiles/, users pass their own path) loaded
into frozen dataclasses, so a typo is an error naming the key. It states the architecture and
cores, the runtime backends to use (in order of preference, with their settings), the threads and
onnxruntime execution providers to use (in order), the int8 preset that suits the
device's kernels (with the one-line reason), a power model for energy estimates when no sensor
is readable, and the budgets every benchmark result is judged against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edgepipe.devices.base.config import ConfigError, from_dict, read_yaml, require, to_dict
from edgepipe.devices.host import HostInfo

PRESET_DIR = Path(__file__).with_name("profiles")


@dataclass(frozen=True)
class QuantPreset:
    format: Literal["qdq", "qoperator"] = "qdq"
    per_channel: bool = True
    reduce_range: bool = False
    activation_type: Literal["u8", "s8"] = "u8"
    weight_type: Literal["s8", "u8"] = "s8"
    reason: str = ""

    def __post_init__(self):
        require(bool(self.reason.strip()), "reason", "say in one line why this preset suits the device")


@dataclass(frozen=True)
class PowerModel:
    """Energy estimate when no sensor is readable: idle_w × wall time + active_w_per_core × CPU time."""

    idle_w: float
    active_w_per_core: float
    source: str = ""  # where the figures come from
    uncertainty: float = 0.5  # relative; an estimate from CPU time is rough

    def __post_init__(self):
        require(self.idle_w >= 0, "idle_w", "must be >= 0 watts")
        require(self.active_w_per_core > 0, "active_w_per_core", "must be > 0 watts")
        require(0 < self.uncertainty <= 1, "uncertainty", "a relative uncertainty in (0, 1]")


@dataclass(frozen=True)
class Budgets:
    """What a result must meet on this device; a budget left out is not judged."""

    latency_p90_ms: float | None = None  # at batch 1
    peak_rss_mb: float | None = None
    model_bytes: int | None = None
    energy_mj_per_inference: float | None = None
    fps: float | None = None  # frames per second the camera mode must keep up with (a lower bound)

    def __post_init__(self):
        for name in ("latency_p90_ms", "peak_rss_mb", "model_bytes", "energy_mj_per_inference", "fps"):
            v = getattr(self, name)
            require(v is None or v > 0, name, "must be > 0 (or left out)")


@dataclass(frozen=True)
class Detect:
    """How `edgepipe devices` recognises the host; every stated condition must hold."""

    arch: str | None = None
    flags_all: tuple[str, ...] = ()
    flags_any: tuple[str, ...] = ()
    board_contains: str | None = None
    nvidia_gpu: bool | None = None


@dataclass(frozen=True)
class Backend:
    """A runtime to run models with on this device, with its settings; a profile lists them in order
    of preference (a listed backend that is not installed is skipped, and the runner says so)."""

    name: Literal["onnxruntime", "openvino"]
    precision: Literal["auto", "f32", "bf16", "f16"] = "auto"  # OpenVINO's inference precision
    device: str = "CPU"  # OpenVINO device

    def __post_init__(self):
        require(
            self.name == "openvino" or self.precision in ("auto", "f32"),
            "precision",
            "onnxruntime runs the precision the file stores; give precision only for openvino",
        )


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    arch: Literal["x86_64", "aarch64"]
    cores: int
    threads: int
    providers: tuple[str, ...]
    quantization: QuantPreset
    power: PowerModel
    memory_mb: int | None = None
    # Channel counts the conv kernels run without padded tails (8 fp32 lanes in an AVX2 register);
    # channel pruning rounds kept channels to a multiple of it unless a recipe gives round_to.
    channel_multiple: int = 8
    budgets: Budgets = field(default_factory=Budgets)
    detect: Detect = field(default_factory=Detect)
    backends: tuple[Backend, ...] = (Backend("onnxruntime"),)

    def __post_init__(self):
        require(bool(self.backends), "backends", "list at least one backend (onnxruntime, openvino)")
        require(len({b.name for b in self.backends}) == len(self.backends), "backends", "list each backend once")
        require(self.cores >= 1, "cores", "must be at least 1")
        require(1 <= self.threads <= self.cores, "threads", f"must be between 1 and cores ({self.cores})")
        require(bool(self.providers), "providers", "list at least one execution provider")
        require(1 <= self.channel_multiple <= 256, "channel_multiple", "must be between 1 and 256")

    def to_dict(self) -> dict:
        return to_dict(self)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A preset by name (`rpi4`) or a user's YAML file by path."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith((".yaml", ".yml")) or path.is_file()):
        if text not in preset_names():
            import difflib

            close = difflib.get_close_matches(text, preset_names(), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"presets: {', '.join(preset_names())}"
            raise ConfigError(f"device profile '{text}' is neither a preset nor a file; {hint}")
        path = PRESET_DIR / f"{text}.yaml"
    data = read_yaml(path, what="device profile")
    try:
        return from_dict(DeviceProfile, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {str(exc).removeprefix('recipe: ')}") from None


def all_presets() -> list[DeviceProfile]:
    return [load_profile(n) for n in preset_names()]


def matches(profile: DeviceProfile, host: HostInfo) -> int | None:
    """None when the profile does not describe the host, else how specific the match is."""
    d, score = profile.detect, 0
    arch = d.arch or profile.arch
    if host.arch not in (arch, {"aarch64": "arm64"}.get(arch)):
        return None
    flags = set(host.flags)
    if d.flags_all:
        if not set(d.flags_all) <= flags:
            return None
        score += len(d.flags_all)
    if d.flags_any:
        if not flags & set(d.flags_any):
            return None
        score += 1
    if d.board_contains is not None:
        if d.board_contains.lower() not in (host.board or "").lower():
            return None
        score += 10
    if d.nvidia_gpu is not None:
        if bool(host.gpus) != d.nvidia_gpu:
            return None
        score += 5 if d.nvidia_gpu else 0
    return score


def detect_profile(host: HostInfo, profiles: list[DeviceProfile] | None = None) -> DeviceProfile | None:
    """The most specific preset that describes the host, or None."""
    scored = [(s, p.name, p) for p in (profiles or all_presets()) if (s := matches(p, host)) is not None]
    return max(scored, key=lambda t: (t[0], t[1]))[2] if scored else None


def presets_table(presets: list[DeviceProfile], found: DeviceProfile | None) -> str:
    """`edgepipe devices`: one row per preset, the detected one marked with *."""
    rows = [("profile", "arch", "cores", "threads", "backends", "providers", "int8 preset", "p90 budget")]
    for p in presets:
        q = p.quantization
        rows.append(
            (
                ("* " if found and p.name == found.name else "  ") + p.name,
                p.arch,
                str(p.cores),
                str(p.threads),
                ",".join(b.name + (f":{b.precision}" if b.precision != "auto" else "") for b in p.backends),
                ",".join(x.removesuffix("ExecutionProvider") for x in p.providers),
                f"{q.format} {q.activation_type}{q.weight_type}{' rr' if q.reduce_range else ''}",
                f"{p.budgets.latency_p90_ms:g} ms" if p.budgets.latency_p90_ms else "—",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
