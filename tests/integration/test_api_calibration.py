"""The calibration table over the REST API, on SQLite and PostgreSQL: admins see every measured
η beside the prior it replaces and reset rows by filter; members get 403 and change nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from scheduler.cost.time import EFFICIENCY_PRIOR
from scheduler.db.models import Calibration
from scheduler.db.session import Database
from tests.integration.api_support import Api, error_of

MEASURED = [
    # (accelerator, strategy, kind, η, weight in step reports)
    ("H100-SXM", "ddp", "pretrain", 0.31, 400),
    ("H100-SXM", "fsdp_full", "pretrain", 0.29, 60),
    ("H100-SXM", "ddp", "finetune", 0.22, 12),
    ("cpu", "single", "pretrain", 0.66, 6),
    ("MYSTERY-9000", "ddp", "pretrain", 0.5, 20),
]
UPDATED_AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def api(database: Database, tmp_path: Path) -> Api:
    with database.write() as session:
        for accelerator, strategy, kind, eta, weight in MEASURED:
            session.add(Calibration(accelerator=accelerator, strategy=strategy, kind=kind,
                                    efficiency=eta, observations=weight, updated_at=UPDATED_AT))
    return Api(database, tmp_path / "home")


def _keys(api: Api) -> list[tuple[str, str, str]]:
    with api.db.read() as session:
        return sorted((row.accelerator, row.strategy, row.kind)
                      for row in session.scalars(select(Calibration)))


def test_an_admin_lists_every_row_beside_its_prior(api: Api) -> None:
    listed = api.client.get("/v1/admin/calibration", headers=api.token("ops", "admin"))
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert [(i["accelerator"], i["strategy"], i["kind"]) for i in items] == \
        sorted((a, s, k) for a, s, k, _eta, _weight in MEASURED)
    first = items[0]
    assert first == {"accelerator": "H100-SXM", "strategy": "ddp", "kind": "finetune",
                     "efficiency": 0.22, "weight": 12,
                     "prior_efficiency": EFFICIENCY_PRIOR[("gpu", "ddp")],
                     "updated_at": UPDATED_AT.isoformat()}
    by_key = {(i["accelerator"], i["strategy"]): i["prior_efficiency"] for i in items}
    assert by_key[("cpu", "single")] == EFFICIENCY_PRIOR[("cpu", "single")]
    assert by_key[("MYSTERY-9000", "ddp")] is None  # not in the catalog: no prior known


def test_members_may_neither_see_nor_reset_calibration(api: Api) -> None:
    member = api.token("team-a")
    assert error_of(api.client.get("/v1/admin/calibration", headers=member)) == \
        (403, "forbidden")
    assert error_of(api.client.delete("/v1/admin/calibration", headers=member)) == \
        (403, "forbidden")
    assert len(_keys(api)) == len(MEASURED)


@pytest.mark.parametrize(("filters", "left"), [
    ({"accelerator": "h100-sxm", "strategy": "ddp"},  # accelerators match in any case
     [("H100-SXM", "fsdp_full", "pretrain"), ("MYSTERY-9000", "ddp", "pretrain"),
      ("cpu", "single", "pretrain")]),
    ({"kind": "finetune"},
     [("H100-SXM", "ddp", "pretrain"), ("H100-SXM", "fsdp_full", "pretrain"),
      ("MYSTERY-9000", "ddp", "pretrain"), ("cpu", "single", "pretrain")]),
    ({"accelerator": "H100-SXM", "strategy": "ddp", "kind": "pretrain"},
     [("H100-SXM", "ddp", "finetune"), ("H100-SXM", "fsdp_full", "pretrain"),
      ("MYSTERY-9000", "ddp", "pretrain"), ("cpu", "single", "pretrain")]),
    ({"strategy": "tp"}, sorted((a, s, k) for a, s, k, _eta, _weight in MEASURED)),
    ({}, []),
], ids=["accelerator and strategy", "kind", "one key", "nothing matches", "everything"])
def test_an_admin_resets_the_rows_matching_every_filter(
        api: Api, filters: dict[str, str], left: list[tuple[str, str, str]]) -> None:
    answer = api.client.delete("/v1/admin/calibration", params=filters,
                               headers=api.token("ops", "admin"))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accelerator": None, "strategy": None, "kind": None, **filters,
                             "deleted": len(MEASURED) - len(left)}
    assert _keys(api) == left


def test_a_reset_refuses_unknown_strategies_and_kinds(api: Api) -> None:
    admin = api.token("ops", "admin")
    for filters in ({"strategy": "zero3"}, {"kind": "inference"}, {"accelerator": ""}):
        answer = api.client.delete("/v1/admin/calibration", params=filters, headers=admin)
        assert error_of(answer) == (422, "invalid_request"), filters
    assert len(_keys(api)) == len(MEASURED)
