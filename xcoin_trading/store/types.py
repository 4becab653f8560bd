"""Column types that keep money exact and time in UTC on both SQLite and Postgres."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator


class DecimalText(TypeDecorator):
    """SQLite has no exact decimal: store the canonical string, read back a Decimal."""

    impl = sa.String(64)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        return format(Decimal(str(value)), "f")

    def process_result_value(self, value, dialect):
        return None if value is None else Decimal(value)


# NUMERIC(38, 18) holds any crypto quantity or price exactly; SQLite keeps the decimal string.
Money = sa.Numeric(38, 18, asdecimal=True).with_variant(DecimalText(), "sqlite")


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC in, timezone-aware UTC out (SQLite forgets the zone otherwise)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; use timezone-aware UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite only auto-increments INTEGER PRIMARY KEY; Postgres gets BIGINT identities.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
