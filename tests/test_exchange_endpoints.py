"""The endpoint table: every client method says what it returns (a model, not `Any`), and the
blocking and async clients offer the same methods."""

from __future__ import annotations

import typing

from xcoin_trading.exchange.client import AsyncCoinDCXClient, CoinDCXClient
from xcoin_trading.exchange.endpoints import endpoint


def _endpoints(cls: type) -> dict[str, endpoint]:
    return {n: v for k in cls.__mro__ for n, v in vars(k).items() if isinstance(v, endpoint)}


def test_every_endpoint_declares_its_result_type():
    table = _endpoints(CoinDCXClient)
    assert len(table) >= 34
    untyped = []
    for name, ep in table.items():
        result = typing.get_args(typing.get_type_hints(ep.plan)["return"])[-1]
        if result is typing.Any:
            untyped.append(name)
    assert not untyped, f"endpoints returning Any: {untyped}"
    hints = typing.get_type_hints(table["balance"].plan)["return"]
    assert typing.get_args(hints)[-1].__name__ == "Balance"


def test_both_clients_offer_the_same_endpoints():
    assert _endpoints(CoinDCXClient).keys() == _endpoints(AsyncCoinDCXClient).keys()
