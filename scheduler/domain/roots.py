"""The folders a tenant's jobs may read their data and models from (server mode).

An admin gives each tenant (or the whole server) *roots*: ``data_roots`` for ``data.path``,
``model_roots`` for ``model.path`` and ``tokenizer.path``. A path counts as inside a root when
its real path (links resolved) lies in the root's real path, so a link planted inside a root
that points outside does not count. ``pkg:`` references name folders of installed packages and
``job:`` references the tenant's own exports; neither is confined by roots.

One answer for "missing" and "not allowed": a member who probes ``/etc/shadow`` or another
tenant's export learns nothing from the message that it would not learn about a typo.
Embedded mode has no roots (:data:`None`): one person's jobs read what that person can read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler.domain.errors import CorralError, SpecError
from scheduler.domain.locations import (
    check_reference,
    is_job_ref,
    is_package_ref,
    resolve_package_path,
)
from scheduler.domain.spec_limits import MAX_PATH_CHARS

MAX_ROOTS = 32


@dataclass(frozen=True, slots=True)
class AllowedRoots:
    """Folders a job's files must lie in: ``data`` for data.path, ``model`` for the rest."""

    data: tuple[str, ...] = ()
    model: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, list[str]]:
        return {"data": list(self.data), "model": list(self.model)}

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> AllowedRoots:
        return cls(tuple(value.get("data") or ()), tuple(value.get("model") or ()))

    def with_model_folder(self, folder: str) -> AllowedRoots:
        """These roots and one more model folder (a ``job:`` export resolved at submit)."""
        return AllowedRoots(self.data, (*self.model, folder))


def check_root_list(field: str, roots: Sequence[str]) -> list[str]:
    """Validate roots an admin sets: absolute, normalised folders; returns them normalised."""
    if len(roots) > MAX_ROOTS:
        raise CorralError(f"{field}: at most {MAX_ROOTS} folders, got {len(roots)}")
    clean = []
    for root in roots:
        if not isinstance(root, str) or not root.startswith("/") or len(root) > MAX_PATH_CHARS:
            raise CorralError(f"{field}: {root!r} is not an absolute folder path")
        if any(part in ("..", ".") for part in root.split("/")):
            raise CorralError(f"{field}: {root!r} has '.' or '..' parts; give the folder itself")
        if root == "/":
            raise CorralError(f"{field}: '/' would allow every file of the machine; name the "
                            f"folders the tenant's files live in")
        clean.append(os.path.normpath(root))
    return clean


def within(path: Path, roots: Iterable[str]) -> bool:
    """Whether ``path``, links resolved, lies in one of ``roots`` (links resolved too)."""
    real = os.path.realpath(path)
    for root in roots:
        base = os.path.realpath(root)
        if real == base or real.startswith(base.rstrip("/") + "/"):
            return True
    return False


def _checks(spec: Any) -> list[tuple[str, str | None, str, str]]:
    return [("data.path", spec.data.path, "file", "data"),
            ("model.path", spec.model.path, "dir", "model"),
            ("tokenizer.path", spec.tokenizer.path, "dir", "model")]


def check_spec_files(spec: Any, roots: AllowedRoots | None, tenant: str = "") -> None:
    """Raise :class:`SpecError` for a data, model or tokenizer path that is missing or, with
    ``roots``, outside them; both with one message. ``job:`` references are left to the
    scheduler, which replaces them by the tenant's own export at submit."""
    for field, value, kind, root_kind in _checks(spec):
        if value is None:
            continue
        check_reference(field, value)
        if is_job_ref(value):
            continue
        path = resolve_package_path(value, field) if is_package_ref(value) else Path(value)
        allowed = (roots is None or is_package_ref(value)
                   or within(path, roots.data if root_kind == "data" else roots.model))
        exists = path.is_file() if kind == "file" else path.is_dir()
        if allowed and exists:
            continue
        noun = "file" if kind == "file" else "directory"
        if roots is None:
            raise SpecError(f"{field}: {value} does not exist or is not a {noun}; fix the path "
                            f"(relative paths are resolved from the job file's folder)")
        option = "--data-root" if root_kind == "data" else "--model-root"
        raise SpecError(
            f"{field}: {value} does not exist, is not a {noun}, or lies outside the folders "
            f"tenant {tenant!r} may read; fix the path, or ask an admin to add its folder "
            f"(corral admin tenant set {tenant or 'TENANT'} {option} FOLDER)")
