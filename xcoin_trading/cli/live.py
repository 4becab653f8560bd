"""`xcoin live tick`: run one candle close by hand (tests, demo, recovery)."""

from __future__ import annotations

import sys

import click

from xcoin_trading.errors import ValidationError
from xcoin_trading.timeframes import parse_utc


@click.group("live")
def live_group() -> None:
    """Live execution: one run per candle close, fanned out to every subscriber."""


@live_group.command("tick")
@click.option("--symbol", required=True)
@click.option("--resolution", required=True)
@click.option(
    "--at", "at", default=None, help="Candle close time (UTC ISO); default: the last closed candle."
)
@click.option(
    "--now", "now", default=None, help="Pretend it is this time (replays); default: --at, else the clock."
)
@click.option(
    "--shard",
    "shard",
    default=None,
    help="K/N: only shard K of a fan-out split into N (0 ≤ K < N) by account.",
)
def tick(symbol: str, resolution: str, at: str | None, now: str | None, shard: str | None) -> None:
    """Run every strategy on SYMBOL/RESOLUTION for one candle close and place its orders."""
    from xcoin_trading.live.coordinator import live_context, run_candle_close
    from xcoin_trading.timeframes import floor_ms, from_ms, resolution_ms, to_ms, utcnow

    resolution_ms(resolution)
    close = parse_utc(at, "--at") or from_ms(floor_ms(to_ms(utcnow()), resolution))
    moment = parse_utc(now, "--now") or (close if at else utcnow())
    if shard is None:
        reports = run_candle_close(live_context(), symbol, resolution, close, now=moment)
    else:
        from xcoin_trading.live.shards import parse_shard, run_candle_shard

        k, n = parse_shard("--shard", shard)
        reports = run_candle_shard(live_context(), symbol, resolution, close, k, n, now=moment)
    from xcoin_trading.alerts import execution_reports

    execution_reports(reports)
    if not reports:
        click.echo(f"no active strategy trades {symbol} {resolution}")
    for r in reports:
        line = f"{r.strategy_code} {r.interval_key}: {r.status}"
        if r.signal:
            line += f" signal={r.signal} subscribers={r.subscribers} trades={r.trades_created}"
        if r.error:
            line += f" error={r.error}"
        click.echo(line)
        for sub_id, outcome in sorted(r.outcomes.items()):
            reason = f" ({outcome['reason']})" if outcome.get("reason") else ""
            click.echo(f"  subscription {sub_id}: {outcome['status']}{reason}")
    failed = [r for r in reports if not tick_succeeded(r)]
    if failed:
        click.echo(f"{len(failed)} of {len(reports)} execution(s) did not complete", err=True)
        sys.exit(1)


def tick_succeeded(report) -> bool:
    """FAILED/SKIPPED executions, or a subscriber whose order failed or is unknown, are failed work;
    a candle another worker holds or already ran is not (nothing was left undone by us)."""
    if report.status in ("FAILED", "SKIPPED"):
        return False
    return not any(o.get("status") in ("FAILED", "UNKNOWN") for o in report.outcomes.values())


@live_group.command("flatten")
@click.option("--strategy", "code", default=None, help="Strategy code.")
@click.option("--all", "every", is_flag=True, help="Every strategy that has subscribers.")
def flatten_cmd(code: str | None, every: bool) -> None:
    """Close every open trade of a strategy (or of all) at market now; subscribers keep their
    subscriptions. Safe to run again after a crash: it takes the dead run over. Exits 1 when a
    subscriber could not be closed (the reason is printed) or another flatten is still running."""
    from xcoin_trading.live.coordinator import live_context
    from xcoin_trading.live.flatten import flatten, flatten_all
    from xcoin_trading.live.registry import StrategySettings
    from xcoin_trading.services.strategies import get_by_code
    from xcoin_trading.store.db import session_scope

    if bool(code) == every:
        raise ValidationError("--strategy", "give a strategy code or --all (exactly one)")
    ctx = live_context()
    if code:  # exactly one of code / --all (checked above)
        with session_scope(ctx.settings) as session:
            strategy = StrategySettings.from_row(get_by_code(session, code))
        reports = [flatten(ctx, strategy)]
    else:
        reports = flatten_all(ctx)
    incomplete = False
    for report in reports:
        click.echo(f"{report.strategy_code} {report.interval_key}: {report.status}"
                   + (f" ({report.error})" if report.error else ""))  # fmt: skip
        incomplete |= report.status != "COMPLETED" or report.error is not None
        for sub_id, outcome in sorted(report.outcomes.items()):
            click.echo(
                f"  subscription {sub_id}: {outcome['status']}"
                + (f" pnl={outcome['pnl']}" if outcome.get("pnl") else "")
                + (f" ({outcome['reason']})" if outcome.get("reason") else "")
            )
    if incomplete:
        raise SystemExit(1)


def register(main: click.Group) -> None:
    main.add_command(live_group)
