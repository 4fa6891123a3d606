"""The trace-driven simulator: workloads, ground truth and metrics, pure and clock-free.

It drives the real scheduling cycle (``scheduler.cycle``) with a fake clock; nothing here reads
the wall clock, a database or a framework. ``workload`` is the neutral trace format,
``trace_csv`` its CSV files, ``alibaba`` and ``generator`` make traces, ``groundtruth`` says how
long a job really runs on a shape, ``engine`` replays (``config``, ``views``, ``usage``,
``cluster_state``, ``checks``), ``policy`` names the policies compared, and ``metrics``,
``result`` and ``report`` score and show a finished replay.
"""

from scheduler.sim.workload import ClusterSpec, PoolSpec, TraceError, TraceJob, TraceKind

__all__ = ["ClusterSpec", "PoolSpec", "TraceError", "TraceJob", "TraceKind"]
