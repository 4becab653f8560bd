"""Launchpad config for backtests. Every choice Dagster can check before a run starts is typed, so
the Launchpad refuses it with the field's name instead of a run failing seconds later:

- `strategy` is a selector: one entry per built-in with its own typed parameters and defaults
  (generated from the built-in's `DEFAULT_PARAMS`, so they cannot drift), or `stored` for a stored
  strategy's code / a `.py` file with free parameters (those are checked when the run starts);
- `resolution`, `intrabar`, `gap_fill` are enums of what the platform accepts;
- every field has a default that works on `make demo`'s data: an empty `start`/`end` means the newest
  run of consecutive days the lake holds for the symbol and resolution, so "Materialize" runs as is.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import dagster as dg
from pydantic import Field, create_model

import xcoin_trading
from xcoin_trading.timeframes import TRADED_RESOLUTIONS

if TYPE_CHECKING:
    from xcoin_trading.backtest.service import BacktestRequest
    from xcoin_trading.config import Settings

DEFAULT_SYMBOL = "BTCUSDT"  # what `make demo` writes (with B-ETH_USDT), every traded resolution
DEFAULT_RESOLUTION = "1m"
STORED = "stored"
BUILTIN_DIR = Path(xcoin_trading.__file__).parent / "strategy" / "builtin"


@functools.cache
def builtin_literal(module: str, name: str) -> Any:
    """A module-level constant of a built-in strategy module, read from its source. Importing the
    module would load numba, polars and pyarrow into every process that loads the code location (the
    code server, each run worker before its step) and start their threads, which a warm run process
    must not have before it forks (xcoin_pipelines/launcher.py); the run imports them when it runs.
    tests/test_definitions.py checks the values against the imported modules."""
    tree = ast.parse((BUILTIN_DIR / f"{module}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise LookupError(f"{name} is not a literal in xcoin_trading/strategy/builtin/{module}.py")


BUILTIN_STRATEGIES: tuple[str, ...] = builtin_literal("__init__", "BUILTIN_STRATEGIES")
MODES: tuple[str, ...] = builtin_literal("_common", "MODES")


def _builtin_params_model(name: str) -> type[dg.Config]:
    """`{<name>: {param: value, ...}}` in the Launchpad: the built-in's parameters, typed by default."""
    fields: dict[str, Any] = {"name": (Literal[name], name)}  # the selector's key, not shown as a field
    for key, default in builtin_literal(name, "DEFAULT_PARAMS").items():
        if key == "mode":
            fields[key] = (Literal[MODES], Field(default=default, description=" or ".join(MODES)))
        else:
            fields[key] = (type(default), default)
    title = "".join(part.title() for part in name.split("_"))
    model = create_model(f"{title}Params", __base__=dg.Config, **fields)
    model.__doc__ = f"Built-in {name} with its parameters (defaults filled in)."
    return model


BUILTIN_PARAMS: dict[str, type[dg.Config]] = {
    name: _builtin_params_model(name) for name in BUILTIN_STRATEGIES
}


class StoredStrategy(dg.Config):
    """A strategy stored on the platform (its code) or a `.py` file; parameters checked at run start."""

    name: Literal["stored"] = STORED
    code: str = Field(description="Stored strategy code (e.g. demo-btc-sma-1m) or a .py file path.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of its parameters; unknown names are refused."
    )


StrategyChoice = Annotated[
    Union[tuple([*BUILTIN_PARAMS.values(), StoredStrategy])],  # noqa: UP007 - built at import
    Field(discriminator="name"),
]


def strategy_ref(choice: Any) -> tuple[str, dict[str, Any]]:
    """(name the domain resolves, parameter overrides) of a selector value."""
    if isinstance(choice, StoredStrategy):
        from xcoin_trading.errors import ValidationError

        if not choice.code.strip():
            raise ValidationError("strategy.stored.code", "must name a stored strategy or a .py file")
        return choice.code.strip(), dict(choice.params)
    return choice.name, choice.model_dump(exclude={"name"})


class BacktestInputs(dg.Config):
    strategy: StrategyChoice = Field(
        default=BUILTIN_PARAMS["sma_crossover"](),
        description=f"One of: {', '.join(BUILTIN_STRATEGIES)} (typed parameters), or stored "
        "(a stored strategy's code or a .py file).",
    )
    symbol: str = Field(default=DEFAULT_SYMBOL, description="Market, e.g. BTCUSDT or B-BTC_USDT (futures).")
    resolution: Literal[TRADED_RESOLUTIONS] = Field(  # type: ignore[valid-type]
        default=DEFAULT_RESOLUTION, description="Candle resolution (the lake holds these)."
    )
    start: str = Field(
        default="",
        description="First day (YYYY-MM-DD) or ISO datetime, UTC. Empty: the first day of the newest run "
        "of consecutive days the lake holds for symbol × resolution.",
    )
    end: str = Field(
        default="",
        description="Last day, included (YYYY-MM-DD), or ISO datetime (exclusive). Empty: the newest "
        "day the lake holds for symbol × resolution.",
    )
    initial_capital: float = Field(default=10_000.0, description="Starting capital in the quote currency.")
    risk_per_trade: float = Field(default=0.02, description="Fraction of equity risked per trade, in (0, 1].")
    leverage: float = Field(default=1.0, description="Leverage, >= 1.")
    commission: float = Field(
        default=0.001, description="Fee per side as a fraction of notional (0.001 = 0.1 %)."
    )
    intrabar: Literal["sl_first", "tp_first", "1m"] = Field(
        default="sl_first",
        description="When one candle touches SL and TP: stop first, take profit first, or "
        "decide on the 1-minute candles inside it (they must be in the lake).",
    )
    gap_fill: Literal["open", "level"] = Field(
        default="open",
        description="A candle opening beyond SL/TP fills at its open (default) or at the level.",
    )

    def request(self, settings: Settings) -> BacktestRequest:
        """The domain request, with an empty range resolved against the lake (raises if it is empty)."""
        from xcoin_trading.backtest.service import BacktestRequest
        from xcoin_trading.errors import ValidationError

        symbol = self.symbol.strip()
        if not symbol:
            raise ValidationError("symbol", "must name a market, e.g. BTCUSDT")
        start, end = self.start.strip(), self.end.strip()
        if not start or not end:
            from xcoin_trading.marketdata.coverage import latest_days

            first, last = latest_days(symbol, self.resolution, settings)
            start, end = start or first, end or last
        name, params = strategy_ref(self.strategy)
        return BacktestRequest(
            strategy=name, symbol=symbol, resolution=self.resolution, start=start, end=end, params=params,
            initial_capital=repr(self.initial_capital), risk_per_trade=repr(self.risk_per_trade),
            leverage=repr(self.leverage), commission=repr(self.commission), intrabar=self.intrabar,
            gap_fill=self.gap_fill,
        )  # fmt: skip


class BacktestConfig(BacktestInputs):
    """What one backtest run needs; every field has a default that works on the demo's data."""


class SweepConfig(BacktestInputs):
    grid: str = Field(
        default="fast=10,20,30;slow=50:200:50",
        description="Grid over strategy params (and SL/TP): 'fast=10,20,30;slow=50:200:50'.",
    )
    metric: str = Field(
        default="sharpeRatio", description="Ranking metric, e.g. sharpeRatio, netPnl, calmarRatio."
    )
    workers: int = Field(default=0, description="Parallel threads; 0 = all cores.")
