"""Request-scoped dependencies: the settings, one unit of work per request, the calling user."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from xcoin_trading.config import Settings
from xcoin_trading.errors import NotFound, Unauthorized
from xcoin_trading.services.users import get_user
from xcoin_trading.store.db import session_scope
from xcoin_trading.store.models import User

bearer = HTTPBearer(auto_error=False, description="JWT from POST /auth/login or /auth/register")


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


# Requests holding a store connection at once, per process: below the pool's 30 (store/db.py) and
# anyio's 40 worker threads. A sync dependency takes its connection in one thread and the route runs
# in another; with more holders than threads, every thread could be waiting for a connection that a
# request waiting for a thread holds, until the pool's 30 s timeout answers 500. Waiting for a slot
# takes no thread.
STORE_SLOTS = 20


async def store_slot(request: Request) -> AsyncIterator[None]:
    async with request.app.state.store_slots:
        yield


def get_session(
    request: Request, _slot: Annotated[None, Depends(store_slot, scope="function")]
) -> Iterator[Session]:
    """Commits when the route returns, rolls back on any error; before the response is sent, so a
    failed commit is an error response, never a success that did not happen."""
    with session_scope(request.app.state.settings) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def current_user(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> User:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token")
    user_id = request.app.state.tokens.user_id(credentials.credentials)
    try:
        return get_user(session, user_id)
    except NotFound:  # deleted or deactivated since the token was issued
        raise Unauthorized("invalid or expired token") from None


UserDep = Annotated[User, Depends(current_user)]


def client_ip(request: Request) -> str:
    # Behind a proxy run uvicorn with --proxy-headers/--forwarded-allow-ips so this is the real client.
    return request.client.host if request.client else "unknown"
