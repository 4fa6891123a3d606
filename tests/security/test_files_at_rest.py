"""Finding 3: what the service keeps on disk is its own: a 0700 (0711 under root, for the job
identities to pass) home, a 0600 database and logs, and a warning at start-up about anything
wider."""

from __future__ import annotations

import stat
from pathlib import Path

from tests.security.conftest import Deploy
from tests.server_process import start_server


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_home_and_the_database_are_private_and_wider_modes_are_warned_about(
        db_url: str, deploy_with: Deploy) -> None:
    deployment = deploy_with()
    assert mode(deployment.home) == 0o711  # a root server's job identities pass, never list
    if not db_url.startswith("sqlite"):
        return  # PostgreSQL keeps its files itself
    database = Path(db_url.removeprefix("sqlite:///"))
    files = [database, database.with_name(database.name + "-wal"),
             database.with_name(database.name + "-shm")]
    assert {f.name: mode(f) for f in files if f.exists()} == \
        {f.name: 0o600 for f in files if f.exists()}
    assert "may read the database" not in deployment.log()
    deployment.server.stop()
    database.chmod(0o644)  # as an older Corral, or a careless hand, left it
    restarted = start_server(deployment.tmp_path, db_url, home=deployment.home)
    try:
        log = restarted.log.read_text()
        assert f"{database} is mode 644: other users may read the database" in log
        assert f"chmod 600 {database}" in log
    finally:
        restarted.stop()


def test_embedded_mode_keeps_its_home_private(tmp_path: Path) -> None:
    import os

    from api.embedded import open_embedded

    previous = os.umask(0o022)
    try:
        service = open_embedded(home=tmp_path / "home")
        service.db.dispose()
        home = tmp_path / "home"
        assert mode(home) == 0o700
        assert mode(home / "corral.db") == 0o600
    finally:
        os.umask(previous)
