"""Builders that make test cases read like specifications."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from scheduler.domain.resources import (
    NodeView,
    PendingJobView,
    PoolView,
    RunningJobView,
    Snapshot,
)
from scheduler.domain.spec import JobSpec, parse_spec

BASE_SPEC: dict[str, Any] = {
    "name": "tiny",
    "kind": "pretrain",
    "model": {"architecture": "llama", "config": {"hidden_size": 32, "num_hidden_layers": 1,
                                                   "num_attention_heads": 2,
                                                   "num_key_value_heads": 2,
                                                   "intermediate_size": 64}},
    "tokenizer": {"kind": "byte"},
    "data": {"source": "generated", "seq_len": 16, "generated_documents": 50},
    "work": {"steps": 4, "eval_batches": 1},
    "batch": {"global_batch": 4},
    "checkpoint": {"interval_steps": 2, "keep": 2},
}


def spec_dict(**overrides: Any) -> dict[str, Any]:
    """A valid spec dict; ``section__field=value`` sets a nested field, ``field=None`` drops."""
    data = copy.deepcopy(BASE_SPEC)
    for key, value in overrides.items():
        target = data
        *parents, leaf = key.split("__")
        for parent in parents:
            target = target.setdefault(parent, {})
        if value is None:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return data


def make_spec(**overrides: Any) -> JobSpec:
    return parse_spec(spec_dict(**overrides))


@dataclass
class JobBuilder:
    """``make_job(3).devices(8).priority(5).build()``."""

    view: PendingJobView

    def devices(self, count: int | None) -> JobBuilder:
        return JobBuilder(replace(self.view, devices=count))

    def priority(self, value: int) -> JobBuilder:
        return JobBuilder(replace(self.view, priority=value))

    def pool(self, name: str | None) -> JobBuilder:
        return JobBuilder(replace(self.view, pool=name))

    def accelerator(self, name: str | None) -> JobBuilder:
        return JobBuilder(replace(self.view, accelerator=name))

    def batch(self, global_batch: int, micro_batch: int | None = None) -> JobBuilder:
        return JobBuilder(replace(self.view, global_batch=global_batch, micro_batch=micro_batch))

    def model(self, config: dict[str, Any], seq_len: int = 2048, steps: int = 1000,
              precision: str = "bf16") -> JobBuilder:
        """A pretraining job whose model the cost model knows (it is planned by prediction)."""
        from scheduler.cost.profile import model_profile

        return JobBuilder(replace(self.view, kind="pretrain", seq_len=seq_len, total_steps=steps,
                                  precision=precision,
                                  model_profile=asdict(model_profile(config, seq_len))))

    def tenant(self, name: str) -> JobBuilder:
        return JobBuilder(replace(self.view, tenant=name))

    def range(self, low: int, high: int) -> JobBuilder:
        """A moldable job: any gang size from ``low`` to ``high``."""
        return JobBuilder(replace(self.view, devices=None, device_range=(low, high)))

    def deadline(self, seconds: float | None) -> JobBuilder:
        return JobBuilder(replace(self.view, deadline_s=seconds))

    def budget(self, usd: float | None) -> JobBuilder:
        return JobBuilder(replace(self.view, budget_usd=usd))

    def build(self) -> PendingJobView:
        return self.view


def make_job(job_id: int) -> JobBuilder:
    return JobBuilder(PendingJobView(
        job_id=job_id, name=f"job{job_id}", tenant="default", priority=0, submitted_seq=job_id,
        pool=None, accelerator=None, devices=1, global_batch=8, micro_batch=None,
        precision="fp32"))


@dataclass
class ClusterBuilder:
    """``make_cluster().pool("gpu", "H100", nodes=2, per_node=8, busy={0: 6})``."""

    pools: list[PoolView] = field(default_factory=list)
    running: list[RunningJobView] = field(default_factory=list)
    _next_node: int = 1

    def pool(self, name: str, accelerator: str = "cpu", nodes: int = 1, per_node: int = 2,
             backend: str = "fake", busy: dict[int, int] | None = None) -> ClusterBuilder:
        """``busy`` maps a node's index in this pool to how many devices are taken."""
        views = []
        for index in range(nodes):
            taken = (busy or {}).get(index, 0)
            views.append(NodeView(node_id=self._next_node, name=f"{name}-{index}",
                                  devices=per_node, free_devices=tuple(range(taken, per_node))))
            self._next_node += 1
        self.pools.append(PoolView(pool_id=len(self.pools) + 1, name=name, backend=backend,
                                   accelerator=accelerator, devices_per_node=per_node,
                                   nodes=tuple(views)))
        return self

    def run(self, job_id: int, pool: str, devices: int, node: int = 0, tenant: str = "default",
            priority: int = 0, end_s: float | None = None, since_checkpoint_s: float = 0.0,
            preempting: bool = False) -> ClusterBuilder:
        """A running job holding the first ``devices`` free devices of ``pool``'s ``node``-th
        node (it ends ``end_s`` seconds from now, as predicted)."""
        index = next(i for i, view in enumerate(self.pools) if view.name == pool)
        view = self.pools[index]
        target = view.nodes[node]
        taken = target.free_devices[:devices]
        assert len(taken) == devices, f"node {target.name} has {len(target.free_devices)} free"
        nodes = tuple(replace(n, free_devices=n.free_devices[devices:]) if n is target else n
                      for n in view.nodes)
        self.pools[index] = replace(view, nodes=nodes)
        self.running.append(RunningJobView(
            job_id=job_id, tenant=tenant, priority=priority, pool_id=view.pool_id,
            accelerator=view.accelerator, devices_by_node=((target.node_id, devices),),
            seconds_since_checkpoint=since_checkpoint_s, name=f"job{job_id}",
            predicted_end_s=end_s, device_ids=tuple((target.node_id, d) for d in taken),
            preempting=preempting))
        return self

    def snapshot(self, *jobs: JobBuilder | PendingJobView,
                 calibration: dict[tuple[str, str, str], float] | None = None,
                 shares: dict[str, float] | None = None) -> Snapshot:
        pending = tuple(j.build() if isinstance(j, JobBuilder) else j for j in jobs)
        return Snapshot(pools=tuple(self.pools), pending=pending, calibration=calibration or {},
                        running=tuple(self.running), tenant_shares=shares or {})


def make_cluster() -> ClusterBuilder:
    return ClusterBuilder()
