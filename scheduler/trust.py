"""What a server trusts its tenants' jobs with: the identity their ranks run as, the folders
they may read (docs/security.md).

:class:`JobTrust` holds the server's defaults; a tenant's own ``job_user``, ``data_roots`` and
``model_roots`` (``corral admin tenant set``) override them. Embedded mode has no
:class:`JobTrust`: one person's jobs run as that person and read what that person can.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from scheduler.db.models import Tenant
from scheduler.domain.errors import CorralError
from scheduler.domain.roots import AllowedRoots, check_root_list
from scheduler.gangs.protocol import JobIdentity

JOB_USER = re.compile(r"^(?:[a-z_][a-z0-9_-]{0,31}|\d{1,10}(?::\d{1,10})?)$")
UNPRIVILEGED_DEFAULT = "nobody"
"""Whom a root server runs jobs as when nothing is configured."""


def parse_job_user(text: str) -> JobIdentity:
    """``nobody``, ``1000`` or ``1000:1000`` as a uid, gid and name; CorralError if unknown."""
    if not JOB_USER.match(text):
        raise CorralError(f"job user {text!r} is neither a user name nor UID or UID:GID")
    if text[0].isdigit():
        uid_text, _, gid_text = text.partition(":")
        uid = int(uid_text)
        try:
            entry = pwd.getpwuid(uid)
            name, gid = entry.pw_name, entry.pw_gid
        except KeyError:
            name, gid = str(uid), uid
        return JobIdentity(uid, int(gid_text) if gid_text else gid, name)
    try:
        entry = pwd.getpwnam(text)
    except KeyError:
        raise CorralError(f"job user {text!r} does not exist on this machine; create it "
                          f"(useradd --system {text}) or give UID:GID") from None
    return JobIdentity(entry.pw_uid, entry.pw_gid, entry.pw_name)


def identity_name(identity: JobIdentity) -> str:
    try:
        group = grp.getgrgid(identity.gid).gr_name
    except KeyError:
        group = str(identity.gid)
    return f"{identity.name} (uid {identity.uid}, gid {identity.gid} {group})"


def _switch_to(identity: JobIdentity) -> JobIdentity | None:
    """``identity``, or None when it is the server's own user: no switch is needed (root said
    explicitly, or a server run as the job user itself)."""
    return None if identity.uid == os.geteuid() else identity


@dataclass(frozen=True, slots=True)
class JobTrust:
    """A server's rules for its tenants' jobs (server mode)."""

    job_user: JobIdentity | None
    """Whom ranks run as unless their tenant names another; None: the server's own user."""
    roots: AllowedRoots = field(default_factory=AllowedRoots)
    """Folders jobs may read unless their tenant has its own."""

    @classmethod
    def configure(cls, job_user: str, data_roots: Sequence[str],
                  model_roots: Sequence[str]) -> JobTrust:
        """The server's rules from its settings: ``job_user`` empty means ``nobody`` for a
        server running as root, the server's own user otherwise."""
        if job_user:
            identity = _switch_to(parse_job_user(job_user))
        elif os.geteuid() == 0:
            identity = _switch_to(parse_job_user(UNPRIVILEGED_DEFAULT))
        else:
            identity = None
        try:
            roots = AllowedRoots(tuple(check_root_list("data_roots", data_roots)),
                                 tuple(check_root_list("model_roots", model_roots)))
        except CorralError as err:
            raise CorralError(f"server settings: {err}") from None
        return cls(identity, roots)

    def identity_for(self, tenant: Tenant | None) -> JobIdentity | None:
        """Whom this tenant's ranks run as."""
        if tenant is not None and tenant.job_user:
            return _switch_to(parse_job_user(tenant.job_user))
        return self.job_user

    def roots_for(self, tenant: Tenant | None) -> AllowedRoots:
        """The folders this tenant's jobs may read: its own roots where set, else the server's."""
        if tenant is None:
            return self.roots
        data = tuple(tenant.data_roots) if tenant.data_roots is not None else self.roots.data
        model = tuple(tenant.model_roots) if tenant.model_roots is not None \
            else self.roots.model
        return AllowedRoots(data, model)
