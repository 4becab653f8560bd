"""Broker secrets: AES-256-GCM tokens, master keys from the environment, rotation that leaves no plaintext."""

from __future__ import annotations

import base64
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from xcoin_trading.cli import main
from xcoin_trading.config import get_settings, reset_settings
from xcoin_trading.errors import ConfigError, VaultError
from xcoin_trading.services import credentials, users
from xcoin_trading.store.db import dispose_engines, session_scope
from xcoin_trading.vault import Vault, parse_master_keys


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def test_token_names_version_and_key_and_hides_the_plaintext():
    vault = Vault(parse_master_keys(_key()))
    token = vault.encrypt("my-api-secret", "ctx")
    version, key_id, nonce, ct = token.split(":")
    assert (version, key_id) == ("v1", vault.active.key_id)
    assert len(base64.b64decode(nonce)) == 12
    assert "my-api-secret" not in token
    assert vault.decrypt(token, "ctx").reveal() == "my-api-secret"
    assert vault.encrypt("my-api-secret", "ctx") != token  # fresh nonce each time


def test_decrypted_secret_never_prints_itself():
    vault = Vault(parse_master_keys(_key()))
    secret = vault.decrypt(vault.encrypt("hunter2-secret", "c"), "c")
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret) and "hunter2" not in f"{secret}"


def test_keys_read_in_bulk_decrypt_like_the_row_and_never_print_their_ciphertext():
    """The fan-out reads accounts' keys as plain `SealedKeys` rows: same plaintext as the stored row,
    and neither the ciphertext nor the plaintext shows in their repr (a log line, a traceback)."""
    vault = Vault(parse_master_keys(_key()))
    key, secret = "api-key-12345678", "hunter2-secret"
    sealed = credentials.SealedKeys(
        id=7, user_id=3, broker="coindcx",
        api_key_encrypted=vault.encrypt(key, credentials._context(3, "coindcx", "api_key")),
        api_secret_encrypted=vault.encrypt(secret, credentials._context(3, "coindcx", "api_secret")),
    )  # fmt: skip
    plain = credentials.decrypt(vault, sealed)
    assert (plain.api_key.reveal(), plain.api_secret.reveal()) == (key, secret)
    shown = f"{sealed!r} {sealed}"
    assert sealed.api_key_encrypted not in shown and sealed.api_secret_encrypted not in shown
    assert "hunter2" not in shown and key not in shown
    other_user = credentials.SealedKeys(
        8, 4, "coindcx", sealed.api_key_encrypted, sealed.api_secret_encrypted
    )
    with pytest.raises(VaultError):  # the ciphertext is bound to its user: copied to another, it is refused
        credentials.decrypt(vault, other_user)


def test_tampered_ciphertext_is_refused_without_echoing_it():
    vault = Vault(parse_master_keys(_key()))
    token = vault.encrypt("secret-value", "c")
    head, ct = token.rsplit(":", 1)
    raw = bytearray(base64.b64decode(ct))
    raw[0] ^= 1
    tampered = f"{head}:{base64.b64encode(bytes(raw)).decode()}"
    with pytest.raises(VaultError, match="failed authentication") as err:
        vault.decrypt(tampered, "c")
    assert ct[:10] not in str(err.value)


def test_wrong_master_key_is_refused():
    token = Vault(parse_master_keys(f"k1:{_key()}")).encrypt("s", "c")
    with pytest.raises(VaultError, match="failed authentication"):
        Vault(parse_master_keys(f"k1:{_key()}")).decrypt(token, "c")
    with pytest.raises(VaultError, match="not configured"):
        Vault(parse_master_keys(_key())).decrypt(token, "c")


@pytest.mark.parametrize("raw", ["not base64!!", base64.b64encode(b"short").decode(), " , "])
def test_bad_master_key_configuration_is_a_clear_error(raw):
    with pytest.raises(ConfigError, match="XCOIN_ENCRYPTION_KEY"):
        parse_master_keys(raw)


def test_missing_master_key_outside_the_embedded_default_is_an_error(monkeypatch):
    monkeypatch.setenv("XCOIN_DATABASE_URL", "postgresql+psycopg2://u@127.0.0.1:1/db")
    reset_settings()
    with pytest.raises(ConfigError, match="XCOIN_ENCRYPTION_KEY is not set"):
        Vault.from_settings()


def test_embedded_default_generates_one_private_key_file(xcoin_home):
    first = Vault.from_settings()
    path = get_settings().master_key_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Vault.from_settings().active == first.active  # reused, not regenerated


def test_a_fresh_embedded_install_keeps_its_home_store_and_keys_private(xcoin_home):
    """Issue 13: a 0644 store let sandboxed code read every user's hashes and broker secrets."""
    from xcoin_trading.api.tokens import jwt_key_path, jwt_secret

    assert CliRunner().invoke(main, ["db", "upgrade"]).exit_code == 0
    with session_scope() as session:
        users.register_user(session, "a@example.com", "pw-long-enough-1", name="A")
    Vault.from_settings()
    settings = get_settings()
    jwt_secret(settings)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(xcoin_home) == 0o700
    store = Path(make_url(settings.database_url).database)
    for path in (store, settings.master_key_path, jwt_key_path(settings)):
        assert mode(path) == 0o600, path
    for suffix in ("-wal", "-shm"):
        if Path(str(store) + suffix).exists():
            assert mode(Path(str(store) + suffix)) == 0o600
    # An install made before this release is tightened on its next start.
    os.chmod(xcoin_home, 0o755)
    os.chmod(settings.master_key_path, 0o644)
    dispose_engines()
    reset_settings()
    assert CliRunner().invoke(main, ["db", "upgrade"]).exit_code == 0
    Vault.from_settings()
    assert mode(xcoin_home) == 0o700 and mode(settings.master_key_path) == 0o600


def _dump(settings) -> bytes:
    """Everything the database holds, as an attacker with a backup would see it."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        data = Path(url.database).read_bytes()
        for suffix in ("-wal", "-shm"):
            extra = Path(url.database + suffix)
            if extra.exists():
                data += extra.read_bytes()
        return data
    pg_dump = shutil.which("pg_dump") or next(
        iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"))), None
    )
    assert pg_dump, "pg_dump not found"
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return subprocess.run([str(pg_dump), plain], check=True, capture_output=True).stdout


def test_rotation_re_encrypts_everything_and_the_dump_holds_no_plaintext(store, monkeypatch):
    old = os.environ["XCOIN_ENCRYPTION_KEY"]
    secrets = {f"user{i}@x.io": (f"api-key-{i}-ABCDEFGH", f"api-secret-{i}-PLAINTEXT") for i in range(3)}
    vault = Vault.from_settings(store)
    with session_scope(store) as s:
        for email, (key, secret) in secrets.items():
            uid = users.register_user(s, email, "password-123").id
            credentials.add_credential(s, vault, uid, key, secret)

    new = _key()
    monkeypatch.setenv("XCOIN_ENCRYPTION_KEY", f"k2:{new},{old}")
    reset_settings()
    result = CliRunner().invoke(main, ["vault", "rotate"])
    assert result.exit_code == 0, result.output
    assert "re-encrypted 3 credentials under master key k2" in result.output
    dispose_engines()

    monkeypatch.setenv("XCOIN_ENCRYPTION_KEY", f"k2:{new}")  # the old key is gone now
    reset_settings()
    settings = get_settings()
    vault = Vault.from_settings(settings)
    with session_scope(settings) as s:
        for email, (key, secret) in secrets.items():
            cred = credentials.active_credential(s, users.get_user_by_email(s, email).id)
            assert cred.key_id == "k2"
            plain = credentials.decrypt(vault, cred)
            assert (plain.api_key.reveal(), plain.api_secret.reveal()) == (key, secret)
    dispose_engines()
    dump = _dump(settings)
    assert len(dump) > 1000
    for key, secret in secrets.values():
        assert secret.encode() not in dump and key.encode() not in dump


def _embedded_credentials(n: int = 2) -> dict[str, tuple[str, str]]:
    from xcoin_trading.store.db import upgrade

    settings = get_settings()
    upgrade(settings)
    secrets = {f"e{i}@x.io": (f"api-key-{i}-EMBEDDED", f"api-secret-{i}-EMBEDDED") for i in range(n)}
    vault = Vault.from_settings(settings)  # generates master.key
    with session_scope(settings) as s:
        for email, (key, secret) in secrets.items():
            credentials.add_credential(
                s, vault, users.register_user(s, email, "password-123").id, key, secret
            )
    return secrets


def _decrypts_in_a_fresh_process(secrets) -> None:
    """What the next `xcoin` run sees: the environment as it is now, master.key as it is on disk."""
    dispose_engines()
    reset_settings()
    settings = get_settings()
    vault = Vault.from_settings(settings)
    with session_scope(settings) as s:
        for email, (key, secret) in secrets.items():
            plain = credentials.decrypt(
                vault, credentials.active_credential(s, users.get_user_by_email(s, email).id)
            )
            assert (plain.api_key.reveal(), plain.api_secret.reveal()) == (key, secret)
    dispose_engines()


def test_embedded_rotate_generates_a_new_key_and_master_key_follows_it():
    secrets = _embedded_credentials()
    path = get_settings().master_key_path
    before = path.read_text()
    result = CliRunner().invoke(main, ["vault", "rotate"])
    assert result.exit_code == 0, result.output
    after = path.read_text().strip()
    assert after != before.strip() and "," not in after  # only the new key is left
    new_id = after.split(":")[0]
    assert f"re-encrypted 2 credentials under master key {new_id}" in result.output
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    _decrypts_in_a_fresh_process(secrets)


def test_embedded_rotate_to_a_given_key_leaves_master_key_usable_without_it(monkeypatch):
    secrets = _embedded_credentials()
    new = _key()
    monkeypatch.setenv("XCOIN_ENCRYPTION_KEY", f"k9:{new}")  # the old key lives only in master.key
    reset_settings()
    result = CliRunner().invoke(main, ["vault", "rotate"])
    assert result.exit_code == 0 and "under master key k9" in result.output, result.output
    assert get_settings().master_key_path.read_text().strip() == f"k9:{new}"
    monkeypatch.delenv("XCOIN_ENCRYPTION_KEY")  # the next run uses master.key alone
    _decrypts_in_a_fresh_process(secrets)


def test_embedded_rotate_that_fails_midway_keeps_every_key_in_master_key(monkeypatch):
    secrets = _embedded_credentials()
    old = get_settings().master_key_path.read_text().strip()

    def crash(session, vault):
        raise RuntimeError("killed mid-rotation")

    monkeypatch.setattr(credentials, "rotate_all", crash)
    result = CliRunner().invoke(main, ["vault", "rotate"])
    assert result.exit_code != 0
    assert old in get_settings().master_key_path.read_text()  # old and new both kept
    _decrypts_in_a_fresh_process(secrets)
