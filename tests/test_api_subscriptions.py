"""Subscriptions through HTTP against real Postgres: the lifecycle, bad terms named and refused,
and another user's subscriptions invisible."""

from __future__ import annotations

import pytest

from tests.fixtures.api import add_keys, new_strategy, signup, subscribe

# ---- subscriptions --------------------------------------------------------------------------


def test_subscription_lifecycle(api):
    user = signup(api)
    add_keys(api, user)
    sid = new_strategy(api, user)["id"]
    raw = b'{"capital": 1234.567890123456789, "riskPerTrade": 0.02, "leverage": 2, "maxPositions": 3}'
    created = api.post(
        f"/api/strategies/{sid}/subscribe",
        content=raw,
        headers={**user.headers, "Content-Type": "application/json"},
    )
    sub = created.json()
    assert sub["capital"] == "1234.567890123456789"  # exact: JSON numbers are parsed as decimals, not floats
    assert sub["leverage"] == "2" and sub["isActive"] and not sub["isPaused"]
    again = api.post(
        f"/api/strategies/{sid}/subscribe", json={"capital": 5, "riskPerTrade": 0.1}, headers=user.headers
    )
    assert again.status_code == 409
    base = f"/api/strategies/subscriptions/{sub['id']}"
    assert api.post(f"{base}/resume", headers=user.headers).status_code == 409
    assert api.post(f"{base}/pause", headers=user.headers).json()["isPaused"] is True
    assert api.post(f"{base}/pause", headers=user.headers).status_code == 409
    assert api.post(f"{base}/resume", headers=user.headers).json()["isPaused"] is False
    updated = api.put(base, json={"riskPerTrade": "0.015", "maxDailyLoss": 50}, headers=user.headers)
    assert updated.json()["riskPerTrade"] == "0.015" and updated.json()["maxDailyLoss"] == "50"
    stats = api.get(f"{base}/stats", headers=user.headers).json()
    assert stats == {"subscriptionId": sub["id"], "strategyId": sid, "totalTrades": 0, "winningTrades": 0,
                     "losingTrades": 0, "winRate": 0.0, "totalPnl": "0", "capital": "1234.567890123456789",
                     "isActive": True, "isPaused": False}  # fmt: skip
    assert (
        api.get(f"/api/strategy-upload/strategies/{sid}", headers=user.headers).json()["subscriberCount"] == 1
    )
    cancelled = api.delete(base, headers=user.headers).json()
    assert cancelled["isActive"] is False and cancelled["unsubscribedAt"] is not None
    assert api.get("/api/strategies/subscriptions", headers=user.headers).json() == {"subscriptions": []}
    assert (
        api.get(f"/api/strategy-upload/strategies/{sid}", headers=user.headers).json()["subscriberCount"] == 0
    )


@pytest.mark.parametrize(
    ("terms", "field"),
    [
        ({"capital": -5, "riskPerTrade": 0.1}, "capital"),
        ({"capital": 100, "riskPerTrade": 1.5}, "riskPerTrade"),
        ({"capital": 100, "riskPerTrade": 0.1, "leverage": 50}, "leverage"),  # over XCOIN_MAX_LEVERAGE (20)
        ({"capital": "1e3", "riskPerTrade": 0.1}, "capital"),
        ({"capital": 100, "riskPerTrade": 0.1, "maxPositions": 0}, "maxPositions"),
        ({"capital": 100, "riskPerTrade": 0.1, "brokerKeys": 1}, "brokerKeys"),
        ({"capital": 100}, "riskPerTrade"),
    ],
)
def test_bad_terms_name_the_field_and_subscribe_nothing(api, terms, field):
    user = signup(api)
    add_keys(api, user)
    sid = new_strategy(api, user)["id"]
    response = api.post(f"/api/strategies/{sid}/subscribe", json=terms, headers=user.headers)
    assert response.status_code == 422
    assert response.json()["error"].startswith(field), response.json()
    assert api.get("/api/strategies/subscriptions", headers=user.headers).json() == {"subscriptions": []}


def test_subscribing_without_keys_says_so(api):
    user = signup(api)
    sid = new_strategy(api, user)["id"]
    response = api.post(
        f"/api/strategies/{sid}/subscribe", json={"capital": 10, "riskPerTrade": 0.1}, headers=user.headers
    )
    assert response.status_code == 404 and "API keys" in response.json()["error"]


def test_other_users_subscriptions_do_not_exist_for_you(api):
    owner, other = signup(api), signup(api)
    add_keys(api, owner)
    sid = new_strategy(api, owner, is_public=True)["id"]
    sub = subscribe(api, owner, sid)
    base = f"/api/strategies/subscriptions/{sub['id']}"
    for method, path, body in [
        ("GET", base, None), ("GET", f"{base}/stats", None), ("POST", f"{base}/pause", None),
        ("POST", f"{base}/resume", None), ("PUT", base, {"capital": 1}), ("DELETE", base, None),
    ]:  # fmt: skip
        assert api.request(method, path, json=body, headers=other.headers).status_code == 404, (method, path)
    assert api.get("/api/strategies/subscriptions", headers=other.headers).json() == {"subscriptions": []}
    assert api.get(base, headers=owner.headers).json()["isPaused"] is False  # untouched
