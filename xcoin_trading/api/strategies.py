"""`/api/strategy-upload/strategies`: the caller's strategies and everyone's public ones."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from xcoin_trading.api import convert
from xcoin_trading.api.deps import SessionDep, UserDep
from xcoin_trading.api.routing import CONFLICT, FORBIDDEN, NOT_FOUND
from xcoin_trading.api.routing import router as make_router
from xcoin_trading.api.schemas.base import MAX_ID, NO_NUL, MessageOut
from xcoin_trading.api.schemas.strategies import StrategyCreate, StrategyListOut, StrategyOut, StrategyUpdate
from xcoin_trading.errors import ValidationError
from xcoin_trading.services import strategies
from xcoin_trading.store.models import Strategy

router = make_router(["strategies"], prefix="/api/strategy-upload/strategies")
StrategyId = Annotated[int, Path(ge=1, le=MAX_ID)]
STATUSES = ("PENDING", "VALID", "INVALID")


def validate(strategy: Strategy) -> None:
    strategies.record_validation(strategy)


@router.get("", response_model=StrategyListOut)
def list_strategies(
    user: UserDep,
    session: SessionDep,
    search: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
    status: Annotated[str | None, Query(pattern=r"^(?i:pending|valid|invalid)$")] = None,
    tags: Annotated[
        str | None, Query(max_length=1000, pattern=NO_NUL, description="comma-separated; all must match")
    ] = None,
) -> StrategyListOut:
    wanted = [t.strip() for t in tags.split(",") if t.strip()] if tags else None
    rows = strategies.list_strategies(session, user.id, search=search, status=status, tags=wanted)
    return StrategyListOut(strategies=[convert.strategy(r, user.id) for r in rows], total=len(rows))


@router.get("/{strategy_id}", response_model=StrategyOut, responses=NOT_FOUND)
def get_strategy(strategy_id: StrategyId, user: UserDep, session: SessionDep) -> StrategyOut:
    return convert.strategy(strategies.visible_strategy(session, user.id, strategy_id), user.id)


@router.post("", status_code=201, response_model=StrategyOut, responses=CONFLICT)
def create_strategy(body: StrategyCreate, user: UserDep, session: SessionDep) -> StrategyOut:
    if (body.source is None) == (body.builtin is None):
        raise ValidationError(
            "source", "give exactly one of source (Python code) or builtin (a built-in name)"
        )
    strategy = strategies.create_strategy(
        session,
        user.id,
        name=body.name,
        code=body.code,
        symbol=body.symbol,
        resolution=body.resolution,
        source=body.source,
        builtin=body.builtin,
        params=body.params,
        tags=body.tags,
        lookback=body.lookback,
        is_public=body.is_public,
        description=body.description,
        version=body.version,
    )
    validate(strategy)
    session.flush()
    return convert.strategy(strategy, user.id)


@router.put("/{strategy_id}", response_model=StrategyOut, responses={**NOT_FOUND, **FORBIDDEN})
def update_strategy(
    strategy_id: StrategyId, body: StrategyUpdate, user: UserDep, session: SessionDep
) -> StrategyOut:
    changes = body.model_dump(exclude_unset=True)
    for name, value in list(changes.items()):
        if value is None and name not in ("description",):
            raise ValidationError(StrategyUpdate.model_fields[name].alias or name, "cannot be null")
    if "source" in changes and "builtin" in changes:
        raise ValidationError("source", "give either source or builtin, not both")
    if "source" in changes:
        changes["builtin"] = None
    elif "builtin" in changes:
        changes["source"] = None
    strategy = strategies.update_strategy(session, user.id, strategy_id, **changes)
    if strategy.validation_status == "PENDING":  # code or its inputs changed
        validate(strategy)
    session.flush()
    return convert.strategy(strategy, user.id)


@router.delete("/{strategy_id}", response_model=MessageOut, responses={**NOT_FOUND, **FORBIDDEN, **CONFLICT})
def delete_strategy(strategy_id: StrategyId, user: UserDep, session: SessionDep) -> MessageOut:
    """Soft delete; refused while anyone is subscribed. The service drops it from live execution's
    registry once committed (as it does on every update)."""
    strategy = strategies.delete_strategy(session, user.id, strategy_id)
    return MessageOut(message=f"strategy {strategy.code!r} deleted")
