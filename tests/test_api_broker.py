"""Broker keys through HTTP against real Postgres (and the exchange simulator for the key test):
stored encrypted, shown masked, refused with the field named, kept while subscriptions use them."""

from __future__ import annotations

from tests.fixtures.api import add_keys, new_strategy, signup, subscribe
from tests.fixtures.exchange import funded_account
from xcoin_trading.config import get_settings, reset_settings
from xcoin_trading.store.db import session_scope
from xcoin_trading.store.models import BrokerCredential

# ---- broker keys ----------------------------------------------------------------------------


def test_keys_are_stored_encrypted_and_only_ever_shown_masked(api):
    user = signup(api)
    shown = add_keys(api, user, "PUBLICKEY-abcdef-7788", "TOPSECRET-value-9911")
    assert shown["apiKey"] == "****7788"
    status = api.get("/api/broker/status", headers=user.headers)
    assert status.json()["connected"] is True and status.json()["apiKey"] == "****7788"
    for response in (status, api.get("/auth/me", headers=user.headers)):
        assert "TOPSECRET" not in response.text and "PUBLICKEY-abcdef" not in response.text
    with session_scope(get_settings()) as session:
        row = session.query(BrokerCredential).filter_by(user_id=user.id).one()
        assert "TOPSECRET" not in row.api_secret_encrypted and "PUBLICKEY" not in row.api_key_encrypted


def test_blank_or_unknown_key_fields_are_refused_with_the_field_name(api):
    user = signup(api)
    blank = api.post("/api/broker/keys", json={"apiKey": "   ", "apiSecret": "x" * 10}, headers=user.headers)
    assert blank.status_code == 422 and blank.json()["error"].startswith("apiKey")
    other = api.post(
        "/api/broker/keys",
        json={"apiKey": "k" * 10, "apiSecret": "x" * 10, "broker": "binance"},
        headers=user.headers,
    )
    assert other.status_code == 422 and other.json()["error"].startswith("broker")
    assert api.get("/api/broker/status", headers=user.headers).json()["connected"] is False


def test_broker_test_returns_the_balances_the_exchange_holds(exchange_api, simulator):
    user = signup(exchange_api)
    account = funded_account(simulator, {"USDT": "2500.75", "BTC": "0.125"})
    try:
        add_keys(exchange_api, user, account.api_key, account.credentials.api_secret)
        response = exchange_api.post("/api/broker/test", headers=user.headers)
        assert response.status_code == 200, response.text
        balances = {b["currency"]: b for b in response.json()["balances"]}
        assert balances["USDT"]["balance"] == "2500.75" and balances["BTC"]["balance"] == "0.125"
        assert account.credentials.api_secret not in response.text
        assert exchange_api.get("/api/broker/status", headers=user.headers).json()["lastTestedAt"] is not None
    finally:
        account.close()


def test_broker_test_with_keys_the_exchange_refuses_is_a_clear_400(exchange_api, simulator):
    user = signup(exchange_api)
    account = funded_account(simulator)
    try:
        add_keys(exchange_api, user, account.api_key, "not-the-right-secret")
        response = exchange_api.post("/api/broker/test", headers=user.headers)
        assert response.status_code == 400
        assert response.json() == {"error": "the exchange rejected these API keys"}
    finally:
        account.close()


def test_broker_test_without_keys_or_exchange(api_factory, monkeypatch):
    monkeypatch.setenv("COINDCX_API_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    reset_settings()
    client = api_factory()
    user = signup(client)
    assert client.post("/api/broker/test", headers=user.headers).status_code == 404
    add_keys(client, user)
    down = client.post("/api/broker/test", headers=user.headers)
    assert down.status_code == 502 and "127.0.0.1" not in down.text


def test_keys_in_use_cannot_be_deleted_until_their_subscriptions_end(api):
    user = signup(api)
    add_keys(api, user)
    sub = subscribe(api, user, new_strategy(api, user)["id"])
    refused = api.delete("/api/broker/keys", headers=user.headers)
    assert refused.status_code == 409 and "1 active subscription" in refused.json()["error"]
    assert api.delete(f"/api/strategies/subscriptions/{sub['id']}", headers=user.headers).status_code == 200
    assert api.delete("/api/broker/keys", headers=user.headers).status_code == 200
    assert api.get("/api/broker/status", headers=user.headers).json()["connected"] is False
    assert api.delete("/api/broker/keys", headers=user.headers).status_code == 404
