"""Server mode: token names and prefixes, tenant limits, the scheduler lease, idempotency keys

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("tenant", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_pending_jobs", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("submissions_per_minute", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("max_priority", sa.Integer(), nullable=True))
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name", sa.String(length=128), nullable=False,
                                      server_default=""))
        batch_op.add_column(sa.Column("prefix", sa.String(length=16), nullable=False,
                                      server_default=""))
        batch_op.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True),
                                      nullable=True))
    with op.batch_alter_table("allocation", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_epoch", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.create_index("ix_job_tenant_submitted", ["tenant_id", "submitted_at"])
        batch_op.create_index("ix_job_tenant_state", ["tenant_id", "state"])
    op.create_table(
        "scheduler_lease",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=256), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_scheduler_lease")),
    )
    op.create_table(
        "idempotency_key",
        sa.Column("id", Id, nullable=False),
        sa.Column("tenant_id", Id, nullable=False),
        sa.Column("key", sa.String(length=256), nullable=False),
        sa.Column("request_sha256", sa.String(length=64), nullable=False),
        sa.Column("job_id", Id, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"],
                                name=op.f("fk_idempotency_key_tenant_id_tenant"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"],
                                name=op.f("fk_idempotency_key_job_id_job"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_key")),
        sa.UniqueConstraint("tenant_id", "key", name="uq_idempotency_key_tenant_key"),
    )


def downgrade() -> None:
    op.drop_table("idempotency_key")
    op.drop_table("scheduler_lease")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index("ix_job_tenant_state")
        batch_op.drop_index("ix_job_tenant_submitted")
    with op.batch_alter_table("allocation", schema=None) as batch_op:
        batch_op.drop_column("lease_epoch")
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
        batch_op.drop_column("prefix")
        batch_op.drop_column("name")
    with op.batch_alter_table("tenant", schema=None) as batch_op:
        batch_op.drop_column("max_priority")
        batch_op.drop_column("submissions_per_minute")
        batch_op.drop_column("max_pending_jobs")
