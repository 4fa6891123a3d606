"""Finding 7: a failure that a retry cannot mend is not retried, and says so."""

from __future__ import annotations

import time

from tests.builders import spec_dict
from tests.security.conftest import Deploy
from tests.security.jobs import WAIT_S, readable_file


def test_a_job_whose_data_file_holds_no_text_fails_once(deploy_with: Deploy) -> None:
    probe = deploy_with()
    empty = readable_file(probe.area / "data" / "empty.txt", "")
    probe.server.stop()
    deployment = deploy_with(CORRAL_DATA_ROOTS=str(empty.parent))
    member = deployment.client(deployment.member("team-a"))
    job_id = member.submit(spec_dict(
        name="empty", data={"source": "file", "path": str(empty), "seq_len": 16},
        work={"steps": 2, "eval_batches": 1}, resources={"devices": 1, "max_attempts": 3}))["id"]
    deadline = time.monotonic() + WAIT_S
    while (job := member.get_job(job_id))["state"] not in ("FAILED", "SUCCEEDED"):
        assert time.monotonic() < deadline, deployment.log()
        time.sleep(0.5)
    reasons = [event["reason"] for event in member.events(job_id)]
    assert job["state"] == "FAILED" and job["attempts"] == 1, reasons
    assert any("found the job's spec or files wrong" in reason and "holds no text" in reason
               for reason in reasons), reasons
    assert any(reason.startswith("not retried") for reason in reasons), reasons
    assert not any(reason.startswith("retry after failure") for reason in reasons)
