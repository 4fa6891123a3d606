"""The Ray driver of one scheduler process: ``python -m workers.backends.ray.agent ADDRESS``.

A Ray driver blocks for minutes inside Ray's own client when its cluster goes away (measured
with Ray 2.60: ``ray.get_actor`` waited on the dead GCS address), so the scheduler never runs
one itself. :class:`~workers.backends.ray.RayBackend` starts this process, talks to it one
JSON line per request and per answer over its stdin and stdout, bounds each request by a
timeout and kills the process when one runs over; the next request starts a fresh one.

First line out: ``{"ready": true, "ray": VERSION}`` once connected, or ``{"ready": false,
"error": ...}``. Then per request ``{"id", "op", "args"}`` one answer ``{"id", "ok": true,
"result"}`` or ``{"id", "ok": false, "kind": "unplaced" | "error", "error"}``. Bytes travel as
base64. Ray's own output goes to stderr, never stdout.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
import uuid
from collections import Counter
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

from workers.backends.ray.actors import KEEP_S, GangKeeper, RankHost

NAMESPACE = "corral"
PLACE_TIMEOUT_S = 60.0
"""Seconds a gang's placement group may take to be placed before its launch fails."""
CALL_TIMEOUT_S = 20.0
"""Seconds one call to an actor of a gang may take."""
PING_TIMEOUT_S = 5.0
HEAD_RESOURCE = "node:__internal_head__"
OPS = frozenset({"nodes", "launch", "state", "signal", "mark", "finish", "read_log",
                 "read_progress", "forget"})
"""What a request may ask: :class:`Agent`'s operations, nothing else of it."""


class NotPlaced(Exception):
    """A gang Ray cannot place now: said back as ``kind: unplaced``."""


def names(gang: str) -> tuple[str, str]:
    return f"corral-{gang}", f"corral-{gang}-keeper"


def rank_name(gang: str, rank: int) -> str:
    return f"corral-{gang}-rank-{rank}"


class Agent:
    """The operations :class:`~workers.backends.ray.RayBackend` asks for (module docstring)."""

    def __init__(self, address: str) -> None:
        ray.init(address=address, namespace=NAMESPACE, logging_level=logging.WARNING,
                 log_to_driver=False, configure_logging=False)
        self.keeper_class = ray.remote(GangKeeper)
        self.rank_class = ray.remote(RankHost)

    # --- the cluster ------------------------------------------------------------------------

    def nodes(self) -> list[dict[str, Any]]:
        """Every node Ray knows: id, address, alive, resources."""
        return [{"node_id": node["NodeID"], "ip": node["NodeManagerAddress"],
                 "alive": bool(node["Alive"]), "resources": node.get("Resources", {}),
                 "head": HEAD_RESOURCE in node.get("Resources", {})}
                for node in ray.nodes()]

    # --- one gang ---------------------------------------------------------------------------

    def launch(self, bundle: dict[str, float], world_size: int, strategy: str,
               specs: list[dict[str, Any]], keep_s: float = KEEP_S) -> dict[str, Any]:
        """Place the gang, start its keeper and rank hosts, start the ranks; return the
        handle's fields. Whatever was made is removed again if a step fails."""
        gang = uuid.uuid4().hex[:16]
        group_name, keeper_name = names(gang)
        keeper = self.keeper_class.options(
            name=keeper_name, namespace=NAMESPACE, lifetime="detached", num_cpus=0,
            max_concurrency=16, scheduling_strategy=self._head()).remote(gang, world_size,
                                                                          keep_s)
        group = None
        try:
            group = placement_group([dict(bundle) for _ in range(world_size)],
                                    strategy=strategy, name=group_name, lifetime="detached")
            ready, _ = ray.wait([group.ready()], timeout=PLACE_TIMEOUT_S)
            if not ready:
                raise NotPlaced(
                    f"Ray placed no {strategy} group of {world_size} bundles {bundle} within "
                    f"{PLACE_TIMEOUT_S:.0f} s: the cluster lacks those resources now")
            ranks = [self.rank_class.options(
                name=rank_name(gang, rank), namespace=NAMESPACE, lifetime="detached",
                max_concurrency=8, num_cpus=bundle.get("CPU", 0), num_gpus=bundle.get("GPU", 0),
                resources={key: value for key, value in bundle.items()
                           if key not in ("CPU", "GPU")},
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    group, placement_group_bundle_index=rank)).remote(gang, rank, keeper)
                for rank in range(world_size)]
            where = ray.get([host.where.remote() for host in ranks], timeout=PLACE_TIMEOUT_S)
            port = ray.get(ranks[0].free_port.remote(), timeout=CALL_TIMEOUT_S)
            per_node = Counter(place["node_id"] for place in where)
            started = []
            for rank, (host, spec) in enumerate(zip(ranks, specs, strict=True)):
                gang_env = {"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": "0",
                            "LOCAL_WORLD_SIZE": str(per_node[where[rank]["node_id"]]),
                            "MASTER_ADDR": where[0]["ip"], "MASTER_PORT": str(port)}
                started.append(host.start.remote({**spec, "gang_env": gang_env}))
            ray.get(started, timeout=PLACE_TIMEOUT_S)
        except BaseException:
            self._remove(gang, group)
            raise
        return {"gang": gang, "world_size": world_size,
                "nodes": sorted({place["node_id"] for place in where})}

    def state(self, gang: str, world_size: int) -> dict[str, Any]:
        """The keeper's record of the gang and which of its unexited ranks' hosts are dead
        (their node died, or their process was killed); ``missing`` when the keeper is gone."""
        keeper = self._actor(names(gang)[1])
        if keeper is None:
            return {"missing": True}
        try:
            state: dict[str, Any] = ray.get(keeper.state.remote(), timeout=CALL_TIMEOUT_S)
        except RayActorError as error:  # its node died (or it was killed): the record is gone
            return {"missing": True, "why": f"{type(error).__name__}: {str(error)[:300]}"}
        state["dead"] = {}
        if state["status"] is None:
            for rank in range(world_size):
                if rank in state["exits"]:
                    continue
                problem = self._ping(gang, rank)
                if problem:
                    state["dead"][rank] = problem
        return state

    def signal(self, gang: str, world_size: int, signum: int) -> int:
        """Send ``signum`` to every live rank of the gang; how many got it."""
        refs = []
        for rank in range(world_size):
            host = self._actor(rank_name(gang, rank))
            if host is not None:
                refs.append(host.signal.remote(signum))
        sent = 0
        for ref in refs:
            try:
                sent += bool(ray.get(ref, timeout=CALL_TIMEOUT_S))
            except (RayActorError, GetTimeoutError):
                continue
        return sent

    def mark(self, gang: str, fields: dict[str, Any]) -> None:
        keeper = self._actor(names(gang)[1])
        if keeper is not None:
            ray.get(keeper.mark.remote(fields), timeout=CALL_TIMEOUT_S)

    def finish(self, gang: str, status: dict[str, Any]) -> dict[str, Any]:
        """Record the gang's fate in its keeper and give its resources back (the placement
        group, and with it every rank host); returns the fate that stands."""
        keeper = self._actor(names(gang)[1])
        stands = status
        if keeper is not None:
            stands = ray.get(keeper.finish.remote(status), timeout=CALL_TIMEOUT_S)
        self._remove(gang, None, keep_keeper=True)
        return stands

    def read_log(self, gang: str, offset: int, max_bytes: int) -> dict[str, Any]:
        """A piece of the gang's log and its size; nothing when its keeper is gone."""
        keeper = self._actor(names(gang)[1])
        try:
            data, size = ray.get(keeper.read_log.remote(offset, max_bytes),
                                 timeout=CALL_TIMEOUT_S) if keeper is not None else (b"", 0)
        except RayActorError:
            data, size = b"", 0
        return {"data": base64.b64encode(data).decode(), "size": size}

    def read_progress(self, gang: str, cursor: int, max_bytes: int) -> dict[str, Any]:
        """Progress bytes after ``cursor``; nothing when its keeper is gone."""
        keeper = self._actor(names(gang)[1])
        try:
            data = ray.get(keeper.read_progress.remote(cursor, max_bytes),
                           timeout=CALL_TIMEOUT_S) if keeper is not None else b""
        except RayActorError:
            data = b""
        return {"data": base64.b64encode(data).decode()}

    def forget(self, gang: str) -> None:
        """Remove everything of the gang, its keeper included."""
        self._remove(gang, None)

    # --- helpers ----------------------------------------------------------------------------

    def _head(self) -> Any:
        head = next((node["node_id"] for node in self.nodes()
                     if node["head"] and node["alive"]), None)
        if head is None:
            return "DEFAULT"
        # Not soft: a keeper on a worker node would die with it, and the gang's record too.
        return NodeAffinitySchedulingStrategy(node_id=head, soft=False)

    def _actor(self, name: str) -> Any:
        try:
            return ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            return None

    def _ping(self, gang: str, rank: int) -> str:
        """Why rank ``rank``'s host cannot answer ("" when it can, or when it is only slow)."""
        host = self._actor(rank_name(gang, rank))
        if host is None:
            return "its host actor is gone"
        try:
            ray.get(host.ping.remote(), timeout=PING_TIMEOUT_S)
        except RayActorError as error:
            return f"its host actor died ({type(error).__name__}: {str(error)[:300]})"
        except GetTimeoutError:
            return ""
        return ""

    def _remove(self, gang: str, group: Any, keep_keeper: bool = False) -> None:
        """Kill the gang's rank hosts (on purpose, before their group goes: Ray reports a host
        killed by the group's removal as an unexpected worker death), remove its placement
        group, and its keeper unless ``keep_keeper``."""
        group_name, keeper_name = names(gang)
        prefix = rank_name(gang, 0)[:-1]
        for name in ray.util.list_named_actors():  # this namespace's: every rank host left
            host = self._actor(name) if name.startswith(prefix) else None
            if host is not None:
                ray.kill(host, no_restart=True)
        if group is None:
            try:
                group = ray.util.get_placement_group(group_name)
            except ValueError:
                group = None
        if group is not None:
            try:
                remove_placement_group(group)
            except Exception as error:  # noqa: BLE001 - best effort; the next call retries
                print(f"corral ray agent: removing {group_name}: {error}", file=sys.stderr)
        if not keep_keeper:
            keeper = self._actor(keeper_name)
            if keeper is not None:
                ray.kill(keeper, no_restart=True)


def _answer(stream: Any, message: dict[str, Any]) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


def main(argv: list[str]) -> int:
    """Connect, say so, then answer requests until stdin closes."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever Ray prints goes to stderr; stdout carries only answers
    try:
        agent = Agent(argv[1])
    except Exception as error:  # noqa: BLE001 - said to the backend, which raises it
        _answer(out, {"ready": False, "error": f"{type(error).__name__}: {error}"})
        return 1
    _answer(out, {"ready": True, "ray": ray.__version__})
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] not in OPS:
                raise ValueError(f"no operation {request['op']!r}")
            result = getattr(agent, request["op"])(**request["args"])
            _answer(out, {"id": request["id"], "ok": True, "result": result})
        except NotPlaced as error:
            _answer(out, {"id": request["id"], "ok": False, "kind": "unplaced",
                          "error": str(error)})
        except Exception as error:  # noqa: BLE001 - every failure is answered, not fatal
            _answer(out, {"id": request["id"], "ok": False, "kind": "error",
                          "error": f"{type(error).__name__}: {str(error)[:2000]}"})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
