"""Engines and transactions: SQLite embedded by default, PostgreSQL when configured.

No module-level engine: a :class:`Database` is built from a URL and passed where it is needed.

SQLite runs in WAL mode so readers never block the writer. A read-modify-write transaction
(:meth:`Database.write`) starts with ``BEGIN IMMEDIATE``: it takes the write lock *before* it
reads, so two processes can never both read "device 3 is free" and then both write. Plain
reads (:meth:`Database.read`) start a deferred transaction and never take the write lock.

A failure to connect at all (the server is down, the port closed, the credentials refused, the
SQLite folder missing) raises :class:`DatabaseUnreachable`, which carries the URL without its
password, so the CLI can say in one line which database it could not reach.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite writer waits for another's lock before failing (ms)."""


def corral_home() -> Path:
    """``$CORRAL_HOME``, default ``~/.corral``: database, run folders and logs live here."""
    return Path(os.environ.get("CORRAL_HOME", "~/.corral")).expanduser()


def default_url() -> str:
    """``$CORRAL_DATABASE_URL`` if set, else the embedded SQLite file under ``$CORRAL_HOME``."""
    url = os.environ.get("CORRAL_DATABASE_URL")
    if url:
        return url
    home = corral_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'corral.db'}"


def shown_url(url: str) -> str:
    """A database URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class DatabaseUnreachable(OperationalError):
    """Connecting to the database failed. An OperationalError still, so whatever handles a
    lost database (the API's 503) handles this one too."""

    url: str = ""
    """The database's URL without its password."""

    def reason(self) -> str:
        """The driver's own words, on one line."""
        return " ".join(str(self.orig).split()) or type(self.orig).__name__


def _install_connect_errors(engine: Engine, url: str) -> None:
    @event.listens_for(engine, "handle_error")
    def _on_error(context: ExceptionContext) -> None:
        # No connection yet: the error happened while connecting, not in a statement.
        if context.connection is None and isinstance(context.sqlalchemy_exception,
                                                     OperationalError):
            unreachable = DatabaseUnreachable(context.statement, context.parameters,
                                              context.original_exception)
            unreachable.url = shown_url(url)
            raise unreachable


def _install_sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself, so we can choose IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL is durable at checkpoints
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        write = connection.get_execution_options().get("corral_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _create_private(path: Path | None) -> None:
    """Create an SQLite file owner-only (0600) before SQLite does: it holds tenants' secrets,
    and SQLite gives its WAL and shared-memory files the database file's mode."""
    if path is None or path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class Database:
    """One database: an engine and the two kinds of transaction Corral uses."""

    def __init__(self, url: str | None = None, echo: bool = False) -> None:
        self.url = url or default_url()
        self.is_sqlite = self.url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine = create_engine(self.url, **kwargs)
        _install_connect_errors(self.engine, self.url)
        if self.is_sqlite:
            _create_private(self.sqlite_path)
            _install_sqlite_hooks(self.engine)
        self._write_engine = self.engine.execution_options(corral_write=True)
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(self._write_engine, expire_on_commit=False)

    @property
    def sqlite_path(self) -> Path | None:
        """The file of an SQLite database (None in memory or for other databases)."""
        database = make_url(self.url).database if self.is_sqlite else None
        return Path(database) if database and database != ":memory:" else None

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A read-modify-write transaction: commits on success, rolls back on any error."""
        with self._writer() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction (rolled back at the end)."""
        with self._reader() as session:
            try:
                yield session
            finally:
                session.rollback()

    def dispose(self) -> None:
        self.engine.dispose()
