"""asynchronous predictions: status and worker fencing on predictions, result chunks

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 02:30:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bps.models

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_COLUMNS = (
    ('status', sa.String(length=16), dict(nullable=False, server_default='succeeded')),
    ('error', sa.Text(), dict(nullable=True)),
    ('progress', sa.Float(), dict(nullable=False, server_default='1')),
    ('dataset_id', sa.String(length=36), dict(nullable=True)),
    ('queue', sa.String(length=16), dict(nullable=False, server_default='cpu')),
    ('rows_done', sa.Integer(), dict(nullable=False, server_default='0')),
    ('attempt', sa.Integer(), dict(nullable=False, server_default='0')),
    ('worker_id', sa.String(length=200), dict(nullable=True)),
    ('heartbeat_at', bps.models.UTCDateTime(), dict(nullable=True)),
    ('published_at', bps.models.UTCDateTime(), dict(nullable=True)),
    ('started_at', bps.models.UTCDateTime(), dict(nullable=True)),
    ('finished_at', bps.models.UTCDateTime(), dict(nullable=True)),
)


def upgrade() -> None:
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        for name, kind, options in NEW_COLUMNS:
            batch_op.add_column(sa.Column(name, kind, **options))
        batch_op.create_index(batch_op.f('ix_predictions_status'), ['status'], unique=False)
    op.create_table('prediction_chunks',
    sa.Column('prediction_id', sa.String(length=36), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('n_rows', sa.Integer(), nullable=False),
    sa.Column('outputs', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['prediction_id'], ['predictions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('prediction_id', 'seq')
    )


def downgrade() -> None:
    op.drop_table('prediction_chunks')
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_predictions_status'))
        for name, _kind, _options in reversed(NEW_COLUMNS):
            batch_op.drop_column(name)
