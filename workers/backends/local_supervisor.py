"""The local backend's supervisor: runs one gang's ``torchrun`` and records how it ended.

``python -m workers.backends.local_supervisor SPEC_FILE`` forks the supervisor into a session
of its own, prints ``{"pid", "start_ticks"}`` and exits, so the supervisor is nobody's child
in the scheduler. The supervisor runs torchrun in its own process group, with stdout and
stderr on the gang's log, then writes the *exit record* (JSON, atomically) that
:mod:`workers.backends.local` turns into a gang status.

What torch 2.13's torchrun does, measured, and what the supervisor does about it:

* Any failed rank makes torchrun exit 1; a rank's own code (75 included) survives only in the
  failure summary torchrun prints (``rank : 1`` / ``exitcode : 75``), parsed into the record.
  A SIGTERMed torchrun prints no such summary, only its own ``SignalException``.
* Ranks run in sessions of their own, so a signal to torchrun's group does not reach them and
  a SIGKILLed torchrun leaves them running. Every gang process carries :data:`GANG_ENV` in its
  environment (torchrun passes it on), and whatever is left when torchrun ends is SIGKILLed.

Only the standard library is imported here: the starter must come up fast and never fail on
the project's heavier dependencies.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

GANG_ENV = "CORRAL_GANG_ID"
"""Environment variable that tags every process of one gang, ranks included."""

_LOG_TAIL_BYTES = 256 * 1024
_ERROR_LINES = 3
_ERROR_LINE_CHARS = 1000
_FAILURE_RE = re.compile(r"^\s*rank\s*:\s*(\d+)\s.*\n\s*exitcode\s*:\s*(-?\d+)", re.MULTILINE)
_ROOT_CAUSE_RE = re.compile(
    r"Root Cause \(first observed failure\):\s*\n\[\d+\]:\s*\n(?:.*\n)*?\s*rank\s*:\s*(\d+)"
)
_ERROR_LINE_RE = re.compile(r"^(?:\[rank\d+\]:\s*)?((?:[A-Za-z_][\w.]*)?(?:Error|Exception)\b.*)$")
_TORCHRUN_NOISE = ("ChildFailedError", "SignalException")
"""Exceptions torchrun itself raises when ranks fail or it is signalled: not the cause."""


def parse_torchrun_log(text: str) -> dict[str, Any]:
    """Per-rank exit codes, the root-cause rank and the last error lines in torchrun's output."""
    ranks = {int(rank): int(code) for rank, code in _FAILURE_RE.findall(text)}
    root = _ROOT_CAUSE_RE.search(text)
    errors: list[str] = []
    for line in text.splitlines():
        match = _ERROR_LINE_RE.match(line.strip())
        if match and not any(noise in line for noise in _TORCHRUN_NOISE):
            line = match.group(1)[:_ERROR_LINE_CHARS]
            errors = [error for error in errors if error != line] + [line]
    return {
        "rank_exit_codes": ranks,
        "root_cause_rank": int(root.group(1)) if root else None,
        "error_lines": errors[-_ERROR_LINES:],
    }


def shell_code(code: int) -> int:
    """An exit code as a shell reports it: ``-N`` (death by signal N) becomes 128 + N."""
    return 128 - code if code < 0 else code


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """State, parent pid and start time (clock ticks after boot) of a process, if it exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may contain spaces
    return fields[0], int(fields[1]), int(fields[19])


def gang_pids(gang_id: str) -> list[int]:
    """Live processes tagged with this gang, orphans included (zombies have no environment)."""
    tag, me, pids = f"{GANG_ENV}={gang_id}".encode(), os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            environment = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if tag in environment.split(b"\0"):
            pids.append(int(entry))
    return pids


def signal_gang(gang_id: str, signum: signal.Signals) -> list[int]:
    """Send ``signum`` to every live process of the gang but this one; return their pids."""
    pids = gang_pids(gang_id)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
    return pids


def write_json_atomic(path: Path, value: dict[str, Any]) -> None:
    """Write owner-only, then rename: a reader sees the whole record or none of it."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(value))
    os.replace(tmp, path)


def supervise(spec: dict[str, Any]) -> int:
    """Run torchrun, kill what it left, write the exit record; stdout and stderr are the log."""
    signals: list[int] = []

    def remember(signum: int, frame: object) -> None:
        # Outlive the group's SIGTERM to write the record; torchrun got the signal too.
        # A handler, not SIG_IGN: an ignored signal would stay ignored in torchrun.
        signals.append(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, remember)
    uid, gid = spec.get("uid"), spec.get("gid")
    who = f" as uid {uid} gid {gid}" if uid is not None else ""
    reserve = _reserve(Path(spec["exit_path"]))
    _say(f"corral: starting {' '.join(spec['command'])}{who}")
    launch_error = None
    if signals:
        torchrun_code = -signals[0]  # cancelled before torchrun started
    else:
        try:
            # The ranks' identity is dropped to before torchrun runs a line: no supplementary
            # group of the service's, and files they create are their own only (umask 077).
            torchrun = subprocess.Popen(
                spec["command"], stdin=subprocess.DEVNULL, env=spec.get("env"),
                cwd=spec.get("cwd"), user=uid, group=gid,
                extra_groups=[] if uid is not None else None, umask=0o077)
            torchrun_code = torchrun.wait()
        except OSError as error:  # E2BIG, a missing interpreter, a folder it may not enter
            launch_error = {"errno": error.errno, "message": f"{type(error).__name__}: {error}"}
            _say(f"corral: cannot start torchrun: {launch_error}")
            torchrun_code = 1
    leftovers = signal_gang(spec["gang_id"], signal.SIGKILL)
    with open(spec["log_path"], "rb") as log:
        size = os.fstat(log.fileno()).st_size
        log.seek(max(spec["log_offset"], size - _LOG_TAIL_BYTES))
        text = log.read().decode(errors="replace")
    record = {
        "torchrun_exit_code": torchrun_code,
        **parse_torchrun_log(text),
        "leftovers_killed": len(leftovers),
        "ended_at": time.time(),
        "launch_error": launch_error,
    }
    full = [folder for folder in dict.fromkeys(
        [str(Path(spec["log_path"]).parent), spec.get("cwd")]) if folder and _disk_full(folder)]
    if full:  # what ranks print about it may not have reached the log: say it here
        record["error_lines"] = [*record["error_lines"],
                                 f"No space left on device under {', '.join(full)}"]
    _say(f"corral: torchrun exited {torchrun_code}; killed {len(leftovers)} leftovers")
    _write_record(Path(spec["exit_path"]), record, reserve)
    return shell_code(torchrun_code)


RESERVE_BYTES = 16 * 1024
"""Room kept for the exit record from the start: on a disk that fills up meanwhile, the record
still gets written, and says why the gang ended."""
NEARLY_FULL_BYTES = 1 << 20


def _say(line: str) -> None:
    """A line of the supervisor's own in the log; lost, not fatal, when the disk is full."""
    with contextlib.suppress(OSError):
        print(line, flush=True)


def _reserve(exit_path: Path) -> Path | None:
    """A file of :data:`RESERVE_BYTES` next to the exit record, whose blocks the record can
    reuse; None where even that does not fit."""
    reserve = exit_path.with_name(exit_path.name + ".reserve")
    try:
        fd = os.open(reserve, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, b" " * RESERVE_BYTES)
        finally:
            os.close(fd)
    except OSError:
        reserve.unlink(missing_ok=True)
        return None
    return reserve


def _write_record(path: Path, record: dict[str, Any], reserve: Path | None) -> None:
    """Write the exit record; on a full disk, over the reserved blocks, then rename."""
    try:
        write_json_atomic(path, record)
    except OSError:
        if reserve is None:
            raise
        data = json.dumps(record).encode()[:RESERVE_BYTES]
        fd = os.open(reserve, os.O_WRONLY | os.O_NOFOLLOW)
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)
        os.replace(reserve, path)
    finally:
        if reserve is not None:
            reserve.unlink(missing_ok=True)


def _disk_full(folder: str) -> bool:
    try:
        usage = os.statvfs(folder)
    except OSError:
        return False
    return usage.f_bavail * usage.f_frsize < NEARLY_FULL_BYTES


def main(argv: list[str]) -> int:
    """Fork the supervisor into its own session, print its pid and start time, and return.

    ``argv[1]`` is the private file that holds the supervisor's instructions."""
    spec = json.loads(Path(argv[1]).read_text())
    Path(argv[1]).unlink()  # it holds the job's secret env values: not one moment longer
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        os.setsid()
        log = os.open(spec["log_path"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW,
                      0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        try:
            code = supervise(spec)
        except BaseException:
            traceback.print_exc()  # into the log; the poller reports "supervisor died"
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # never return into the starter's code in the forked child
    stat = proc_stat(pid)  # our child until we exit, so nobody can have reaped it yet
    if stat is None:
        print(f"supervisor {pid} vanished right after fork", file=sys.stderr)
        return 1
    print(json.dumps({"pid": pid, "start_ticks": stat[2]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
