"""Energy per inference, always labelled with how it was obtained and how far to trust it.

The meters (meters.py), in the order they are preferred for a verdict: ina3221 (a Jetson's board
input rail), pmic (a Raspberry Pi 5's PMIC rails), nvml (an NVIDIA GPU's energy counter, GPU runs
only), rapl (the CPU package's energy counter) and estimate (this process's CPU time × the
profile's power model). Every meter that can be read is used; each reading reports gross joules per
inference (all the energy its scope drew during the window) and net (above the idle power measured,
or modelled, just before). A meter that cannot be read says why (e.g. energy_uj is root-only since 2020).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from edgepipe.devices.profiles import PowerModel
from edgepipe.runtime.measure.meters import (
    EstimateMeter,
    Ina3221Meter,
    Meter,
    NvmlMeter,
    PmicMeter,
    RaplMeter,
    SampledMeter,
    Unavailable,
)

# --- probing and measuring ------------------------------------------------------------------


def probe_meters(
    power: PowerModel | None,
    profile_name: str = "",
    gpu: bool = False,
    sysfs: Path = Path("/sys"),
    nvml=None,
    pmic_run: Callable[[], str] | None = None,
) -> tuple[list[Meter], list[Unavailable]]:
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
            missing.append(
                Unavailable(
                    method,
                    f"{exc.filename}: permission denied (root-only on this kernel; "
                    "run as root or `chmod o+r` it to measure)",
                )
            )
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


def readings_of(
    meters: list[Meter], wall: float, n: int, idle_w: dict, failed: list[Unavailable], unit: str = "inference"
) -> list[dict]:
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
        readings.append(
            {
                "method": m.method,
                "scope": m.scope,
                "source": m.source,
                "seconds": wall,
                f"{unit}s": n,
                "joules": j,
                "avg_w": j / wall,
                "idle_w": idle,
                f"mj_per_{unit}": 1e3 * j / n,
                f"net_mj_per_{unit}": None if net is None else 1e3 * net / n,
                "uncertainty_rel": m.uncertainty,
                "note": m.note,
            }
        )
    return readings


def measure(
    meters: list[Meter],
    work: Callable[[], int],
    seconds: float,
    idle_seconds: float,
    failed: list[Unavailable] | None = None,
) -> list[dict]:
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
        lines.append(
            f"energy     {e['method']}: {e[f'mj_per_{unit}']:.3f} mJ/{unit} (±{100 * e['uncertainty_rel']:.0f}%), "
            f"{e['avg_w']:.2f} W average"
            + (f", net {net:.3f} mJ above idle" if net is not None else "")
            + f" — {e['scope']}"
        )
    return lines + [f"  {u['method']} unavailable: {u['reason']}" for u in energy["unavailable"]]


def energy_summary(readings: list[dict], missing: list[Unavailable]) -> dict:
    """The first reading (the most direct meter) is the one budgets are judged against."""
    return {
        "primary": readings[0] if readings else None,
        "readings": readings,
        "unavailable": [asdict(u) for u in missing],
    }
