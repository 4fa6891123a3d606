"""How a trace job and its attempts become the cycle's views, as ``db/snapshot.py`` builds them.

:func:`pending_view` — one :class:`PendingJobView` per pending job and allowed accelerator:

- ``devices = max_devices`` for a rigid job; a moldable one gets ``devices = None`` and
  ``device_range = (min, max)``, and the cycle sizes it (``PolicyConfig.moldable``).
- ``global_batch = max_devices`` and no model profile: the cycle plans data parallel and
  predicts nothing, and a moldable job's sizes are the divisors of ``max_devices`` in its range.
- ``deadline_s = None``: the cycle reads it only to plan a job with a model profile; metrics
  score deadlines from the trace.
- history as the service reads it: ``attained_device_s`` (devices × seconds over ended
  attempts), ``last_run_s`` (the last attempt's length); ``waited_s`` (since arrival or the
  last requeue) is refreshed by the engine every cycle when the ordering reads it.

:class:`Attempt` and :func:`running_view` — one :class:`RunningJobView` per running attempt:
tenant, priority, pool, accelerator, devices per node and their exact ids;
``predicted_end_s`` = the attempt's *predicted* run time minus its elapsed time, the prediction
being the noiseless ``work × remaining / (devices^α × speed)`` — never the ground truth, so that
backfill and moldable shapes decide under misprediction (it goes negative when the job
overruns, as in the service); ``seconds_since_checkpoint = elapsed mod interval`` (jobs
checkpoint every ``interval`` seconds from the start of the attempt, which resumes from a
checkpoint); ``preempting`` for an attempt already told to stop.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from scheduler.domain.resources import PendingJobView, RunningJobView
from scheduler.policies.placement import DeviceList
from scheduler.sim.workload import TraceJob


@dataclass(frozen=True, slots=True)
class Attempt:
    """One run of a job on a gang: from ``start_s`` until ``end_s``, then success or failure
    (unless it is stopped first)."""

    job_id: int
    attempt: int
    pool_id: int
    accelerator: str
    devices: DeviceList
    start_s: float
    end_s: float
    failed: bool
    remaining_fraction: float = 1.0
    """Share of the job's work left when the attempt started."""
    predicted_run_s: float = 0.0
    """The noiseless run time of that remaining work on this shape: what the scheduler
    believes (``TraceJob.run_time_s × remaining_fraction``)."""
    full_run_s: float = 0.0
    """The true run time of the whole job on this shape: progress runs at ``1 / full_run_s``
    of the work per second."""


def pending_view(
    job: TraceJob,
    accelerator: str | None,
    submitted_seq: int,
    attained_device_s: float = 0.0,
    last_run_s: float = 0.0,
) -> PendingJobView:
    """The cycle's view of pending ``job`` on ``accelerator`` (module docstring)."""
    return PendingJobView(
        job_id=job.job_id,
        name=job.name or f"job-{job.job_id}",
        tenant=job.tenant,
        priority=job.priority,
        submitted_seq=submitted_seq,
        pool=None,
        accelerator=accelerator,
        devices=job.max_devices if job.rigid else None,
        global_batch=job.max_devices,
        micro_batch=None,
        precision="bf16",
        kind=job.kind.value,
        device_range=None if job.rigid else (job.min_devices, job.max_devices),
        attained_device_s=attained_device_s,
        last_run_s=last_run_s,
    )


def started_view(job: TraceJob, attempt: Attempt) -> RunningJobView:
    """The attempt's view at its start (:func:`running_view` ages it)."""
    per_node: dict[int, int] = {}
    for node_id, _ in attempt.devices:
        per_node[node_id] = per_node.get(node_id, 0) + 1
    return RunningJobView(
        job_id=job.job_id,
        tenant=job.tenant,
        priority=job.priority,
        pool_id=attempt.pool_id,
        accelerator=attempt.accelerator,
        devices_by_node=tuple(sorted(per_node.items())),
        seconds_since_checkpoint=0.0,
        name=job.name or f"job-{job.job_id}",
        predicted_end_s=attempt.predicted_run_s,
        device_ids=tuple(sorted(attempt.devices)),
    )


def running_view(
    started: RunningJobView,
    attempt: Attempt,
    now_s: float,
    checkpoint_interval_s: float,
    preempting: bool,
) -> RunningJobView:
    """``started`` as of ``now_s`` (module docstring)."""
    elapsed_s = now_s - attempt.start_s
    return replace(
        started,
        seconds_since_checkpoint=elapsed_s % checkpoint_interval_s,
        predicted_end_s=attempt.predicted_run_s - elapsed_s,
        preempting=preempting,
    )


def checkpointed_s(elapsed_s: float, checkpoint_interval_s: float) -> float:
    """Seconds of an attempt's run saved by its last checkpoint after ``elapsed_s``:
    ``elapsed − (elapsed mod interval)`` (0 with an infinite interval)."""
    return elapsed_s - elapsed_s % checkpoint_interval_s
