"""Integrity of shared predictions: one tenant's odd attempt cannot swing the efficiency η every
tenant's plans are costed with, and only admins see and reset the calibration table.

The incident: one 3-step job on a loaded machine moved the shared η of its (accelerator,
strategy, kind) from 0.7 to 0.024, and plans changed for every tenant. Here the attempt is
folded in exactly as the service folds an ending attempt (``scheduler.calibrate.recalibrate``
on the job's row, in one transaction) over a real server's database; running a real job so slow
would take minutes and measure this machine's noise instead.
"""

from __future__ import annotations

import math

import pytest
from sqlalchemy import select

from api.client import Forbidden
from scheduler.calibrate import recalibrate
from scheduler.cost.calibration import MAX_STEP_FACTOR, MAX_WEIGHT, MIN_STEP_REPORTS
from scheduler.db import repo
from scheduler.db.models import Calibration
from scheduler.db.session import Database
from scheduler.domain.state import JobState
from tests.builders import make_spec
from tests.security.conftest import Deployment
from tests.server_process import cli_env, corral, ok

SETTLED = {"accelerator": "cpu", "strategy": "single", "kind": "pretrain"}
"""A key whose η rests on a full window of step reports: a far observation is rejected."""
YOUNG = {"accelerator": "cpu", "strategy": "ddp", "kind": "pretrain"}
"""A key measured by one short run only: a far observation is folded, its move bounded."""
SETTLED_ETA = 0.7
# What the attacker's attempt was predicted at with η 0.7 (0.09 s of compute, 0.01 s other),
# and what it measured: 3 s steps, so η_observed = 0.09 · 0.7 / (3 − 0.01) ≈ 0.021.
PREDICTION = {"efficiency": SETTLED_ETA, "step_time_s": 0.1, "compute_s": 0.09}
SLOW_STEPS_S = [12.0, *([3.0] * MIN_STEP_REPORTS)]  # start-up, then just enough reports


def _seed(db: Database) -> None:
    with db.write() as session:
        session.add(Calibration(**SETTLED, efficiency=SETTLED_ETA, observations=MAX_WEIGHT))
        session.add(Calibration(**YOUNG, efficiency=SETTLED_ETA, observations=MIN_STEP_REPORTS))


def _fold_in_an_outlier_attempt(db: Database, tenant: str, key: dict[str, str]) -> int:
    """A finished attempt of ``tenant``'s job on ``key``, ended the way the service ends one."""
    with db.write() as session:
        job = repo.create_job(session, make_spec(tenant=tenant, name="noisy"))
        job.state = JobState.SUCCEEDED.value  # ended: the server's cycle leaves it alone
        job.attempts = 1
        job.prediction = {**PREDICTION, "accelerator": key["accelerator"],
                          "strategy": key["strategy"]}
        job.step_times_s = list(SLOW_STEPS_S)
        recalibrate(session, job)
        return job.id


def _rows(db: Database) -> list[Calibration]:
    with db.read() as session:
        rows = list(session.scalars(select(Calibration)))
        session.expunge_all()
    return rows


def test_an_outlier_attempt_cannot_swing_shared_eta_and_only_admins_see_or_reset_it(
        deployment: Deployment) -> None:
    db = Database(deployment.db_url)
    try:
        _seed(db)
        rejected_job = _fold_in_an_outlier_attempt(db, "team-a", SETTLED)
        _fold_in_an_outlier_attempt(db, "team-a", YOUNG)
        admin = deployment.client()

        # 1. Through the admin route: η moved by at most its bound, on either key.
        rows = {row["strategy"]: row for row in admin.calibration()}
        assert set(rows) == {SETTLED["strategy"], YOUNG["strategy"]}
        for row in rows.values():
            assert abs(math.log(row["efficiency"] / SETTLED_ETA)) <= \
                math.log(MAX_STEP_FACTOR) + 1e-9, row
            assert row["prior_efficiency"] is not None
        # The settled η did not move at all, and the attempt's events say why, with the numbers.
        settled = rows[SETTLED["strategy"]]
        assert (settled["efficiency"], settled["weight"]) == (pytest.approx(SETTLED_ETA),
                                                              MAX_WEIGHT)
        (event,) = [e for e in admin.events(rejected_job)
                    if e["reason"].startswith("calibration ")]
        assert event["detail"]["verdict"] == "rejected"
        assert event["detail"]["observed_efficiency"] == pytest.approx(0.09 * 0.7 / 2.99)
        assert "rejected as an outlier" in event["reason"]
        # The young one moved the most one observation may move it.
        assert rows[YOUNG["strategy"]]["efficiency"] == pytest.approx(SETTLED_ETA /
                                                                       MAX_STEP_FACTOR)

        # 2. A member may neither read nor reset the table: 403, and nothing is deleted.
        member = deployment.client(deployment.member("team-a"))
        with pytest.raises(Forbidden):
            member.calibration()
        with pytest.raises(Forbidden):
            member.reset_calibration()
        assert len(_rows(db)) == 2

        # 3. An admin's reset empties it: plans fall back to the prior η.
        assert admin.reset_calibration() == {"accelerator": None, "strategy": None,
                                             "kind": None, "deleted": 2}
        assert admin.calibration() == [] and _rows(db) == []
        assert "calibration reset by admin token" in deployment.log()
    finally:
        db.dispose()


def test_the_cli_lists_and_resets_calibration_embedded_and_through_the_server(
        deployment: Deployment) -> None:
    db = Database(deployment.db_url)
    try:
        _seed(db)
    finally:
        db.dispose()
    embedded = cli_env(deployment.tmp_path, CORRAL_DATABASE_URL=deployment.db_url)
    listed = ok(corral(embedded, "admin", "calibration"))
    assert "cpu" in listed and "single" in listed and str(MAX_WEIGHT) in listed
    remote = cli_env(deployment.tmp_path, CORRAL_TOKEN=deployment.admin_token)
    assert "single" in ok(corral(remote, "--server", deployment.url, "admin", "calibration"))
    kept = ok(corral(remote, "--server", deployment.url, "admin", "calibration", "reset",
                     "--kind", "finetune"))
    assert "deleted 0 calibration row(s)" in kept
    gone = ok(corral(remote, "--server", deployment.url, "admin", "calibration", "reset",
                     "--accelerator", "CPU", "--kind", "pretrain"))
    assert "deleted 2 calibration row(s)" in gone
    assert "Calibration (η per accelerator, strategy, job kind): none" in \
        ok(corral(embedded, "admin", "calibration"))
    member = cli_env(deployment.tmp_path, CORRAL_TOKEN=deployment.member("team-a"))
    denied = corral(member, "--server", deployment.url, "admin", "calibration")
    assert denied.returncode != 0 and "admin" in denied.stderr
