"""``model.path: job:NAME``: the service swaps in the export folder of that job at submit."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.domain.errors import SpecError
from scheduler.gangs.backend import GangPhase
from scheduler.gangs.protocol import EXPORT_DIR_NAME
from scheduler.service import SchedulerService
from tests.builders import make_spec
from workers.backends.fake import FakeBackend

FINETUNE_OF_BASE = dict(
    name="tune", kind="finetune", model={"path": "job:base"}, tokenizer=None,
    finetune={"task": "causal_lm"}, resources__pool="cpu", resources__devices=1,
)


def _run_to_success(service: SchedulerService, backend: FakeBackend, name: str,
                     export: bool) -> int:
    job_id = service.submit(make_spec(name=name, resources__pool="cpu", resources__devices=1))
    service.tick()
    if export:
        run_dir = Path(service.describe(job_id)["run_dir"])
        (run_dir / EXPORT_DIR_NAME).mkdir(parents=True)
    backend.finish(job_id, GangPhase.SUCCEEDED)
    service.tick()
    return job_id


def test_the_newest_succeeded_job_of_that_name_gives_its_export(
        service: SchedulerService, fake_backend: FakeBackend) -> None:
    _run_to_success(service, fake_backend, "base", export=True)
    newest = _run_to_success(service, fake_backend, "base", export=True)
    _run_to_success(service, fake_backend, "other", export=True)

    job_id = service.submit(make_spec(**FINETUNE_OF_BASE))

    stored = service.describe(job_id)["spec"]["model"]["path"]
    assert stored == str(Path(service.describe(newest)["run_dir"]) / EXPORT_DIR_NAME)


def test_a_reference_to_no_succeeded_job_is_refused(service: SchedulerService,
                                                     fake_backend: FakeBackend) -> None:
    service.submit(make_spec(name="base", resources__pool="cpu", resources__devices=1))  # pending
    with pytest.raises(SpecError, match="tenant 'default' has no succeeded job named 'base'"):
        service.submit(make_spec(**FINETUNE_OF_BASE))


def test_a_reference_to_a_job_without_export_is_refused(service: SchedulerService,
                                                        fake_backend: FakeBackend) -> None:
    _run_to_success(service, fake_backend, "base", export=False)
    with pytest.raises(SpecError, match="left no export folder"):
        service.submit(make_spec(**FINETUNE_OF_BASE))
