"""Strategy catalogue: create, update (owner only), soft delete (refused while subscribed).

Writers that depend on a strategy's subscribers (delete, edits of what subscribers trade,
subscribe, cancel) lock the strategy row first (`SELECT … FOR UPDATE`), so they serialise on it.
Lock order everywhere: users → strategies → subscriptions → broker_credentials."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import event, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from xcoin_trading.errors import Conflict, Forbidden, NotFound, ValidationError
from xcoin_trading.exchange.catalog import tradable_market
from xcoin_trading.services import validate
from xcoin_trading.store.db import locked_row
from xcoin_trading.store.models import Strategy, Subscription
from xcoin_trading.timeframes import TRADED_RESOLUTIONS, utcnow

CODE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{1,99}$")
MAX_LOOKBACK = 5000
MAX_SOURCE_BYTES = 256 * 1024
EDITABLE = {
    "name", "description", "version", "source", "builtin", "symbol", "resolution", "lookback",
    "params", "tags", "is_public", "is_active", "git_repo", "git_branch", "git_commit",
}  # fmt: skip
# What a subscriber signed up to trade: refused (409) while anyone is subscribed, since the
# subscription rules (one futures subscription per pair, max 1 position there) were checked against it.
# The market's kind (spot or futures) is part of its symbol. The code (source, built-in, params) may
# change: subscribers follow the author's strategy, as with any edit of its logic.
FIXED_WHILE_SUBSCRIBED = ("symbol", "resolution", "is_active")


# Told the strategy id (None: any strategy may have changed) once a change is committed. The live
# registry subscribes (`live.registry.follow_strategy_changes`): this layer does not import live.
StrategyListener = Callable[[int | None], None]
_listeners: list[StrategyListener] = []


def on_strategy_change(listener: StrategyListener) -> None:
    """Call `listener` after every committed strategy change from now on (once, however often added)."""
    if listener not in _listeners:
        _listeners.append(listener)


def _invalidate_after_commit(session: Session, strategy_id: int | None) -> None:
    """Delete-on-update for the live registry, once the change is committed (never before: a worker
    could re-cache the old row in between)."""

    def notify(_session: Session) -> None:
        for listener in list(_listeners):
            listener(strategy_id)

    event.listen(session, "after_commit", notify, once=True)


def _check_fields(fields: dict[str, Any]) -> dict[str, Any]:
    out = dict(fields)
    if "name" in out:
        out["name"] = validate.non_empty("name", out["name"], 200)
    if "symbol" in out:
        out["symbol"] = tradable_market(validate.non_empty("symbol", out["symbol"], 32)).symbol
    if "resolution" in out and out["resolution"] not in TRADED_RESOLUTIONS:
        raise ValidationError(
            "resolution", f"must be one of {', '.join(TRADED_RESOLUTIONS)}, got {out['resolution']!r}"
        )
    if "lookback" in out:
        out["lookback"] = validate.positive_int("lookback", out["lookback"], MAX_LOOKBACK)
    if "params" in out and not isinstance(out["params"], dict):
        raise ValidationError(
            "params", f"must be an object of parameter values, got {type(out['params']).__name__}"
        )
    if "tags" in out and (
        not isinstance(out["tags"], list) or not all(isinstance(t, str) and t for t in out["tags"])
    ):
        raise ValidationError("tags", "must be a list of non-empty strings")
    if out.get("source") is not None and len(out["source"].encode()) > MAX_SOURCE_BYTES:
        raise ValidationError("source", f"must be at most {MAX_SOURCE_BYTES} bytes")
    return out


def create_strategy(
    session: Session,
    author_id: int,
    *,
    name: str,
    code: str,
    symbol: str,
    resolution: str,
    source: str | None = None,
    builtin: str | None = None,
    params: dict[str, Any] | None = None,
    tags: list[str] | None = None,
    lookback: int = 200,
    is_public: bool = False,
    description: str | None = None,
    version: str = "1.0.0",
) -> Strategy:
    if not isinstance(code, str) or not CODE_RE.match(code):
        raise ValidationError(
            "code", f"must be 2-100 of a-z 0-9 _ - starting with a letter or digit, got {code!r}"
        )
    if (source is None) == (builtin is None):
        raise ValidationError(
            "source", "give exactly one of source (Python code) or builtin (a built-in name)"
        )
    if source is not None:
        validate.non_empty("source", source)
    fields = _check_fields(
        dict(
            name=name, symbol=symbol, resolution=resolution, lookback=lookback,
            params=params or {}, tags=tags or [], source=source,
        )
    )  # fmt: skip
    _code_free(session, author_id, code)
    strategy = Strategy(
        code=code,
        author_id=author_id,
        builtin=builtin,
        is_public=bool(is_public),
        description=description,
        version=version,
        validation_status="PENDING",
        **fields,
    )
    try:
        with session.begin_nested():  # added inside: a clash rolls back only this insert
            session.add(strategy)
            session.flush()
    except IntegrityError:  # a concurrent create won the unique index
        _code_free(session, author_id, code)
        raise Conflict(f"strategy code {code!r} is not available; choose another") from None
    _invalidate_after_commit(session, None)
    return strategy


def _code_free(session: Session, author_id: int, code: str) -> None:
    """Codes are global (the CLI and backtests name strategies by code). A code used by someone else
    answers the same whether their strategy is public, private or deleted: nothing about it leaks."""
    owner = session.scalar(select(Strategy.author_id).where(Strategy.code == code))
    if owner is None:
        return
    if owner == author_id:
        raise Conflict(f"you already have a strategy with code {code!r}")
    raise Conflict(f"strategy code {code!r} is not available; choose another")


def record_validation(strategy: Strategy) -> Strategy:
    """Validate and record the verdict. Built-in: its parameters must be known and consistent (a
    ValidationError, nothing stored). User source: compiled, run on sample candles in the sandbox
    and checked for look-ahead; the verdict and reasons are stored (INVALID cannot trade live)."""
    if strategy.builtin is not None:
        from xcoin_trading.strategy import load_strategy

        load_strategy(strategy.builtin).resolve_params(strategy.params)
        status, problems = "VALID", None
    else:
        from xcoin_trading.strategy.validation import validate_strategy

        report = validate_strategy(strategy.code, strategy.source or "", dict(strategy.params or {}))
        status, problems = report.status, (report.errors or None)
    strategy.validation_status, strategy.validation_errors = status, problems
    strategy.validated_at = utcnow()
    return strategy


def visible_strategy(session: Session, actor_id: int, strategy_id: int) -> Strategy:
    """A strategy the actor may see: their own, or a public one. Otherwise NotFound."""
    return _visible(session.get(Strategy, strategy_id), actor_id, strategy_id)


def _visible(strategy: Strategy | None, actor_id: int, strategy_id: int) -> Strategy:
    if strategy is None or strategy.deleted_at is not None:
        raise NotFound(f"strategy {strategy_id} not found")
    if strategy.author_id != actor_id and not strategy.is_public:
        raise NotFound(f"strategy {strategy_id} not found")
    return strategy


def locked_visible_strategy(session: Session, actor_id: int, strategy_id: int) -> Strategy:
    """`visible_strategy`, with its row locked until the transaction ends (read fresh, not cached)."""
    return _visible(locked_row(session, Strategy, strategy_id), actor_id, strategy_id)


def owned_strategy(session: Session, actor_id: int, strategy_id: int, *, lock: bool = False) -> Strategy:
    strategy = (locked_visible_strategy if lock else visible_strategy)(session, actor_id, strategy_id)
    if strategy.author_id != actor_id:
        raise Forbidden(f"strategy {strategy_id} belongs to another user")
    return strategy


def get_by_code(session: Session, code: str) -> Strategy:
    strategy = session.scalar(select(Strategy).where(Strategy.code == code, Strategy.deleted_at.is_(None)))
    if strategy is None:
        raise NotFound(f"strategy {code!r} not found")
    return strategy


def list_strategies(
    session: Session,
    actor_id: int,
    search: str | None = None,
    status: str | None = None,
    tags: list[str] | None = None,
) -> list[Strategy]:
    query = select(Strategy).where(
        Strategy.deleted_at.is_(None), or_(Strategy.author_id == actor_id, Strategy.is_public.is_(True))
    )
    if search:
        # A literal substring: % and _ in the search match themselves, not "anything".
        escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        query = query.where(
            or_(
                func.lower(Strategy.name).like(pattern, escape="\\"),
                func.lower(Strategy.code).like(pattern, escape="\\"),
            )
        )
    if status:
        query = query.where(Strategy.validation_status == status.upper())
    rows = session.scalars(query.order_by(Strategy.id)).all()
    if tags:
        wanted = set(tags)
        rows = [s for s in rows if wanted.issubset(set(s.tags or []))]
    return list(rows)


def update_strategy(session: Session, actor_id: int, strategy_id: int, **changes: Any) -> Strategy:
    strategy = owned_strategy(session, actor_id, strategy_id, lock=True)
    unknown = set(changes) - EDITABLE
    if unknown:
        raise ValidationError(sorted(unknown)[0], "cannot be changed")
    fields = _check_fields(changes)
    moved = [k for k in FIXED_WHILE_SUBSCRIBED if k in fields and fields[k] != getattr(strategy, k)]
    if moved:
        active = active_subscriber_count(session, strategy_id)
        if active:
            raise Conflict(
                f"{moved[0]} cannot change while strategy {strategy.code!r} has {active} active "
                "subscriptions; they must end first"
            )
    for key, value in fields.items():
        setattr(strategy, key, value)
    if {"source", "builtin", "params", "symbol", "resolution", "lookback"} & set(fields):
        strategy.validation_status = "PENDING"  # code or inputs changed: validate again
        strategy.validated_at = None
    session.flush()
    _invalidate_after_commit(session, strategy.id)
    return strategy


def active_subscriber_count(session: Session, strategy_id: int) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Subscription)
            .where(Subscription.strategy_id == strategy_id, Subscription.is_active.is_(True))
        )
        or 0
    )


def delete_strategy(session: Session, actor_id: int, strategy_id: int) -> Strategy:
    """Soft delete; refused while anyone is subscribed (subscribe locks the same row first)."""
    strategy = owned_strategy(session, actor_id, strategy_id, lock=True)
    active = active_subscriber_count(session, strategy_id)
    if active:
        raise Conflict(f"strategy {strategy.code!r} has {active} active subscriptions; they must end first")
    strategy.is_active = False
    strategy.deleted_at = utcnow()
    session.flush()
    _invalidate_after_commit(session, strategy.id)
    return strategy
