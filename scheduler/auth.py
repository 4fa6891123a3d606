"""API tokens: issue, check, list and revoke bearer tokens of tenants.

A token is ``crl_`` + 43 URL-safe characters (256 random bits from :mod:`secrets`). Only its
SHA-256 is stored, with its first characters (``prefix``) for listings; the plain token is
shown once, when it is issued. A token carries one tenant and one role:

- ``member``: submits and manages the jobs of its own tenant only;
- ``admin``: everything, every tenant (pools, nodes, tenants, quotas, tokens).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import select

from scheduler.db import repo
from scheduler.db.models import ApiToken, Tenant, as_utc, utcnow
from scheduler.db.session import Database
from scheduler.domain.errors import CorralError, NotFoundError

Role = Literal["admin", "member"]
ROLES: tuple[Role, ...] = ("admin", "member")
TOKEN_PREFIX = "crl_"
TOKEN_RANDOM_BYTES = 32
SHOWN_PREFIX_CHARS = 12
LAST_USED_RESOLUTION_S = 60.0
"""``last_used_at`` is written at most once a minute per token: a read request stays a read."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant and role of the token that authenticated the request."""

    tenant: str
    tenant_id: int
    role: Role
    token_id: int

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(db: Database, tenant: str, role: Role = "member",
                name: str = "") -> tuple[str, dict[str, Any]]:
    """Create a token for ``tenant`` (created if new); return the plain token, shown only now,
    and its listing row."""
    if role not in ROLES:
        raise CorralError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_RANDOM_BYTES)
    with db.write() as session:
        owner = repo.get_or_create_tenant(session, tenant)
        row = ApiToken(tenant_id=owner.id, token_hash=hash_token(token), role=role, name=name,
                       prefix=token[:SHOWN_PREFIX_CHARS])
        session.add(row)
        session.flush()
        return token, _token_row(row, owner.name)


def authenticate(db: Database, token: str) -> Principal | None:
    """The principal of a valid, unrevoked token, else None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    digest = hash_token(token)
    with db.read() as session:
        found = session.execute(
            select(ApiToken, Tenant.name).join(Tenant, Tenant.id == ApiToken.tenant_id)
            .where(ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None))).first()
        if found is None:
            return None
        row, tenant_name = found
        principal = Principal(tenant=tenant_name, tenant_id=row.tenant_id,
                              role=row.role, token_id=row.id)  # type: ignore[arg-type]
        stale = row.last_used_at is None or (
            utcnow() - as_utc(row.last_used_at) > timedelta(seconds=LAST_USED_RESOLUTION_S))
    if stale:
        with db.write() as session:
            used = session.get(ApiToken, principal.token_id)
            if used is not None:
                used.last_used_at = utcnow()
    return principal


def revoke_token(db: Database, token_id: int, tenant: str | None = None) -> dict[str, Any]:
    """Revoke token ``token_id`` (of ``tenant`` when given); revoking twice is harmless."""
    with db.write() as session:
        found = session.execute(
            select(ApiToken, Tenant.name).join(Tenant, Tenant.id == ApiToken.tenant_id)
            .where(ApiToken.id == token_id)).first()
        if found is None or (tenant is not None and found[1] != tenant):
            raise NotFoundError(f"no token with id {token_id}; `corral admin token list` "
                                f"lists them")
        row, tenant_name = found
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return _token_row(row, tenant_name)


def list_tokens(db: Database, tenant: str | None = None) -> list[dict[str, Any]]:
    with db.read() as session:
        query = (select(ApiToken, Tenant.name).join(Tenant, Tenant.id == ApiToken.tenant_id)
                 .order_by(ApiToken.id))
        if tenant is not None:
            query = query.where(Tenant.name == tenant)
        return [_token_row(row, name) for row, name in session.execute(query)]


def _token_row(row: ApiToken, tenant: str) -> dict[str, Any]:
    return {"id": row.id, "tenant": tenant, "role": row.role, "name": row.name,
            "prefix": row.prefix, "created_at": as_utc(row.created_at).isoformat(),
            "last_used_at": as_utc(row.last_used_at).isoformat() if row.last_used_at else None,
            "revoked": row.revoked_at is not None}
