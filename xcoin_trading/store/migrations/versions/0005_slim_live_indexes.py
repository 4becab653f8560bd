"""orders/trades: on Postgres the status indexes keep only rows in play; trades' single-column
strategy_id and user_id indexes dropped (composite indexes lead with them)

Every order answer and trade update wrote an entry into every index of its table (no UPDATE there
is HOT: status and updated_at are indexed). Ended orders and trades, almost every row in time, are
never looked up by status alone, so the status indexes keep the live rows only. SQLite keeps them
whole: its planner cannot prove `status IN (a subset)` implies the predicate.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Literal, not imported: a migration keeps meaning what it meant when written.
_LIVE_ORDER = "status IN ('INTENT', 'SENDING', 'OPEN', 'PARTIALLY_FILLED', 'UNKNOWN')"
_LIVE_TRADE = "status IN ('PENDING', 'OPEN')"


def _where(predicate: str | None) -> dict[str, object]:
    if predicate is None:
        return {}
    return {"postgresql_where": sa.text(predicate)}


def _status_index(table: str, column: str, predicate: str | None) -> None:
    name = f"ix_{table}_status_{column}"
    with op.batch_alter_table(table) as batch_op:
        batch_op.drop_index(name)
        batch_op.create_index(name, ["status", column], unique=False, **_where(predicate))


def upgrade() -> None:
    _status_index("orders", "market", _LIVE_ORDER)
    _status_index("trades", "symbol", _LIVE_TRADE)
    with op.batch_alter_table("trades") as batch_op:
        batch_op.drop_index("ix_trades_strategy_id")
        batch_op.drop_index("ix_trades_user_id")


def downgrade() -> None:
    with op.batch_alter_table("trades") as batch_op:
        batch_op.create_index("ix_trades_user_id", ["user_id"], unique=False)
        batch_op.create_index("ix_trades_strategy_id", ["strategy_id"], unique=False)
    _status_index("trades", "symbol", None)
    _status_index("orders", "market", None)
