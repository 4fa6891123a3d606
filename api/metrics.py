"""Prometheus metrics of one API replica, in a registry of its own (``app.state.metrics``).

Gauges are read from the database at scrape time (:mod:`scheduler.db.stats`), so every replica
reports the same cluster-wide numbers whichever one leads; the cycle histogram is fed by the
scheduler loop of the replica that runs it (:meth:`ApiMetrics.observe_tick`). An admin's scrape
shows every tenant; a member's only its own tenant's jobs (:meth:`ApiMetrics.render`).

==============================================  =========  =====================================
metric                                          type       meaning
==============================================  =========  =====================================
corral_pending_jobs{tenant}                     gauge      jobs waiting (PENDING)
corral_allocated_devices{pool,tenant}           gauge      devices held by live jobs
corral_cycle_step_seconds{step}                 histogram  seconds per numbered step of a tick
corral_step_time_predictions{accelerator}       gauge      jobs with a predicted and a measured
                                                           step time
corral_step_time_prediction_error_ratio         gauge      their mean |predicted − measured| /
{accelerator}                                              measured
==============================================  =========  =====================================
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scheduler.db import stats
from scheduler.db.session import Database
from scheduler.service import TickReport

STEP_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""A tick's steps take from about a millisecond (snapshot of a small cluster) to seconds
(dispatching many gangs)."""


class ClusterCollector(Collector):
    """Reads the cluster gauges from the database, in one read transaction per scrape: of
    every tenant, or of ``tenant`` alone."""

    def __init__(self, db: Database, tenant: str | None = None) -> None:
        self.db = db
        self.tenant = tenant

    def describe(self) -> list[Metric]:
        """The metric families without samples: the registry checks their names once."""
        return cluster_families({}, {}, {})

    def collect(self) -> list[Metric]:
        with self.db.read() as session:
            pending = stats.pending_jobs_by_tenant(session, self.tenant)
            allocated = stats.allocated_devices(session, self.tenant)
            errors = stats.prediction_errors(session, self.tenant)
        return cluster_families(pending, allocated, errors)


def cluster_families(pending: dict[str, int], allocated: dict[tuple[str, str], int],
                     errors: dict[str, stats.PredictionError]) -> list[Metric]:
    pending_gauge = GaugeMetricFamily("corral_pending_jobs", "Jobs waiting (PENDING) per tenant.",
                                      labels=["tenant"])
    for tenant, count in sorted(pending.items()):
        pending_gauge.add_metric([tenant], count)
    allocated_gauge = GaugeMetricFamily("corral_allocated_devices", "Devices held by live jobs "
                                        "per pool and tenant.", labels=["pool", "tenant"])
    for (pool, tenant), devices in sorted(allocated.items()):
        allocated_gauge.add_metric([pool, tenant], devices)
    count_gauge = GaugeMetricFamily("corral_step_time_predictions", "Jobs with both a predicted "
                                    "and a measured step time, per accelerator.",
                                    labels=["accelerator"])
    error_gauge = GaugeMetricFamily(
        "corral_step_time_prediction_error_ratio", "Mean absolute relative error of the "
        "predicted step time against the measured one, per accelerator.", labels=["accelerator"])
    for accelerator, error in sorted(errors.items()):
        count_gauge.add_metric([accelerator], error.jobs)
        error_gauge.add_metric([accelerator], error.mean_abs_relative_error)
    return [pending_gauge, allocated_gauge, count_gauge, error_gauge]


class ApiMetrics:
    """The registry of one app: cluster gauges from the database and the cycle histogram."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.registry = CollectorRegistry()
        self.cycle_step_seconds = Histogram(
            "corral_cycle_step_seconds", "Seconds each numbered step of a scheduler tick took.",
            ["step"], buckets=STEP_BUCKETS_S, registry=self.registry)
        self.registry.register(ClusterCollector(db))

    def observe_tick(self, report: TickReport) -> None:
        """Record the step durations of one tick (the scheduler loop calls this)."""
        for step, seconds in report.step_seconds.items():
            self.cycle_step_seconds.labels(step=step).observe(seconds)

    def render(self, tenant: str | None = None) -> bytes:
        """The Prometheus text exposition of every metric (reads the database); with
        ``tenant``, the cluster gauges count that tenant's jobs only (a member's scrape)."""
        if tenant is None:
            return generate_latest(self.registry)
        # A registry for this scrape: the same histogram, the gauges of one tenant.
        scoped = CollectorRegistry(auto_describe=False)
        scoped.register(self.cycle_step_seconds)
        scoped.register(ClusterCollector(self.db, tenant))
        return generate_latest(scoped)
