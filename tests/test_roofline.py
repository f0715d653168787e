"""Roofline context: the shipped GEMM graphs are what the generator makes, the peak is measured and
cached per host, and the achieved fraction is arithmetic on those figures."""

import sys

import pytest
from onnx_models import CONV_MLP_MACS, conv_mlp

from edgepipe.devices import detect_host
from edgepipe.runtime.measure import roofline
from edgepipe.runtime.measure.roofline import KERNELS, host_peaks, model_costs


def test_shipped_kernels_match_the_generator():
    sys.path.insert(0, str(KERNELS))
    import make_kernels

    for name, make in make_kernels.KERNELS.items():
        assert (KERNELS / name).read_bytes() == make().SerializeToString(), f"regenerate {name} with make_kernels.py"


def test_peak_is_measured_then_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPIPE_CACHE", str(tmp_path))
    h = detect_host().to_dict()
    first = host_peaks(h, threads=1)
    assert first["cached"] is None and first["fp32"] > 1e8 and first["int8"] > 1e8
    again = host_peaks(h, threads=1)
    assert again["cached"] and again["fp32"] == first["fp32"]  # read back, not re-measured
    (tmp_path / again["cached"].split("/")[-1]).write_text("{not json")
    assert host_peaks(h, threads=1)["cached"] is None  # a damaged entry is measured again


def test_model_costs_and_fraction(tmp_path):
    model = conv_mlp(tmp_path / "m.onnx")
    assert model_costs(model) == (CONV_MLP_MACS, "fp32", "counted from the graph")
    assert model_costs(model, macs=7)[0] == 7
    peaks = {"fp32": 1e9, "int8": 4e9, "method": "test"}
    r = roofline.roofline(CONV_MLP_MACS, "fp32", batch=4, mean_ms=2.0, peaks=peaks)
    assert r["achieved_macs_per_s"] == pytest.approx(CONV_MLP_MACS * 4 / 2e-3)
    assert r["fraction_of_peak"] == pytest.approx(CONV_MLP_MACS * 4 / 2e-3 / 1e9)
    assert "fraction_of_peak" not in roofline.roofline(None, "int8", 1, 1.0, peaks)


def test_int8_model_is_compared_with_the_int8_peak(tmp_path):
    import numpy as np

    from edgepipe.export.quantize import QuantOptions, quantize_static

    model = conv_mlp(tmp_path / "m.onnx")
    calib = np.random.default_rng(0).standard_normal((16, 1, 8, 8)).astype(np.float32)
    quantize_static(model, tmp_path / "q.onnx", calib, QuantOptions())
    macs, precision, _ = model_costs(tmp_path / "q.onnx")
    assert precision == "int8" and macs == CONV_MLP_MACS


def test_no_model_runs_faster_than_the_peak_of_its_own_kernel(tmp_path):
    """The peak is the best of GEMMs and 3×3 convs (its fastest single run): a model that *is* one of
    the conv kernels (measured by its mean) comes out at or under 100%, and the JSON names the kernel
    that set the peak. (A 512³ GEMM alone was beaten by these convs' best runs by up to 8% here.)"""
    import json
    import os
    import shutil
    import subprocess

    model = tmp_path / "conv.onnx"
    shutil.copy(KERNELS / "conv_fp32_256x14.onnx", model)
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgepipe.runtime",
            model,
            "--threads",
            "1",
            "--iters",
            "30",
            "--min-seconds",
            "0.3",
            "--energy-seconds",
            "0",
            "--profile",
            "none",
            "--json",
            out,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        # a cache of its own: the peak is measured in this process, seconds before the model, not read
        # back from whichever earlier test of the session measured it under another load
        env=os.environ | {"EDGEPIPE_CACHE": str(tmp_path / "cache")},
    )
    assert proc.returncode == 0, proc.stderr
    roof = json.loads(out.read_text())["runs"][0]["roofline"]
    assert roof["macs_per_inference"] == 256 * 256 * 9 * 14 * 14
    # the peak's best run and this model's mean are still timed at different moments of a shared 2-core
    # host: with the peak read from the session's cache, CI measured 1.09 and 1.19 (the peak taken minutes
    # earlier under another load); measured seconds apart the bound is 15%. A wrong MAC count or peak
    # would be off by a factor, not by this
    assert 0.3 < roof["fraction_of_peak"] <= 1.15, roof
    assert roof["peak_kernel"] in {what for _, _, what in roofline.PEAK_KERNELS["fp32"]}
