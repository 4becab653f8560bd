"""execution_shards: one row per shard of a sharded fan-out (its claim and its outcome)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from xcoin_trading.store.types import BigId, JSONType, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "execution_shards",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("execution_id", BigId, sa.ForeignKey("strategy_executions.id"), nullable=False),
        sa.Column("shard", sa.Integer, nullable=False),
        sa.Column("shards", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("worker_id", sa.String(200)),
        sa.Column("dagster_run_id", sa.String(64)),
        sa.Column("started_at", UTCDateTime),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("subscribers_count", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("details", JSONType),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("execution_id", "shard"),
    )
    op.create_index("ix_execution_shards_updated_at", "execution_shards", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_execution_shards_updated_at", "execution_shards")
    op.drop_table("execution_shards")
