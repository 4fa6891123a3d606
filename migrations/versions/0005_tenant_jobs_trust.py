"""Tenants' job identity and the folders their jobs may read

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tenant", schema=None) as batch_op:
        batch_op.add_column(sa.Column("job_user", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("data_roots", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("model_roots", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenant", schema=None) as batch_op:
        batch_op.drop_column("model_roots")
        batch_op.drop_column("data_roots")
        batch_op.drop_column("job_user")
