"""Bodies of the auth endpoints: register, login, tokens, OAuth."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from xcoin_trading.api.schemas.base import NO_NUL, Email, Request, Response


class RegisterRequest(Request):
    email: Email
    password: Annotated[str, StringConstraints(min_length=8, max_length=1024)]
    name: Annotated[str, StringConstraints(max_length=200, pattern=NO_NUL)] | None = None


class LoginRequest(Request):
    email: Annotated[str, StringConstraints(max_length=320, pattern=NO_NUL)]
    password: Annotated[str, StringConstraints(max_length=1024)]


class UserOut(Response):
    id: int
    email: str
    name: str | None
    oauth_provider: str | None
    created_at: datetime


class TokenOut(Response):
    token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int = Field(description="seconds until the token expires")
    user: UserOut


class OAuthProvidersOut(Response):
    providers: list[str]


class OAuthStartOut(Response):
    authorization_url: str
    state: str
