"""Keep the symbol partitions in step with the strategies in the store."""

from __future__ import annotations

import dagster as dg

from xcoin_pipelines.defs.marketdata.partitions import SYMBOLS
from xcoin_pipelines.resources import XcoinSettingsResource


@dg.sensor(name="market_data_symbols_sensor", minimum_interval_seconds=60)
def market_data_symbols_sensor(context: dg.SensorEvaluationContext, xcoin: XcoinSettingsResource):
    """Adds a symbol partition for every active strategy's market (never removes: history stays)."""
    from xcoin_trading.errors import ValidationError
    from xcoin_trading.marketdata.candles import check_symbol
    from xcoin_trading.marketdata.symbols import strategy_symbols

    known = set(context.instance.get_dynamic_partitions(SYMBOLS.name))
    new = []
    for symbol in strategy_symbols(xcoin.get()):
        if symbol in known:
            continue
        try:
            new.append(check_symbol(symbol))
        except ValidationError as exc:
            context.log.warning(f"strategy symbol {symbol!r} skipped: {exc}")
    if not new:
        return dg.SkipReason("every active strategy's symbol already has candle partitions")
    return dg.SensorResult(dynamic_partitions_requests=[SYMBOLS.build_add_request(new)])
