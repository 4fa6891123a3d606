"""pool.peak_flops, job.prediction / step_times_s / deadline_at / preempt_requested, tenant.cohort

Inputs of calibration and of deadlines and budgets, the preemption flag, and the cohort a
tenant borrows quota in.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tenant", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cohort", sa.String(length=128), nullable=True))
    with op.batch_alter_table("pool", schema=None) as batch_op:
        batch_op.add_column(sa.Column("peak_flops", sa.Float(), nullable=True))
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prediction", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("step_times_s", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("preempt_requested", sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column("preempt_signalled_at", sa.DateTime(timezone=True),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("preempt_signalled_at")
        batch_op.drop_column("preempt_requested")
        batch_op.drop_column("deadline_at")
        batch_op.drop_column("step_times_s")
        batch_op.drop_column("prediction")
    with op.batch_alter_table("pool", schema=None) as batch_op:
        batch_op.drop_column("peak_flops")
    with op.batch_alter_table("tenant", schema=None) as batch_op:
        batch_op.drop_column("cohort")
