"""Broker API keys: stored encrypted, decrypted only where an exchange call is made."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from xcoin_trading.errors import Conflict, NotFound, ValidationError
from xcoin_trading.services import validate
from xcoin_trading.services.users import lock_user
from xcoin_trading.store.db import owned_row
from xcoin_trading.store.models import BrokerCredential, Subscription
from xcoin_trading.timeframes import utcnow
from xcoin_trading.vault import Secret, Vault

SUPPORTED_BROKERS = ("coindcx",)


def _context(user_id: int, broker: str, field: str) -> str:
    return f"broker_credentials:{user_id}:{broker}:{field}"


def mask(api_key: str) -> str:
    return ("****" + api_key[-4:]) if len(api_key) > 8 else "****"


@dataclass(frozen=True, slots=True)
class SealedKeys:
    """An account's keys, still encrypted, as the fan-out reads them for thousands of accounts at once
    (plain rows, not ORM instances): what `decrypt` needs of a `BrokerCredential`."""

    id: int
    user_id: int
    broker: str
    api_key_encrypted: str = field(repr=False)
    api_secret_encrypted: str = field(repr=False)


# The columns of a SealedKeys, in its field order: `SealedKeys(*row)` of a select of these.
SEALED_COLUMNS = tuple(getattr(BrokerCredential, name) for name in SealedKeys.__slots__)
AccountKeys = BrokerCredential | SealedKeys  # an account's keys as stored, either way read


@dataclass(frozen=True)
class DecryptedKeys:
    api_key: Secret
    api_secret: Secret


def add_credential(
    session: Session, vault: Vault, user_id: int, api_key: str, api_secret: str, broker: str = "coindcx"
) -> BrokerCredential:
    """Store new keys; they replace the user's active keys for that broker (subscriptions follow).

    Atomic under parallel uploads: the user row is locked first, the old set deactivated, the new
    one inserted (a partial unique index allows one active set per user and broker)."""
    api_key = validate.non_empty("api_key", api_key, 256)
    api_secret = validate.non_empty("api_secret", api_secret, 256)
    if broker not in SUPPORTED_BROKERS:
        raise ValidationError("broker", f"must be one of {', '.join(SUPPORTED_BROKERS)}, got {broker!r}")
    lock_user(session, user_id)
    previous = session.scalars(
        update(BrokerCredential)
        .where(*_active_set(user_id, broker))
        .values(is_active=False, updated_at=utcnow())
        .returning(BrokerCredential.id)
        .execution_options(synchronize_session="fetch")
    ).all()
    credential = BrokerCredential(
        user_id=user_id,
        broker=broker,
        api_key_encrypted=vault.encrypt(api_key, _context(user_id, broker, "api_key")),
        api_secret_encrypted=vault.encrypt(api_secret, _context(user_id, broker, "api_secret")),
        key_id=vault.active.key_id,
        api_key_hint=mask(api_key),
    )
    session.add(credential)
    session.flush()
    if previous:
        session.execute(
            update(Subscription)
            .where(Subscription.user_id == user_id, Subscription.broker_credential_id.in_(previous))
            .values(broker_credential_id=credential.id)
            .execution_options(synchronize_session="fetch")
        )
    return credential


def _active_set(user_id: int, broker: str) -> tuple[Any, ...]:
    """The user's active keys for the broker (one row at most, by a partial unique index)."""
    return (
        BrokerCredential.user_id == user_id,
        BrokerCredential.broker == broker,
        BrokerCredential.is_active.is_(True),
    )


def get_credential(session: Session, user_id: int, credential_id: int) -> BrokerCredential:
    return owned_row(session, BrokerCredential, credential_id, user_id, "broker credential")


def active_credential(session: Session, user_id: int, broker: str = "coindcx") -> BrokerCredential:
    credential = session.scalar(
        select(BrokerCredential).where(*_active_set(user_id, broker)).order_by(BrokerCredential.id.desc())
    )
    if credential is None:
        raise NotFound(f"no active {broker} API keys for this user")
    return credential


def revoke_active(session: Session, user_id: int, broker: str = "coindcx") -> BrokerCredential:
    """Deactivate the active keys (afterwards the user has none: status says disconnected); refused
    while active subscriptions trade with them. Under the user lock, so no subscribe or upload
    slips in between the check and the change."""
    lock_user(session, user_id)
    credential = active_credential(session, user_id, broker)
    session.refresh(credential)
    active = session.scalar(
        select(func.count())
        .select_from(Subscription)
        .where(Subscription.broker_credential_id == credential.id, Subscription.is_active.is_(True))
    )
    if active:
        raise Conflict(
            f"{active} active subscription(s) trade with these keys; cancel them first, "
            "or add new keys (which replace these)"
        )
    credential.is_active = False
    return credential


def revoke_credential(session: Session, user_id: int, credential_id: int) -> BrokerCredential:
    credential = get_credential(session, user_id, credential_id)
    credential.is_active = False
    return credential


def decrypt(vault: Vault, credential: AccountKeys) -> DecryptedKeys:
    """Plaintext keys for one exchange call; the Secret wrappers never print themselves."""
    return DecryptedKeys(
        api_key=vault.decrypt(
            credential.api_key_encrypted, _context(credential.user_id, credential.broker, "api_key")
        ),
        api_secret=vault.decrypt(
            credential.api_secret_encrypted, _context(credential.user_id, credential.broker, "api_secret")
        ),
    )


def mark_tested(credential: BrokerCredential) -> None:
    credential.last_tested_at = utcnow()


def rotate_all(session: Session, vault: Vault) -> int:
    """Re-encrypt every credential under the vault's active key, in the caller's one transaction."""
    count = 0
    for credential in session.scalars(select(BrokerCredential).with_for_update()).all():
        keys = decrypt(vault, credential)
        ctx_key = _context(credential.user_id, credential.broker, "api_key")
        ctx_secret = _context(credential.user_id, credential.broker, "api_secret")
        credential.api_key_encrypted = vault.encrypt(keys.api_key.reveal(), ctx_key)
        credential.api_secret_encrypted = vault.encrypt(keys.api_secret.reveal(), ctx_secret)
        credential.key_id = vault.active.key_id
        count += 1
    return count
