"""One error hierarchy for the domain. Messages name the field or object and the reason."""

from __future__ import annotations


class XcoinError(Exception):
    """Base of every error the platform raises on purpose."""


class ValidationError(XcoinError):
    """Bad input: names the field and the reason; nothing was changed."""

    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field} {reason}")


class NotFound(XcoinError):
    """The object does not exist, or the caller may not see it (we never leak which)."""


class Forbidden(XcoinError):
    """The caller is known but may not do this."""


class Conflict(XcoinError):
    """The request clashes with existing state (duplicate, already paused, ...)."""


class ConfigError(XcoinError):
    """The platform is misconfigured (missing master key, bad URL, ...)."""


class VaultError(XcoinError):
    """A secret could not be decrypted or encrypted; never carries the secret."""


class Unauthorized(XcoinError):
    """Authentication failed; deliberately generic so it leaks nothing."""

    def __init__(self, message: str = "Invalid credentials"):
        super().__init__(message)
