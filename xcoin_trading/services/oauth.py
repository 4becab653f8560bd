"""Accounts from an OAuth identity: find by (provider, subject), link by verified email, or create."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from xcoin_trading.errors import Conflict, Unauthorized
from xcoin_trading.services import validate
from xcoin_trading.store.models import User


def user_for_identity(
    session: Session, provider: str, subject: str, email: str, email_verified: bool, name: str | None = None
) -> User:
    user = session.scalar(select(User).where(User.oauth_provider == provider, User.oauth_id == subject))
    if user is not None:
        if not user.is_active:
            raise Unauthorized()
        return user
    if not email_verified:
        # Linking on an unverified address would hand someone else's account to whoever typed it.
        raise Unauthorized(f"{provider} has not verified this email address")
    address = validate.email(email)
    user = session.scalar(select(User).where(User.email == address))
    if user is not None:
        if not user.is_active:
            raise Unauthorized()
        if (user.oauth_provider, user.oauth_id) == (provider, subject):
            return user  # created by a parallel first sign-in of this identity since the lookup above
        if user.oauth_provider is not None:
            raise Conflict(f"email {address} is already linked to another {user.oauth_provider} account")
        user.oauth_provider, user.oauth_id = provider, subject
        return user
    user = User(email=address, password_hash=None, name=name, oauth_provider=provider, oauth_id=subject)
    try:
        with session.begin_nested():
            session.add(user)
            session.flush()
    except IntegrityError:  # a parallel first sign-in of this identity created the account first
        winner = session.scalar(select(User).where(User.oauth_provider == provider, User.oauth_id == subject))
        if winner is None:  # the address was registered another way meanwhile
            raise Conflict(f"email {address} was just registered; sign in again") from None
        if not winner.is_active:
            raise Unauthorized() from None
        return winner
    return user
