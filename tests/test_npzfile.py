"""The runner's .npz inputs, read by rows (runtime/inputs/npzfile.py): headers without data, row slices as
np.load gives them, floats checked chunk by chunk, bad files refused in one line; and the runner's
peak RSS, measured in a fresh process, is the model's and not the inputs file's."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import one_line_error
from onnx_models import mnist_linear

from edgepipe.devices import EdgepipeError
from edgepipe.runtime.inputs.checks import check_arrays
from edgepipe.runtime.inputs.npzfile import NpzInputs, NpzReader, load_npz
from edgepipe.runtime.model.session import open_session, predict

SAVERS = [np.savez, np.savez_compressed]


def arrays():
    rng = np.random.default_rng(0)
    return {
        "x": rng.standard_normal((1000, 3, 5, 7)).astype(np.float32),
        "u": rng.integers(0, 255, (1000, 9), np.uint8),
        "h": rng.standard_normal((1000, 4)).astype(np.float16),
        "y": rng.integers(0, 10, 1000),
    }


@pytest.mark.parametrize("save", SAVERS, ids=["stored", "deflated"])
def test_headers_and_row_slices_match_np_load(tmp_path, save):
    path = tmp_path / "in.npz"
    want = arrays()
    save(path, **want)
    r = NpzReader(path)
    assert {k: (a.shape, a.dtype) for k, a in r.arrays.items()} == {k: (v.shape, v.dtype) for k, v in want.items()}
    with np.load(path) as z:
        for k in want:
            for start, stop in [(0, 1), (0, 7), (10, 517), (999, 1000), (990, 5000), (0, None), (600, 600)]:
                got = r.rows(k, start, stop)
                assert got.dtype == z[k].dtype and np.array_equal(got, z[k][start:stop])
    parts = list(r.chunks(["x", "u"], 64))
    assert [s for s, _ in parts] == list(range(0, 1000, 64))
    assert np.array_equal(np.concatenate([p["x"] for _, p in parts]), want["x"])
    assert np.array_equal(np.concatenate([p["u"] for _, p in parts]), want["u"])
    src = NpzInputs(path)  # the runner's contract: 'y' is the labels, read whole; the rest are inputs
    assert src.names == ["x", "u", "h"] and src.n == 1000 and np.array_equal(src.labels, want["y"])
    assert np.array_equal(src.head(3)["h"], want["h"][:3])


@pytest.mark.parametrize("save", SAVERS, ids=["stored", "deflated"])
def test_a_nan_in_a_later_chunk_is_caught_with_the_in_memory_error(tmp_path, save):
    path = tmp_path / "in.npz"
    x = np.random.default_rng(1).standard_normal((1000, 16)).astype(np.float32)
    x[900, 3] = np.nan
    x[950, 0] = np.inf
    save(path, x=x)
    r = NpzReader(path)
    assert np.array_equal(r.rows("x", 0, 800), x[:800])  # rows before it read fine
    with pytest.raises(EdgepipeError, match=r"'x' holds 2 NaN or infinite values in rows 896–959") as exc:
        for _ in r.chunks(["x"], 64):
            pass
    assert "\n" not in str(exc.value)
    with pytest.raises(EdgepipeError) as in_memory:
        check_arrays({"x": x}, str(path))
    for read in (NpzInputs, load_npz):  # the whole file checked: the same line as for the array in memory
        with pytest.raises(EdgepipeError) as exc:
            read(path)
        assert str(exc.value) == str(in_memory.value)
    assert str(in_memory.value) == f"{path}: 'x' holds 2 NaN or infinite values; inputs must be finite numbers"


def test_bad_files_are_refused_in_one_line(tmp_path):
    x = np.zeros((8, 4), np.float32)

    def error(path, read=NpzInputs):
        with pytest.raises(EdgepipeError) as exc:
            read(path)
        assert "\n" not in str(exc.value)
        return str(exc.value)

    assert error(tmp_path / "nope.npz") == f"{tmp_path / 'nope.npz'}: inputs file not found"
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    assert "junk.npz: not a readable .npz file (BadZipFile)" in error(tmp_path / "junk.npz")
    np.savez(tmp_path / "good.npz", x=np.arange(4096, dtype=np.float32).reshape(64, 64))
    data = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    assert "cut.npz: not a readable .npz file" in error(tmp_path / "cut.npz")
    bent = bytearray(data)
    bent[5000] ^= 0xFF  # one byte of stored data: the headers read, the member's CRC does not match
    (tmp_path / "bent.npz").write_bytes(bytes(bent))
    assert "bent.npz: not a readable .npz file (BadZipFile)" in error(tmp_path / "bent.npz")
    np.savez(tmp_path / "obj.npz", x=x, o=np.array([{"a": 1}, None], dtype=object))  # pickled: never loaded
    assert "obj.npz: 'o' holds Python objects (dtype object), which are never unpickled" in error(tmp_path / "obj.npz")
    np.savez(tmp_path / "fortran.npz", x=np.asfortranarray(np.ones((8, 3), np.float32)))
    assert "fortran.npz: 'x' is saved in Fortran order, so its rows cannot be read a batch at a time" in error(
        tmp_path / "fortran.npz"
    )
    assert load_npz(tmp_path / "fortran.npz")[0]["x"].shape == (8, 3)  # read whole, it still loads
    np.savez(tmp_path / "a.npz", a=x, y=np.zeros(8, np.int64))
    line = error(tmp_path / "a.npz", lambda p: NpzReader(p).rows("x"))
    assert line == f"{tmp_path / 'a.npz'}: no array named 'x' (has: a, y)"
    np.savez(tmp_path / "labels.npz", y=np.zeros(8, np.int64))
    assert "holds no input arrays (only labels)" in error(tmp_path / "labels.npz")
    np.savez(tmp_path / "flabels.npz", x=x, y=np.zeros(8))
    assert "labels are float64 of shape [8]; save class indices" in error(tmp_path / "flabels.npz")


def test_load_npz_reads_the_whole_file_as_np_load_does(tmp_path):
    want = arrays()
    np.savez_compressed(tmp_path / "in.npz", **want)
    got, labels = load_npz(tmp_path / "in.npz")
    assert list(got) == ["x", "u", "h"] and np.array_equal(labels, want["y"])
    assert all(np.array_equal(got[k], want[k]) and got[k].dtype == want[k].dtype for k in got)


def test_the_runner_reports_the_models_memory_not_the_inputs_file(tmp_path):
    """240 MiB of inputs: the runner loaded them whole (peak RSS 292 MB for 192 MB of them); now it reads
    only the rows it needs, and still scores every row."""
    model = mnist_linear(tmp_path / "m.onnx")
    n = 80_000
    x = np.random.default_rng(0).standard_normal((n, 1, 28, 28), dtype=np.float32)
    top = predict(open_session(model), x).argmax(axis=1)  # in process, in predict()'s batches, as the runner
    y = top.copy()
    y[::997] = (y[::997] + 1) % 10  # wrong labels spread over the whole file, the last chunk too
    y[-1] = (y[-1] + 1) % 10
    expected = float((top == y).mean())
    np.savez(tmp_path / "in.npz", x=x, y=y)
    del x
    file_mb = (tmp_path / "in.npz").stat().st_size / 2**20
    assert file_mb > 200
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgepipe.runtime",
            model,
            "--inputs",
            tmp_path / "in.npz",
            "--json",
            tmp_path / "r.json",
            "--profile",
            "none",
            "--energy-seconds",
            "0",
            "--no-roofline",
            "--iters",
            "5",
            "--min-seconds",
            "0",
            "--warmup",
            "1",
            "--warmup-seconds",
            "0",
            "--batch",
            "1",
            "--batch",
            "32",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    mem = r["memory"]
    # the old runner's peak was at least the file (plus the ~50 MB of a bare process)
    assert mem["peak_rss_mb"] < file_mb / 2 and mem["peak_rss_mb"] - mem["rss_before_session_mb"] < file_mb / 8, mem
    assert mem["inputs_file_mb"] == pytest.approx(file_mb) and mem["inputs_held_mb"] < 1
    assert "never whole" in mem["inputs_read"] and "inputs streamed from a" in proc.stdout
    assert r["accuracy_samples"] == n and r["accuracy"] == expected < 1


def test_the_runner_names_a_missing_input_in_one_line(tmp_path):
    model = mnist_linear(tmp_path / "m.onnx")
    np.savez(tmp_path / "in.npz", a=np.zeros((4, 1, 28, 28), np.float32), y=np.zeros(4, np.int64))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgepipe.runtime",
            model,
            "--inputs",
            tmp_path / "in.npz",
            "--profile",
            "none",
            "--energy-seconds",
            "0",
            "--json",
            tmp_path / "r.json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "in.npz: no array named 'x' (has: a)" in one_line_error(proc) and not (tmp_path / "r.json").exists()
