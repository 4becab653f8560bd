"""OAuth login: a small provider interface, and Google (OpenID Connect, authorization-code flow).

Flow: `GET /auth/oauth/{provider}/authorize` returns the provider's URL with a signed, expiring
`state`; the provider sends the browser to the redirect URI with `code` and `state`; the frontend
(or the browser directly) calls `GET /auth/oauth/{provider}/callback?code=&state=`, which exchanges
the code, reads the identity and returns our own JWT. Google is enabled when
`XCOIN_GOOGLE_CLIENT_ID`, `XCOIN_GOOGLE_CLIENT_SECRET` and `XCOIN_GOOGLE_REDIRECT_URI` are set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlencode

import httpx

from xcoin_trading.api.errors import UpstreamUnavailable
from xcoin_trading.config import Settings
from xcoin_trading.errors import Unauthorized


@dataclass(frozen=True)
class OAuthIdentity:
    """Who the provider says signed in. `subject` is the provider's stable user id."""

    provider: str
    subject: str
    email: str
    email_verified: bool
    name: str | None = None


class OAuthProvider(Protocol):
    @property
    def name(self) -> str: ...

    def authorization_url(self, state: str) -> str: ...

    def identity(self, code: str) -> OAuthIdentity:
        """Exchange the authorization code; Unauthorized if the provider refuses it."""
        ...


class ProviderUnavailable(UpstreamUnavailable):
    """The identity provider could not be reached or answered nonsense (502)."""


@dataclass(frozen=True)
class GoogleProvider:
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str
    timeout: float = 10.0
    name: str = "google"

    AUTH_URL = "https://accounts.google.com/o/oauth2/v2/auth"
    TOKEN_URL = "https://oauth2.googleapis.com/token"
    USERINFO_URL = "https://openidconnect.googleapis.com/v1/userinfo"

    def authorization_url(self, state: str) -> str:
        query = {
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "response_type": "code",
            "scope": "openid email profile",
            "state": state,
            "prompt": "select_account",
        }
        return f"{self.AUTH_URL}?{urlencode(query)}"

    def identity(self, code: str) -> OAuthIdentity:
        # The userinfo answer comes straight from Google over TLS, which OIDC Core §3.1.3.7 accepts
        # in place of verifying the ID token's signature.
        try:
            with httpx.Client(timeout=self.timeout) as client:
                token = client.post(
                    self.TOKEN_URL,
                    data={
                        "code": code,
                        "client_id": self.client_id,
                        "client_secret": self.client_secret,
                        "redirect_uri": self.redirect_uri,
                        "grant_type": "authorization_code",
                    },
                )
                if token.status_code in (400, 401):
                    raise Unauthorized("the identity provider refused the authorization code")
                token.raise_for_status()
                info = client.get(
                    self.USERINFO_URL, headers={"Authorization": f"Bearer {token.json()['access_token']}"}
                )
                info.raise_for_status()
                claims = info.json()
        except (httpx.HTTPError, KeyError, ValueError):
            raise ProviderUnavailable(
                "google sign-in failed: the identity provider could not be reached"
            ) from None
        if not claims.get("sub") or not claims.get("email"):
            raise ProviderUnavailable("google sign-in failed: no subject or email in the answer")
        return OAuthIdentity(
            provider=self.name,
            subject=str(claims["sub"]),
            email=str(claims["email"]),
            email_verified=bool(claims.get("email_verified")),
            name=claims.get("name"),
        )


def providers_from_settings(settings: Settings) -> dict[str, OAuthProvider]:
    providers: dict[str, OAuthProvider] = {}
    if settings.google_client_id and settings.google_client_secret and settings.google_redirect_uri:
        providers["google"] = GoogleProvider(
            settings.google_client_id, settings.google_client_secret, settings.google_redirect_uri
        )
    return providers
