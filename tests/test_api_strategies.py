"""Strategies through HTTP against real Postgres: validated on upload, private to their owner,
searchable, re-validated on update, soft-deleted, and every change reaching live execution's registry."""

from __future__ import annotations

from tests.fixtures.api import LOOKAHEAD_SOURCE, add_keys, new_strategy, signup, subscribe
from xcoin_trading.config import get_settings, reset_settings
from xcoin_trading.store.db import session_scope

# ---- strategies -----------------------------------------------------------------------------


def test_builtin_strategy_is_validated_on_upload(api):
    user = signup(api)
    created = new_strategy(api, user)
    assert created["validationStatus"] == "VALID" and created["isOwner"] is True
    bad = api.post(
        "/api/strategy-upload/strategies",
        json={"name": "x", "code": "bad-params", "symbol": "BTCUSDT", "resolution": "5m", "builtin": "sma_crossover",
              "params": {"fastest": 3}},
        headers=user.headers,
    )  # fmt: skip
    assert bad.status_code == 422 and bad.json()["error"].startswith("params unknown parameter")
    assert (
        api.get("/api/strategy-upload/strategies?search=bad-params", headers=user.headers).json()["total"]
        == 0
    )


def test_uploaded_code_that_looks_ahead_is_stored_invalid_with_the_reason(api):
    user = signup(api)
    created = new_strategy(api, user, builtin=None, source=LOOKAHEAD_SOURCE, params={})
    assert created["validationStatus"] == "INVALID"
    assert any("looks ahead" in e for e in created["validationErrors"])
    assert created["source"] == LOOKAHEAD_SOURCE


def test_strategy_needs_exactly_one_of_source_and_builtin(api):
    user = signup(api)
    both = {"name": "x", "code": "both-given", "symbol": "BTCUSDT", "resolution": "5m",
            "builtin": "sma_crossover", "source": "def signals(c, p): pass"}  # fmt: skip
    response = api.post("/api/strategy-upload/strategies", json=both, headers=user.headers)
    assert response.status_code == 422 and response.json()["error"].startswith("source")


def test_private_strategies_do_not_exist_for_other_users(api):
    owner, other = signup(api), signup(api)
    add_keys(api, other)
    sid = new_strategy(api, owner)["id"]
    base = f"/api/strategy-upload/strategies/{sid}"
    assert api.get(base, headers=other.headers).status_code == 404
    assert api.put(base, json={"name": "mine now"}, headers=other.headers).status_code == 404
    assert api.delete(base, headers=other.headers).status_code == 404
    sub = api.post(
        f"/api/strategies/{sid}/subscribe", json={"capital": 10, "riskPerTrade": 0.1}, headers=other.headers
    )
    assert sub.status_code == 404
    assert api.get(f"/api/backtest/history/{sid}", headers=other.headers).status_code == 404
    # the 404 is the same as for an id that does not exist at all
    missing = api.get("/api/strategy-upload/strategies/999999", headers=other.headers)
    assert api.get(base, headers=other.headers).json()["error"].replace(str(sid), "N") == missing.json()[
        "error"
    ].replace("999999", "N")
    assert sid not in [
        s["id"]
        for s in api.get("/api/strategy-upload/strategies", headers=other.headers).json()["strategies"]
    ]


def test_public_strategies_are_visible_but_only_the_owner_changes_them(api):
    owner, other = signup(api), signup(api)
    created = new_strategy(api, owner, is_public=True, builtin=None, source=LOOKAHEAD_SOURCE, params={})
    base = f"/api/strategy-upload/strategies/{created['id']}"
    seen = api.get(base, headers=other.headers)
    assert seen.status_code == 200 and seen.json()["isOwner"] is False
    assert seen.json()["source"] is None  # the author's code stays theirs
    assert api.put(base, json={"name": "hijack"}, headers=other.headers).status_code == 403
    assert api.delete(base, headers=other.headers).status_code == 403
    assert api.get(base, headers=owner.headers).json()["name"] == "BTC SMA"


def test_list_filters_by_search_status_and_tags(api):
    user = signup(api)
    a = new_strategy(api, user, name="Alpha trend", tags=["trend", "btc"])
    b = new_strategy(api, user, name="Beta revert", tags=["revert"], builtin="rsi_reversion", params={})

    def ids(q):
        return [
            s["id"]
            for s in api.get(f"/api/strategy-upload/strategies{q}", headers=user.headers).json()["strategies"]
        ]

    assert ids("?search=alpha") == [a["id"]]
    assert ids("?tags=trend,btc") == [a["id"]] and ids("?tags=revert") == [b["id"]]
    assert ids("?status=valid") == [a["id"], b["id"]] and ids("?status=invalid") == []
    assert api.get("/api/strategy-upload/strategies?status=bogus", headers=user.headers).status_code == 422


def test_update_revalidates_and_bad_updates_change_nothing(api):
    user = signup(api)
    sid = new_strategy(api, user)["id"]
    base = f"/api/strategy-upload/strategies/{sid}"
    bad = api.put(base, json={"params": {"nope": 1}}, headers=user.headers)
    assert bad.status_code == 422
    assert api.put(base, json={"lookback": 0}, headers=user.headers).status_code == 422
    assert api.get(base, headers=user.headers).json()["params"] == {"fast": 5, "slow": 20}
    ok = api.put(base, json={"params": {"fast": 7, "slow": 30}, "name": "Renamed"}, headers=user.headers)
    assert (
        ok.status_code == 200 and ok.json()["validationStatus"] == "VALID" and ok.json()["name"] == "Renamed"
    )


def test_delete_is_refused_while_subscribed_then_soft(api):
    user = signup(api)
    add_keys(api, user)
    sid = new_strategy(api, user)["id"]
    sub = subscribe(api, user, sid)
    base = f"/api/strategy-upload/strategies/{sid}"
    refused = api.delete(base, headers=user.headers)
    assert refused.status_code == 409 and "active subscriptions" in refused.json()["error"]
    api.delete(f"/api/strategies/subscriptions/{sub['id']}", headers=user.headers)
    assert api.delete(base, headers=user.headers).status_code == 200
    assert api.get(base, headers=user.headers).status_code == 404
    # history survives: the cancelled subscription still names it
    subs = api.get("/api/strategies/subscriptions?includeCancelled=true", headers=user.headers).json()[
        "subscriptions"
    ]
    assert [s["strategyId"] for s in subs] == [sid]


def test_updates_and_deletes_reach_live_execution_s_registry_at_once(api_factory, redis_url, monkeypatch):
    from xcoin_trading.live.registry import registry_for

    monkeypatch.setenv("XCOIN_REDIS_URL", redis_url)
    reset_settings()
    client = api_factory()
    user = signup(client)
    sid = new_strategy(client, user)["id"]
    base = f"/api/strategy-upload/strategies/{sid}"
    with session_scope(get_settings()) as session:
        assert registry_for(get_settings()).active_candle_keys(session) == {"BTCUSDT:5m"}  # built in Redis
    assert (
        client.put(base, json={"symbol": "ETHUSDT", "resolution": "1h"}, headers=user.headers).status_code
        == 200
    )
    with session_scope(get_settings()) as session:  # another worker: a fresh registry on the same Redis
        assert registry_for(get_settings()).active_candle_keys(session) == {"ETHUSDT:1h"}
    assert client.delete(base, headers=user.headers).status_code == 200
    with session_scope(get_settings()) as session:
        assert registry_for(get_settings()).active_candle_keys(session) == set()
