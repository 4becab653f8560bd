"""AES-256-GCM encryption of broker secrets, with the master key's id in every token so keys rotate.

Token format, master keys and rotation: docs/security.md ("Broker keys and the vault")."""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from xcoin_trading.config import Settings, get_settings, private_dir, private_file
from xcoin_trading.errors import ConfigError, VaultError

log = logging.getLogger(__name__)
TOKEN_VERSION = "v1"


class Secret:
    """A string that never shows itself in repr, str, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class MasterKey:
    key_id: str
    material: bytes = field(repr=False)


def _key_id(material: bytes) -> str:
    return hashlib.sha256(b"xcoin-master-key:" + material).hexdigest()[:12]


def parse_master_keys(raw: str) -> list[MasterKey]:
    keys: list[MasterKey] = []
    for n, entry in enumerate(part.strip() for part in raw.split(",")):
        if not entry:
            continue
        kid, _, b64 = entry.rpartition(":")
        try:
            material = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"XCOIN_ENCRYPTION_KEY entry {n + 1} is not valid base64") from None
        if len(material) != 32:
            raise ConfigError(
                f"XCOIN_ENCRYPTION_KEY entry {n + 1} must decode to 32 bytes, got {len(material)}"
            )
        keys.append(MasterKey(kid or _key_id(material), material))
    if not keys:
        raise ConfigError("XCOIN_ENCRYPTION_KEY is empty")
    return keys


def generate_key_b64() -> str:
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()


def _embedded_key(path: Path) -> str:
    if path.exists():
        private_file(path)
        return path.read_text().strip()
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(generate_key_b64() + "\n")
    log.warning(
        "generated a master key at %s (embedded default); set XCOIN_ENCRYPTION_KEY in production", path
    )
    return path.read_text().strip()


def key_entry(key: MasterKey) -> str:
    """`id:base64`, as XCOIN_ENCRYPTION_KEY and master.key hold a key (the id keeps tokens readable)."""
    return f"{key.key_id}:{base64.b64encode(key.material).decode()}"


def write_key_file(path: Path, keys: list[MasterKey]) -> None:
    """Replace the embedded master.key (mode 0600) by rename, so it is never half written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(",".join(key_entry(k) for k in keys) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def embedded_rotation_keys(settings: Settings) -> list[MasterKey] | None:
    """The keys for `vault rotate` on the embedded default, master.key made safe first: the new active
    key (XCOIN_ENCRYPTION_KEY's first, or a freshly generated one) followed by every key that may
    still have encrypted something. master.key holds all of them until `finish_embedded_rotation`,
    so a crash mid-rotation never leaves a credential that cannot be decrypted. None: not embedded."""
    if not settings.embedded:
        return None
    path = settings.master_key_path
    stored = parse_master_keys(path.read_text().strip()) if path.exists() else []
    given = parse_master_keys(settings.encryption_keys_b64) if settings.encryption_keys_b64 else []
    if not given:
        given = parse_master_keys(generate_key_b64())
    keys = list({k.key_id: k for k in [*given, *stored]}.values())
    path.parent.mkdir(parents=True, exist_ok=True)
    write_key_file(path, keys)
    return keys


def finish_embedded_rotation(settings: Settings, active: MasterKey) -> None:
    """After the credentials were re-encrypted and committed: master.key keeps only the active key."""
    write_key_file(settings.master_key_path, [active])


class Vault:
    def __init__(self, keys: list[MasterKey]):
        if not keys:
            raise ConfigError("the vault needs at least one master key")
        self._keys = {k.key_id: k for k in keys}
        self.active = keys[0]

    def __repr__(self) -> str:
        return f"Vault(active={self.active.key_id}, keys={list(self._keys)})"

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Vault:
        settings = settings or get_settings()
        raw = settings.encryption_keys_b64
        if raw is None:
            if not settings.embedded:
                raise ConfigError(
                    "XCOIN_ENCRYPTION_KEY is not set: a master key is required outside the embedded default"
                )
            raw = _embedded_key(settings.master_key_path)
        return cls(parse_master_keys(raw))

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    def encrypt(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(12)
        ciphertext = AESGCM(self.active.material).encrypt(nonce, plaintext.encode(), context.encode())
        b64 = base64.b64encode
        return f"{TOKEN_VERSION}:{self.active.key_id}:{b64(nonce).decode()}:{b64(ciphertext).decode()}"

    def decrypt(self, token: str, context: str) -> Secret:
        try:
            version, key_id, nonce_b64, ct_b64 = token.split(":")
        except ValueError:
            raise VaultError("ciphertext is malformed (expected v1:<key id>:<nonce>:<ciphertext>)") from None
        if version != TOKEN_VERSION:
            raise VaultError(f"ciphertext version {version!r} is not supported")
        key = self._keys.get(key_id)
        if key is None:
            raise VaultError(f"ciphertext was encrypted with master key {key_id}, which is not configured")
        try:
            nonce = base64.b64decode(nonce_b64, validate=True)
            ciphertext = base64.b64decode(ct_b64, validate=True)
            plaintext = AESGCM(key.material).decrypt(nonce, ciphertext, context.encode())
        except (InvalidTag, binascii.Error, ValueError):
            raise VaultError(
                "ciphertext failed authentication: it was tampered with, moved, or the master key is wrong"
            ) from None
        return Secret(plaintext.decode())

    def key_id_of(self, token: str) -> str:
        parts = token.split(":")
        return parts[1] if len(parts) == 4 else ""
