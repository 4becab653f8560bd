"""Create-then-look-up: an order is created at most once, whatever fails in between.

A create is never resent after an ambiguous failure (timeout, 5xx, dropped connection): the order
is looked up by its `client_order_id` first and sent again only once the exchange says it is absent.
"""

from __future__ import annotations

from typing import Any

from xcoin_trading.errors import ValidationError
from xcoin_trading.exchange.endpoints.futures import FuturesEndpoints
from xcoin_trading.exchange.endpoints.requests import Plan, Sleep, endpoint
from xcoin_trading.exchange.endpoints.spot import SpotEndpoints
from xcoin_trading.exchange.errors import DuplicateOrder, ExchangeError, OrderNotFound
from xcoin_trading.exchange.models import Order


class IdempotentCreate(SpotEndpoints, FuturesEndpoints):
    def _p_find_order_by_client_id(
        self, client_order_id: str, market: str | None = None, *, kind: str = "spot"
    ) -> Plan[Order | None]:
        """The order with this client id, or None when the exchange says it has none.

        Spot: `orders/status` by client id, then the market's open orders. Futures (status by
        client id is not offered): the order lists. A failed query raises: "could not ask" is
        not "absent".
        """
        if kind == "futures":
            for page in range(1, 50):
                rows = yield from self._p_futures_orders(page=page, size=100)
                for order in rows:
                    if order.client_order_id == client_order_id:
                        return order
                if len(rows) < 100:
                    return None
            return None
        try:
            return (yield from self._p_order_status(client_order_id=client_order_id))
        except OrderNotFound:
            pass
        if market:
            for order in (yield from self._p_active_orders(market)):
                if order.client_order_id == client_order_id:
                    return order
        return None

    def _p_create_order_idempotent(
        self,
        market: str,
        side: str,
        order_type: str,
        quantity: Any,
        price: Any = None,
        *,
        client_order_id: str,
        kind: str = "spot",
        lookups: int = 3,
        lookup_delay: float = 0.25,
        max_sends: int = 2,
        **futures_kwargs: Any,
    ) -> Plan[Order]:
        """Create, or find the order an earlier ambiguous attempt created: never a second order.

        After a timeout/5xx the order is looked up by `client_order_id` (a few times, `lookup_delay`
        apart); only when the exchange answers that it has no such order is it sent again (with the
        same client id, which the exchange also refuses to duplicate).
        """
        if not client_order_id:
            raise ValidationError("client_order_id", "is required for idempotent creation")
        sends = 0
        while True:
            sends += 1
            try:
                if kind == "futures":
                    return (
                        yield from self._p_futures_create_order(
                            market,
                            side,
                            order_type,
                            quantity,
                            price,
                            client_order_id=client_order_id,
                            **futures_kwargs,
                        )
                    )
                return (
                    yield from self._p_create_order(
                        market, side, order_type, quantity, price, client_order_id
                    )
                )
            except DuplicateOrder:
                found = yield from self._p_find_order_by_client_id(client_order_id, market, kind=kind)
                if found is None:
                    raise
                return found
            except ExchangeError as exc:
                if not exc.ambiguous:
                    raise
                found = None
                for attempt in range(lookups):
                    if attempt:
                        yield Sleep(lookup_delay)
                    found = yield from self._p_find_order_by_client_id(client_order_id, market, kind=kind)
                    if found is not None:
                        return found
                if sends >= max_sends:
                    raise
                yield Sleep(lookup_delay)

    find_order_by_client_id = endpoint(_p_find_order_by_client_id)
    create_order_idempotent = endpoint(_p_create_order_idempotent)
