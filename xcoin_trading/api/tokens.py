"""JWT access tokens (HS256, with expiry) and short-lived signed OAuth `state` values.

The signing secret comes from `XCOIN_JWT_SECRET`. On the embedded default, when it is unset, one is
generated once into `<XCOIN_HOME>/jwt.key` (mode 0600), as the vault does for its master key;
outside the embedded default a missing secret is a configuration error.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt

from xcoin_trading.config import Settings, private_dir, private_file
from xcoin_trading.errors import ConfigError, Unauthorized
from xcoin_trading.timeframes import utcnow

log = logging.getLogger(__name__)

ALGORITHM = "HS256"
ISSUER = "xcoin"
ACCESS_TTL = timedelta(hours=24)
STATE_TTL = timedelta(minutes=10)
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash
USER_ID_RE = re.compile(r"[1-9][0-9]{0,18}", re.ASCII)
MAX_USER_ID = 2**63 - 1


def jwt_key_path(settings: Settings) -> Path:
    return settings.home / "jwt.key"


def _embedded_secret(path: Path) -> str:
    if not path.exists():
        private_dir(path.parent)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process won the race; read theirs
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48) + "\n")
            log.warning(
                "generated a JWT secret at %s (embedded default); set XCOIN_JWT_SECRET in production", path
            )
    private_file(path)
    return path.read_text().strip()


def jwt_secret(settings: Settings) -> str:
    secret = settings.jwt_secret
    if secret is None:
        if not settings.embedded:
            raise ConfigError(
                "XCOIN_JWT_SECRET is not set: a JWT secret is required outside the embedded default"
            )
        secret = _embedded_secret(jwt_key_path(settings))
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"XCOIN_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
    return secret


@dataclass(frozen=True)
class TokenIssuer:
    """Issues and checks tokens; every failure is the same generic Unauthorized."""

    secret: str = field(repr=False)
    access_ttl: timedelta = ACCESS_TTL

    @classmethod
    def from_settings(cls, settings: Settings, access_ttl: timedelta = ACCESS_TTL) -> TokenIssuer:
        return cls(jwt_secret(settings), access_ttl)

    def _encode(self, claims: dict[str, Any], ttl: timedelta) -> str:
        now = utcnow()
        payload = {**claims, "iss": ISSUER, "iat": now, "nbf": now, "exp": now + ttl}
        return jwt.encode(payload, self.secret, algorithm=ALGORITHM)

    def _decode(self, token: str, typ: str) -> dict[str, Any]:
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=[ALGORITHM],  # never trust the header's alg ("none", RS/HS confusion)
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "typ"]},
            )
        except jwt.PyJWTError:
            raise Unauthorized("invalid or expired token") from None
        if claims.get("typ") != typ:
            raise Unauthorized("invalid or expired token")
        return claims

    def access_token(self, user_id: int) -> str:
        return self._encode({"sub": str(user_id), "typ": "access"}, self.access_ttl)

    def user_id(self, token: str) -> int:
        sub = self._decode(token, "access")["sub"]
        # ASCII digits only: str.isdigit() also takes "²" (int() fails) and "١" (int() reads 1).
        if not isinstance(sub, str) or not USER_ID_RE.fullmatch(sub) or int(sub) > MAX_USER_ID:
            raise Unauthorized("invalid or expired token")
        return int(sub)

    def oauth_state(self, provider: str) -> str:
        """A signed, expiring `state` for the OAuth round trip (CSRF protection without server storage)."""
        return self._encode(
            {"sub": provider, "typ": "oauth_state", "nonce": secrets.token_urlsafe(16)}, STATE_TTL
        )

    def check_oauth_state(self, state: str, provider: str) -> None:
        if self._decode(state, "oauth_state")["sub"] != provider:
            raise Unauthorized("invalid or expired OAuth state")
