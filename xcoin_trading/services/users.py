"""Accounts: register and log in with an argon2 password hash.

Each argon2 hash or verification takes ~64 MiB and a core for a moment: at most
`Settings.password_check_concurrency` run at once per process (others wait their turn), so a burst
of logins cannot exhaust the server's memory."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from xcoin_trading.config import get_settings
from xcoin_trading.errors import Conflict, NotFound, Unauthorized, ValidationError
from xcoin_trading.services import validate
from xcoin_trading.store.models import User

_hasher = PasswordHasher()
MIN_PASSWORD = 8
# Verified against when the email is unknown, so both failures cost the same time.
_DUMMY_HASH = _hasher.hash("xcoin-timing-equaliser")
_slots: dict[int, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


@contextmanager
def password_slot() -> Iterator[None]:
    """One of the process's bounded argon2 slots, held for one hash or verification."""
    size = get_settings().password_check_concurrency
    with _slots_lock:
        slot = _slots.setdefault(size, threading.BoundedSemaphore(size))
    with slot:
        yield


def lock_user(session: Session, user_id: int) -> None:
    """Serialise one user's subscription and key changes. Lock order everywhere:
    users → strategies → subscriptions → broker_credentials."""
    session.execute(select(User.id).where(User.id == user_id).with_for_update())


def register_user(session: Session, email: str, password: str, name: str | None = None) -> User:
    address = validate.email(email)
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise ValidationError("password", f"must be at least {MIN_PASSWORD} characters")
    if session.scalar(select(User.id).where(User.email == address)) is not None:
        raise Conflict(f"email {address} is already registered")
    with password_slot():
        hashed = _hasher.hash(password)
    user = User(email=address, password_hash=hashed, name=name)
    try:
        with session.begin_nested():  # added inside: a clash rolls back only this insert
            session.add(user)
            session.flush()
    except IntegrityError:  # a parallel registration of the same address won the unique index
        raise Conflict(f"email {address} is already registered") from None
    return user


def authenticate(session: Session, email: str, password: str) -> User:
    """The user for these credentials, or Unauthorized("Invalid credentials") whatever was wrong."""
    address = (email or "").strip().lower()
    with password_slot():  # before the query: a waiting request holds no database connection
        user = session.scalar(select(User).where(User.email == address))
        hashed = user.password_hash if user is not None and user.password_hash else _DUMMY_HASH
        try:
            _hasher.verify(hashed, password or "")
        except (VerificationError, InvalidHashError):
            raise Unauthorized() from None
        if user is None or not user.is_active or not user.password_hash:
            raise Unauthorized()
        if _hasher.check_needs_rehash(user.password_hash):
            user.password_hash = _hasher.hash(password)
    return user


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None or not user.is_active:
        raise NotFound(f"user {user_id} not found")
    return user


def get_user_by_email(session: Session, email: str) -> User:
    address = (email or "").strip().lower()
    user = session.scalar(select(User).where(User.email == address))
    if user is None:
        raise NotFound(f"user {address} not found")
    return user
