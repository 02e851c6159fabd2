"""job outcomes: jobs.stop_reason/stop_detail/eta_s/best_metrics; models.partial/partial_reason

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 02:30:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_COLUMNS = (
    ('stop_reason', sa.String(length=32)),
    ('stop_detail', sa.Text()),
    ('eta_s', sa.Float()),
    ('best_metrics', sa.JSON()),
)


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        for name, kind in JOB_COLUMNS:
            batch_op.add_column(sa.Column(name, kind, nullable=True))
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.add_column(sa.Column('partial', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('partial_reason', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_column('partial_reason')
        batch_op.drop_column('partial')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        for name, _kind in reversed(JOB_COLUMNS):
            batch_op.drop_column(name)
