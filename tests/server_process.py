"""Real `corral` processes for tests: a user's shell environment, the CLI, and `corral server`.

Shared by the server-mode integration tests and the security suite: every server is the
.venv's `corral server` on a free port, over SQLite or PostgreSQL.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.pg_server import free_port

CORRAL = str(Path(sys.executable).parent / "corral")
READY_TIMEOUT_S = 60.0
TOKEN = re.compile(r"^crl_\S+$", re.MULTILINE)


def cli_env(tmp_path: Path, **variables: str) -> dict[str, str]:
    """The environment of a user's shell: no Corral variables but these, no config file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env.update({"CORRAL_HOME": str(tmp_path / "cli-home"),
                "CORRAL_CONFIG": str(tmp_path / "no-config.yaml"), **variables})
    return env


def corral(env: dict[str, str], *args: str, stdin: str | None = None,
           timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CORRAL, *args], env=env, input=stdin, capture_output=True, text=True,
                          timeout=timeout_s, check=False)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def issued_token(done: subprocess.CompletedProcess[str]) -> str:
    out = ok(done)
    assert "cannot be shown again" in out
    found = TOKEN.search(out)
    assert found, out
    return found.group(0)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def start_server(tmp_path: Path, db_url: str, *options: str, host: str = "127.0.0.1",
                 ready: bool = True, home: Path | None = None, **variables: str) -> Server:
    """``corral server`` on a free port, its log in ``tmp_path``; ``variables`` are more of its
    environment (``CORRAL_JOB_USER=...``); waits for ``/readyz`` unless ``ready`` is False."""
    port = free_port()
    log = tmp_path / f"server-{port}.log"
    env = cli_env(tmp_path, CORRAL_HOME=str(home or tmp_path / "server-home"),
                  CORRAL_LOCAL_DEVICES="2", **variables)
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [CORRAL, "server", "--host", host, "--port", str(port), "--database-url", db_url,
             "--tick-interval-s", "0.3", *options], env=env, stdout=sink,
            stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while ready:
        if process.poll() is not None:
            pytest.fail(f"corral server exited {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"corral server not ready after {READY_TIMEOUT_S} s:\n{log.read_text()}")
        time.sleep(0.1)
    return server


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'server.db'}"
    return str(request.getfixturevalue("postgres_db_url"))


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Servers and runs a test starts; any still running at its end is killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def wait_for(check: object, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)

