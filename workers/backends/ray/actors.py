"""What runs inside the Ray cluster for one gang: a keeper and one host per rank.

Both are plain classes that :mod:`workers.backends.ray.agent` turns into named, detached Ray
actors in Corral's namespace, so that any scheduler replica can find them again by the gang's
id (``corral-GANG-keeper``, ``corral-GANG-rank-R``):

* :class:`GangKeeper` (no CPU, on the head node where it can be): the gang's combined log,
  rank 0's progress stream and each rank's exit code. It outlives the ranks, so a gang's log
  and events stay readable after its placement group is gone, and ends itself
  :data:`KEEP_S` seconds after the gang ended.
* :class:`RankHost` (one bundle of the gang's placement group): starts its rank as a child
  process (``python -m workers.jobs.run JOB_FILE``, the training core's entry, as under
  torchrun), sends its output to the keeper as it comes and, for rank 0, the progress events
  rank 0 appends to its run folder; signals it on request; reports its exit code.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

MAX_LOG_BYTES = 16 << 20
"""Most bytes of a gang's log the keeper holds; beyond it the oldest half is dropped (offsets
stay those of the whole log)."""
MAX_PROGRESS_BYTES = 64 << 20
"""Most bytes of progress the keeper holds; later events are dropped and said to be."""
KEEP_S = 2 * 24 * 3600.0
"""Seconds a keeper stays after its gang ended: how long the log of a finished attempt can be
read (``corral logs --attempt N``)."""
PUSH_INTERVAL_S = 0.25
"""How often a rank host sends what its rank printed (and rank 0's progress) to the keeper."""
PUSH_BYTES = 256 << 10
_TAIL_BYTES = 256 << 10


class GangKeeper:
    """The record of one gang that outlives its ranks (module docstring)."""

    def __init__(self, gang_id: str, world_size: int, keep_s: float = KEEP_S) -> None:
        self.gang_id = gang_id
        self.world_size = world_size
        self.keep_s = keep_s
        self._lock = threading.Lock()
        self._log = bytearray()
        self._log_base = 0
        self._progress = bytearray()
        self._progress_dropped = 0
        self._exits: dict[int, dict[str, Any]] = {}
        self._ranks: dict[int, dict[str, Any]] = {}
        self._marks: dict[str, Any] = {}
        self._status: dict[str, Any] | None = None

    def append_log(self, data: bytes) -> None:
        with self._lock:
            self._log += data
            if len(self._log) > MAX_LOG_BYTES:
                drop = len(self._log) - MAX_LOG_BYTES // 2
                del self._log[:drop]
                self._log_base += drop

    def append_progress(self, data: bytes) -> None:
        with self._lock:
            if len(self._progress) + len(data) > MAX_PROGRESS_BYTES:
                self._progress_dropped += len(data)
                return
            self._progress += data

    def rank_started(self, rank: int, where: dict[str, Any]) -> None:
        with self._lock:
            self._ranks[rank] = where

    def rank_exited(self, rank: int, code: int) -> None:
        with self._lock:
            self._exits.setdefault(rank, {"code": code, "at": time.time()})

    def mark(self, fields: dict[str, Any]) -> None:
        """Note what the scheduler did to the gang (a cancel and its grace, a kill)."""
        with self._lock:
            self._marks.update(fields)

    def finish(self, status: dict[str, Any]) -> dict[str, Any]:
        """Record the gang's fate once (the first caller's stands) and return it; the keeper
        ends itself :attr:`keep_s` seconds later."""
        with self._lock:
            if self._status is None:
                self._status = status
                timer = threading.Timer(self.keep_s, os._exit, args=(0,))
                timer.daemon = True
                timer.start()
            return self._status

    def state(self) -> dict[str, Any]:
        with self._lock:
            tail = bytes(self._log[-_TAIL_BYTES:]).decode(errors="replace")
            return {"world_size": self.world_size, "exits": dict(self._exits),
                    "ranks": dict(self._ranks), "marks": dict(self._marks),
                    "status": self._status, "log_tail": tail,
                    "progress_dropped": self._progress_dropped}

    def read_log(self, offset: int, max_bytes: int) -> tuple[bytes, int]:
        with self._lock:
            size = self._log_base + len(self._log)
            start = max(offset, self._log_base) - self._log_base
            return bytes(self._log[start:start + max_bytes]), size

    def read_progress(self, cursor: int, max_bytes: int) -> bytes:
        with self._lock:
            return bytes(self._progress[cursor:cursor + max_bytes])


class RankHost:
    """Runs one rank of a gang as a child process in its bundle (module docstring)."""

    def __init__(self, gang_id: str, rank: int, keeper: Any) -> None:
        self.gang_id = gang_id
        self.rank = rank
        self.keeper = keeper
        self.process: subprocess.Popen[bytes] | None = None
        self._pump: threading.Thread | None = None
        self._progress_start = 0
        """Size of rank 0's progress file when its rank started: the stream starts there."""
        self._start_error = ""

    def ping(self) -> bool:
        return True

    def where(self) -> dict[str, Any]:
        """The node this rank runs on (its Ray id and address) and the GPUs Ray gave it."""
        import ray

        context = ray.get_runtime_context()
        return {"node_id": context.get_node_id(), "ip": ray.util.get_node_ip_address(),
                "gpu_ids": [str(gpu) for gpu in ray.get_gpu_ids()], "pid": os.getpid()}

    def free_port(self) -> int:
        """A port free on this node now, for the gang's rendezvous (rank 0 only)."""
        with socket.socket() as probe:
            probe.bind(("", 0))
            return int(probe.getsockname()[1])

    def start(self, spec: dict[str, Any]) -> int:
        """Write the job file, start the rank and its pump; return the rank's pid.

        ``spec``: module, job_env (the job's variables), user, gang_env (RANK, WORLD_SIZE,
        MASTER_ADDR, ...), cwd (the run folder), job_file (path) and job (the JobFile's
        fields), uid and gid (used only where this host runs as root), progress_path (rank 0).
        The rank's environment is built here, from this node's, by the local backend's
        allowlist (:func:`workers.backends.environment.rank_environment`): nothing of Ray's
        own (its addresses, its session) reaches the job."""
        import ray

        from scheduler.gangs.backend import file_size
        from scheduler.gangs.protocol import JobFile, JobIdentity
        from workers.backends.environment import prepare_run_dir, rank_environment

        uid, gid = spec.get("uid"), spec.get("gid")
        as_other = uid is not None and os.geteuid() == 0
        owner = JobIdentity(uid, gid, "") if as_other else None
        cwd = spec["cwd"]
        prepare_run_dir(Path(cwd), owner)  # as the local backend does
        if spec.get("job") is not None:
            JobFile(**spec["job"]).write(Path(spec["job_file"]), owner=owner)
        env = rank_environment(os.environ, spec["job_env"], home=cwd, python=sys.executable,
                               user=spec.get("user"))
        env.update(spec["gang_env"])
        gpus = [str(gpu) for gpu in ray.get_gpu_ids()]
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        progress = spec.get("progress_path") or ""
        self._progress_start = file_size(Path(progress)) if progress else 0
        command = [sys.executable, "-m", spec["module"], spec["job_file"]]
        options = {"env": env, "cwd": cwd, "uid": uid if as_other else None,
                   "gid": gid if as_other else None}
        started = threading.Event()
        self._pump = threading.Thread(target=self._run, args=(command, options, spec, started),
                                      daemon=True, name=f"rank-{self.rank}")
        self._pump.start()
        started.wait()
        if self.process is None:
            raise RuntimeError(f"rank {self.rank} did not start: {self._start_error}")
        ray.get(self.keeper.rank_started.remote(self.rank, {**self.where(),
                                                            "rank_pid": self.process.pid}))
        return self.process.pid

    def signal(self, signum: int) -> bool:
        """Send ``signum`` to the rank's process group; False if it already ended."""
        process = self.process
        if process is None or process.poll() is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
        return True

    def _run(self, command: list[str], options: dict[str, Any], spec: dict[str, Any],
             started: threading.Event) -> None:
        """Start the rank from this thread, which lives as long as the rank: the rank is
        killed by the kernel when it ends (PR_SET_PDEATHSIG), so a rank host that dies (its
        node lost, its actor killed) leaves no rank running on."""
        as_other = options["uid"] is not None
        try:
            self.process = subprocess.Popen(
                command, env=options["env"], cwd=options["cwd"], stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                user=options["uid"], group=options["gid"],
                extra_groups=[] if as_other else None, umask=0o077,
                preexec_fn=_die_with_parent)
        except OSError as error:
            self._start_error = f"{type(error).__name__}: {error}"
            started.set()
            return
        started.set()
        self._forward(spec)

    def _forward(self, spec: dict[str, Any]) -> None:
        """Send output and progress to the keeper until the rank exits, then its exit code
        (after the last of both, so an ended gang's events are complete)."""
        import ray

        process = self.process
        assert process is not None and process.stdout is not None
        progress = spec.get("progress_path") or ""
        position = self._progress_start
        stream = process.stdout.fileno()
        os.set_blocking(stream, False)
        pending = bytearray()
        last_push = time.monotonic()
        open_stream = True
        while open_stream:
            try:
                chunk = os.read(stream, PUSH_BYTES)
                open_stream = bool(chunk)
                pending += chunk
            except BlockingIOError:
                time.sleep(0.05)
            now = time.monotonic()
            if pending and (len(pending) >= PUSH_BYTES or now - last_push >= PUSH_INTERVAL_S
                            or not open_stream):
                ray.get(self.keeper.append_log.remote(bytes(pending)))
                pending.clear()
            if progress and (now - last_push >= PUSH_INTERVAL_S or not open_stream):
                position = self._forward_progress(progress, position)
            if now - last_push >= PUSH_INTERVAL_S:
                last_push = now
        code = process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # what the rank left behind
        if progress:
            self._forward_progress(progress, position)
        ray.get(self.keeper.rank_exited.remote(self.rank, code))

    def _forward_progress(self, path: str, position: int) -> int:
        import ray

        from scheduler.gangs.protocol import read_progress_bytes

        data = read_progress_bytes(Path(path), position)
        if data:
            ray.get(self.keeper.append_progress.remote(data))
        return position + len(data)


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)
_PRCTL = _LIBC.prctl
"""Looked up before any fork: the child between fork and exec runs only the call itself."""


def _die_with_parent() -> None:
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)

