"""Energy per inference, always labelled with how it was obtained and how far to trust it.

Meters, in the order they are preferred for a verdict:
  ina3221   Jetson board input rail (hwmon sysfs: in*_input mV × curr*_input mA), sampled
  pmic      Raspberry Pi 5 PMIC rails (`vcgencmd pmic_read_adc`: volts × amps per rail), sampled
  nvml      NVIDIA GPU energy counter (nvmlDeviceGetTotalEnergyConsumption, mJ) — GPU only
  rapl      CPU package energy counter (/sys/class/powercap/intel-rapl:N/energy_uj, wraps at
            max_energy_range_uj) — the whole socket, other processes included
  estimate  this process's CPU time × the profile's power model (idle_w × wall + W/core × CPU s)
Every meter that can be read is used; each reading reports gross joules per inference (all the
energy its scope drew during the window) and net (above the idle power measured, or modelled,
just before). A meter that cannot be read says why (e.g. energy_uj is root-only since 2020).
"""
from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from edgepipe.devices.profiles import PowerModel


@dataclass
class Unavailable:
    method: str
    reason: str


class Meter:
    method = ""
    scope = ""
    uncertainty = 0.1
    note = ""

    def start(self) -> None: ...

    def stop(self) -> float:
        """Joules since start()."""
        raise NotImplementedError


# --- counters -------------------------------------------------------------------------------


class RaplMeter(Meter):
    method = "rapl"
    uncertainty = 0.05
    note = "RAPL counts the whole CPU package, other processes included; net subtracts the idle measured before"

    def __init__(self, root: Path = Path("/sys/class/powercap")):
        # top-level package domains only (intel-rapl:0, intel-rapl:1); their sub-domains are included
        self.domains = sorted(d for d in root.glob("intel-rapl:*") if re.fullmatch(r"intel-rapl:\d+", d.name))
        if not self.domains:
            raise LookupError(f"no RAPL domains under {root}")
        self.ranges = []
        for d in self.domains:
            self.ranges.append(int((d / "max_energy_range_uj").read_text()))
            self._read(d)  # PermissionError here: root-only on most kernels
        names = [(d / "name").read_text().strip() if (d / "name").is_file() else d.name for d in self.domains]
        self.scope = "CPU package (" + ", ".join(names) + ")"
        self.source = ", ".join(str(d / "energy_uj") for d in self.domains)

    @staticmethod
    def _read(d: Path) -> int:
        return int((d / "energy_uj").read_text())

    def start(self) -> None:
        self.t0 = [self._read(d) for d in self.domains]

    def stop(self) -> float:
        total = 0
        for d, r, t0 in zip(self.domains, self.ranges, self.t0):
            t1 = self._read(d)
            total += t1 - t0 if t1 >= t0 else t1 + r - t0  # the counter wrapped once
        return total / 1e6


class NvmlMeter(Meter):
    method = "nvml"
    scope = "NVIDIA GPU board"
    uncertainty = 0.05
    note = "NVML's energy counter covers the GPU board only, not the host CPU"

    def __init__(self, nvml=None, index: int = 0):
        if nvml is None:
            try:
                import pynvml as nvml  # from the nvidia-ml-py package (`pip install edgepipe[gpu]`)
            except ImportError:
                raise LookupError("nvidia-ml-py is not installed (pip install 'edgepipe[gpu]')") from None
        self.nvml = nvml
        try:
            nvml.nvmlInit()
            self.handle = nvml.nvmlDeviceGetHandleByIndex(index)
            nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        except Exception as exc:
            raise LookupError(f"NVML cannot read GPU {index} energy ({type(exc).__name__}: {exc})") from None
        self.source = f"nvmlDeviceGetTotalEnergyConsumption(gpu {index})"

    def start(self) -> None:
        self.t0 = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)

    def stop(self) -> float:
        return (self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) - self.t0) / 1e3  # mJ


# --- sampled power sensors ------------------------------------------------------------------


class SampledMeter(Meter):
    """Integrates a power reading (watts) sampled on a background thread (trapezoid rule)."""

    interval_s = 0.05

    def read_watts(self) -> float:
        raise NotImplementedError

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.perf_counter(), self.read_watts()))
            except (OSError, ValueError, subprocess.SubprocessError):
                self.failed_reads += 1  # one bad read drops one sample, not the measurement
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self.failed_reads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.perf_counter(), self.read_watts()))
        if len(self.samples) < 2:
            raise ValueError(f"{self.method}: fewer than 2 power samples ({self.failed_reads} failed reads)")
        self.covered_s = self.samples[-1][0] - self.samples[0][0]
        return integrate(self.samples)

    def average_w(self, joules: float) -> float:
        """Mean power over the time the samples cover (which starts when the thread first reads and
        ends after it has joined: not the caller's interval, on a loaded machine least of all)."""
        return joules / self.covered_s if self.covered_s > 0 else self.samples[-1][1]


def integrate(samples: list[tuple[float, float]]) -> float:
    """Joules from (time s, power W) samples, trapezoid rule."""
    return sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1) in zip(samples, samples[1:]))


class Ina3221Meter(SampledMeter):
    method = "ina3221"
    uncertainty = 0.1
    note = "INA3221 rail sampled every 50 ms; short bursts between samples are averaged out"

    def __init__(self, root: Path = Path("/sys/class/hwmon"), rail: str = "VDD_IN"):
        chips = [h for h in sorted(root.glob("hwmon*")) if (h / "name").is_file() and (h / "name").read_text().strip() == "ina3221"]
        channels = []  # (label, volts file, amps file)
        for h in chips:
            for label_file in sorted(h.glob("in*_label")):
                n = label_file.name[2:].split("_")[0]
                v, a = h / f"in{n}_input", h / f"curr{n}_input"
                if v.is_file() and a.is_file():
                    channels.append((label_file.read_text().strip(), v, a))
        if not channels:
            raise LookupError(f"no INA3221 hwmon channels under {root}")
        chosen = [c for c in channels if c[0] == rail] or channels
        self.channels = chosen
        self.scope = "board input rail " + rail if chosen[0][0] == rail else "sum of rails " + ", ".join(c[0] for c in chosen)
        self.source = ", ".join(str(c[1].parent) + ":" + c[0] for c in chosen)
        self.read_watts()

    def read_watts(self) -> float:
        return sum(int(v.read_text()) * int(a.read_text()) for _, v, a in self.channels) / 1e6  # mV × mA


_PMIC_LINE = re.compile(r"^\s*(\S+)_([AV])\s+(?:current|volt)\(\d+\)=([-\d.]+)[AV]\s*$")


def parse_pmic(text: str) -> float:
    """Watts from `vcgencmd pmic_read_adc` output: Σ over rails having both X_A and X_V."""
    amps, volts = {}, {}
    for line in text.splitlines():
        m = _PMIC_LINE.match(line)
        if m:
            (amps if m.group(2) == "A" else volts)[m.group(1)] = float(m.group(3))
    rails = amps.keys() & volts.keys()
    if not rails:
        raise ValueError("no rail with both a current and a voltage reading")
    return sum(amps[r] * volts[r] for r in rails)


class PmicMeter(SampledMeter):
    method = "pmic"
    scope = "Raspberry Pi 5 PMIC rails (SoC, memory, I/O; not USB devices)"
    uncertainty = 0.15
    note = "vcgencmd takes ~10 ms per read, so the PMIC is sampled every 100 ms"
    interval_s = 0.1

    def __init__(self, run: Callable[[], str] | None = None):
        self.run = run or self._vcgencmd
        self.source = "vcgencmd pmic_read_adc"
        try:
            self.read_watts()
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            raise LookupError(f"vcgencmd pmic_read_adc unusable ({exc})") from None

    @staticmethod
    def _vcgencmd() -> str:
        return subprocess.run(["vcgencmd", "pmic_read_adc"], capture_output=True, text=True, check=True, timeout=5).stdout

    def read_watts(self) -> float:
        return parse_pmic(self.run())


# --- the always-available estimate -----------------------------------------------------------


class EstimateMeter(Meter):
    method = "estimate"

    def __init__(self, power: PowerModel, profile_name: str):
        self.power = power
        self.uncertainty = power.uncertainty
        self.scope = f"this process, power model of profile '{profile_name}'"
        self.source = power.source or "profile power model"
        self.note = "not a measurement: idle_w × wall time + active_w_per_core × this process's CPU time"

    @staticmethod
    def _cpu() -> float:
        t = os.times()  # the times() syscall: all threads; also right under qemu-user, whose /proc/self/stat is fake
        return t.user + t.system

    def start(self) -> None:
        self.t0, self.c0 = time.perf_counter(), self._cpu()

    def stop(self) -> float:
        wall = time.perf_counter() - self.t0
        self.cpu_s = self._cpu() - self.c0
        return self.power.idle_w * wall + self.power.active_w_per_core * self.cpu_s


# --- probing and measuring ------------------------------------------------------------------


def probe_meters(power: PowerModel | None, profile_name: str = "", gpu: bool = False, sysfs: Path = Path("/sys"),
                 nvml=None, pmic_run: Callable[[], str] | None = None) -> tuple[list[Meter], list[Unavailable]]:
    """Every meter this machine can read, in preference order, and why the others cannot be read."""
    meters, missing = [], []
    candidates = [
        ("ina3221", lambda: Ina3221Meter(sysfs / "class/hwmon")),
        ("pmic", lambda: PmicMeter(pmic_run)),
        ("nvml", lambda: NvmlMeter(nvml)),
        ("rapl", lambda: RaplMeter(sysfs / "class/powercap")),
    ]
    if not gpu:  # the GPU counter means nothing for a CPU run
        candidates = [c for c in candidates if c[0] != "nvml"]
    for method, make in candidates:
        try:
            meters.append(make())
        except PermissionError as exc:
            missing.append(Unavailable(method, f"{exc.filename}: permission denied (root-only on this kernel; "
                                               "run as root or `chmod o+r` it to measure)"))
        except (LookupError, OSError, ValueError) as exc:
            missing.append(Unavailable(method, str(exc)))
    if power is not None:
        meters.append(EstimateMeter(power, profile_name))
    else:
        missing.append(Unavailable("estimate", "no device profile with a power model"))
    return meters, missing


def idle_baseline(meters: list[Meter], idle_seconds: float) -> dict:
    """Each sensor's idle power over `idle_seconds` (the estimate's idle is modelled), by id(meter)."""
    idle_w = {}
    if idle_seconds <= 0:
        return idle_w
    sensors = [m for m in meters if not isinstance(m, EstimateMeter)]
    for m in sensors:
        m.start()
    t0 = time.perf_counter()
    time.sleep(idle_seconds)
    dt = time.perf_counter() - t0
    for m in sensors:
        try:
            j = m.stop()
            idle_w[id(m)] = m.average_w(j) if isinstance(m, SampledMeter) else j / dt
        except (OSError, ValueError):
            pass  # no idle baseline for this meter: its net figure stays unknown
    return idle_w


def readings_of(meters: list[Meter], wall: float, n: int, idle_w: dict, failed: list[Unavailable],
                unit: str = "inference") -> list[dict]:
    """Stop every meter after `wall` seconds of work that did `n` units (inferences, frames); one
    labelled reading per meter. A meter whose reading fails is left out and added to `failed`."""
    joules = {}
    for m in meters:
        try:
            j = m.stop()
            # a sampled meter's integral spans its own samples; its mean power × the work's wall time is
            # the energy of the timed work
            joules[id(m)] = m.average_w(j) * wall if isinstance(m, SampledMeter) else j
        except (OSError, ValueError) as exc:
            failed.append(Unavailable(m.method, f"reading failed during the measurement ({exc})"))
    readings = []
    for m in meters:
        if id(m) not in joules:
            continue
        j = joules[id(m)]
        idle = m.power.idle_w if isinstance(m, EstimateMeter) else idle_w.get(id(m))
        net = None if idle is None else max(j - idle * wall, 0.0)
        readings.append({
            "method": m.method, "scope": m.scope, "source": m.source,
            "seconds": wall, f"{unit}s": n, "joules": j, "avg_w": j / wall,
            "idle_w": idle, f"mj_per_{unit}": 1e3 * j / n,
            f"net_mj_per_{unit}": None if net is None else 1e3 * net / n,
            "uncertainty_rel": m.uncertainty, "note": m.note,
        })
    return readings


def measure(meters: list[Meter], work: Callable[[], int], seconds: float, idle_seconds: float,
            failed: list[Unavailable] | None = None) -> list[dict]:
    """Idle baseline first (sensors only), then `work()` repeatedly for at least `seconds`; returns
    one labelled reading per meter. `work` returns inferences done."""
    failed = [] if failed is None else failed
    idle_w = idle_baseline(meters, idle_seconds)
    for m in meters:
        m.start()
    t0, n = time.perf_counter(), 0
    while True:
        n += work()
        if time.perf_counter() - t0 >= seconds:
            break
    return readings_of(meters, time.perf_counter() - t0, n, idle_w, failed)


def energy_lines(energy: dict, unit: str = "inference") -> list[str]:
    """The summary lines of an energy_summary(): one per reading (per `unit`: inference or frame),
    then why each other meter could not be read."""
    lines = []
    for e in energy["readings"]:
        net = e[f"net_mj_per_{unit}"]
        lines.append(f"energy     {e['method']}: {e[f'mj_per_{unit}']:.3f} mJ/{unit} (±{100 * e['uncertainty_rel']:.0f}%), "
                     f"{e['avg_w']:.2f} W average" + (f", net {net:.3f} mJ above idle" if net is not None else "")
                     + f" — {e['scope']}")
    return lines + [f"  {u['method']} unavailable: {u['reason']}" for u in energy["unavailable"]]


def energy_summary(readings: list[dict], missing: list[Unavailable]) -> dict:
    """The first reading (the most direct meter) is the one budgets are judged against."""
    return {"primary": readings[0] if readings else None, "readings": readings,
            "unavailable": [asdict(u) for u in missing]}
