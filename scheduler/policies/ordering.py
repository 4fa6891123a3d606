"""Ordering policies: which pending job the cycle considers first."""

from __future__ import annotations

from collections.abc import Iterable

from scheduler.domain.resources import PendingJobView


def priority_then_age(jobs: Iterable[PendingJobView]) -> list[PendingJobView]:
    """Higher priority first; among equals, the job submitted first (no starvation by age)."""
    return sorted(jobs, key=lambda job: (-job.priority, job.submitted_seq))
