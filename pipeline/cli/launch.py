"""`edgepipe run RECIPE --nproc N [--nnodes M --master HOST:PORT --rank R]`: the same command again
under `paddle.distributed.launch` (collective mode, no restarts), one process per rank. The launcher's
own log and every rank's log (`workerlog.<local rank>`) are kept in the run directory's `launch/`
folder; this machine's first rank's output is shown as it comes. When a rank fails, the launcher
stops the others and one line names the rank and its error."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from edgepipe.devices import EdgepipeError


def launch_args(args) -> tuple[int, int]:
    """(processes per machine, machines), checked."""
    nproc = 1 if args.nproc is None else args.nproc
    nnodes = 1 if args.nnodes is None else args.nnodes
    if nproc < 1:
        raise EdgepipeError(f"--nproc {nproc}: give at least 1 process per machine")
    if nnodes < 1:
        raise EdgepipeError(f"--nnodes {nnodes}: give at least 1 machine")
    if nnodes > 1 and not args.master:
        raise EdgepipeError(
            f"--nnodes {nnodes}: give --master HOST:PORT, an address of the machine started with --rank 0 "
            "and a free port there, on every machine"
        )
    if args.rank is not None and not 0 <= args.rank < nnodes:
        raise EdgepipeError(f"--rank {args.rank}: the machine's rank is 0 to {nnodes - 1} (--nnodes {nnodes})")
    return nproc, nnodes


def check_batches(recipe, world: int) -> None:
    """Every training stage's batch must give each of the `world` ranks at least one sample."""
    for i, entry in enumerate(recipe.stages):
        size = getattr(entry.config, "batch_size", None)
        if getattr(entry.config, "trains", False) and isinstance(size, int) and size < world:
            raise EdgepipeError(
                f"stages[{i}].{entry.kind}.batch_size: {size} is smaller than the {world} ranks; "
                "every rank needs a sample of each batch: raise batch_size or start fewer ranks"
            )


def wait_for_master(master: str, timeout_s: float) -> None:
    """A machine of rank > 0: the master's port must answer within timeout_s."""
    host, _, port = master.rpartition(":")
    if not host or not port.isdigit():
        raise EdgepipeError(f"--master {master}: give HOST:PORT, e.g. 192.168.1.10:8090")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise EdgepipeError(
                    f"--master {master}: no answer in {timeout_s:g} s ({exc.strerror or exc}); start the machine "
                    "with --rank 0 first, and check the address and that the port is open between the machines"
                ) from None
            time.sleep(1)


def launcher_command(args, nproc: int, nnodes: int, logs: Path, name: str) -> list[str]:
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc)]
    cmd += ["--max_restart", "0", "--log_dir", str(logs), "--job_id", name]
    if nnodes > 1:
        cmd += ["--nnodes", str(nnodes), "--master", args.master, "--rank", str(args.rank or 0)]
    if args.devices:
        cmd += ["--devices", args.devices]
    cmd += [str(Path(__file__).resolve().parents[1] / "__main__.py")] + (["--debug"] if args.debug else [])
    cmd += ["run"]
    cmd += ([args.recipe] if args.recipe else []) + ["--runs-dir", str(args.runs_dir), "--name", name]
    cmd += (["--force"] if args.force else []) + (["--from", args.from_stage] if args.from_stage else [])
    return cmd


def run_launched(args, recipe) -> int:
    """Start the ranks of this machine and wait for them; the run's exit code."""
    nproc, nnodes = launch_args(args)
    check_batches(recipe, nproc * nnodes)
    if nnodes > 1 and (args.rank or 0) > 0:
        wait_for_master(args.master, args.master_timeout)
    logs = Path(args.runs_dir) / recipe.name / "launch" / (f"machine-{args.rank or 0}" if nnodes > 1 else "")
    shutil.rmtree(logs, ignore_errors=True)  # this attempt's logs only
    logs.mkdir(parents=True)
    cmd = launcher_command(args, nproc, nnodes, logs, recipe.name)
    print(f"launching {nproc * nnodes} ranks ({nproc} on this machine); logs: {logs}", file=sys.stderr, flush=True)
    with open(logs / "launcher.log", "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            _show_while_running(proc, logs / "workerlog.0")
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
    if proc.returncode != 0:
        raise EdgepipeError(failure_line(logs, nproc * (args.rank or 0)))
    return 0


# the banner Paddle prints in every rank about the flags its launcher sets, and the ranks' error lines
# (the one line this process prints when the run fails names the failed rank and its error)
_HIDDEN = re.compile(r"^(=+( Modified FLAGS detected =+)?|FLAGS\(name=.*|edgepipe: (internal )?error: .*)$")


def _show_while_running(proc: subprocess.Popen, log: Path) -> None:
    """Copy the first rank's log to stdout line by line as it grows, until the launcher exits."""
    shown, pending = 0, b""
    while True:
        done = proc.poll() is not None
        if log.is_file():
            with open(log, "rb") as f:
                f.seek(shown)
                chunk = f.read()
            shown += len(chunk)
            *lines, pending = (pending + chunk).split(b"\n")
            if done:
                lines, pending = lines + ([pending] if pending else []), b""
            for line in lines:
                text = line.decode(errors="replace")
                if not _HIDDEN.match(text):
                    print(text, flush=True)
        if done:
            return
        time.sleep(0.2)


# errors that follow from another rank's death (its peer closed the connection), not a rank's own cause
_KNOCK_ON = re.compile(r"gloo|Connection reset|Connection closed|Connection refused|Broken pipe|tcp_store|TIMEOUT")


def failure_line(logs: Path, first_rank: int) -> str:
    """One line naming the rank that stopped the run and why: a rank's own error first, then a rank that
    ended without one (killed), then an error that only follows from a peer's death. Among equals, the
    process the launcher saw fail first (it names it, with its exit code, in its log)."""
    launcher = (logs / "launcher.log").read_text(errors="replace") if (logs / "launcher.log").is_file() else ""
    m = re.search(r"Container rank (\d+) status failed .*? code (-?\d+) log", launcher)
    named, code = (int(m.group(1)), int(m.group(2))) if m else (None, None)
    found = []
    for log in logs.glob("workerlog.*"):
        if not log.suffix[1:].isdigit():
            continue
        local = int(log.suffix[1:])
        lines = log.read_text(errors="replace").splitlines()
        errors = [ln for ln in lines if re.match(r"edgepipe: (internal )?error: ", ln)]
        if errors:
            why = re.sub(r"^edgepipe: (error: )?", "", errors[-1])
            rank = 2 if _KNOCK_ON.search(why) else 0
        else:
            rank, why = 1, "it ended without an error of its own (killed, or out of memory)"
            if local == named and code is not None:
                why = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        found.append((rank, local != named, local, log, why))
    if not found:
        return f"the launcher failed before any rank started; its log: {logs / 'launcher.log'}"
    *_, local, log, why = min(found, key=lambda t: t[:3])
    return f"rank {first_rank + local} failed: {why} (its log: {log})"
