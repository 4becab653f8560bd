"""Free balances read ahead of the close.

An entry's size is bounded by its account's free balance, and 10,000 balance calls at the close took
3–4 s of the candle's latency. A run launched before its candle reads them while it waits
(`coordinator.prepare_candle`); the fan-out uses each read once, if it is at most `MAX_AGE` old,
and reads the others at the close as before.

What a read ahead can miss is a change made between the read and the close outside this candle's
fan-out: a manual order or a withdrawal lowers the balance (the exchange refuses an entry that no
longer fits; it is recorded REJECTED, nothing is lost), a fill or a deposit raises it (the entry is at
most smaller than it could have been). This candle's own entries are counted as before: a read is
used by one strategy's fan-out only; a second strategy trading the same account reads it again at
the close, after the first one's orders.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal

from xcoin_trading.exchange.client import AiohttpPool
from xcoin_trading.live import event_loop
from xcoin_trading.live.dispatch import KeyRing, free_balances
from xcoin_trading.services.credentials import AccountKeys
from xcoin_trading.vault import Vault

MAX_AGE = 60.0  # seconds; runs are launched 20 s ahead of their candle (live sensor PRELAUNCH_MS)


@dataclass
class ReadAhead:
    """Balances read before the close, per (account, currency), each used once."""

    _reads: dict[tuple[int, str], tuple[Decimal, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _keys: tuple[KeyRing, float] | None = None  # the accounts' keys decrypted for the reads

    def put_keys(self, keyring: KeyRing, at: float | None = None) -> None:
        """Keep the keys the reads decrypted for the close's fan-outs (replacing an older ring)."""
        self._keys = (keyring, time.monotonic() if at is None else at)

    def keyring(self, vault: Vault, max_age: float = MAX_AGE) -> KeyRing:
        """A fan-out's key ring, starting from the keys decrypted ahead if they are fresh (shared by
        the candle's strategies: a key, unlike a balance, is not used up). Stale ones are dropped."""
        kept = self._keys
        if kept is not None and kept[1] < time.monotonic() - max_age:
            self._keys = kept = None
        return KeyRing(vault, ahead=kept[0] if kept is not None else None)

    def put(self, currency: str, balances: dict[int, Decimal], at: float | None = None) -> None:
        at = time.monotonic() if at is None else at
        with self._lock:
            for credential_id, free in balances.items():
                self._reads[(credential_id, currency)] = (free, at)

    def take(self, credential_ids: list[int], currency: str, max_age: float = MAX_AGE) -> dict[int, Decimal]:
        """The fresh reads of these accounts, removed: the caller's orders will change them."""
        oldest = time.monotonic() - max_age
        out: dict[int, Decimal] = {}
        with self._lock:
            for credential_id in credential_ids:
                read = self._reads.pop((credential_id, currency), None)
                if read is not None and read[1] >= oldest:
                    out[credential_id] = read[0]
        return out


def read_now(api_url: str, public_url: str, vault: Vault, credentials: list[AccountKeys], currency: str,
             concurrency: int, keyring: KeyRing | None = None) -> dict[int, Decimal]:  # fmt: skip
    """Every account's free `currency`, read now (outside an event loop); `keyring` keeps the keys."""

    async def read() -> dict[int, Decimal]:
        pool = AiohttpPool(concurrency)
        try:
            return await free_balances(api_url, public_url, vault, credentials, currency, concurrency, pool,
                                       keyring or KeyRing(vault))  # fmt: skip
        finally:
            await pool.aclose()

    return event_loop.run(read()) if credentials else {}
