"""What the backtest commands share: the data and simulation options, the request they build, and
how figures and sweep rankings are printed."""

from __future__ import annotations

import click


def data_options(fn):
    options = [
        click.option(
            "--strategy", required=True, help="Built-in name, a .py file, or a stored strategy's code."
        ),
        click.option(
            "--data", "data_file", type=click.Path(dir_okay=False), help="Candle file (Parquet or CSV)."
        ),
        click.option("--symbol", help="Market, e.g. BTCUSDT (candles from the lake)."),
        click.option("--resolution", help="Candle resolution, e.g. 1m, 1h."),
        click.option("--start", help="YYYY-MM-DD or ISO datetime (UTC)."),
        click.option("--end", help="YYYY-MM-DD (that whole day included) or ISO datetime (exclusive)."),
        click.option("--params", default="", help="Strategy parameters: k=v,k2=v2."),
        click.option(
            "--capital", default="10000", show_default=True, help="Initial capital (quote currency)."
        ),
        click.option(
            "--risk", default="0.02", show_default=True, help="Risk per trade, a fraction of equity."
        ),
        click.option("--leverage", default="1", show_default=True),
        click.option(
            "--commission", default="0.001", show_default=True, help="Fee per side, a fraction of notional."
        ),
        click.option(
            "--intrabar",
            type=click.Choice(["sl_first", "tp_first", "1m"]),
            default="sl_first",
            show_default=True,
            help="Who wins when one candle touches both SL and TP.",
        ),
        click.option(
            "--intrabar-data",
            "intrabar_file",
            type=click.Path(dir_okay=False),
            help="1m candle file for --intrabar 1m with --data.",
        ),
        click.option(
            "--gap-fill",
            type=click.Choice(["open", "level"]),
            default="open",
            show_default=True,
            help="A candle opening beyond SL/TP fills at its open, or at the level (SMA-SLTP spec).",
        ),
        click.option(
            "--slippage",
            default="0",
            show_default=True,
            help="Market fills (entries, exits, stop losses) move this fraction against you, as the "
            "simulator's --slippage (0.0005 = 5 bps).",
        ),
        click.option(
            "--slippage-range",
            default="0",
            show_default=True,
            help="Plus this fraction of the fill candle's high - low.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


# Options passed to BacktestRequest under their own name (the rest are renamed or parsed).
SAME_NAMED = ("strategy", "symbol", "resolution", "start", "end", "data_file", "intrabar_file", "leverage",
              "commission", "intrabar", "gap_fill", "slippage", "slippage_range")  # fmt: skip


def build_request(kw: dict):
    from xcoin_trading.backtest.service import BacktestRequest, parse_params

    return BacktestRequest(
        **{name: kw[name] for name in SAME_NAMED},
        params=parse_params(kw["params"]),
        initial_capital=kw["capital"],
        risk_per_trade=kw["risk"],
    )


def fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.4f}"
    return str(value)


def ranking_lines(ranking, metric: str, top: int) -> list[str]:
    cols = ["rank", *[c for c in ranking.columns if c.startswith("param_")], metric, "totalTrades", "netPnl",
            "maxDrawdownPct", *[c for c in ranking.columns if c.startswith("oos_")], "error"]  # fmt: skip
    cols = [c for c in dict.fromkeys(cols) if c in ranking.columns]
    return [
        "  ".join(f"{k.removeprefix('param_')}={fmt(v)}" for k, v in row.items() if v is not None)
        for row in ranking.head(top).select(cols).iter_rows(named=True)
    ]
