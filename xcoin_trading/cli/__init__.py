"""The `xcoin` command. Each module in this package adds its commands through `register(main)`."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import click

from xcoin_trading.errors import VaultError, XcoinError


def exit_code_of(exc: XcoinError) -> int:
    """2: the operator's input was wrong (fix it and re-run); 1: the work itself failed (the exchange
    could not be reached or refused, a secret could not be decrypted)."""
    from xcoin_trading.exchange.errors import ExchangeError

    return 1 if isinstance(exc, ExchangeError | VaultError) else 2


class _Main(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except XcoinError as exc:  # a clear one-line error, never a traceback with secrets in locals
            click.echo(f"error: {exc}", err=True)
            sys.exit(exit_code_of(exc))


@click.group(cls=_Main)
@click.version_option(package_name="xcoin")
def main() -> None:
    """xcoin: algorithmic trading for CoinDCX on Dagster."""
    from xcoin_trading.live.registry import follow_strategy_changes

    follow_strategy_changes()  # strategy edits by any command reach the live registry


def _register_all() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(main)


_register_all()
