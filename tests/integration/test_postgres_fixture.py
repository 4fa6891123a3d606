"""The throw-away PostgreSQL server stores data, and each test's fresh database is its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

pytestmark = pytest.mark.postgres


def test_the_session_database_stores_and_returns_rows(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE pools (name TEXT PRIMARY KEY, devices INT)"))
            connection.execute(text("INSERT INTO pools VALUES ('cpu', 2), ('h100', 16)"))
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT name, devices FROM pools ORDER BY name"))
            assert rows.all() == [("cpu", 2), ("h100", 16)]
            encoding = connection.execute(text("SHOW server_encoding")).scalar_one()
            assert encoding == "UTF8"
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE pools"))
    finally:
        engine.dispose()


@pytest.mark.parametrize("turn", ["first", "second"])
def test_each_test_gets_an_empty_database_of_its_own(postgres_db_url: str, turn: str) -> None:
    engine = create_engine(postgres_db_url)
    try:
        # Whichever turn runs second would see the other's table if databases were shared.
        assert inspect(engine).get_table_names() == []
        with engine.begin() as connection:
            connection.execute(text(f"CREATE TABLE left_by_{turn} (id INT)"))
            fresh = connection.execute(
                text("SELECT datname FROM pg_database WHERE datname LIKE 'corral\\_%'")
            )
            # Only the session database and ours: the other turn's was dropped after it.
            names = set(fresh.scalars())
            assert names == {"corral_test", postgres_db_url.rsplit("/", 1)[1]}
    finally:
        engine.dispose()


def test_a_fresh_database_is_apart_from_the_session_database(
    postgres_url: str, postgres_db_url: str
) -> None:
    fresh, shared = create_engine(postgres_db_url), create_engine(postgres_url)
    try:
        with fresh.begin() as connection:
            connection.execute(text("CREATE TABLE only_here (id INT)"))
        assert postgres_db_url != postgres_url
        assert "only_here" not in inspect(shared).get_table_names()
    finally:
        fresh.dispose()
        shared.dispose()


def test_sqlite_url_is_a_file_in_the_test_folder(sqlite_url: str, tmp_path: Path) -> None:
    engine = create_engine(sqlite_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE jobs (id INT)"))
    finally:
        engine.dispose()
    assert (tmp_path / "corral.db").exists()
