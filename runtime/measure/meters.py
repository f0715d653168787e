"""The energy meters that energy.py probes and reads, in the order they are preferred for a verdict:
  ina3221   Jetson board input rail (hwmon sysfs: in*_input mV × curr*_input mA), sampled
  pmic      Raspberry Pi 5 PMIC rails (`vcgencmd pmic_read_adc`: volts × amps per rail), sampled
  nvml      NVIDIA GPU energy counter (nvmlDeviceGetTotalEnergyConsumption, mJ) — GPU only
  rapl      CPU package energy counter (/sys/class/powercap/intel-rapl:N/energy_uj, wraps at
            max_energy_range_uj) — the whole socket, other processes included
  estimate  this process's CPU time × the profile's power model (idle_w × wall + W/core × CPU s)
Each measures the joules its scope draws between start() and stop(); one this machine cannot read
raises when it is made (LookupError, or PermissionError where a file is root-only).
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass
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
        chips = [
            h
            for h in sorted(root.glob("hwmon*"))
            if (h / "name").is_file() and (h / "name").read_text().strip() == "ina3221"
        ]
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
        self.scope = (
            "board input rail " + rail if chosen[0][0] == rail else "sum of rails " + ", ".join(c[0] for c in chosen)
        )
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
        return subprocess.run(
            ["vcgencmd", "pmic_read_adc"], capture_output=True, text=True, check=True, timeout=5
        ).stdout

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
