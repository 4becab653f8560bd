"""`xcoin reconcile`: follow orders to their end and close trades (the Dagster schedule runs the same)."""

from __future__ import annotations

import sys
import time

import click


@click.command("reconcile")
@click.option("--once", is_flag=True, help="One pass, then exit (default: a pass every --every seconds).")
@click.option("--every", default=60, show_default=True, type=int, help="Seconds between passes.")
@click.option("--audit/--no-audit", default=True, help="Also look for orders xcoin never placed (EXTERNAL).")
def reconcile_cmd(once: bool, every: int, audit: bool) -> None:
    """Ask the exchange about every unresolved order and open position; close trades with their P&L."""
    from xcoin_trading.alerts import reconcile_report
    from xcoin_trading.live.coordinator import live_context
    from xcoin_trading.live.reconcile import reconcile_once

    ctx = live_context()
    first = True
    while True:
        report = reconcile_once(ctx, audit=audit and first)  # full audit at start-up, as live engines do
        reconcile_report(report)
        moved = ", ".join(f"{k}={v}" for k, v in sorted(report.transitions.items())) or "no changes"
        click.echo(f"reconciled {report.accounts} accounts with {report.api_calls} API calls in "
                   f"{report.duration_ms} ms ({report.failed_accounts} unreachable): {moved}")  # fmt: skip
        if once:
            if report.failed_accounts:  # an account could not be asked: its orders are not reconciled
                sys.exit(1)
            return
        first = False
        time.sleep(every)


def register(main: click.Group) -> None:
    main.add_command(reconcile_cmd)
