"""`/api/strategies/...`: the caller's subscriptions to strategies (their own or public ones)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from xcoin_trading import money
from xcoin_trading.api import convert
from xcoin_trading.api.deps import SessionDep, UserDep
from xcoin_trading.api.routing import CONFLICT, NOT_FOUND
from xcoin_trading.api.routing import router as make_router
from xcoin_trading.api.schemas.base import MAX_ID
from xcoin_trading.api.schemas.subscriptions import (
    SubscribeRequest,
    SubscriptionListOut,
    SubscriptionOut,
    SubscriptionStatsOut,
    SubscriptionUpdate,
)
from xcoin_trading.errors import ValidationError
from xcoin_trading.services import subscriptions

router = make_router(["subscriptions"], prefix="/api/strategies")
ObjectId = Annotated[int, Path(ge=1, le=MAX_ID)]


@router.post(
    "/{strategy_id}/subscribe",
    status_code=201,
    response_model=SubscriptionOut,
    responses={**NOT_FOUND, **CONFLICT},
)
def subscribe(
    strategy_id: ObjectId, body: SubscribeRequest, user: UserDep, session: SessionDep
) -> SubscriptionOut:
    """Uses the caller's active exchange keys unless `brokerCredentialId` names other ones (404 if none)."""
    subscription = subscriptions.subscribe(
        session,
        user.id,
        strategy_id,
        capital=body.capital,
        risk_per_trade=body.risk_per_trade,
        leverage=body.leverage,
        max_positions=body.max_positions,
        max_daily_loss=body.max_daily_loss,
        sl_atr_multiplier=body.sl_atr_multiplier,
        tp_atr_multiplier=body.tp_atr_multiplier,
        broker_credential_id=body.broker_credential_id,
    )
    session.flush()
    session.refresh(subscription)
    return convert.subscription(subscription)


@router.get("/subscriptions", response_model=SubscriptionListOut)
def list_subscriptions(
    user: UserDep,
    session: SessionDep,
    include_cancelled: Annotated[bool, Query(alias="includeCancelled")] = False,
) -> SubscriptionListOut:
    rows = subscriptions.list_subscriptions(session, user.id, include_cancelled=include_cancelled)
    return SubscriptionListOut(subscriptions=[convert.subscription(r) for r in rows])


@router.get("/subscriptions/{subscription_id}", response_model=SubscriptionOut, responses=NOT_FOUND)
def get_subscription(subscription_id: ObjectId, user: UserDep, session: SessionDep) -> SubscriptionOut:
    return convert.subscription(subscriptions.get_subscription(session, user.id, subscription_id))


@router.get(
    "/subscriptions/{subscription_id}/stats", response_model=SubscriptionStatsOut, responses=NOT_FOUND
)
def stats(subscription_id: ObjectId, user: UserDep, session: SessionDep) -> SubscriptionStatsOut:
    sub = subscriptions.get_subscription(session, user.id, subscription_id)
    raw = subscriptions.stats(session, user.id, subscription_id)
    # The service's figures (camelCase, as the response), money as plain decimal strings.
    return SubscriptionStatsOut.model_validate(
        raw | {"totalPnl": money.plain(sub.total_pnl), "capital": money.plain(sub.capital)}
    )


@router.post(
    "/subscriptions/{subscription_id}/pause",
    response_model=SubscriptionOut,
    responses={**NOT_FOUND, **CONFLICT},
)
def pause(subscription_id: ObjectId, user: UserDep, session: SessionDep) -> SubscriptionOut:
    """No new entries while paused; open trades keep their exchange-side stop loss and take profit."""
    return convert.subscription(subscriptions.pause(session, user.id, subscription_id))


@router.post(
    "/subscriptions/{subscription_id}/resume",
    response_model=SubscriptionOut,
    responses={**NOT_FOUND, **CONFLICT},
)
def resume(subscription_id: ObjectId, user: UserDep, session: SessionDep) -> SubscriptionOut:
    return convert.subscription(subscriptions.resume(session, user.id, subscription_id))


@router.put(
    "/subscriptions/{subscription_id}", response_model=SubscriptionOut, responses={**NOT_FOUND, **CONFLICT}
)
def update(
    subscription_id: ObjectId, body: SubscriptionUpdate, user: UserDep, session: SessionDep
) -> SubscriptionOut:
    changes = body.model_dump(exclude_unset=True)
    for name, value in changes.items():
        if value is None and name in ("capital", "risk_per_trade", "leverage", "max_positions"):
            raise ValidationError(SubscriptionUpdate.model_fields[name].alias or name, "cannot be null")
    subscription = subscriptions.update_terms(session, user.id, subscription_id, **changes)
    session.flush()
    return convert.subscription(subscription)


@router.delete(
    "/subscriptions/{subscription_id}", response_model=SubscriptionOut, responses={**NOT_FOUND, **CONFLICT}
)
def cancel(subscription_id: ObjectId, user: UserDep, session: SessionDep) -> SubscriptionOut:
    """Cancel (soft): no new trades; the record and its history stay."""
    return convert.subscription(subscriptions.cancel(session, user.id, subscription_id))
