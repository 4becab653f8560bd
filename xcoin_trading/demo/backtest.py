"""Backtest step of `xcoin demo`: backtest a demo strategy on the lake's demo candles, print the
metrics and where the report is."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from xcoin_trading.config import Settings
from xcoin_trading.timeframes import utcnow

DEMO_BACKTEST = {"strategy": "demo-btc-sma-1m", "symbol": "BTCUSDT", "resolution": "1m", "days": 3}


def run_demo_backtest(settings: Settings, echo: Callable[[str], None]) -> None:
    """The last closed days of BTCUSDT 1m (ingested by the market-data demo step), stored like any run."""
    from xcoin_trading.backtest.service import BacktestRequest, execute

    today = utcnow().date()
    request = BacktestRequest(
        strategy=DEMO_BACKTEST["strategy"],
        symbol=DEMO_BACKTEST["symbol"],
        resolution=DEMO_BACKTEST["resolution"],
        start=(today - timedelta(days=DEMO_BACKTEST["days"])).isoformat(),
        end=(today - timedelta(days=1)).isoformat(),
    )
    result, saved = execute(request, settings=settings)
    m = result.metrics
    echo("")
    echo(f"Backtest #{saved.id if saved else '-'}: {DEMO_BACKTEST['strategy']} on {request.symbol} {request.resolution}, "
         f"{request.start} .. {request.end} ({m['candles']:,} candles, {result.timings_ms['total']:.0f} ms)")  # fmt: skip
    echo(
        f"  trades {m['totalTrades']}  win rate {m['winRate']:.1f} %  net P&L {m['netPnl']:,.2f} USDT "
        f"({m['totalPnlPct']:.2f} %)  Sharpe {m['sharpeRatio']:.2f}  max drawdown {m['maxDrawdownPct']:.2f} %  "
        f"fees {m['totalCommission']:,.2f}"
    )
    if saved is not None:
        echo(f"  report {saved.artifacts['report']}")
        echo(f"  history: xcoin backtest history --strategy {DEMO_BACKTEST['strategy']}")
