"""broker_credentials: at most one active key set per (user, broker)

Earlier parallel uploads could leave several active; the newest stays active, older ones are
deactivated (and their subscriptions moved to it, as an upload would have done) before the
partial unique index is built.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    on = "1" if op.get_bind().dialect.name == "sqlite" else "true"
    off = "0" if on == "1" else "false"
    newest = f"""(SELECT max(n.id) FROM broker_credentials n
                  WHERE n.user_id = c.user_id AND n.broker = c.broker AND n.is_active = {on})"""
    stale = f"SELECT c.id FROM broker_credentials c WHERE c.is_active = {on} AND c.id < {newest}"
    op.execute(
        f"""UPDATE subscriptions SET broker_credential_id = (
              SELECT {newest} FROM broker_credentials c WHERE c.id = subscriptions.broker_credential_id)
            WHERE broker_credential_id IN ({stale})"""
    )
    op.execute(f"UPDATE broker_credentials SET is_active = {off} WHERE id IN ({stale})")
    with op.batch_alter_table("broker_credentials") as batch_op:
        batch_op.create_index(
            "uq_broker_credentials_active_user_broker",
            ["user_id", "broker"],
            unique=True,
            sqlite_where=sa.text("is_active = 1"),
            postgresql_where=sa.text("is_active"),
        )


def downgrade() -> None:
    with op.batch_alter_table("broker_credentials") as batch_op:
        batch_op.drop_index(
            "uq_broker_credentials_active_user_broker",
            sqlite_where=sa.text("is_active = 1"),
            postgresql_where=sa.text("is_active"),
        )
