"""The local backend: a gang is one ``torchrun`` on this machine, watched by a supervisor.

Process tree of one gang (Linux only: liveness and membership are read from ``/proc``)::

    supervisor   python -m workers.backends.local_supervisor   own session; pgid = its pid
    └── torchrun python -m torch.distributed.run   --max-restarts 0, in the supervisor's group
        ├── rank 0   python -m MODULE JOB_FILE     torchrun puts each rank in its own session
        └── rank 1 …

The handle holds the supervisor's pid and start time (to tell it from a reused pid), the
paths of the log, the exit record and the cancel marker (all next to each other), and the
gang's tag (:data:`~workers.backends.local_supervisor.GANG_ENV`). With it any process on this
machine can poll or cancel the gang, and the exit record outlives a scheduler restart.

Cancel SIGTERMs the supervisor's group; torchrun forwards SIGTERM to every rank's group
(measured: it does, then exits 1). After ``grace_s`` whatever still carries the gang's tag is
SIGKILLed, ranks included, since a signal to torchrun's group does not reach them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scheduler.domain.capabilities import capabilities_of
from scheduler.domain.errors import BackendError, LaunchRefusedError
from scheduler.gangs.backend import GangPhase, GangStatus, file_size, read_log_file
from scheduler.gangs.events import ProgressEvent, read_events
from scheduler.gangs.protocol import (
    EXIT_PREEMPTED,
    PROGRESS_FILE,
    LaunchRequest,
)
from workers.backends.environment import (
    prepare_run_dir,
    rank_environment,
    service_environment,
)
from workers.backends.fates import cancelled_status, describe_exit, spec_error_status
from workers.backends.local_supervisor import (
    GANG_ENV,
    gang_pids,
    proc_stat,
    shell_code,
    signal_gang,
    write_json_atomic,
)

logger = logging.getLogger(__name__)

_LAUNCH_TIMEOUT_S = 30.0
_KILL_WAIT_S = 5.0
_WAIT_STEP_S = 0.05
_ERROR_LINES = 3
_TORCHRUN_FLAGS = ("--standalone", "--nnodes", "1", "--max-restarts", "0")
_TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.ENOMEM, errno.EINTR})
"""Errors starting torchrun that a later attempt may not meet (fork under memory pressure)."""


@dataclass(frozen=True, slots=True)
class LocalInventory:
    """What this machine offers to a local pool."""

    cpu_devices: int
    """Rank slots of a CPU pool: the CPUs this process may run on."""
    cuda_devices: int


@dataclass(frozen=True, slots=True)
class _Gang:
    """Everything needed to find a gang again; serialised as the handle."""

    pid: int
    start_ticks: int
    pgid: int
    gang_id: str
    world_size: int
    log_path: str
    exit_path: str
    cancel_path: str
    progress_path: str = ""
    """The job's progress file in its run folder ("" in handles made before it was kept)."""
    progress_start: int = 0
    """The file's size when the gang started: cursor 0 of its progress stream."""

    def to_handle(self) -> str:
        return json.dumps({"backend": "local", **asdict(self)})

    @classmethod
    def from_handle(cls, handle: str) -> _Gang:
        try:
            fields = json.loads(handle)
            if fields.pop("backend") != "local":
                raise ValueError("backend is not 'local'")
            return cls(**fields)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise BackendError(f"not a local backend handle: {handle!r} ({error})") from error


class LocalBackend:
    """Runs each gang as ``torchrun --standalone`` on this machine (CPU/gloo, or its GPUs)."""

    name = "local"
    capabilities = capabilities_of("local")

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python

    def launch(self, request: LaunchRequest) -> str:
        """Start the supervisor, which starts torchrun; return the gang's handle.

        The log's folder belongs to the service (the ranks cannot write there); the ranks run
        in ``request.run_dir`` as ``request.identity`` with an environment built from an
        allowlist (:mod:`workers.backends.environment`). The supervisor's instructions go in a
        private file next to the log, not on a command line that every user's ``ps`` shows."""
        if request.nodes != 1 or request.world_size < 1:
            raise BackendError(
                f"the local backend runs 1 node with >= 1 rank; got nodes={request.nodes}, "
                f"world_size={request.world_size}"
            )
        log_path = Path(request.log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        exit_path, cancel_path = Path(f"{log_path}.exit.json"), Path(f"{log_path}.cancel.json")
        # A relaunch may reuse the log path: stale records would end the new gang at once.
        exit_path.unlink(missing_ok=True)
        cancel_path.unlink(missing_ok=True)
        log_offset = log_path.stat().st_size if log_path.exists() else 0
        job_file = request.job_file
        if request.job is not None:
            job_file = str(self._write_job_file(request))
        progress = Path(request.run_dir) / PROGRESS_FILE if request.run_dir else None
        progress_start = file_size(progress) if progress is not None else 0
        gang_id = uuid.uuid4().hex
        try:
            ranks = self._rank_environment(request, gang_id)
        except ValueError as error:
            raise LaunchRefusedError(str(error)) from None
        identity = request.identity
        spec = {
            "command": self._torchrun_command(request, job_file),
            "log_path": str(log_path),
            "log_offset": log_offset,
            "exit_path": str(exit_path),
            "gang_id": gang_id,
            "env": ranks,
            "cwd": request.run_dir or None,
            "uid": identity.uid if identity else None,
            "gid": identity.gid if identity else None,
        }
        spec_path = Path(f"{log_path}.launch.json")
        write_json_atomic(spec_path, spec)
        environment = {**service_environment(os.environ, self.python), GANG_ENV: gang_id}
        started = self._start_supervisor(spec_path, environment)
        return _Gang(
            pid=started["pid"],
            start_ticks=started["start_ticks"],
            pgid=started["pid"],
            gang_id=gang_id,
            world_size=request.world_size,
            log_path=str(log_path),
            exit_path=str(exit_path),
            cancel_path=str(cancel_path),
            progress_path=str(progress) if progress is not None else "",
            progress_start=progress_start,
        ).to_handle()

    def poll(self, handle: str) -> GangStatus:
        """Where the gang is now, from its exit record, its cancel marker and ``/proc``."""
        gang = _Gang.from_handle(handle)
        record = _read_json(gang.exit_path)
        if record is None:
            if _alive(gang.pid, gang.start_ticks):
                return GangStatus(GangPhase.RUNNING)
            # The supervisor may have written its record just before exiting.
            record = _read_json(gang.exit_path)
        leftovers: list[int] = []
        if record is None:
            # Nobody will write a record now; leftover ranks would hold devices forever.
            leftovers = signal_gang(gang.gang_id, signal.SIGKILL)
        marker = _read_json(gang.cancel_path)
        if marker is not None:
            # Ranks' own exit codes are unknown here: a SIGTERMed torchrun prints no failure
            # summary. Whether they checkpointed is in progress.jsonl (the "preempted" event).
            return cancelled_status(marker)
        if record is None:
            detail = f"; killed {len(leftovers)} leftover processes" if leftovers else ""
            return GangStatus(GangPhase.FAILED, None, f"supervisor died without a record{detail}")
        return _ended_status(gang, record)

    def cancel(self, handle: str, grace_s: float = 30.0) -> None:
        """SIGTERM the gang (torchrun forwards it to the ranks); after grace, SIGKILL the rest."""
        gang = _Gang.from_handle(handle)
        if Path(gang.exit_path).exists():
            return  # it ended on its own; that fate stands
        marker = {"requested_at": time.time(), "grace_s": grace_s, "killed": False}
        write_json_atomic(Path(gang.cancel_path), marker)
        if _alive(gang.pid, gang.start_ticks):
            _signal_group(gang.pgid, signal.SIGTERM)
        else:
            signal_gang(gang.gang_id, signal.SIGTERM)  # orphaned ranks of a dead supervisor
        if _wait_gone(gang, grace_s):
            return
        logger.warning(
            "gang %s still running %.1f s after SIGTERM; sending SIGKILL", gang.gang_id, grace_s
        )
        write_json_atomic(Path(gang.cancel_path), {**marker, "killed": True})
        signal_gang(gang.gang_id, signal.SIGKILL)
        if not _wait_gone(gang, _KILL_WAIT_S):
            left = gang_pids(gang.gang_id)
            raise BackendError(
                f"gang {gang.gang_id} processes {left} survived SIGKILL "
                f"for {_KILL_WAIT_S} s (stuck in the kernel?)"
            )

    def preempt(self, handle: str) -> None:
        """SIGTERM the gang without waiting (the ranks checkpoint and exit 75)."""
        gang = _Gang.from_handle(handle)
        if Path(gang.exit_path).exists():
            return  # it ended on its own; that fate stands
        if _alive(gang.pid, gang.start_ticks):
            _signal_group(gang.pgid, signal.SIGTERM)
        else:
            signal_gang(gang.gang_id, signal.SIGTERM)

    def read_log(self, handle: str, offset: int, max_bytes: int) -> tuple[bytes, int]:
        """A piece of the gang's combined log (supervisor, torchrun and every rank) and its
        size now."""
        return read_log_file(Path(_Gang.from_handle(handle).log_path), offset, max_bytes)

    def events(self, handle: str, cursor: int) -> tuple[list[ProgressEvent], int]:
        """Rank 0's progress events after ``cursor`` of the gang's progress: the bytes of the
        job's progress file this gang appended (the file is the job's, all attempts')."""
        gang = _Gang.from_handle(handle)
        if not gang.progress_path:
            return [], cursor
        events, after = read_events(Path(gang.progress_path), gang.progress_start + cursor)
        return events, after - gang.progress_start

    def inventory(self) -> LocalInventory:
        """CPU rank slots and CUDA devices of this machine (imports torch only here)."""
        cpu_devices = len(os.sched_getaffinity(0)) or os.cpu_count() or 1
        try:
            import torch
        except ImportError:
            return LocalInventory(cpu_devices, 0)
        cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return LocalInventory(cpu_devices, cuda_devices)

    def cpu_device_peak_flops(self, devices: int) -> float:
        """Peak FLOP/s one device of a ``devices``-device CPU pool on this machine gets.

        A CPU device is a rank slot: the ranks of a full pool share the cores evenly
        (:func:`workers.core.distributed.cpu_threads_per_rank`), so this times the rank's GEMM
        benchmark (:func:`workers.core.utilization.measure_cpu_peak`, the one ranks time for
        MFU) on that many threads. Imports torch here only; about a quarter of a second.
        """
        import torch

        from workers.core.distributed import cpu_threads_per_rank
        from workers.core.utilization import measure_cpu_peak

        previous = torch.get_num_threads()
        torch.set_num_threads(cpu_threads_per_rank(devices))
        try:
            return measure_cpu_peak()
        finally:
            torch.set_num_threads(previous)

    def _write_job_file(self, request: LaunchRequest) -> Path:
        """Make the job's run folder (its ranks' own) and write its job file there.

        With another identity for the ranks, the runs folder lets them pass (0711: no listing)
        and the run folder becomes theirs (0700); the job file is written without following a
        link they may have planted (:meth:`JobFile.write`)."""
        assert request.job is not None
        run_dir = Path(request.run_dir or request.job.run_dir)
        prepare_run_dir(run_dir, request.identity)
        path = run_dir / f"attempt-{request.attempt}.json"
        request.job.write(path, owner=request.identity)
        return path

    def _torchrun_command(self, request: LaunchRequest, job_file: str) -> list[str]:
        ranks = ["--nproc-per-node", str(request.world_size)]
        program = ["-m", request.module, job_file]
        return [self.python, "-m", "torch.distributed.run", *_TORCHRUN_FLAGS, *ranks, *program]

    def _rank_environment(self, request: LaunchRequest, gang_id: str) -> dict[str, str]:
        identity = request.identity
        # A program that is not a Corral job (no run folder) gets its log's folder: never the
        # working folder of whoever launched it.
        home = request.run_dir or str(Path(request.log_path).parent)
        env = rank_environment(os.environ, request.env, home=home,
                               python=self.python,
                               user=identity.name if identity is not None else None)
        env[GANG_ENV] = gang_id
        devices = [index for indexes in request.devices.values() for index in indexes]
        if devices:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(index) for index in devices)
        return env

    def _start_supervisor(self, spec_path: Path, env: dict[str, str]) -> dict[str, int]:
        # The starter forks the supervisor and exits at once, so the supervisor is nobody's
        # child here: no zombie to reap, and it is reached the same way after a restart.
        command = [self.python, "-m", "workers.backends.local_supervisor", str(spec_path)]
        try:
            done = subprocess.run(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_LAUNCH_TIMEOUT_S,
            )
        except (OSError, subprocess.SubprocessError) as error:
            raise BackendError(
                f"cannot start the local supervisor with {self.python!r}: {error}"
            ) from error
        if done.returncode != 0:
            tail = " | ".join(done.stderr.strip().splitlines()[-_ERROR_LINES:])
            raise BackendError(
                f"the local supervisor failed to start (exit code "
                f"{done.returncode}): {tail or 'no output'}"
            )
        started: dict[str, int] = json.loads(done.stdout)
        return started


def _ended_status(gang: _Gang, record: dict[str, Any]) -> GangStatus:
    """The fate of a gang that ended on its own, from the supervisor's exit record."""
    torchrun_code: int = record["torchrun_exit_code"]
    ranks = {int(rank): code for rank, code in record["rank_exit_codes"].items()}
    errors = "; ".join(record["error_lines"])
    if torchrun_code == 0:
        return GangStatus(GangPhase.SUCCEEDED, 0, "all ranks exited 0")
    launch_error = record.get("launch_error")
    if launch_error:
        transient = launch_error.get("errno") in _TRANSIENT_ERRNOS
        return GangStatus(GangPhase.FAILED, 1, f"could not start the ranks: "
                          f"{launch_error.get('message')}", retryable=transient)
    wrong = spec_error_status(ranks, errors)
    if wrong is not None:
        return wrong
    if _preempted(ranks, gang.world_size):
        reason = f"all {gang.world_size} ranks exited {EXIT_PREEMPTED} after checkpointing"
        return GangStatus(GangPhase.PREEMPTED, EXIT_PREEMPTED, reason)
    root = record["root_cause_rank"]
    if root is not None and root in ranks:
        code, what = ranks[root], f"rank {root} {describe_exit(ranks[root])}"
    else:
        code, what = torchrun_code, f"torchrun {describe_exit(torchrun_code)}"
    reason = f"{what}: {errors}" if errors else what
    return GangStatus(GangPhase.FAILED, shell_code(code), reason)


def _preempted(ranks: dict[int, int], world_size: int) -> bool:
    # Ranks torchrun SIGTERMed after the first one exited 75 are part of the same preemption.
    return (
        len(ranks) == world_size
        and EXIT_PREEMPTED in ranks.values()
        and set(ranks.values()) <= {EXIT_PREEMPTED, -signal.SIGTERM}
    )


def _alive(pid: int, start_ticks: int) -> bool:
    """Whether the process still runs; reaps it if it is a zombie child of this process."""
    stat = proc_stat(pid)
    if stat is None or stat[2] != start_ticks:
        return False  # gone, or the pid now belongs to another process
    state, parent, _ = stat
    if state not in ("Z", "X"):
        return True
    if parent == os.getpid():
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    return False


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _wait_gone(gang: _Gang, timeout_s: float) -> bool:
    """Wait until no process of the gang is left; False if some still run after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        _alive(gang.pid, gang.start_ticks)  # reaps the supervisor if it is our zombie
        if not gang_pids(gang.gang_id):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_WAIT_STEP_S)


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        value: dict[str, Any] = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    return value
