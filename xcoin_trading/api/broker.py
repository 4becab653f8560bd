"""`/api/broker`: the caller's exchange API keys. Stored encrypted; only ever shown masked."""

from __future__ import annotations

from fastapi import Request
from sqlalchemy import func, select

from xcoin_trading import money
from xcoin_trading.api import convert
from xcoin_trading.api.deps import SessionDep, SettingsDep, UserDep
from xcoin_trading.api.routing import CONFLICT, ERROR, NOT_FOUND, UPSTREAM
from xcoin_trading.api.routing import router as make_router
from xcoin_trading.api.schemas.base import MessageOut
from xcoin_trading.api.schemas.broker import (
    BalanceOut,
    BrokerKeyOut,
    BrokerKeysRequest,
    BrokerStatusOut,
    BrokerTestOut,
)
from xcoin_trading.errors import NotFound, ValidationError
from xcoin_trading.services import credentials
from xcoin_trading.store.models import Subscription
from xcoin_trading.vault import Vault

router = make_router(["broker"], prefix="/api/broker")


def _active_subscriptions(session, credential_id: int) -> int:
    return session.scalar(
        select(func.count())
        .select_from(Subscription)
        .where(Subscription.broker_credential_id == credential_id, Subscription.is_active.is_(True))
    )


@router.post("/keys", status_code=201, response_model=BrokerKeyOut)
def add_keys(
    body: BrokerKeysRequest, user: UserDep, session: SessionDep, settings: SettingsDep
) -> BrokerKeyOut:
    """Store new keys; they replace the active ones and the caller's subscriptions move to them."""
    credential = credentials.add_credential(
        session, Vault.from_settings(settings), user.id, body.api_key, body.api_secret, body.broker
    )
    return convert.broker_key(credential)


@router.post(
    "/test",
    response_model=BrokerTestOut,
    responses={**NOT_FOUND, **UPSTREAM, 400: ERROR("the exchange rejected the keys")},
)
def test_keys(user: UserDep, session: SessionDep, settings: SettingsDep, request: Request) -> BrokerTestOut:
    """Call the exchange's balances endpoint with the stored keys and return the balances."""
    from xcoin_trading.exchange.client import CoinDCXClient, Credentials

    credential = credentials.active_credential(session, user.id)
    keys = credentials.decrypt(Vault.from_settings(settings), credential)
    creds = Credentials(keys.api_key.reveal(), keys.api_secret.reveal())
    if not (creds.api_key.isascii() and creds.api_secret.isascii()):  # stored before the API checked it
        raise ValidationError("apiKey", "must be printable ASCII: store the keys again")
    with CoinDCXClient.from_settings(settings, credentials=creds, timeout=10.0, read_attempts=2) as client:
        balances = client.balances()
    credentials.mark_tested(credential)
    return BrokerTestOut(
        success=True,
        balances=[
            BalanceOut(
                currency=b.currency,
                balance=money.plain(b.balance),
                locked_balance=money.plain(b.locked_balance),
            )
            for b in balances
        ],
    )


@router.get("/status", response_model=BrokerStatusOut)
def status(user: UserDep, session: SessionDep) -> BrokerStatusOut:
    try:
        credential = credentials.active_credential(session, user.id)
    except NotFound:
        return BrokerStatusOut(
            connected=False, broker="coindcx", api_key=None, connected_at=None, last_tested_at=None,
            active_subscriptions=0,
        )  # fmt: skip
    return BrokerStatusOut(
        connected=True,
        broker=credential.broker,
        api_key=credential.api_key_hint,
        connected_at=credential.connected_at,
        last_tested_at=credential.last_tested_at,
        active_subscriptions=_active_subscriptions(session, credential.id),
    )


@router.delete("/keys", response_model=MessageOut, responses={**NOT_FOUND, **CONFLICT})
def delete_keys(user: UserDep, session: SessionDep) -> MessageOut:
    """Revoke the active keys; refused while active subscriptions trade with them. Afterwards the
    status says disconnected."""
    credential = credentials.revoke_active(session, user.id)
    return MessageOut(message=f"API keys {credential.api_key_hint} revoked")
