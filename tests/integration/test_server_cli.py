"""`corral server` and the CLI in server mode as a team uses them: real processes, real HTTP.

Each server is the .venv's `corral server` on a free port, over SQLite or PostgreSQL; every
command is the real `corral` entry point with CORRAL_SERVER / CORRAL_TOKEN or a config file.
"""

from __future__ import annotations

import re
import signal
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from pydantic import ValidationError

from api.client import CorralClient
from api.server import check_exposure
from api.settings import Settings
from scheduler.db.migrate import upgrade
from scheduler.db.session import Database
from scheduler.domain.errors import CorralError
from scheduler.replica import Replica
from scheduler.service import SchedulerService
from tests.builders import spec_dict
from tests.server_process import (
    CORRAL,
    cli_env,
    corral,
    db_url,
    issued_token,
    ok,
    processes,
    start_server,
    wait_for,
)

__all__ = ["db_url", "processes"]  # fixtures

def write_job(folder: Path, name: str, **overrides: object) -> Path:
    """A job file whose corpus is a file next to it, named by a relative path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 300)
    spec = spec_dict(name=name, data={"source": "file", "path": "corpus.txt", "seq_len": 16},
                     work={"steps": 2, "eval_batches": 1}, resources={"devices": 1},
                     **overrides)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@dataclass
class BackgroundRun:
    process: subprocess.Popen[bytes]
    log: Path
    job_id: int


def run_in_background(env: dict[str, str], job: Path, log: Path) -> BackgroundRun:
    """Start `corral run JOB` and wait for the line that names its job."""
    with log.open("wb") as sink:
        process = subprocess.Popen([CORRAL, "run", str(job), "--poll-s", "0.3"],
                                   env={**env, "PYTHONUNBUFFERED": "1"}, stdout=sink,
                                   stderr=subprocess.STDOUT)
    def submitted() -> re.Match[str] | None:
        assert process.poll() is None, log.read_text()
        return re.search(r"submitted job (\d+)", log.read_text())

    wait_for(submitted)
    found = submitted()
    assert found is not None
    return BackgroundRun(process, log, int(found.group(1)))



def test_a_team_shares_one_server_through_the_cli(
        db_url: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]]) -> None:
    ok(corral(cli_env(tmp_path), "db", "upgrade", "--url", db_url))
    admin_token = issued_token(corral(cli_env(tmp_path, CORRAL_DATABASE_URL=db_url), "admin",
                                      "token", "issue", "--tenant", "ops", "--role", "admin"))
    # The jobs' files lie in pytest's 0700 folder, which only root may enter: the operator says
    # explicitly that jobs run as root here (tests/security runs them as nobody).
    server = start_server(tmp_path, db_url, CORRAL_JOB_USER="root",
                          CORRAL_DATA_ROOTS=str(tmp_path))
    processes.append(server.process)
    admin = cli_env(tmp_path, CORRAL_SERVER=server.url, CORRAL_TOKEN=admin_token)
    with CorralClient(server.url, admin_token) as sdk:  # set-up through the SDK: fewer processes
        members = {tenant: cli_env(tmp_path, CORRAL_SERVER=server.url,
                                   CORRAL_TOKEN=sdk.issue_token(tenant, "member")["token"])
                   for tenant in ("team-a", "team-b")}
        if not any(pool["name"] == "local" for pool in sdk.pools()):
            # PostgreSQL: pools are an admin's to register, never a replica's
            sdk.add_pool("local", "local", "cpu", nodes=1, devices_per_node=2)
        sdk.set_quota("cpu", 0, tenant="team-b")
        # One job really trains, on the SQLite server whose local pool registered itself; on
        # PostgreSQL team-a's job waits too, and every other step is the same.
        trains = db_url.startswith("sqlite")
        if not trains:
            sdk.set_quota("cpu", 0, tenant="team-a")

    runner = run_in_background(members["team-a"], write_job(tmp_path / "a", "tiny"),
                               tmp_path / "run.log")
    processes.append(runner.process)
    runs = runner.job_id
    parked = int(ok(corral(members["team-b"], "submit",
                           str(write_job(tmp_path / "b", "parked")))))
    queue_b = ok(corral(members["team-b"], "queue"))
    assert "parked" in queue_b and "tiny" not in queue_b  # a member sees its own tenant only
    foreign = corral(members["team-b"], "show", str(runs))
    assert foreign.returncode == 2 and f"no job with id {runs}" in foreign.stderr
    with CorralClient(server.url, members["team-b"]["CORRAL_TOKEN"]) as sdk:
        wait_for(lambda: (sdk.get_job(parked)["pending_reason"] or "").startswith("quota"))
    assert "Why pending: quota" in ok(corral(members["team-b"], "show", str(parked)))
    assert f"job {parked}: CANCELLED" in ok(corral(members["team-b"], "cancel", str(parked)))

    if trains:  # `corral run` follows the job to its end over REST
        assert runner.process.wait(timeout=120) == 0, runner.log.read_text()
        assert f"job {runs} SUCCEEDED" in runner.log.read_text()
        assert "step 2/2 loss" in ok(corral(members["team-a"], "logs", str(runs)))
    else:  # Ctrl-C on `corral run` cancels the waiting job through the API
        runner.process.send_signal(signal.SIGINT)
        assert runner.process.wait(timeout=60) == 130, runner.log.read_text()
        assert f"job {runs} CANCELLED" in runner.log.read_text()
    with CorralClient(server.url, members["team-a"]["CORRAL_TOKEN"]) as sdk:
        sent = sdk.get_job(runs)["spec"]  # the relative corpus path was made absolute here
        assert sent["data"]["path"] == str(tmp_path / "a" / "corpus.txt")
        assert "tenant" in sent and sent["tenant"] == "team-a"
    everything = ok(corral(admin, "queue", "--all"))  # an admin sees every tenant's jobs
    assert all(word in everything for word in ("tiny", "parked", "team-a", "team-b"))
    assert everything.count("CANCELLED") == (1 if trains else 2)
    assert httpx.get(f"{server.url}/readyz").json()["leader"] is True

    assert server.stop() == 0, server.log.read_text()
    assert_lease_released(db_url, tmp_path)


def assert_lease_released(db_url: str, tmp_path: Path) -> None:
    """A replica starting now leads at its first step, not after the lease's 10 s lapse."""
    db = Database(db_url)
    try:
        replica = Replica(SchedulerService(db, {}, runs_dir=tmp_path / "runs"), "next-replica")
        replica.step()
        assert replica.is_leader
    finally:
        db.dispose()


def test_tokens_come_from_the_environment_or_a_private_config_file(
        tmp_path: Path, processes: list[subprocess.Popen[bytes]]) -> None:
    db_url = f"sqlite:///{tmp_path / 'server.db'}"
    admin_token = issued_token(corral(cli_env(tmp_path, CORRAL_DATABASE_URL=db_url), "admin",
                                      "token", "issue", "--tenant", "ops", "--role", "admin"))
    server = start_server(tmp_path, db_url, "--no-scheduler")
    processes.append(server.process)

    wrong = corral(cli_env(tmp_path, CORRAL_SERVER=server.url, CORRAL_TOKEN="crl_wrong"), "queue")
    assert wrong.returncode == 2, wrong.stdout
    assert "error: the token is unknown or revoked" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    missing = corral(cli_env(tmp_path, CORRAL_SERVER=server.url), "queue")
    assert missing.returncode == 2 and "send an API token" in missing.stderr

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"server": server.url, "token": admin_token}))
    config.chmod(0o644)
    from_file = cli_env(tmp_path, CORRAL_SERVER=server.url, CORRAL_CONFIG=str(config))
    refused = corral(from_file, "queue")
    assert refused.returncode == 2
    assert f"{config} is readable by others (mode 0644): chmod 600 it" in refused.stderr
    config.chmod(0o600)
    assert "Jobs" in ok(corral(from_file, "queue"))  # the file's token, for the file's server
    elsewhere = server.url.replace("127.0.0.1", "localhost")  # the same server, another name
    kept = corral(from_file, "--server", elsewhere, "queue")
    assert kept.returncode == 2 and "send an API token" in kept.stderr  # not sent to another
    # Without --server or CORRAL_SERVER the CLI stays embedded (its own empty database here).
    assert "Tenants: none" in ok(corral(cli_env(tmp_path, CORRAL_CONFIG=str(config)), "admin",
                                        "tenant"))

    member = issued_token(corral(from_file, "admin", "token", "issue", "--tenant", "team-a",
                                 "--role", "member", "--name", "laptop"))
    login_config = tmp_path / "fresh" / "corral" / "config.yaml"
    logged_in = cli_env(tmp_path, CORRAL_SERVER=server.url, CORRAL_CONFIG=str(login_config))
    bad_login = corral(logged_in, "login", server.url, stdin="crl_wrong\n")
    assert bad_login.returncode == 2 and not login_config.exists()
    said = ok(corral(logged_in, "login", server.url, stdin=member + "\n"))
    assert "as tenant team-a (member)" in said
    assert stat.S_IMODE(login_config.stat().st_mode) == 0o600
    assert yaml.safe_load(login_config.read_text()) == {"server": server.url, "token": member}
    assert "Jobs" in ok(corral(logged_in, "queue"))
    denied = corral(logged_in, "admin", "token", "list")
    assert denied.returncode == 2 and "for admins" in denied.stderr

    listed = ok(corral(from_file, "admin", "token", "list", "--tenant", "team-a"))
    token_id = re.search(r"│ (\d+) +│ team-a", listed)
    assert token_id and member not in listed and member[:12] in listed
    ok(corral(from_file, "admin", "token", "revoke", token_id.group(1)))
    revoked = corral(logged_in, "queue")
    assert revoked.returncode == 2 and "unknown or revoked" in revoked.stderr
    assert server.stop() == 0, server.log.read_text()


def test_a_server_listens_beyond_loopback_only_with_auth_and_an_admin_token(
        tmp_path: Path, processes: list[subprocess.Popen[bytes]]) -> None:
    db_url = f"sqlite:///{tmp_path / 'server.db'}"
    db = Database(db_url)
    upgrade(db)
    try:
        for host in ("127.0.0.1", "127.3.2.1", "::1", "localhost"):
            check_exposure(Settings(host=host, database_url=db_url), db)
        with pytest.raises(CorralError, match="no admin token yet") as refused:
            check_exposure(Settings(host="0.0.0.0", database_url=db_url), db)
    finally:
        db.dispose()
    assert "corral admin token issue --tenant ops --role admin" in str(refused.value)
    with pytest.raises(ValidationError, match="auth can be off only on a loopback address"):
        Settings(host="0.0.0.0", auth=False, database_url=db_url)

    for options, message in (((), "refusing to listen on 0.0.0.0: the database has no admin"),
                             (("--no-auth",), "auth can be off only on a loopback address")):
        refusing = start_server(tmp_path, db_url, *options, host="0.0.0.0", ready=False)
        processes.append(refusing.process)
        assert refusing.process.wait(timeout=60) == 2
        assert message in refusing.log.read_text()

    issued_token(corral(cli_env(tmp_path, CORRAL_DATABASE_URL=db_url), "admin", "token",
                        "issue", "--tenant", "ops", "--role", "admin"))
    exposed = start_server(tmp_path, db_url, "--no-scheduler", host="0.0.0.0")
    processes.append(exposed.process)
    assert httpx.get(f"{exposed.url}/v1/whoami").status_code == 401
    assert exposed.stop() == 0, exposed.log.read_text()
