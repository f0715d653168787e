"""How busy the machine was while something was timed, from Linux's /proc/stat: the share of the CPU
time of the CPUs this process may run on that other processes used (busy time minus this process's
own) and the share the hypervisor stole. A timing taken while either was high says more about the
neighbours than about the model; benchmarks record both so a rerun that disagrees can be told apart
from a change in the code. Elsewhere (no /proc/stat) every figure is None."""

from __future__ import annotations

import os
from pathlib import Path

_STAT = Path("/proc/stat")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpus() -> set[int] | None:
    """The CPUs this process may run on (taskset, cgroup cpusets), or None where that is unknown."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _sample() -> tuple[int, int, int, float] | None:
    """(total jiffies, busy jiffies, steal jiffies, this process's CPU seconds) over the CPUs this
    process may use (the per-CPU lines of /proc/stat), or None off Linux."""
    try:
        lines = _STAT.read_text().splitlines()
    except OSError:
        return None
    allowed = _cpus()
    total = busy = steal = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit()) or (
            allowed is not None and int(name[3:]) not in allowed
        ):
            continue
        try:
            user, nice, system, idle, iowait, irq, softirq, st = ([int(v) for v in rest.split()] + [0] * 8)[:8]
        except ValueError:
            return None
        b = user + nice + system + irq + softirq
        total, busy, steal = total + b + idle + iowait + st, busy + b, steal + st
    if total == 0:
        return None
    t = os.times()
    return total, busy, steal, t.user + t.system


class HostLoad:
    """with HostLoad() as h: ...   then h.others (0–1, CPU share used by other processes over the block),
    h.steal (0–1, share stolen by the hypervisor); both None where they cannot be read."""

    def __enter__(self):
        self._start, self.others, self.steal = _sample(), None, None
        return self

    def __exit__(self, *exc):
        end = _sample()
        if self._start is None or end is None or end[0] <= self._start[0]:
            return False
        total = end[0] - self._start[0]
        own = (end[3] - self._start[3]) * _TICK
        self.others = max(0.0, min(1.0, (end[1] - self._start[1] - own) / total))
        self.steal = (end[2] - self._start[2]) / total
        return False

    def as_dict(self) -> dict:
        return {
            "others_cpu_share": None if self.others is None else round(self.others, 4),
            "steal_share": None if self.steal is None else round(self.steal, 4),
            "cpus": len(_cpus() or ()) or os.cpu_count(),
        }


def contended(load: dict, threads: int) -> bool:
    """Whether others (processes and the hypervisor) took more than the CPUs a run of `threads` left
    free, less half a CPU (at least a tenth of one): then they competed with it for cores."""
    cpus = load.get("cpus") or len(_cpus() or ()) or os.cpu_count() or 1
    busy = ((load.get("others_cpu_share") or 0) + (load.get("steal_share") or 0)) * cpus
    return busy > max(0.1, cpus - threads - 0.5)
