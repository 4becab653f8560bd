"""Alerts to the operator through apprise (`XCOIN_ALERT_URLS`); what is alerted and how secrets are
masked: docs/live-execution.md ("Alerts")."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from typing import Any

from xcoin_trading.config import Settings, get_settings

log = logging.getLogger(__name__)
ENV = "XCOIN_ALERT_URLS"
_TOKEN = re.compile(r"[A-Za-z0-9+/_=-]{32,}")  # keys, signatures, JWTs: never worth showing
DAILY_LOSS = "max daily loss reached"


def alert_urls() -> list[str]:
    return [u.strip() for u in re.split(r"[,\s]+", os.environ.get(ENV, "")) if u.strip()]


def redact(text: str, settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    secrets = [*(settings.encryption_keys_b64 or "").split(","), settings.jwt_secret,
               settings.google_client_secret, *alert_urls()]  # fmt: skip
    for secret in sorted(filter(None, (s.strip() for s in secrets if s)), key=len, reverse=True):
        text = text.replace(secret, "****")
    return _TOKEN.sub(lambda m: "****" + m.group(0)[-4:], text)


def send(title: str, body: str, *, level: str = "warning", settings: Settings | None = None) -> bool:
    """Send one alert to every configured destination; True when at least one took it."""
    urls = alert_urls()
    if not urls:
        return False
    import apprise

    notifier = apprise.Apprise()
    for url in urls:
        if not notifier.add(url):
            log.warning(
                "alert destination #%d of %s is not a valid apprise URL; skipped", urls.index(url) + 1, ENV
            )
    if not len(notifier):
        return False
    kinds = {"info": apprise.NotifyType.INFO, "warning": apprise.NotifyType.WARNING,
             "failure": apprise.NotifyType.FAILURE}  # fmt: skip
    try:
        ok = bool(notifier.notify(title=redact(title, settings), body=redact(body, settings),
                                  notify_type=kinds.get(level, apprise.NotifyType.WARNING)))  # fmt: skip
    except Exception as exc:  # a notifier bug must never stop trading
        log.warning("sending an alert failed: %s", type(exc).__name__)
        return False
    if not ok:
        log.warning("an alert could not be delivered to every destination in %s", ENV)
    return ok


def execution_reports(reports: Iterable[Any], *, settings: Settings | None = None) -> int:
    """Alerts for one candle's execution reports (`coordinator.ExecutionReport`); returns how many."""
    sent = 0
    for r in reports:
        failed = {k: v for k, v in r.outcomes.items() if v.get("status") in ("FAILED", "UNKNOWN")}
        loss_hit = {k: v for k, v in r.outcomes.items() if str(v.get("reason", "")).startswith(DAILY_LOSS)}
        if r.status in ("FAILED", "SKIPPED"):
            sent += send(f"xcoin: {r.strategy_code} {r.interval_key} {r.status}",
                         f"Execution {r.execution_id} of {r.strategy_code} for {r.interval_key} is {r.status}: "
                         f"{r.error or 'no reason recorded'}", level="failure", settings=settings)  # fmt: skip
        if failed:
            lines = [
                f"subscription {k}: {v['status']} ({v.get('reason', '')})" for k, v in sorted(failed.items())
            ]
            sent += send(f"xcoin: {len(failed)} order(s) failed on {r.strategy_code} {r.interval_key}",
                         "\n".join(lines[:50]), level="failure", settings=settings)  # fmt: skip
        for sub_id, outcome in sorted(loss_hit.items()):
            sent += send(f"xcoin: daily loss limit hit, subscription {sub_id}",
                         f"Subscription {sub_id} on {r.strategy_code} took no new entry at {r.interval_key}: "
                         f"{outcome['reason']}", settings=settings)  # fmt: skip
    return sent


# Reconciler transitions worth waking someone for (ReconcileReport.transitions keys).
RECONCILE_ALERTS = {
    "order_lost": "order(s) the exchange does not know after 3 passes: marked LOST",
    "futures_flat_unexplained": "futures position(s) flat on the exchange with no closing order in sight",
    "external": "order(s) on a user's account that xcoin never placed (EXTERNAL)",
}


def reconcile_report(report: Any, *, settings: Settings | None = None) -> int:
    """Alerts from a reconciler pass's counts (what the CLI and the Dagster job see)."""
    found = {k: n for k, n in report.transitions.items() if k in RECONCILE_ALERTS and n}
    if not found:
        return 0
    body = "\n".join(f"{n} {RECONCILE_ALERTS[k]}" for k, n in sorted(found.items()))
    return send("xcoin: the reconciler found a mismatch", body, level="failure", settings=settings)


def reconcile_findings(kind: str, items: list[dict[str, Any]], *, settings: Settings | None = None) -> bool:
    """Hook for the reconciler itself, with details: `kind` is `lost`, `mismatch` or `external`; each
    item names what it is about (e.g. {"order": client_order_id, "subscription": id, "why": text})."""
    if not items:
        return False
    lines = [", ".join(f"{k}={v}" for k, v in item.items()) for item in items[:50]]
    more = f"\n… and {len(items) - 50} more" if len(items) > 50 else ""
    return send(f"xcoin: reconciler {kind}: {len(items)} item(s)", "\n".join(lines) + more, level="failure",
                settings=settings)  # fmt: skip
