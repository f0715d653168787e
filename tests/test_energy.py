"""Energy meters read against fixture sysfs trees and command outputs shaped like the real ones."""

import os
import time

import pytest

from edgepipe.devices.profiles import PowerModel
from edgepipe.runtime.measure.energy import measure, probe_meters
from edgepipe.runtime.measure.meters import (
    EstimateMeter,
    Ina3221Meter,
    NvmlMeter,
    PmicMeter,
    RaplMeter,
    integrate,
    parse_pmic,
)


def rapl_tree(root, energy_uj, max_range=262143328850):
    d = root / "class/powercap/intel-rapl:0"
    (d / "intel-rapl:0:0").mkdir(parents=True)  # a sub-domain (core): already counted in the package
    (d / "name").write_text("package-0\n")
    (d / "max_energy_range_uj").write_text(f"{max_range}\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "intel-rapl:0:0" / "energy_uj").write_text("5\n")
    return d


def test_rapl_counts_package_energy_and_survives_a_wrap(tmp_path):
    d = rapl_tree(tmp_path, 1_000_000)
    m = RaplMeter(tmp_path / "class/powercap")
    assert m.scope == "CPU package (package-0)"
    m.start()
    (d / "energy_uj").write_text("3500000\n")
    assert m.stop() == pytest.approx(2.5)
    (d / "energy_uj").write_text(f"{262143328850 - 1_000_000}\n")
    m.start()
    (d / "energy_uj").write_text("2000000\n")  # wrapped past max_energy_range_uj
    assert m.stop() == pytest.approx(3.0)


def test_unreadable_rapl_is_reported_with_what_to_do(tmp_path, monkeypatch):
    """energy_uj is root-only on current kernels; without root the probe must say so, not crash."""
    d = rapl_tree(tmp_path, 42)
    target = d / "energy_uj"
    if os.geteuid() == 0:  # root reads a 0400 file anyway: make this one file refuse, as it does for users
        real = type(target).read_text

        def read_text(self, *a, **kw):
            if self == target:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self, *a, **kw)

        monkeypatch.setattr(type(target), "read_text", read_text)
    else:
        target.chmod(0)
    meters, missing = probe_meters(None, sysfs=tmp_path)
    assert meters == []
    (rapl,) = [u for u in missing if u.method == "rapl"]
    assert (
        rapl.reason
        == f"{target}: permission denied (root-only on this kernel; run as root or `chmod o+r` it to measure)"
    )


def test_ina3221_prefers_the_board_input_rail(tmp_path):
    h = tmp_path / "class/hwmon/hwmon3"
    h.mkdir(parents=True)
    (h / "name").write_text("ina3221\n")
    for n, label, mv, ma in ((1, "VDD_IN", 5000, 1200), (2, "VDD_CPU_GPU_CV", 5000, 400)):
        (h / f"in{n}_label").write_text(label + "\n")
        (h / f"in{n}_input").write_text(f"{mv}\n")
        (h / f"curr{n}_input").write_text(f"{ma}\n")
    (tmp_path / "class/hwmon/hwmon0").mkdir()
    (tmp_path / "class/hwmon/hwmon0/name").write_text("cpu_thermal\n")
    m = Ina3221Meter(tmp_path / "class/hwmon")
    assert m.scope == "board input rail VDD_IN" and m.read_watts() == pytest.approx(6.0)
    m.start()
    time.sleep(0.3)
    j = m.stop()
    t = m.samples[-1][0] - m.samples[0][0]
    assert j == pytest.approx(6.0 * t, rel=1e-6) and len(m.samples) >= 3


PMIC = """\
     3V7_WL_SW_A current(0)=0.00000000A
       3V3_SYS_A current(1)=0.05856000A
       1V8_SYS_A current(2)=0.17080000A
      DDR_VDD2_A current(3)=0.02732000A
        VDD_CORE_A current(7)=0.70000000A
     3V7_WL_SW_V volt(8)=3.74461200V
       3V3_SYS_V volt(9)=3.31229400V
       1V8_SYS_V volt(10)=1.80029400V
      DDR_VDD2_V volt(11)=1.11184800V
        VDD_CORE_V volt(15)=0.85000000V
        EXT5V_V volt(24)=5.12880000V
"""


def test_pmic_sums_volts_times_amps_per_rail():
    expected = 0.0 * 3.744612 + 0.05856 * 3.312294 + 0.1708 * 1.800294 + 0.02732 * 1.111848 + 0.7 * 0.85
    assert parse_pmic(PMIC) == pytest.approx(expected)  # EXT5V has no current reading: left out
    assert PmicMeter(run=lambda: PMIC).read_watts() == pytest.approx(expected)
    with pytest.raises(ValueError):
        parse_pmic("vcgencmd: command not supported\n")


class FakeNvml:
    """The four NVML calls the meter makes; the counter is in millijoules as NVML's is."""

    def __init__(self):
        self.mj = 1_000_000

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        self.mj += 2500
        return self.mj


def test_nvml_counter_in_millijoules_and_missing_library_reported(tmp_path):
    m = NvmlMeter(FakeNvml())
    m.start()
    assert m.stop() == pytest.approx(2.5)
    meters, missing = probe_meters(None, gpu=True, sysfs=tmp_path)  # no nvidia-ml-py in the test venv
    assert any(u.method == "nvml" and "nvidia-ml-py" in u.reason for u in missing)
    meters, missing = probe_meters(None, gpu=False, sysfs=tmp_path)
    assert not any(u.method == "nvml" for u in missing)  # a CPU run does not look at the GPU


def test_estimate_follows_the_power_model():
    m = EstimateMeter(PowerModel(idle_w=2.0, active_w_per_core=3.0), "cam")
    m.start()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.2:
        pass  # one busy core
    j = m.stop()
    wall = time.perf_counter() - t0
    assert j == pytest.approx(2.0 * wall + 3.0 * m.cpu_s, rel=0.02)
    assert 0.1 < m.cpu_s <= wall + 0.02


def test_measure_subtracts_the_idle_baseline(tmp_path):
    h = tmp_path / "class/hwmon/hwmon0"
    h.mkdir(parents=True)
    (h / "name").write_text("ina3221\n")
    (h / "in1_label").write_text("VDD_IN\n")
    (h / "in1_input").write_text("5000\n")
    (h / "curr1_input").write_text("1000\n")  # 5 W idle
    meters, missing = probe_meters(PowerModel(idle_w=1.0, active_w_per_core=1.0), "t", sysfs=tmp_path)
    assert [m.method for m in meters] == ["ina3221", "estimate"]
    assert {u.method for u in missing} == {"pmic", "rapl"}

    def work():
        tmp = h / "curr1_input.new"
        tmp.write_text("1600\n")
        tmp.replace(h / "curr1_input")  # 8 W while "inferring" (sysfs reads are atomic; so is a rename)
        time.sleep(0.01)
        return 2

    readings = measure(meters, work, seconds=0.4, idle_seconds=0.2)
    ina = readings[0]
    assert ina["idle_w"] == pytest.approx(5.0, rel=0.01)
    assert ina["avg_w"] == pytest.approx(8.0, rel=0.05)
    assert ina["net_mj_per_inference"] == pytest.approx(ina["mj_per_inference"] * 3 / 8, rel=0.15)
    assert ina["inferences"] % 2 == 0 and readings[1]["method"] == "estimate" and readings[1]["idle_w"] == 1.0


def test_integrate_is_the_trapezoid_rule():
    assert integrate([(0.0, 1.0), (1.0, 3.0), (3.0, 3.0)]) == pytest.approx(2.0 + 6.0)


def test_a_meter_failing_mid_measurement_is_reported_not_fatal():
    class Flaky(PmicMeter):
        calls = 0

        def read_watts(self):
            Flaky.calls += 1
            if Flaky.calls > 2:
                raise ValueError("ADC read failed")
            return 3.0

    flaky = Flaky(run=lambda: PMIC)
    failed = []
    readings = measure(
        [flaky, EstimateMeter(PowerModel(1.0, 1.0), "t")], lambda: 1, seconds=0.15, idle_seconds=0, failed=failed
    )
    assert [r["method"] for r in readings] == ["estimate"]
    assert failed[0].method == "pmic" and "ADC read failed" in failed[0].reason
