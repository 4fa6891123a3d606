"""``$CORRAL_HOME`` kept private: the database, its journal and the jobs' logs are the service's.

:func:`prepare_home` creates the folder owner-only (0700), or traverse-only for others (0711)
where the ranks run as another identity and must reach their run folders below it; it sets the
process's umask to 077 so that the SQLite file, its WAL and shared-memory files, logs and
records are created 0600. :func:`audit_home` lists what is wider than that, for a warning at
start-up (an installation made before these rules, or loosened by hand).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
SQLITE_FILES = ("corral.db", "corral.db-wal", "corral.db-shm", "corral.db-journal")


def prepare_home(home: Path, traverse: bool = False) -> None:
    """Create ``home`` (0700; 0711 with ``traverse``) and make new files owner-only."""
    os.umask(PRIVATE_UMASK)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    home.chmod(0o711 if traverse else 0o700)  # others may at most pass, never list or read


def audit_home(home: Path, traverse: bool = False,
               database: Path | None = None) -> list[str]:
    """What in ``home`` (and the SQLite file ``database``, wherever it lies) others may read or
    write: one line each, with the command that fixes it. Traverse-only access to the folders
    is allowed when ``traverse``."""
    problems = []
    allowed_dir = 0o011 if traverse else 0
    for folder in (home, home / "runs", home / "records"):
        if folder.is_dir() and (mode := _mode(folder)) & 0o077 & ~allowed_dir:
            wanted = "711" if traverse else "700"
            problems.append(f"{folder} is mode {mode:o}: other users may list or change it; "
                            f"chmod {wanted} {folder}")
    files = [home / name for name in SQLITE_FILES]
    if database is not None:
        files += [database.with_name(database.name + suffix) for suffix in ("", "-wal", "-shm")]
    for path in dict.fromkeys(files):
        if path.exists() and (mode := _mode(path)) & 0o077:
            problems.append(f"{path} is mode {mode:o}: other users may read the database "
                            f"(tenants' secrets); chmod 600 {path}")
    records = home / "records"
    if records.is_dir():
        for path in sorted(records.glob("job-*/*.log"))[:1000]:
            if (mode := _mode(path, follow=False)) & 0o077:
                problems.append(f"{path} is mode {mode:o}: other users may read a job's log; "
                                f"chmod 600 {records}/job-*/*")
                break
    return problems


def _mode(path: Path, follow: bool = True) -> int:
    """The permission bits of ``path`` (of a link itself, unless ``follow``)."""
    return stat.S_IMODE((path.stat() if follow else path.lstat()).st_mode)
