"""Fault injection: latency, 429 (with Retry-After), 5xx, timeouts and "accepted but the reply was
lost" (the request IS executed, the caller gets a 504 — after `lost_reply_delay_s`, so a caller
with a shorter timeout sees a timeout instead). Rules apply by rate, optionally only to paths
containing one of `endpoints`, optionally only `count` times. Admin paths are never faulted.

Spec string (CLI `--faults`): rules separated by `;`, each `key=value` pairs separated by `,`,
e.g. `5xx=0.05,429=0.02;lost_reply=1,count=1,endpoints=orders/create`. `endpoints` takes
`|`-separated path fragments.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, fields
from typing import Any

_ALIASES = {"429": "error_429", "5xx": "error_5xx", "latency": "latency_ms"}


@dataclass
class FaultRule:
    latency_ms: float = 0.0
    error_429: float = 0.0
    error_5xx: float = 0.0
    timeout: float = 0.0
    lost_reply: float = 0.0
    # A faulty exchange's data: the candle reply repeats its first time with other values (not an
    # exact duplicate, which the client drops), so the market-data checks must catch it.
    duplicate_candles: float = 0.0
    endpoints: tuple[str, ...] = ()
    count: int | None = None  # injections left; None = unlimited
    timeout_s: float = 5.0  # how long a "timeout" hangs before answering 504
    retry_after_s: float = 1.0
    lost_reply_delay_s: float = 0.0
    error_5xx_status: int = 503

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaultRule:
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            name = _ALIASES.get(key, key)
            if name not in known:
                raise ValueError(
                    f"unknown fault setting {key!r} (known: {', '.join(sorted(known | set(_ALIASES)))})"
                )
            if name == "endpoints":
                value = tuple(value.split("|")) if isinstance(value, str) else tuple(value or ())
            elif name in ("count", "error_5xx_status"):
                value = None if value is None else int(value)
            else:
                value = float(value)
                if (
                    name in ("error_429", "error_5xx", "timeout", "lost_reply", "duplicate_candles")
                    and not 0 <= value <= 1
                ):
                    raise ValueError(f"fault rate {key} must be in [0, 1], got {value}")
            kwargs[name] = value
        return cls(**kwargs)

    def matches(self, path: str) -> bool:
        return not self.endpoints or any(e in path for e in self.endpoints)


@dataclass
class Decision:
    latency_s: float = 0.0
    action: str | None = None  # "429" | "5xx" | "timeout" | "lost_reply" | "duplicate_candles"
    rule: FaultRule | None = None


@dataclass
class Faults:
    rules: list[FaultRule] = field(default_factory=list)
    seed: int | None = None
    injected: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    @property
    def active(self) -> bool:
        return bool(self.rules)

    def set(self, rules: list[FaultRule], seed: int | None = None) -> None:
        self.rules = rules
        if seed is not None:
            self._rng = random.Random(seed)

    def decide(self, path: str) -> Decision | None:
        decision = Decision()
        for rule in list(self.rules):
            if not rule.matches(path):
                continue
            decision.latency_s += rule.latency_ms / 1000
            if decision.action is not None:
                continue
            for action, rate in (
                ("429", rule.error_429),
                ("5xx", rule.error_5xx),
                ("timeout", rule.timeout),
                ("lost_reply", rule.lost_reply),
                ("duplicate_candles", rule.duplicate_candles),
            ):
                if rate and self._rng.random() < rate:
                    decision.action, decision.rule = action, rule
                    self.injected[action] = self.injected.get(action, 0) + 1
                    if rule.count is not None:
                        rule.count -= 1
                        if rule.count <= 0:
                            self.rules.remove(rule)
                    break
        return decision if (decision.action or decision.latency_s) else None

    def to_json(self) -> dict[str, Any]:
        return {"rules": [asdict(r) for r in self.rules], "injected": dict(self.injected)}


def parse_fault_spec(spec: str) -> list[FaultRule]:
    """`5xx=0.1,429=0.05;lost_reply=0.2,endpoints=orders/create` → rules (ValueError on bad input)."""
    rules = []
    for chunk in filter(None, (c.strip() for c in spec.split(";"))):
        data: dict[str, Any] = {}
        for item in filter(None, (i.strip() for i in chunk.split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"fault setting {item!r} must look like key=value")
            data[key.strip()] = value.strip()
        rules.append(FaultRule.from_json(data))
    return rules
