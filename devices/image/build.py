"""`make image-arm`: build Dockerfile.arm for linux/arm64 into an OCI archive with no Docker daemon,
then run the image's entrypoint under qemu on the demo's int8 model and compare with x86.

No image registry is reachable from these machines, so the base image the Dockerfile names
(python:3.11-slim-bookworm) is made here first, under that name, as a *stand-in*: Debian
bookworm's arm64 packages (debootstrap --variant=minbase, python3 3.11) with a Python venv at
/usr/local, so that `pip` and /usr/local/lib/python3.11/site-packages sit where the official image
has them. It is not the official image, and this script says so in what it prints. The unchanged
Dockerfile then builds with buildah (`--isolation chroot`, vfs storage kept under .image/, arm64
binaries run by qemu-user-static through binfmt_misc), installing from a wheelhouse of aarch64
wheels the host's pip downloads (pinned to the host's onnxruntime and numpy, so the two sides run
the same kernels) — the emulated pip needs no package index. Anywhere a registry is reachable,
`docker buildx build --platform linux/arm64 -f Dockerfile.arm .` builds the same file online.

The built image is pushed to .image/edgepipe-runner-arm64.oci.tar (an OCI archive, gzip layers),
mounted, and its entrypoint run on its own root filesystem as the image's user, under qemu:
outputs against x86's, accuracy, size, the user, and that no paddle is inside are printed and
written to .image/last-result.json. Timings under emulation mean nothing and are not reported.

Needs root (debootstrap, chroot, mount), buildah and binfmt_misc; exits 0 with the reason where
they cannot be had (it tries apt-get for the packages).

    sudo make image-arm            # or: .venv/bin/python devices/image/build.py [--extras camera]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from crosscheck import compare, compare_stream, write_frames
from emulation import (
    DEBIAN_TOOLS,
    MIRROR,
    REPO,
    RUNNER_ARGS,
    SUITE,
    arm_emulation_problem,
    chroot_run,
    sh,
    wheelhouse_command,
)

WORK = Path(os.environ.get("EDGEPIPE_IMAGE_DIR", REPO / ".image"))
BASE = "docker.io/library/python:3.11-slim-bookworm"
TAG = "localhost/edgepipe-runner:arm64"


class Buildah:
    """buildah with its storage kept under .image/ (vfs: no overlay mounts needed)."""

    def __init__(self, work: Path):
        self.opts = ["--root", str(work / "storage"), "--runroot", str(work / "run"), "--storage-driver", "vfs"]

    def __call__(self, *args, timeout: float = 7200) -> str:
        return sh("buildah", *self.opts, *args, timeout=timeout).stdout.strip()

    def image(self, name: str) -> dict | None:
        proc = subprocess.run(
            ["buildah", *self.opts, "inspect", "--type", "image", name], capture_output=True, text=True
        )
        return json.loads(proc.stdout) if proc.returncode == 0 else None


def make_base(b: Buildah, work: Path) -> str:
    """The stand-in base image, tagged as the official one; reused once made."""
    have = b.image(BASE)
    if have and have.get("OCIv1", {}).get("architecture") == "arm64":
        return "reused"
    root = work / "base-rootfs"
    if not (root / ".edgepipe-debootstrap-done").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        print(f"image-arm: debootstrap --arch=arm64 {SUITE} for the stand-in base (several minutes, once)", flush=True)
        sh(
            "debootstrap",
            "--arch=arm64",
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            SUITE,
            root,
            MIRROR,
            timeout=5400,
        )
        proc = chroot_run(
            root,
            ["/bin/sh", "-c", "python3 -m venv /usr/local && /usr/local/bin/pip --version"],
            path="/usr/bin:/bin",
            home="/root",
        )
        if proc.returncode != 0:
            raise RuntimeError(f"the stand-in base's venv at /usr/local failed: {proc.stderr.strip()[-800:]}")
        for junk in (
            "var/lib/apt/lists",
            "var/cache/apt",
            "usr/share/doc",
            "usr/share/man",
            "usr/share/locale",
            "usr/share/info",
            "var/log",
        ):
            shutil.rmtree(root / junk, ignore_errors=True)
            (root / junk).mkdir(parents=True, exist_ok=True)
        (root / ".edgepipe-debootstrap-done").touch()
    ctr = b("from", "--arch", "arm64", "scratch")
    try:
        mnt = Path(b("mount", ctr))
        sh("cp", "-a", f"{root}/.", str(mnt))
        (mnt / ".edgepipe-debootstrap-done").unlink()
        b("umount", ctr)
        b(
            "config",
            "--arch",
            "arm64",
            "--os",
            "linux",
            "--env",
            "PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--env",
            "LANG=C.UTF-8",
            "--cmd",
            "python3",
            "--label",
            "org.opencontainers.image.description=edgepipe stand-in for "
            "python:3.11-slim-bookworm: Debian bookworm arm64 packages, a Python 3.11 venv at /usr/local",
            ctr,
        )
        b("commit", "--rm", ctr, BASE)
    except Exception:
        subprocess.run(["buildah", *b.opts, "rm", ctr], capture_output=True)
        raise
    return "made"


def build_image(b: Buildah, work: Path, extras: tuple[str, ...]) -> Path:
    """The wheelhouse (inside the build context, where the Dockerfile's bind mount finds it), then
    the unchanged Dockerfile for linux/arm64, then the OCI archive."""
    house = work / "wheelhouse"
    shutil.rmtree(house, ignore_errors=True)
    house.mkdir(parents=True)
    print(f"image-arm: aarch64 wheels into {house.relative_to(REPO)} (the host's pip)", flush=True)
    sh(*wheelhouse_command(house, extras), timeout=1800)
    args = [
        "bud",
        "--isolation",
        "chroot",
        "--arch",
        "arm64",
        "--os",
        "linux",
        "--pull=false",
        "--layers=false",
        "--build-arg",
        f"WHEELHOUSE={house.relative_to(REPO)}",
        "--build-arg",
        f"EXTRAS={','.join(extras)}",
        "-f",
        str(REPO / "Dockerfile.arm"),
        "-t",
        TAG,
        str(REPO),
    ]
    print("image-arm: buildah " + " ".join(args[:-3]) + " ... (the RUN steps under qemu: minutes)", flush=True)
    b(*args)
    archive = work / "edgepipe-runner-arm64.oci.tar"
    archive.unlink(missing_ok=True)
    b("push", "--compression-format", "gzip", TAG, f"oci-archive:{archive}:edgepipe-runner:arm64")
    return archive


def demo_model() -> tuple[Path, Path]:
    """The demo's int8 model and test split (`make demo` output; made when missing)."""
    run_dir = REPO / "runs" / "mnist-kd"
    model, data = run_dir / "quantize" / "student.int8.onnx", run_dir / "bench" / "test_split.npz"
    if not (model.is_file() and data.is_file()):
        print("image-arm: running the demo for its int8 model (make demo)", flush=True)
        sh(REPO / ".venv/bin/edgepipe", "run", "--runs-dir", REPO / "runs", cwd=REPO, timeout=3600)
    return model, data


def _stage_inputs(mnt: Path, model: Path, data: Path) -> Path:
    """Copy the model and test split into the image's /tmp/edgepipe-image, a folder its user may write to."""
    xchg = mnt / "tmp/edgepipe-image"
    xchg.mkdir(parents=True, exist_ok=True)
    xchg.chmod(0o777)
    shutil.copy(model, xchg / model.name)
    shutil.copy(data, xchg / data.name)
    return xchg


def _run_entrypoint(mnt: Path, entry: list, env: dict, home: str, uid: str, model: Path, data: Path):
    """The entrypoint on the test split as the image's user; its result and outputs stay in /tmp/edgepipe-image."""
    proc = chroot_run(
        mnt,
        [
            *entry,
            f"/tmp/edgepipe-image/{model.name}",
            "--inputs",
            f"/tmp/edgepipe-image/{data.name}",
            "--profile",
            "arm-camera-a53",
            "--json",
            "/tmp/edgepipe-image/arm.json",
            "--save-outputs",
            "/tmp/edgepipe-image/arm.npz",
            *RUNNER_ARGS,
        ],
        path=env.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        home=home,
        user=f"{uid}:{uid}",
        env={"LANG": env.get("LANG", "C.UTF-8")},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the image's entrypoint failed under qemu: {proc.stderr.strip()[-1500:]}")
    return proc


def _run_stream(mnt: Path, entry: list, env: dict, home: str, uid: str, model: Path, data: Path, out: Path):
    """The entrypoint's camera mode on frames made from the same digits; its result and the frames go to `out`."""
    xchg = mnt / "tmp/edgepipe-image"
    frames = write_frames(data, xchg / "frames")
    proc = chroot_run(
        mnt,
        [
            *entry,
            f"/tmp/edgepipe-image/{model.name}",
            "--stream",
            "/tmp/edgepipe-image/frames",
            "--profile",
            "arm-camera-a53",
            "--energy-seconds",
            "0",
            "--json",
            "/tmp/edgepipe-image/stream.json",
        ],
        path=env.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        home=home,
        user=f"{uid}:{uid}",
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the image's --stream failed under qemu: {proc.stderr.strip()[-1500:]}")
    shutil.copy(xchg / "stream.json", out / "arm-stream.json")
    shutil.copytree(frames, out / "frames", dirs_exist_ok=True)
    return proc


def run_in_image(b: Buildah, model: Path, data: Path, out: Path) -> dict:
    """The image's entrypoint on its own root filesystem, as its user, under qemu; returns what the
    checks need (the outputs land in `out`)."""
    config = b.image(TAG)["OCIv1"]["config"]
    entry, user, home = config["Entrypoint"], config.get("User") or "0", config.get("WorkingDir") or "/"
    env = dict(e.split("=", 1) for e in config.get("Env", []))
    ctr = b("from", "--pull=false", TAG)
    try:
        mnt = Path(b("mount", ctr))
        site = [p.name.lower() for p in (mnt / "usr/local/lib/python3.11/site-packages").iterdir()]
        root_bytes = int(sh("du", "-sb", "--one-file-system", mnt).stdout.split()[0])
        xchg = _stage_inputs(mnt, model, data)
        uid = user.split(":")[0]
        ids = chroot_run(
            mnt, ["/usr/bin/id", "-un"], path=env.get("PATH", "/usr/bin:/bin"), home=home, user=f"{uid}:{uid}"
        )
        proc = _run_entrypoint(mnt, entry, env, home, uid, model, data)
        shutil.copy(xchg / "arm.json", out / "arm.json")
        shutil.copy(xchg / "arm.npz", out / "arm.npz")
        opencv = any(n.startswith("cv2") or n.startswith("opencv") for n in site)
        if opencv:  # the camera mode too, on a folder of frames made from the same digits
            proc = _run_stream(mnt, entry, env, home, uid, model, data, out)
        return {
            "rootfs_bytes": root_bytes,
            "entrypoint": entry,
            "user": user,
            "user_name": ids.stdout.strip(),
            "stdout": proc.stdout,  # the last run's: the camera mode's where it ran
            "paddle_inside": sorted(n for n in site if "paddle" in n),
            "opencv_inside": opencv,
        }
    finally:
        subprocess.run(["buildah", *b.opts, "umount", ctr], capture_output=True)
        subprocess.run(["buildah", *b.opts, "rm", ctr], capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--extras", default="", help="extras of the device install to add (camera: OpenCV for --stream)")
    args = ap.parse_args()
    extras = tuple(e for e in args.extras.split(",") if e)
    why = arm_emulation_problem(DEBIAN_TOOLS + ("buildah",), binaries=("debootstrap", "buildah"))
    if why:
        print(f"image-arm: skipped: {why}")
        return 0
    t0 = time.perf_counter()
    WORK.mkdir(parents=True, exist_ok=True)
    b = Buildah(WORK)
    how = make_base(b, WORK)
    print(f"image-arm: stand-in base {BASE} {how} (Debian {SUITE} arm64 packages; not the official image)", flush=True)
    model, data = demo_model()
    archive = build_image(b, WORK, extras)
    out = WORK / "check"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    ran = run_in_image(b, model, data, out)
    cmp = compare(model, data, out)
    if ran["opencv_inside"]:
        cmp |= compare_stream(model, out)
    layers = b.image(TAG)["OCIv1"].get("rootfs", {}).get("diff_ids", [])
    result = {
        "archive": str(archive.relative_to(REPO)),
        "archive_bytes": archive.stat().st_size,
        "layers": len(layers),
        "base": f"{BASE} (stand-in: Debian {SUITE} arm64 packages)",
        "extras": list(extras),
        "model": str(model.relative_to(REPO)),
        **cmp,
        **{k: v for k, v in ran.items() if k != "stdout"},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (WORK / "last-result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(ran["stdout"])
    mb = result["archive_bytes"] / 1e6
    print(
        f"image      {TAG} for linux/arm64 -> {result['archive']}: {mb:.1f} MB (OCI archive, {result['layers']} gzip "
        f"layers; goal <= 150 MB), {ran['rootfs_bytes'] / 1e6:.0f} MB unpacked"
    )
    print(f"base       {result['base']}")
    print(
        f"entrypoint {' '.join(ran['entrypoint'])} as user {ran['user']} ({ran['user_name']}); paddle inside: "
        f"{', '.join(ran['paddle_inside']) or 'none'}; OpenCV inside: {'yes' if ran['opencv_inside'] else 'no'}"
    )
    print(
        f"vs x86     {cmp['samples']} test digits: max |diff| {cmp['max_abs_diff']:.2e} "
        f"(logits up to {cmp['logit_scale']:.1f}), "
        f"top-1 agreement {100 * cmp['top1_agreement']:.2f}%, "
        f"accuracy {100 * cmp['accuracy_image']:.2f}% (arm64 image) vs "
        f"{100 * cmp['accuracy_x86']:.2f}% (x86); onnxruntime {cmp['onnxruntime_image']} on both"
    )
    if ran["opencv_inside"]:
        print(
            f"--stream   {cmp['stream_frames_image']} frames in the image, "
            f"{cmp['stream_frames_x86']} on x86; predictions "
            f"{'identical' if cmp['stream_predictions_match'] else 'DIFFERENT'}"
        )
    ok = (
        cmp.get("stream_predictions_match", True)
        and cmp["arch_image"] == "aarch64"
        and cmp["top1_agreement"] >= 0.995
        and cmp["max_abs_diff"] <= 0.05 * cmp["logit_scale"]
        and abs(cmp["accuracy_image"] - cmp["accuracy_x86"]) <= 0.005
        and not ran["paddle_inside"]
        and ran["user"] not in ("0", "root")
    )
    print(
        f"image-arm: {'OK' if ok else 'FAILED'} in {result['seconds']:.0f} s; "
        f"details in {WORK.relative_to(REPO)}/last-result.json"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"image-arm: error: {exc}", file=sys.stderr)
        sys.exit(1)
