"""Operator commands: `list`/`show` for users, strategies, subscriptions, positions, orders and
executions (a table, or `--json`), and `xcoin live pause|resume --all|--strategy CODE`."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import click

from xcoin_trading.config import get_settings
from xcoin_trading.errors import ValidationError

# Columns the table shows per kind (`--json` has every field).
TABLE: dict[str, tuple[str, ...]] = {
    "users": ("id", "email", "name", "active", "login", "created"),
    "strategies": ("id", "code", "symbol", "resolution", "kind", "validation", "active", "subscribers"),
    "subscriptions": ("id", "user", "strategy", "state", "capital", "risk_per_trade", "leverage", "trades", "pnl"),
    "positions": ("id", "subscription_id", "symbol", "side", "status", "quantity", "entry_price", "stop_loss",
                  "take_profit", "entry_time"),
    "orders": ("id", "client_order_id", "leg", "market", "side", "type", "status", "quantity", "filled",
               "avg_price", "updated"),
    "executions": ("id", "strategy", "interval_key", "status", "signal", "subscribers", "trades", "duration_ms",
                   "error"),
}  # fmt: skip
STATUS_HELP = {
    "strategies": "validation status: VALID, INVALID, PENDING",
    "subscriptions": "active, paused or cancelled",
    "positions": "trade status (default: PENDING and OPEN)",
    "orders": "e.g. OPEN, FILLED, REJECTED, UNKNOWN, LOST",
    "executions": "e.g. COMPLETED, FAILED, SKIPPED, NO_SIGNAL",
}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value == value else str(value)
    text = str(value)
    return text if len(text) <= 48 else text[:47] + "…"


def print_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _list_command(kind: str) -> click.Command:
    @click.command("list")
    @click.option("--user", "email", default=None, help="Only this user's (by email).")
    @click.option("--strategy", "code", default=None, help="Only this strategy's (by code).")
    @click.option("--status", default=None, help=STATUS_HELP.get(kind, "not used here"))
    @click.option("--limit", default=50, show_default=True, type=int, help="Newest first, at most this many.")
    @click.option("--json", "as_json", is_flag=True, help="A JSON array with every field.")
    def list_cmd(email: str | None, code: str | None, status: str | None, limit: int, as_json: bool) -> None:
        from xcoin_trading.services.operator import list_rows
        from xcoin_trading.store.db import session_scope

        with session_scope(get_settings()) as session:
            rows = list_rows(session, kind, user=email, strategy=code, status=status, limit=limit)
        if as_json:
            click.echo(json.dumps(_plain(rows), indent=1))
        elif not rows:
            click.echo(f"no {kind}")
        else:
            print_table(rows, TABLE[kind])

    list_cmd.help = f"List {kind}, newest first (a table, or --json)."
    return list_cmd


def _show_command(kind: str) -> click.Command:
    ident_help = {"users": "ID or email", "strategies": "ID or code", "orders": "ID or client order id"}

    @click.command("show")
    @click.argument("ident")
    @click.option("--json", "as_json", is_flag=True, help="JSON instead of one field per line.")
    def show_cmd(ident: str, as_json: bool) -> None:
        from xcoin_trading.services.operator import show_row
        from xcoin_trading.store.db import session_scope

        with session_scope(get_settings()) as session:
            row = show_row(session, kind, ident)
        if as_json:
            click.echo(json.dumps(_plain(row), indent=1))
            return
        nested = {k: v for k, v in row.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
        for key, value in row.items():
            if key not in nested:
                click.echo(
                    f"{key:<18} {_cell(value) if not isinstance(value, dict | list) else json.dumps(_plain(value))}"
                )
        for key, items in nested.items():
            click.echo(f"{key}:")
            sub = (
                TABLE["orders"]
                if key == "orders"
                else TABLE["positions" if key == "open_trades" else "subscriptions"]
            )
            print_table(items, sub)

    show_cmd.help = f"One of the {kind} by {ident_help.get(kind, 'ID')}, with what belongs to it."
    return show_cmd


def _group(main: click.Group, kind: str) -> click.Group:
    group = main.commands.get(kind)
    if group is None:
        group = click.Group(kind, help=f"{kind.capitalize()} (operator view across every user).")
        main.add_command(group)
    if not isinstance(group, click.Group):
        raise TypeError(f"`xcoin {kind}` is a command, not a group: the operator's commands cannot join it")
    return group


def _pause_command(paused: bool) -> click.Command:
    verb = "pause" if paused else "resume"

    @click.command(verb)
    @click.option("--all", "every", is_flag=True, help=f"{verb.capitalize()} every active subscription.")
    @click.option(
        "--strategy", "code", default=None, help=f"{verb.capitalize()} one strategy's subscriptions."
    )
    def command(every: bool, code: str | None) -> None:
        from xcoin_trading.services.operator import set_paused
        from xcoin_trading.store.db import session_scope

        if every == (code is not None):
            raise ValidationError("--all/--strategy", "give exactly one of them")
        with session_scope(get_settings()) as session:
            ids = set_paused(session, paused, strategy=code)
        scope = "every strategy" if every else code
        click.echo(
            f"{verb}d {len(ids)} subscription(s) of {scope}"
            + (f": {', '.join(map(str, ids))}" if ids else "")
        )

    command.help = (
        "Stop new entries and exits for subscriptions from the next candle (open positions keep their "
        "exchange-side stops; the reconciler still runs)."
        if paused
        else "Let paused subscriptions trade again."
    )
    return command


def register(main: click.Group) -> None:
    for kind in ("users", "strategies", "subscriptions", "positions", "orders", "executions"):
        group = _group(main, kind)
        group.add_command(_list_command(kind))
        group.add_command(_show_command(kind))
    live = main.commands["live"]
    if not isinstance(live, click.Group):
        raise TypeError("`xcoin live` is a command, not a group: pause/resume cannot join it")
    live.add_command(_pause_command(True))
    live.add_command(_pause_command(False))
