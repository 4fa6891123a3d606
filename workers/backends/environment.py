"""The environment of a gang's ranks: built from an allowlist, never inherited whole, and the
run folder they work in.

:func:`rank_environment` is the only way a backend makes one (the rules and their reasons are in
:mod:`scheduler.domain.environment`). What the scheduler's own process holds — the database URL
with its password, an operator's ``CORRAL_TOKEN``, cloud credentials — never reaches a rank.
:func:`prepare_run_dir` makes the run folder the ranks' own.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from scheduler.domain.environment import check_job_env_name, inherited
from scheduler.gangs.protocol import JobIdentity

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
"""The ranks' PATH after the interpreter's own folder: system folders only, not the service's."""


def project_root() -> Path | None:
    """The source checkout Corral runs from, if it is one (ranks must import it too)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").exists() else None


def service_environment(operator: Mapping[str, str],
                        python: str = sys.executable) -> dict[str, str]:
    """Variables for the local supervisor: the allowlisted part of ``operator`` (the
    scheduler's environment), a PATH of the interpreter's and system folders, and the project
    on PYTHONPATH when it runs from a source checkout. No job variable."""
    env = {name: value for name, value in operator.items() if inherited(name)}
    env["PATH"] = f"{Path(python).parent}:{SYSTEM_PATH}"
    root = project_root()
    paths = [path for path in env.get("PYTHONPATH", "").split(os.pathsep) if path]
    if root is not None and str(root) not in paths:
        env["PYTHONPATH"] = os.pathsep.join([*paths, str(root)])
    return env


def rank_environment(operator: Mapping[str, str], job: Mapping[str, str], *,
                     home: str, python: str = sys.executable,
                     user: str | None = None) -> dict[str, str]:
    """Variables for a gang's ranks: :func:`service_environment`, then Corral's own, then the
    job's ``env`` (checked again here: a spec stored before a rule was added must not slip
    through).

    ``home`` is the job's run folder: HOME and TMPDIR point into it, so caches and temporary
    files land where the job may write. ``user`` names the identity the ranks run as.
    """
    env = service_environment(operator, python)
    env.update(HOME=home, TMPDIR=home, PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1")
    if user is not None:
        env.update(USER=user, LOGNAME=user)
    for name, value in job.items():
        check_job_env_name(name)
        env[name] = value
    return env


def prepare_run_dir(run_dir: Path, identity: JobIdentity | None) -> None:
    """Make the job's run folder (0700). With another identity for the ranks, the runs folder
    above lets them pass (0711: no listing) and the run folder becomes theirs."""
    run_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    run_dir.mkdir(exist_ok=True, mode=0o700)
    if identity is not None:
        run_dir.parent.chmod(0o711)
        os.chown(run_dir, identity.uid, identity.gid, follow_symlinks=False)
        run_dir.chmod(0o700)
