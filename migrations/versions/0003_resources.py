"""resources: a model outlives its job (no foreign key on models.job_id); datasets.n_columns

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 02:40:00
"""
from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 0001 left the foreign key unnamed: PostgreSQL calls it models_job_id_fkey; on SQLite the
# batch copy names it through this convention so that it can be dropped.
SQLITE_NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def _job_fk_name() -> str:
    return "fk_models_job_id_jobs" if op.get_bind().dialect.name == "sqlite" else "models_job_id_fkey"


def upgrade() -> None:
    with op.batch_alter_table('models', naming_convention=SQLITE_NAMES) as batch_op:
        batch_op.drop_constraint(_job_fk_name(), type_='foreignkey')
    with op.batch_alter_table('datasets') as batch_op:
        batch_op.add_column(sa.Column('n_columns', sa.Integer(), nullable=False, server_default='0'))
    datasets = sa.table('datasets', sa.column('id', sa.String), sa.column('columns', sa.JSON),
                        sa.column('n_columns', sa.Integer))
    bind = op.get_bind()
    for row in bind.execute(sa.select(datasets.c.id, datasets.c.columns)).all():
        columns = json.loads(row.columns) if isinstance(row.columns, str) else row.columns
        bind.execute(datasets.update().where(datasets.c.id == row.id).values(n_columns=len(columns or [])))


def downgrade() -> None:
    with op.batch_alter_table('datasets') as batch_op:
        batch_op.drop_column('n_columns')
    op.execute("DELETE FROM models WHERE job_id NOT IN (SELECT id FROM jobs)")
    with op.batch_alter_table('models', naming_convention=SQLITE_NAMES) as batch_op:
        batch_op.create_foreign_key(_job_fk_name(), 'jobs', ['job_id'], ['id'], ondelete='CASCADE')
