"""Fan-out phase 2, dispatch: send each planned order to its account's exchange, at most
`concurrency` at once, and keep each answer (or failure) on its job for the record phase.

Each account's keys are decrypted once per fan-out (`KeyRing`), just before its first request. `create_order_idempotent` never sends
twice: an intent that may already have been sent is looked up by client id first.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal
from operator import attrgetter, itemgetter
from typing import Any

from xcoin_trading.errors import XcoinError
from xcoin_trading.exchange.auth import Credentials
from xcoin_trading.exchange.client import AiohttpPool, AsyncCoinDCXClient
from xcoin_trading.exchange.errors import ExchangeError
from xcoin_trading.exchange.markets import Market
from xcoin_trading.exchange.models import Order as ExchangeOrder
from xcoin_trading.services.credentials import AccountKeys, decrypt
from xcoin_trading.store.lifecycle import Leg, OrderStatus
from xcoin_trading.store.models import Order
from xcoin_trading.vault import Vault


@dataclass(slots=True)
class Intent:
    """An order row as the fan-out uses it: thousands per candle, so plain objects written and
    updated in bulk by id, not ORM instances tracked one by one."""

    id: int
    subscription_id: int  # nullable in the table, never for an order the fan-out plans or resolves
    trade_id: int | None
    leg: str
    client_order_id: str
    market: str
    side: str
    order_type: str
    quantity: Decimal
    price: Decimal | None
    status: str
    # What the exchange answered (written by `lifecycle.apply_report`), for the record phase.
    exchange_order_id: str | None = None
    filled_quantity: Decimal = Decimal(0)
    avg_price: Decimal | None = None
    fee: Decimal = Decimal(0)
    raw_last_response: dict[str, Any] | None = None

    @classmethod
    def of(cls, order: Order) -> Intent:
        return cls(**{name: getattr(order, name) for name in _PLANNED})

    @classmethod
    def inserted(cls, order_id: int, row: dict[str, Any]) -> Intent:
        """The intent of a row just inserted by `insert_returning_ids` as `order_id`."""
        return cls(order_id, *_planned_fields(row))

    def answered(self) -> dict[str, Any]:
        """The columns an answer sets, by id (for a bulk UPDATE)."""
        return dict(zip(_ANSWER_COLUMNS, _answer_values(self), strict=True))


_PLANNED = ("id", "subscription_id", "trade_id", "leg", "client_order_id", "market", "side", "order_type",
            "quantity", "price", "status")  # fmt: skip
_ANSWERED = ("exchange_order_id", "quantity", "filled_quantity", "avg_price", "fee", "raw_last_response")
_planned_fields = itemgetter(*_PLANNED[1:])  # a row's values in Intent's field order, after its id
_ANSWER_COLUMNS = ("id", "status", *_ANSWERED)
_answer_values = attrgetter(*_ANSWER_COLUMNS)


class KeyRing:
    """Each account's keys decrypted once per fan-out (balance, entry and take profit share them), not
    once per request; never logged (Credentials masks itself). `ahead`: a ring filled by the balance
    read-ahead before the close (live/balances.py), whose keys are used while their ciphertext is
    still the account's, so the close decrypts none of them again."""

    def __init__(self, vault: Vault, ahead: KeyRing | None = None):
        self.vault = vault
        self._keys: dict[int, tuple[tuple[str, str], Credentials]] = {}
        self._ahead = ahead._keys if ahead is not None else {}

    def credentials(self, credential: AccountKeys) -> Credentials:
        known = self._keys.get(credential.id)
        if known is not None:
            return known[1]
        sealed = (credential.api_key_encrypted, credential.api_secret_encrypted)
        known = self._ahead.get(credential.id)
        if known is None or known[0] != sealed:
            plain = decrypt(self.vault, credential)
            known = (sealed, Credentials(plain.api_key.reveal(), plain.api_secret.reveal()))
        self._keys[credential.id] = known
        return known[1]


@dataclass
class Job:
    """One order to send for one subscriber; `order` is its intent row."""

    order: Intent
    kind: str  # spot / futures
    credential: AccountKeys
    leverage: Decimal | None = None  # futures entry: set on the pair first
    take_profit: Decimal | None = None  # futures entry: attached TP
    stop_loss: Decimal | None = None  # futures entry: attached SL
    cancel_first: str | None = None  # spot exit: client id of the take profit to cancel
    result: ExchangeOrder | None = None
    error: str | None = None
    ambiguous: bool = False  # the failure leaves it unknown whether the order exists
    cancelled_take_profit: bool = False
    skipped: str | None = None  # not sent, on purpose (the reason is recorded on the order)
    after: Job | None = None  # spot take profit: the entry it protects, sent just before it
    market: Market | None = None  # rounding of a take profit to what the entry filled
    send_quantity: Decimal | None = None  # what was actually sent, when not the intent's quantity
    deferred: str | None = None  # not sent now (its take profit still rests): left armed / reported
    take_profit_seen: ExchangeOrder | None = None  # the take profit as the exchange showed it after cancel
    on_defer: str = OrderStatus.CANCELLED  # the status of a deferred order: a watched stop stays INTENT
    retry_refused: bool = False  # a watched stop: an order the exchange refused is deferred, not failed
    held_back: str | None = None  # an entry not sent: the exit before it did not confirm the close

    # Decided from the row as loaded, before `mark_sending`: only an intent that may already have been
    # sent (a dead worker's SENDING, an UNKNOWN) is looked up first. A fresh one costs 1 request, not 3.
    lookup_first: bool | None = None

    def __post_init__(self) -> None:
        if self.lookup_first is None:
            self.lookup_first = self.order.status in (OrderStatus.SENDING, OrderStatus.UNKNOWN)

    def failed(self, message: str, ambiguous: bool) -> None:
        if self.retry_refused and not ambiguous:  # not executed (e.g. the coins are not free yet)
            self.deferred = f"the sell was refused, sent again next pass: {message}"[:500]
        else:
            self.error, self.ambiguous = message[:500], ambiguous


async def _send_one(base: AsyncCoinDCXClient, keyring: KeyRing, job: Job, sem: asyncio.Semaphore) -> None:
    order = job.order
    async with sem:
        try:
            client = base.with_credentials(keyring.credentials(job.credential))
            if job.lookup_first:
                found = await client.find_order_by_client_id(
                    order.client_order_id, order.market, kind=job.kind
                )
                if found is not None:
                    job.result = found
                    return
            if job.held_back is not None:
                return
            if job.cancel_first:
                try:
                    cancelled, tp = await _cancel_confirmed(client, job.cancel_first, order.market)
                except ExchangeError as exc:
                    job.deferred = (
                        f"could not confirm its take profit {job.cancel_first} is cancelled: {exc}"[:500]
                    )
                    return
                job.take_profit_seen = tp
                if tp is not None and tp.status == "filled":
                    job.skipped = "not needed: its take profit filled first"
                    return
                if tp is not None and tp.status not in ("cancelled", "partially_cancelled", "rejected"):
                    # The coins are still locked by the resting take profit: a sell now is refused.
                    job.deferred = f"its take profit {job.cancel_first} still rests (the cancel failed)"
                    return
                job.cancelled_take_profit = cancelled or tp is not None
            if job.after is not None:  # a spot take profit: sell what the entry actually bought
                entry = job.after.result
                if entry is None or entry.filled_quantity <= 0:
                    job.skipped = "its entry did not fill; a take profit is placed once it has"
                    return
                if not entry.is_terminal:  # it must cover all that fills: the reconciler places it then
                    job.skipped = "its entry is still filling; a take profit is placed once it is final"
                    return
                if job.market is None:  # planned with its entry's market (intents.plan): a bug otherwise
                    raise ValueError(f"take profit {order.client_order_id}: no market to round its quantity")
                job.send_quantity = job.market.round_quantity(entry.filled_quantity)
            if job.kind == "futures" and order.leg == Leg.EXIT:
                held = await _futures_exit_quantity(client, order)
                if held <= 0:
                    # The exchange's own TP/SL (or a liquidation) closed it first: an exit now would
                    # open a new position the other way. The reconciler records the real close.
                    job.skipped = "the exchange position is already closed; the reconciler records its close"
                    return
                quantity = min(order.quantity, held)  # never more than is still open
            else:
                quantity = job.send_quantity or order.quantity
            extra: dict[str, Any] = {}
            if job.kind == "futures" and order.leg == Leg.ENTRY:
                if job.leverage is not None:
                    try:
                        await client.futures_ensure_leverage(order.market, job.leverage)
                    except ExchangeError as exc:  # the entry itself was never sent: not executed
                        job.error = (
                            f"leverage {job.leverage} could not be confirmed on {order.market}: {exc}"[:500]
                        )
                        return
                    extra["leverage"] = job.leverage
                extra |= {"take_profit_price": job.take_profit, "stop_loss_price": job.stop_loss}
            job.result = await client.create_order_idempotent(
                order.market, order.side, order.order_type, quantity, order.price if order.order_type == "limit_order" else None,
                client_order_id=order.client_order_id, kind=job.kind, **extra,
            )  # fmt: skip
        except ExchangeError as exc:  # typed: whether it may have executed decides what follows
            job.failed(str(exc), exc.ambiguous)
        except XcoinError as exc:
            job.failed(str(exc), False)
        except Exception as exc:  # noqa: BLE001 - one subscriber never stops the others
            job.failed(f"{type(exc).__name__}: {exc}", True)


async def _cancel_confirmed(
    client: AsyncCoinDCXClient, client_order_id: str, market: str
) -> tuple[bool, ExchangeOrder | None]:
    """Cancel a take profit: (True, None) when the exchange said it cancelled it; after any failure
    (a 503 may have cancelled it or not, a refusal may mean it filled) (False, what the exchange
    then says it is, None when it has no such order). A failed look-up raises: "could not ask" is
    never "cancelled"."""
    try:
        await client.cancel_order(client_order_id=client_order_id)
        return True, None
    except ExchangeError:
        pass  # executed, not executed or unknown: the look-up tells which
    return False, await client.find_order_by_client_id(client_order_id, market, kind="spot")


async def _futures_exit_quantity(client: AsyncCoinDCXClient, order: Intent) -> Decimal:
    """How much of the position this exit closes is still open on the exchange (0 when flat or
    already the other way round)."""
    direction = 1 if order.side == "sell" else -1  # selling closes a long (a positive position)
    held = sum((p.active_pos for p in await client.futures_positions(pairs=[order.market]) if p.pair == order.market),
               Decimal(0))  # fmt: skip
    return max(Decimal(0), held * direction)


async def send_all(
    api_url: str, public_url: str, vault: Vault, jobs: list[Job], concurrency: int = 200,
    pool: AiohttpPool | None = None, keyring: KeyRing | None = None,
) -> None:  # fmt: skip
    """Send every job, at most `concurrency` at once, over `pool` (else a pool of its own).

    One subscriber's jobs go one after the other, in plan order: the exit that closes a trade is
    answered before the reversing entry sets leverage on the same pair. An entry after an exit the
    exchange did not confirm filled is held back: on a futures pair it would net against the
    position still open (a SHORT entry closing the LONG), leaving the store with two open trades
    and the exchange flat."""
    own = pool is None
    pool = pool or AiohttpPool(concurrency)
    base = AsyncCoinDCXClient(api_url, public_url, http_client=pool)
    sem = asyncio.Semaphore(concurrency)
    keyring = keyring or KeyRing(vault)
    per_subscriber: dict[int | None, list[Job]] = {}
    for job in jobs:
        per_subscriber.setdefault(job.order.subscription_id, []).append(job)

    async def in_order(own_jobs: list[Job]) -> None:
        unconfirmed: Job | None = None  # an exit of this subscriber whose close is not confirmed
        for job in own_jobs:
            if unconfirmed is not None and job.order.leg == Leg.ENTRY:
                job.held_back = _held_back_reason(unconfirmed)
            await _send_one(base, keyring, job, sem)
            if job.order.leg == Leg.EXIT and not _closed_for_sure(job):
                unconfirmed = job

    try:
        await asyncio.gather(*(in_order(own_jobs) for own_jobs in per_subscriber.values()))
    finally:
        if own:
            await pool.aclose()


def _closed_for_sure(exit_job: Job) -> bool:
    """The exit filled, or was not needed because the position is already closed."""
    answer = exit_job.result
    return exit_job.skipped is not None or (answer is not None and answer.status == "filled")


def _held_back_reason(exit_job: Job) -> str:
    answer = exit_job.result
    why = (
        exit_job.error
        or exit_job.deferred
        or (f"it is {answer.status}" if answer is not None else "no answer")
    )
    return (f"not sent: the exit {exit_job.order.client_order_id} of trade {exit_job.order.trade_id} "
            f"is not confirmed filled ({why})")[:500]  # fmt: skip


async def free_balances(
    base_url: str, public_url: str, vault: Vault, credentials: list[AccountKeys], currency: str,
    concurrency: int, pool: AiohttpPool, keyring: KeyRing | None = None,
) -> dict[int, Decimal]:  # fmt: skip
    """Free `currency` per account, one balances call each, all at once. An account whose call fails
    is left out (bounded by its capital alone): a failed read must not stop its trading."""
    sem = asyncio.Semaphore(concurrency)
    keyring = keyring or KeyRing(vault)
    out: dict[int, Decimal] = {}

    base = AsyncCoinDCXClient(base_url, public_url, http_client=pool)

    async def ask(cred: AccountKeys) -> None:
        async with sem:
            try:
                client = base.with_credentials(keyring.credentials(cred))
                out[cred.id] = (await client.balance(currency)).balance
            except (ExchangeError, XcoinError):
                pass

    await asyncio.gather(*(ask(c) for c in credentials))
    return out
