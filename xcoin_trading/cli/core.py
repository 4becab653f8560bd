"""Store, accounts, keys, strategies and subscriptions from the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from xcoin_trading.config import get_settings
from xcoin_trading.errors import ValidationError


def _session():
    from xcoin_trading.store.db import session_scope

    return session_scope(get_settings())


def _user_id(session, email: str) -> int:
    from xcoin_trading.services.users import get_user_by_email

    return get_user_by_email(session, email).id


@click.group("db")
def db_group() -> None:
    """The transactional store (SQLite embedded, Postgres via XCOIN_DATABASE_URL)."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply database migrations."""
    from xcoin_trading.store.db import upgrade

    settings = get_settings()
    upgrade(settings, revision)
    click.echo(f"database at {_safe_url(settings.database_url)} is at {revision}")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@click.group("users")
def users_group() -> None:
    """Platform accounts."""


@users_group.command("create")
@click.option("--email", required=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--name", default=None)
def users_create(email: str, password: str, name: str | None) -> None:
    """Register a user (argon2-hashed password)."""
    from xcoin_trading.services.users import register_user

    with _session() as session:
        user = register_user(session, email, password, name)
        click.echo(f"user {user.id} {user.email} created")


@click.group("broker")
def broker_group() -> None:
    """Exchange API keys (stored encrypted)."""


@broker_group.command("add")
@click.option("--user", "email", required=True, help="Owner's email.")
@click.option("--api-key", required=True)
@click.option("--api-secret", prompt=True, hide_input=True)
def broker_add(email: str, api_key: str, api_secret: str) -> None:
    """Store CoinDCX API keys for a user, encrypted with the master key."""
    from xcoin_trading.services.credentials import add_credential
    from xcoin_trading.vault import Vault

    vault = Vault.from_settings(get_settings())
    with _session() as session:
        credential = add_credential(session, vault, _user_id(session, email), api_key, api_secret)
        click.echo(
            f"broker keys {credential.id} ({credential.api_key_hint}) stored under master key {credential.key_id}"
        )


@click.group("strategies")
def strategies_group() -> None:
    """Strategy catalogue."""


@strategies_group.command("add")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--builtin", default=None, help="A built-in strategy name instead of FILE.")
@click.option("--user", "email", required=True, help="Author's email.")
@click.option("--code", required=True, help="Unique code, e.g. btc-sma-1m.")
@click.option("--name", default=None)
@click.option("--symbol", required=True)
@click.option("--resolution", required=True)
@click.option("--lookback", default=200, show_default=True, type=int)
@click.option("--params", "params_json", default="{}", help="JSON object of parameters.")
@click.option("--public/--private", default=False)
def strategies_add(
    file: Path | None,
    builtin: str | None,
    email: str,
    code: str,
    name: str | None,
    symbol: str,
    resolution: str,
    lookback: int,
    params_json: str,
    public: bool,
) -> None:
    """Add a strategy from a Python FILE (or --builtin NAME)."""
    from xcoin_trading.services.strategies import create_strategy

    try:
        params = json.loads(params_json)
    except json.JSONDecodeError as exc:
        raise ValidationError("params", f"is not valid JSON: {exc.msg}") from None
    source = file.read_text() if file else None
    with _session() as session:
        from xcoin_trading.services.strategies import record_validation

        strategy = create_strategy(
            session,
            _user_id(session, email),
            name=name or code,
            code=code,
            symbol=symbol,
            resolution=resolution,
            source=source,
            builtin=builtin,
            params=params,
            lookback=lookback,
            is_public=public,
        )
        record_validation(strategy)  # compiled, run in the sandbox on sample candles, checked for look-ahead
        click.echo(
            f"strategy {strategy.id} {strategy.code} ({strategy.symbol} {strategy.resolution}) added: "
            f"{strategy.validation_status}"
        )
        for problem in strategy.validation_errors or []:
            click.echo(f"  {problem}")
        invalid = strategy.validation_status != "VALID"
    if invalid:  # stored with its reasons (so they can be read back), but the upload was bad input
        sys.exit(2)


@click.command("subscribe")
@click.option("--user", "email", required=True)
@click.option("--strategy", "code", required=True, help="Strategy code.")
@click.option("--capital", required=True)
@click.option(
    "--risk", "risk_per_trade", required=True, help="Fraction of capital risked per trade, e.g. 0.01."
)
@click.option("--leverage", default="1", show_default=True)
@click.option("--max-positions", default=1, show_default=True, type=int)
@click.option("--max-daily-loss", default=None)
def subscribe_cmd(email, code, capital, risk_per_trade, leverage, max_positions, max_daily_loss) -> None:
    """Subscribe a user to a strategy with their own capital, risk and leverage."""
    from xcoin_trading.services.strategies import get_by_code
    from xcoin_trading.services.subscriptions import subscribe

    with _session() as session:
        sub = subscribe(
            session,
            _user_id(session, email),
            get_by_code(session, code).id,
            capital=capital,
            risk_per_trade=risk_per_trade,
            leverage=leverage,
            max_positions=max_positions,
            max_daily_loss=max_daily_loss,
        )
        click.echo(
            f"subscription {sub.id}: {email} -> {code} capital={sub.capital} risk={sub.risk_per_trade}"
        )
        warning = _over_balance_warning(session, sub)
        if warning:
            click.echo(f"warning: {warning}", err=True)


def _over_balance_warning(session, sub) -> str | None:
    """Σ capital of the account's active subscriptions (in this market's quote currency) against what the
    account holds. Only with a configured exchange (the embedded one knows no real account)."""
    import sqlalchemy as sa

    from xcoin_trading.exchange.catalog import default_market
    from xcoin_trading.exchange.client import CoinDCXClient, Credentials
    from xcoin_trading.exchange.errors import ExchangeError
    from xcoin_trading.services.credentials import decrypt
    from xcoin_trading.store.models import BrokerCredential, Strategy, Subscription
    from xcoin_trading.vault import Vault

    settings = get_settings()
    cred = session.get(BrokerCredential, sub.broker_credential_id) if sub.broker_credential_id else None
    if not settings.api_url or cred is None:
        return None
    quote = default_market(session.get(Strategy, sub.strategy_id).symbol).base
    rows = session.execute(
        sa.select(Subscription.capital, Strategy.symbol)
        .join(Strategy, Strategy.id == Subscription.strategy_id)
        .where(Subscription.broker_credential_id == cred.id, Subscription.is_active.is_(True))
    ).all()
    committed = sum((c for c, symbol in rows if default_market(symbol).base == quote), start=sub.capital * 0)
    keys = decrypt(Vault.from_settings(settings), cred)
    try:
        with CoinDCXClient(settings.api_url, settings.public_url or settings.api_url,
                           Credentials(keys.api_key.reveal(), keys.api_secret.reveal())) as client:  # fmt: skip
            held = client.balance(quote).total
    except ExchangeError as exc:
        return f"could not read the account's {quote} balance to compare with its subscriptions ({exc})"
    if committed > held:
        return (
            f"the account's active subscriptions commit {committed} {quote} but it holds {held} {quote}: "
            "entries are sized down to the free balance (or refused) at each candle"
        )
    return None


@click.group("vault")
def vault_group() -> None:
    """Master keys for broker secrets."""


@vault_group.command("rotate")
def vault_rotate() -> None:
    """Re-encrypt every credential under the newest master key (first in XCOIN_ENCRYPTION_KEY).

    Embedded default: the new key is XCOIN_ENCRYPTION_KEY's first if set, else a generated one, and
    $XCOIN_HOME/master.key is updated to it (it holds old and new keys until the re-encryption commits)."""
    from xcoin_trading.services.credentials import rotate_all
    from xcoin_trading.vault import Vault, embedded_rotation_keys, finish_embedded_rotation

    settings = get_settings()
    keys = embedded_rotation_keys(settings)
    vault = Vault(keys) if keys is not None else Vault.from_settings(settings)
    with _session() as session:
        count = rotate_all(session, vault)
    if keys is not None:
        finish_embedded_rotation(settings, vault.active)
    click.echo(f"re-encrypted {count} credentials under master key {vault.active.key_id}")
    if keys is not None:
        click.echo(f"{settings.master_key_path} now holds master key {vault.active.key_id} only")


@click.command("demo")
def demo_cmd() -> None:
    """End-to-end run on the embedded default; prints what happened and where to look."""
    from xcoin_trading.demo import run_demo

    run_demo(echo=click.echo)


def register(main: click.Group) -> None:
    for command in (
        db_group,
        users_group,
        broker_group,
        strategies_group,
        subscribe_cmd,
        vault_group,
        demo_cmd,
    ):
        main.add_command(command)
