"""Device profiles: presets load and say why, detection picks the right one, bad files fail clearly."""

import pytest
from conftest import edgepipe

from edgepipe.devices import EdgepipeError, HostInfo
from edgepipe.devices.host import detect_host
from edgepipe.devices.profiles import detect_profile, load_profile, preset_names
from edgepipe.runtime.judge.verdict import judge

REQUIRED = {"x86-avx2", "x86-vnni", "x86-amx", "nvidia-gpu", "jetson-orin-nano", "rpi4", "rpi5", "arm-camera-a53"}


def host(arch="x86_64", flags=(), board=None, gpus=()):
    return HostInfo(
        arch=arch,
        cpu_model="test",
        physical_cores=4,
        logical_cores=4,
        flags=tuple(flags),
        board=board,
        gpus=tuple(gpus),
    )


def test_every_preset_loads_with_a_reason_a_power_model_and_budgets():
    assert REQUIRED <= set(preset_names())
    for name in preset_names():
        p = load_profile(name)
        assert p.name == name and p.threads <= p.cores and p.providers[-1] == "CPUExecutionProvider"
        assert len(p.quantization.reason) > 30 and p.power.active_w_per_core > 0
        assert p.budgets.latency_p90_ms and p.budgets.peak_rss_mb and p.budgets.energy_mj_per_inference


def test_profiles_list_backends_in_order_of_preference():
    assert [b.name for b in load_profile("x86-amx").backends] == ["openvino", "onnxruntime"]  # bf16 on AMX
    assert [b.name for b in load_profile("x86-avx2").backends] == ["onnxruntime", "openvino"]
    assert [b.name for b in load_profile("jetson-orin-nano").backends] == ["onnxruntime"]


def test_vnni_and_plain_avx2_get_different_int8_presets():
    avx2, vnni = load_profile("x86-avx2").quantization, load_profile("x86-vnni").quantization
    assert avx2.reduce_range and not vnni.reduce_range  # u8s8 saturation only bites without VNNI
    assert load_profile("nvidia-gpu").quantization.activation_type == "s8"  # TensorRT: symmetric


@pytest.mark.parametrize(
    "h, expected",
    [
        (host(flags=["avx2"]), "x86-avx2"),
        (host(flags=["avx2", "avx512f", "avx512_vnni"]), "x86-vnni"),
        (host(flags=["avx2", "avx_vnni"]), "x86-vnni"),
        (host(flags=["avx2", "avx512f", "avx512_vnni", "amx_int8", "avx512_bf16", "amx_bf16"]), "x86-amx"),
        (host(flags=["avx2"], gpus=["NVIDIA L4"]), "nvidia-gpu"),
        (host("aarch64", ["asimddp"], board="Raspberry Pi 5 Model B Rev 1.0"), "rpi5"),
        (host("aarch64", [], board="Raspberry Pi 4 Model B Rev 1.4"), "rpi4"),
        (
            host(
                "aarch64",
                ["asimddp"],
                board="NVIDIA Jetson Orin Nano Developer Kit",
                gpus=["NVIDIA Tegra (integrated)"],
            ),
            "jetson-orin-nano",
        ),
        (host("aarch64", [], board="Acme IPC board"), "arm-camera-a53"),
        (host("riscv64"), None),
    ],
)
def test_detection_picks_the_most_specific_preset(h, expected):
    found = detect_profile(h)
    assert (found.name if found else None) == expected


def test_host_facts_from_a_fixture_root(tmp_path):
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_text("Raspberry Pi 5 Model B Rev 1.0\x00")
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\n")
    gpu = tmp_path / "proc/driver/nvidia/gpus/0000:01:00.0"
    gpu.mkdir(parents=True)
    (gpu / "information").write_text("Model: \t\t NVIDIA L4\nIRQ: 42\n")
    h = detect_host(tmp_path)
    assert h.board == "Raspberry Pi 5 Model B Rev 1.0" and h.gpus == ("NVIDIA L4",)


def test_user_profile_errors_name_the_file_and_key(tmp_path):
    text = load_profile("rpi4").to_dict()
    import yaml

    text["budgets"]["latency_p90"] = 10
    bad = tmp_path / "cam.yaml"
    bad.write_text(yaml.safe_dump(text))
    with pytest.raises(
        EdgepipeError, match=r"cam.yaml: budgets.latency_p90: unknown key; did you mean 'latency_p90_ms'\?"
    ):
        load_profile(bad)
    text["budgets"].pop("latency_p90")
    text["threads"] = 9
    bad.write_text(yaml.safe_dump(text))
    with pytest.raises(EdgepipeError, match=r"cam.yaml: threads: must be between 1 and cores \(4\)"):
        load_profile(bad)
    text["threads"] = 4
    for backends, message in (
        ([{"name": "onnxruntime"}, {"name": "onnxruntime"}], "backends: list each backend once"),
        ([{"name": "onnxruntime", "precision": "bf16"}], "backends.*precision: onnxruntime runs"),
        ([{"name": "tensorrt"}], "backends.*name"),
        ([], "backends: list at least one"),
    ):
        text["backends"] = backends
        bad.write_text(yaml.safe_dump(text))
        with pytest.raises(EdgepipeError, match=message):
            load_profile(bad)
    with pytest.raises(EdgepipeError, match="did you mean 'rpi5'"):
        load_profile("rpi6")
    with pytest.raises(EdgepipeError, match="nope.yaml: device profile file not found"):
        load_profile(tmp_path / "nope.yaml")


def test_devices_command_lists_presets_and_this_host(tmp_path):
    proc = edgepipe("devices")
    assert proc.returncode == 0, proc.stderr
    for name in REQUIRED:
        assert name in proc.stdout
    assert "this host:" in proc.stdout and "detected profile:" in proc.stdout
    proc = edgepipe("devices", "--show", "rpi5")
    assert proc.returncode == 0 and "name: rpi5" in proc.stdout and "reason:" in proc.stdout
    proc = edgepipe("devices", "--show", "nosuch")
    assert proc.returncode == 2 and "neither a preset nor a file" in proc.stderr


def _result(p90=10.0, rss=100.0, nbytes=1000, mj=None, unc=0.5):
    r = {
        "runs": [{"batch": 8, "latency": {"p90_ms": 99.0}}, {"batch": 1, "latency": {"p90_ms": p90}}],
        "memory": {"peak_rss_mb": rss},
        "model_bytes": nbytes,
    }
    if mj is not None:
        r["energy"] = {"primary": {"mj_per_inference": mj, "uncertainty_rel": unc, "method": "estimate", "batch": 1}}
    return r


def test_verdict_statuses_and_margins():
    prof = {
        "name": "cam",
        "budgets": {"latency_p90_ms": 20.0, "peak_rss_mb": 128, "model_bytes": 4000, "energy_mj_per_inference": 10.0},
    }
    v = judge(_result(mj=5.0), prof)
    assert v["overall"] == "pass"
    lat = next(c for c in v["checks"] if c["budget"] == "latency_p90_ms")
    assert lat["value"] == 10.0 and lat["margin"] == 10.0 and lat["margin_pct"] == 50.0  # batch-1 run, not batch 8
    assert judge(_result(mj=8.0), prof)["overall"] == "marginal"  # 8 mJ ± 50% may exceed 10 mJ
    assert judge(_result(mj=8.0, unc=0.05), prof)["overall"] == "pass"  # a sensor with 5% uncertainty
    assert judge(_result(), prof)["overall"] == "incomplete"  # energy budget, no energy reading
    failed = judge(_result(rss=200.0, mj=1.0), prof)
    assert failed["overall"] == "fail"
    rss = next(c for c in failed["checks"] if c["budget"] == "peak_rss_mb")
    assert rss["status"] == "fail" and rss["margin_pct"] == pytest.approx(-56.25)
    assert judge(_result(), {"name": "none", "budgets": {}})["overall"] == "no budgets"
