"""The Ray backend: a gang is a placement group of a Ray cluster, one bundle and actor per rank.

What runs where:

* in the scheduler process, :class:`RayBackend` (this module; it never imports ``ray``);
* in a child process of it, the Ray driver (:mod:`workers.backends.ray.agent`), spoken to one
  JSON line a request, each with a timeout: a cluster that goes away makes calls fail with
  :class:`~scheduler.domain.errors.BackendUnavailableError` in seconds instead of blocking the
  scheduler inside Ray's client;
* in the cluster, per gang, a keeper actor and one rank host actor per rank
  (:mod:`workers.backends.ray.actors`), named after the gang, detached: any replica of the
  scheduler that reaches the same cluster polls, reads and cancels a gang another one launched
  (the handle names the gang).

Each rank host starts ``python -m workers.jobs.run JOB_FILE`` as torchrun would (RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT of rank 0's node), so the training core is the local
backend's. The gang's log and rank 0's progress events reach the scheduler through the keeper,
not through a shared disk. Checkpoints are written to the job's run folder on the ranks' nodes:
a job resumes on another node only where that folder is on storage every node mounts
(docs/ray.md).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from scheduler.domain.capabilities import capabilities_of
from scheduler.domain.errors import BackendError, BackendUnavailableError, LaunchRefusedError
from scheduler.gangs.backend import GangPhase, GangStatus, NodeReport
from scheduler.gangs.events import ProgressEvent, events_in
from scheduler.gangs.protocol import (
    EXIT_PREEMPTED,
    MAX_PROGRESS_READ_BYTES,
    PROGRESS_FILE,
    LaunchRequest,
)
from workers.backends.environment import rank_environment, service_environment
from workers.backends.fates import cancelled_status, describe_exit, spec_error_status
from workers.backends.local_supervisor import parse_torchrun_log, shell_code

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 30.0
"""Seconds the driver process may take to connect to the cluster."""
CALL_TIMEOUT_S = 30.0
"""Seconds one request to the driver may take (a launch: :data:`LAUNCH_TIMEOUT_S`)."""
LAUNCH_TIMEOUT_S = 150.0
RETRY_AFTER_S = 15.0
"""Seconds after the cluster was found unreachable during which calls fail at once with the
same error instead of trying again (a down cluster must not slow every tick)."""
STOP_GRACE_S = 30.0
"""Seconds the other ranks get to checkpoint and exit after one rank ended the gang (what
torchrun does for the local backend), before they are killed."""
_WAIT_STEP_S = 0.2
_KILL_WAIT_S = 10.0


@dataclass(frozen=True, slots=True)
class _Gang:
    gang: str
    world_size: int
    address: str
    nodes: tuple[str, ...] = ()
    """Ids of the Ray nodes its ranks were placed on (for people; polls ask the cluster)."""

    def to_handle(self) -> str:
        return json.dumps({"backend": "ray", "gang": self.gang, "world_size": self.world_size,
                           "address": self.address, "nodes": list(self.nodes)})

    @classmethod
    def from_handle(cls, handle: str) -> _Gang:
        try:
            fields = json.loads(handle)
            if fields.pop("backend") != "ray":
                raise ValueError("backend is not 'ray'")
            return cls(str(fields["gang"]), int(fields["world_size"]), str(fields["address"]),
                       tuple(str(node) for node in fields.get("nodes", ())))
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise BackendError(f"not a ray backend handle: {handle!r} ({error})") from error


class RayBackend:
    """Runs gangs on the Ray cluster at ``address`` (module docstring)."""

    name = "ray"
    capabilities = capabilities_of("ray")

    def __init__(self, address: str, python: str = sys.executable,
                 keep_s: float | None = None) -> None:
        self.address = address
        self.python = python
        self.keep_s = keep_s
        """Seconds a finished gang's log stays readable (None: the keeper's default)."""
        self._lock = threading.Lock()
        self._agent: subprocess.Popen[str] | None = None
        self._next_id = 0
        self._down_until = 0.0
        self._down_reason = ""

    # --- the Backend protocol -------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> str:
        """Place and start the gang; its handle names it on this cluster."""
        if request.world_size < 1:
            raise BackendError(f"a gang needs >= 1 rank; got {request.world_size}")
        accelerator = request.accelerator.lower()
        bundle: dict[str, float] = {"CPU": 1.0}
        if accelerator not in ("", "cpu"):
            bundle["GPU"] = 1.0
        strategy = "STRICT_PACK" if request.nodes == 1 else "PACK"
        run_dir = request.run_dir or (request.job.run_dir if request.job else "")
        if not run_dir:
            raise BackendError("a Ray gang needs a run folder (LaunchRequest.run_dir)")
        user = request.identity.name if request.identity else None
        try:  # refused here, before anything is placed; built again on each rank's node
            rank_environment(os.environ, request.env, home=run_dir, python=self.python,
                             user=user)
        except ValueError as error:
            raise LaunchRefusedError(str(error)) from None
        specs = []
        for rank in range(request.world_size):
            job_file = request.job_file or str(
                Path(run_dir) / f"attempt-{request.attempt}.rank-{rank}.json")
            specs.append({
                "module": request.module, "job_env": dict(request.env), "user": user,
                "cwd": run_dir, "job_file": job_file,
                "job": asdict(request.job) if request.job is not None else None,
                "uid": request.identity.uid if request.identity else None,
                "gid": request.identity.gid if request.identity else None,
                "progress_path": str(Path(run_dir) / PROGRESS_FILE) if rank == 0 else "",
            })
        args: dict[str, Any] = {"bundle": bundle, "world_size": request.world_size,
                                "strategy": strategy, "specs": specs}
        if self.keep_s is not None:
            args["keep_s"] = self.keep_s
        placed = self._call("launch", args, timeout_s=LAUNCH_TIMEOUT_S)
        return _Gang(placed["gang"], request.world_size, self.address,
                     tuple(placed["nodes"])).to_handle()

    def poll(self, handle: str) -> GangStatus:
        """Where the gang is: its fate once recorded; else from its ranks' exits and hosts.

        A rank that failed (a non-zero exit while others run) makes the others stop: SIGTERM,
        then SIGKILL after :data:`STOP_GRACE_S`, as torchrun does; ranks that finished wait for
        the others to finish too. A rank host that died (its node went away)
        fails the gang, naming the node; the others are killed."""
        gang = _Gang.from_handle(handle)
        state = self._state(gang)
        if state.get("missing"):
            # Its ranks may run on without their record: nothing of the gang may be left.
            self._call("forget", {"gang": gang.gang})
            why = f": {state['why']}" if state.get("why") else ""
            return GangStatus(GangPhase.FAILED, None, f"gang {gang.gang} is not on the Ray "
                              f"cluster at {self.address} (the cluster restarted, its record "
                              f"expired, or the head node lost it){why}")
        if state["status"] is not None:
            return _status_of(state["status"])
        exits = {int(rank): int(end["code"]) for rank, end in state["exits"].items()}
        dead = {int(rank): why for rank, why in state["dead"].items()}
        if dead:
            rank, why = min(dead.items())
            where = state["ranks"].get(str(rank)) or {}
            node = where.get("node_id", "?")
            status = GangStatus(GangPhase.FAILED, None,
                                f"rank {rank} lost on Ray node {node[:12]} "
                                f"({where.get('ip', '?')}): {why}")
            self._signal(gang, signal.SIGKILL)
            return self._finish(gang, status)
        if len(exits) == gang.world_size:
            return self._finish(gang, _ended(state, exits, gang.world_size))
        if any(code != 0 for code in exits.values()):  # not a rank that finished first
            self._stop_others(gang, state)
        return GangStatus(GangPhase.RUNNING)

    def cancel(self, handle: str, grace_s: float = 30.0) -> None:
        """SIGTERM every rank; after ``grace_s`` SIGKILL what still runs; record it cancelled."""
        gang = _Gang.from_handle(handle)
        state = self._state(gang)
        if state.get("missing") or state["status"] is not None:
            return
        marker = {"requested_at": time.time(), "grace_s": grace_s, "killed": False}
        self._call("mark", {"gang": gang.gang, "fields": {"cancel": marker}})
        self._signal(gang, signal.SIGTERM)
        if not self._wait_exited(gang, grace_s):
            logger.warning("ray gang %s still running %.1f s after SIGTERM; killing it",
                           gang.gang, grace_s)
            self._call("mark", {"gang": gang.gang, "fields": {"cancel": {**marker,
                                                                         "killed": True}}})
            self._signal(gang, signal.SIGKILL)
            self._wait_exited(gang, _KILL_WAIT_S)
        self.poll(handle)  # records the fate and gives the bundles back

    def preempt(self, handle: str) -> None:
        """SIGTERM every rank and return: they checkpoint and exit 75."""
        gang = _Gang.from_handle(handle)
        self._signal(gang, signal.SIGTERM)

    def read_log(self, handle: str, offset: int, max_bytes: int) -> tuple[bytes, int]:
        gang = _Gang.from_handle(handle)
        got = self._call("read_log", {"gang": gang.gang, "offset": max(offset, 0),
                                      "max_bytes": max(max_bytes, 0)})
        return base64.b64decode(got["data"]), int(got["size"])

    def events(self, handle: str, cursor: int) -> tuple[list[ProgressEvent], int]:
        """Rank 0's progress after ``cursor`` of the gang's progress stream (0 at its start)."""
        gang = _Gang.from_handle(handle)
        got = self._call("read_progress", {"gang": gang.gang, "cursor": max(cursor, 0),
                                           "max_bytes": MAX_PROGRESS_READ_BYTES})
        return events_in(base64.b64decode(got["data"]), cursor)

    # --- the cluster ------------------------------------------------------------------------

    def nodes(self) -> list[NodeReport]:
        """Every node of the cluster that has devices, alive or not, as pools see it: named
        ``ray-`` and the first 12 of its id; its GPUs by Ray's accelerator type, or its CPUs
        (a CPU pool) where it has no GPU."""
        return [_node(raw) for raw in self._call("nodes", {})]

    def close(self) -> None:
        """Stop the driver process (gangs run on: they are the cluster's)."""
        with self._lock:
            self._stop_agent()

    # --- helpers ----------------------------------------------------------------------------

    def _finish(self, gang: _Gang, status: GangStatus) -> GangStatus:
        fields = {"phase": status.phase.value, "exit_code": status.exit_code,
                  "reason": status.reason, "retryable": status.retryable}
        return _status_of(self._call("finish", {"gang": gang.gang, "status": fields}))

    def _stop_others(self, gang: _Gang, state: dict[str, Any]) -> None:
        stopping = state["marks"].get("stopping_since")
        if stopping is None:
            self._call("mark", {"gang": gang.gang, "fields": {"stopping_since": time.time()}})
            self._signal(gang, signal.SIGTERM)
        elif time.time() - float(stopping) > STOP_GRACE_S:
            self._signal(gang, signal.SIGKILL)

    def _state(self, gang: _Gang) -> dict[str, Any]:
        """The keeper's record of the gang and which unexited ranks' hosts are dead
        (:meth:`~workers.backends.ray.agent.Agent.state`)."""
        result: dict[str, Any] = self._call("state", {"gang": gang.gang,
                                                      "world_size": gang.world_size})
        return result

    def _signal(self, gang: _Gang, signum: signal.Signals) -> None:
        self._call("signal", {"gang": gang.gang, "world_size": gang.world_size,
                              "signum": int(signum)})

    def _wait_exited(self, gang: _Gang, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            state = self._state(gang)
            if state.get("missing") or state["status"] is not None:
                return True
            if len(state["exits"]) + len(state["dead"]) >= gang.world_size:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_WAIT_STEP_S)

    def _call(self, op: str, args: dict[str, Any], timeout_s: float | None = None) -> Any:
        """One request to the driver process; BackendUnavailableError when the cluster cannot
        be reached or the request runs over ``timeout_s`` (the driver is then restarted)."""
        with self._lock:
            if time.monotonic() < self._down_until:
                raise BackendUnavailableError(self._down_reason)
            agent = self._ensure_agent()
            self._next_id += 1
            request = {"id": self._next_id, "op": op, "args": args}
            timeout_s = CALL_TIMEOUT_S if timeout_s is None else timeout_s
            assert agent.stdin is not None and agent.stdout is not None
            try:
                agent.stdin.write(json.dumps(request) + "\n")
                agent.stdin.flush()
                line = _read_line(agent.stdout, timeout_s)
            except (OSError, TimeoutError) as error:
                self._stop_agent()
                raise self._down(f"the Ray cluster at {self.address} did not answer "
                                 f"{op} within {timeout_s:.0f} s ({error})") from None
            answer = json.loads(line)
        if answer.get("ok"):
            return answer["result"]
        if answer.get("kind") == "unplaced":
            raise BackendUnavailableError(answer["error"])
        raise BackendError(f"Ray cluster at {self.address}: {op} failed: {answer['error']}")

    def _ensure_agent(self) -> subprocess.Popen[str]:
        if self._agent is not None and self._agent.poll() is None:
            return self._agent
        self._stop_agent()
        env = {**service_environment(os.environ, self.python),
               **{name: value for name, value in os.environ.items()
                  if name.startswith("RAY_")}}
        command = [self.python, "-m", "workers.backends.ray.agent", self.address]
        try:
            agent = subprocess.Popen(command, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1,
                                     start_new_session=True)
        except OSError as error:
            raise BackendError(f"cannot start the Ray driver with {self.python!r}: "
                               f"{error}") from error
        assert agent.stdout is not None
        try:
            hello = json.loads(_read_line(agent.stdout, CONNECT_TIMEOUT_S))
        except (OSError, TimeoutError, ValueError) as error:
            _kill(agent)
            raise self._down(f"cannot reach the Ray cluster at {self.address} within "
                             f"{CONNECT_TIMEOUT_S:.0f} s ({error or 'no answer'}); is it up, "
                             f"and is `ray` installed here (pip install 'corral[ray]')?") \
                from None
        if not hello.get("ready"):
            _kill(agent)
            raise self._down(f"cannot connect to the Ray cluster at {self.address}: "
                             f"{hello.get('error')}")
        self._agent = agent
        return agent

    def _down(self, reason: str) -> BackendUnavailableError:
        self._down_until = time.monotonic() + RETRY_AFTER_S
        self._down_reason = reason
        logger.warning("%s", reason)
        return BackendUnavailableError(reason)

    def _stop_agent(self) -> None:
        if self._agent is not None:
            _kill(self._agent)
            self._agent = None


def _ended(state: dict[str, Any], exits: dict[int, int], world_size: int) -> GangStatus:
    """The fate of a gang all of whose ranks exited."""
    cancel = state["marks"].get("cancel")
    if cancel is not None:
        return cancelled_status(cancel)
    codes = set(exits.values())
    if codes == {0}:
        return GangStatus(GangPhase.SUCCEEDED, 0, "all ranks exited 0")
    errors = "; ".join(parse_torchrun_log(state.get("log_tail", ""))["error_lines"])
    wrong = spec_error_status(exits, errors)
    if wrong is not None:
        return wrong
    if EXIT_PREEMPTED in codes and codes <= {EXIT_PREEMPTED, -signal.SIGTERM, 0}:
        return GangStatus(GangPhase.PREEMPTED, EXIT_PREEMPTED,
                          f"all {world_size} ranks stopped after checkpointing")
    first = min((end["at"], int(rank)) for rank, end in state["exits"].items()
                if int(end["code"]) != 0)[1]
    where = (state["ranks"].get(str(first)) or {}).get("node_id", "?")[:12]
    what = f"rank {first} {describe_exit(exits[first])} on Ray node {where}"
    return GangStatus(GangPhase.FAILED, shell_code(exits[first]),
                      f"{what}: {errors}" if errors else what)


def _status_of(fields: dict[str, Any]) -> GangStatus:
    return GangStatus(GangPhase(fields["phase"]), fields.get("exit_code"),
                      str(fields.get("reason", "")), bool(fields.get("retryable", True)))


def node_name(node_id: str) -> str:
    return f"ray-{node_id[:12]}"


def _node(raw: dict[str, Any]) -> NodeReport:
    resources: dict[str, float] = raw.get("resources") or {}
    types = sorted(key.split(":", 1)[1] for key in resources
                   if key.startswith("accelerator_type:"))
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return NodeReport(node_name(raw["node_id"]), types[0] if types else "GPU", gpus,
                          bool(raw["alive"]))
    return NodeReport(node_name(raw["node_id"]), "cpu", int(resources.get("CPU", 0)),
                      bool(raw["alive"]))


def _read_line(stream: IO[str], timeout_s: float) -> str:
    """One line from the driver within ``timeout_s``; TimeoutError otherwise, OSError when
    it closed its end (it died)."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            raise TimeoutError(f"no answer within {timeout_s:.0f} s")
    line = stream.readline()
    if not line:
        raise OSError("the Ray driver process exited")
    return line


def _kill(agent: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(agent.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.SubprocessError):
        agent.wait(5)
    for stream in (agent.stdin, agent.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
