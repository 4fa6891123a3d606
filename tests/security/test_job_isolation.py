"""Finding 1: a tenant's job must not run as the service or see its secrets (server as root).

The server below holds what an operator's shell would: the database URL, an operator token, a
cloud key, interpreter hooks of its own. A member's job runs; its ranks are read from /proc.
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from api.client import InvalidRequest
from api.server import check_job_identity
from scheduler.domain.errors import CorralError
from scheduler.trust import JobTrust, parse_job_user
from tests.security.conftest import Deploy, Deployment
from tests.security.jobs import environment, long_job, real_uid, wait_for_ranks

OPERATOR_TOKEN = "crl_operator_token_that_no_job_may_see"
CLOUD_KEY = "aws-secret-that-no-job-may-see"
NOBODY = 65534


HOOKS = ("LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONHOME", "PYTHONWARNINGS", "BASH_ENV",
         "NCCL_DEBUG_FILE")


def test_a_job_asking_for_a_loader_or_interpreter_hook_is_refused_with_a_message(
        deployment: Deployment) -> None:
    member = deployment.client(deployment.member("team-a"))
    for name in HOOKS:
        with pytest.raises(InvalidRequest) as refused:
            member.submit(long_job(env={name: str(deployment.area / "evil.so")}))
        assert f"env: {name} is refused" in str(refused.value)
    assert member.list_jobs(all=True)["items"] == []  # nothing stored


def test_a_members_job_runs_unprivileged_and_sees_no_server_secret(
        db_url: str, deploy_with: Deploy) -> None:
    deployment = deploy_with(CORRAL_DATABASE_URL=db_url, CORRAL_TOKEN=OPERATOR_TOKEN,
                             AWS_SECRET_ACCESS_KEY=CLOUD_KEY, PYTHONSTARTUP="/root/.pythonrc")
    member = deployment.client(deployment.member("team-a"))
    job_id = member.submit(long_job(env={"MY_SETTING": "on"}))["id"]
    try:
        pids = wait_for_ranks(job_id, deployment.log)
        for pid in pids:
            env = environment(pid)
            leaked = {name for name in env if name.startswith("CORRAL_")} - {"CORRAL_GANG_ID"}
            assert not leaked, f"rank {pid} got {leaked}"
            for secret in (OPERATOR_TOKEN, CLOUD_KEY, db_url, deployment.admin_token):
                assert not any(secret in value for value in env.values())
            assert "AWS_SECRET_ACCESS_KEY" not in env and "PYTHONSTARTUP" not in env
            assert env["MY_SETTING"] == "on"
            assert real_uid(pid) == NOBODY, "ranks of a root server run as nobody"
        run_dir = deployment.home / "runs" / f"job-{job_id}"
        records = deployment.home / "records" / f"job-{job_id}"
        assert (run_dir.stat().st_uid, stat.S_IMODE(run_dir.stat().st_mode)) == (NOBODY, 0o700)
        assert (records.stat().st_uid, stat.S_IMODE(records.stat().st_mode)) == (0, 0o700)
        log = records / "attempt-1.log"
        assert (log.stat().st_uid, stat.S_IMODE(log.stat().st_mode)) == (0, 0o600)
        assert environment(pids[0])["HOME"] == str(run_dir)
    finally:
        member.cancel_job(job_id)


def test_a_server_whose_job_user_cannot_run_the_interpreter_refuses_to_start(
        tmp_path: Path, job_identity_can_run_python: None) -> None:
    # pytest's temporary folders are 0700: nobody cannot pass through to this link.
    hidden = tmp_path / "hidden"
    hidden.mkdir(mode=0o700)
    python = hidden / "python"
    python.symlink_to(sys.executable)
    with pytest.raises(CorralError, match="job user nobody .* cannot run"):
        check_job_identity(JobTrust(parse_job_user("nobody")), str(python))
    check_job_identity(JobTrust(parse_job_user("nobody")), sys.executable)
