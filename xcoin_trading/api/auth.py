"""`/auth`: register, log in (throttled per email and per IP), OAuth sign-in, who am I."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query, Request

from xcoin_trading.api import convert
from xcoin_trading.api.deps import SessionDep, UserDep, client_ip
from xcoin_trading.api.ratelimit import normalise_email
from xcoin_trading.api.routing import AUTHED, CONFLICT, ERROR, NOT_FOUND, UPSTREAM
from xcoin_trading.api.routing import router as make_router
from xcoin_trading.api.schemas.auth import (
    LoginRequest,
    OAuthProvidersOut,
    OAuthStartOut,
    RegisterRequest,
    TokenOut,
    UserOut,
)
from xcoin_trading.errors import NotFound, Unauthorized
from xcoin_trading.services import oauth as oauth_accounts
from xcoin_trading.services import users

router = make_router(["auth"], authed=False, prefix="/auth")
ProviderName = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
OAuthParam = Annotated[str, Query(min_length=1, max_length=4096, pattern=r"^[\x21-\x7e]+$")]


def _token(request: Request, user) -> TokenOut:
    tokens = request.app.state.tokens
    return TokenOut(
        token=tokens.access_token(user.id),
        expires_in=int(tokens.access_ttl.total_seconds()),
        user=convert.user(user),
    )


@router.post("/register", status_code=201, response_model=TokenOut, responses=CONFLICT)
def register(body: RegisterRequest, request: Request, session: SessionDep) -> TokenOut:
    user = users.register_user(session, body.email, body.password, body.name)
    return _token(request, user)


@router.post(
    "/login",
    response_model=TokenOut,
    responses={401: ERROR("Invalid credentials"), 429: ERROR("too many failed attempts; see Retry-After")},
)
def login(body: LoginRequest, request: Request, session: SessionDep) -> TokenOut:
    throttle = request.app.state.throttle
    email, ip = normalise_email(body.email), client_ip(request)
    throttle.reserve(email, ip)  # atomic: parallel attempts cannot all pass a check-then-count
    try:
        user = users.authenticate(session, body.email, body.password)
    except Unauthorized:
        raise  # the reservation stays: it was a failure
    except BaseException:
        throttle.release(email, ip)
        raise
    throttle.succeeded(email, ip)
    return _token(request, user)


@router.get("/me", response_model=UserOut, responses=AUTHED)
def me(user: UserDep) -> UserOut:
    return convert.user(user)


@router.get("/oauth/providers", response_model=OAuthProvidersOut)
def oauth_providers(request: Request) -> OAuthProvidersOut:
    return OAuthProvidersOut(providers=sorted(request.app.state.oauth))


def _provider(request: Request, name: str):
    provider = request.app.state.oauth.get(name)
    if provider is None:
        raise NotFound(f"OAuth provider {name!r} is not configured")
    return provider


@router.get("/oauth/{provider}/authorize", response_model=OAuthStartOut, responses=NOT_FOUND)
def oauth_authorize(provider: ProviderName, request: Request) -> OAuthStartOut:
    chosen = _provider(request, provider)
    state = request.app.state.tokens.oauth_state(provider)
    return OAuthStartOut(authorization_url=chosen.authorization_url(state), state=state)


@router.get(
    "/oauth/{provider}/callback",
    response_model=TokenOut,
    responses={**NOT_FOUND, **CONFLICT, **UPSTREAM, 401: ERROR("bad state or refused code")},
)
def oauth_callback(
    provider: ProviderName, code: OAuthParam, state: OAuthParam, request: Request, session: SessionDep
) -> TokenOut:
    chosen = _provider(request, provider)
    request.app.state.tokens.check_oauth_state(state, provider)
    identity = chosen.identity(code)
    user = oauth_accounts.user_for_identity(
        session, identity.provider, identity.subject, identity.email, identity.email_verified, identity.name
    )
    return _token(request, user)
