"""Hostile and odd input at the API: oversized and flooding bodies, money at the store's limits,
loose types, forged token subjects, far dates, unreadable stored rows, and errors that must not cost
the client its keep-alive connection."""

from __future__ import annotations

import http.client
import json
from datetime import timedelta
from decimal import Decimal

import jwt
import pytest
import sqlalchemy as sa

from tests.fixtures.api import fire, signup
from xcoin_trading.config import get_settings, reset_settings
from xcoin_trading.money import plain

BIG_CAPITAL = "999999999999999.999999999999999999"  # 15 + 18 digits: the largest capital accepted


def _keys_strategy_subscription(client, headers, capital=1000, symbol="BTCUSDT"):
    assert (
        client.post(
            "/api/broker/keys", json={"apiKey": "hard-key-0001", "apiSecret": "s"}, headers=headers
        ).status_code
        == 201
    )
    strategy = client.post(
        "/api/strategy-upload/strategies",
        json={
            "name": "h",
            "code": "hard-1",
            "symbol": symbol,
            "resolution": "5m",
            "builtin": "sma_crossover",
        },
        headers=headers,
    ).json()
    sub = client.post(
        f"/api/strategies/{strategy['id']}/subscribe",
        json={"capital": capital, "riskPerTrade": 0.01},
        headers=headers,
    )
    return strategy["id"], sub


# ---- body size and validation cost -----------------------------------------------------------


def test_a_body_over_the_limit_is_refused_with_413_before_it_is_read(live_api):
    with live_api.client() as client:
        response = client.post(
            "/auth/login", content=b'{"email": "' + b"a" * (2 * 1024 * 1024) + b'"}',
            headers={"content-type": "application/json"},
        )  # fmt: skip
    assert response.status_code == 413
    assert response.json() == {"error": f"request body must be at most {1024 * 1024} bytes"}


def test_a_chunked_body_without_length_is_cut_off_at_the_limit(live_api):
    sent = []

    def chunks():
        for _ in range(64):  # 4 MiB in 64 KiB chunks, no Content-Length
            sent.append(1)
            yield b" " * 65536

    with live_api.client() as client:
        response = client.post("/auth/login", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "at most" in response.json()["error"]


def test_the_body_limit_is_configurable(live_api_factory, monkeypatch):
    monkeypatch.setenv("XCOIN_MAX_BODY_BYTES", "1000")
    reset_settings()
    live = live_api_factory()
    with live.client() as client:
        small = client.post("/auth/login", json={"email": "a@b.co", "password": "x" * 900})
        large = client.post("/auth/login", json={"email": "a@b.co", "password": "x" * 1100})
    assert small.status_code == 401
    assert large.status_code == 413
    assert large.json()["error"] == "request body must be at most 1000 bytes"


def test_a_flood_of_unknown_keys_is_refused_cheaply(live_api):
    flood = {f"k{i}": 0 for i in range(80_000)}  # ~0.9 MB: under the size limit
    with live_api.client() as client:
        response = client.post("/auth/register", json=flood)
    assert response.status_code == 422
    assert response.json()["error"] == "body has more than 2000 object members"
    assert len(response.content) < 1000


def test_validation_reports_at_most_twenty_problems(live_api):
    with live_api.client() as client:
        response = client.post("/auth/register", json={f"unknown{i}": 1 for i in range(500)})
    assert response.status_code == 422
    details = response.json()["details"]
    assert len(details) == 21 and details[-1].endswith("more problems")
    assert len(response.content) < 3000


def test_health_answers_while_floods_are_refused(live_api):
    flood = json.dumps({f"k{i}": 0 for i in range(80_000)})

    def request(client, i):
        if i % 5 == 0:
            return client.get("/auth/oauth/providers")
        return client.post("/auth/register", content=flood, headers={"content-type": "application/json"})

    statuses = {r.status_code for r in fire(live_api, 20, request)}
    assert statuses == {200, 422}


# ---- money ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("999999999999999.999999999999999999", "999999999999999.999999999999999999"),
        ("123456789012.123456789012345678", "123456789012.123456789012345678"),
        ("99999999999999999999.999999999999999999", "99999999999999999999.999999999999999999"),
        ("1000.500000000000000000", "1000.5"),
        ("0E-18", "0"),
        ("-0.000000000000000001", "-0.000000000000000001"),
        ("1E+3", "1000"),
    ],
)
def test_money_leaves_with_every_digit(stored, shown):
    assert plain(Decimal(stored)) == shown


def test_the_largest_capital_round_trips_exactly_and_is_accepted_back(api):
    user = signup(api)
    _, sub = _keys_strategy_subscription(api, user.headers, capital=BIG_CAPITAL)
    assert sub.status_code == 201, sub.text
    assert sub.json()["capital"] == BIG_CAPITAL
    got = api.get(f"/api/strategies/subscriptions/{sub.json()['id']}", headers=user.headers).json()
    assert got["capital"] == BIG_CAPITAL
    back = api.put(
        f"/api/strategies/subscriptions/{got['id']}", json={"capital": got["capital"]}, headers=user.headers
    )
    assert back.status_code == 200 and back.json()["capital"] == BIG_CAPITAL
    as_number = api.put(  # a JSON number with all 33 digits, parsed as a decimal
        f"/api/strategies/subscriptions/{got['id']}",
        content=f'{{"capital": {BIG_CAPITAL}}}',
        headers={**user.headers, "content-type": "application/json"},
    )
    assert as_number.status_code == 200 and as_number.json()["capital"] == BIG_CAPITAL


# ---- strict types, token subjects, dates ------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("maxPositions", True), ("maxPositions", "2"), ("maxPositions", 2.0), ("brokerCredentialId", "1")],
)
def test_subscribe_takes_integers_only_as_json_integers(api, field, value):
    user = signup(api)
    strategy_id, _ = _keys_strategy_subscription(api, user.headers)
    response = api.post(
        f"/api/strategies/{strategy_id}/subscribe",
        json={"capital": 100, "riskPerTrade": 0.01, field: value},
        headers=user.headers,
    )
    assert response.status_code == 422
    assert response.json()["error"].startswith(field)


@pytest.mark.parametrize(("field", "value"), [("isPublic", "yes"), ("isPublic", 1), ("lookback", True)])
def test_strategy_fields_are_strictly_typed(api, field, value):
    user = signup(api)
    body = {
        "name": "t",
        "code": "strict-1",
        "symbol": "BTCUSDT",
        "resolution": "5m",
        "builtin": "sma_crossover",
    }
    response = api.post("/api/strategy-upload/strategies", json={**body, field: value}, headers=user.headers)
    assert response.status_code == 422
    assert response.json()["error"].startswith(field)


@pytest.mark.parametrize("sub", ["²", "١", "0", "01", " 1", "1 ", "99999999999999999999", "-1"])
def test_a_token_subject_must_be_plain_ascii_digits(api, jwt_secret_env, sub):
    user = signup(api)  # user 1 exists: "١" (Arabic-Indic one) must not become it
    from xcoin_trading.timeframes import utcnow

    now = utcnow()
    token = jwt.encode(
        {
            "sub": sub,
            "typ": "access",
            "iss": "xcoin",
            "iat": now,
            "nbf": now,
            "exp": now + timedelta(hours=1),
        },
        jwt_secret_env,
        algorithm="HS256",
    )
    response = api.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, (sub, response.text)
    assert api.get("/auth/me", headers=user.headers).status_code == 200


@pytest.mark.parametrize(
    ("start", "end"),
    [("9999-12-30", "9999-12-31"), ("0001-01-01", "0001-01-02"), ("2024-01-01", "9999-12-31")],
)
def test_far_backtest_dates_are_refused_not_a_500(api, start, end):
    user = signup(api)
    strategy_id, _ = _keys_strategy_subscription(api, user.headers)
    response = api.post(
        "/api/backtest/run",
        json={"strategyId": strategy_id, "start": start, "end": end},
        headers=user.headers,
    )
    assert response.status_code == 422
    assert response.json()["error"].split()[0] in ("start", "end")


# ---- an unreadable stored row degrades one field ----------------------------------------------


def test_one_unreadable_trade_row_nulls_its_fields_not_the_response(api_factory, on_simulator):
    client = api_factory()
    user = signup(client)
    strategy_id, sub = _keys_strategy_subscription(client, user.headers)
    engine = sa.create_engine(get_settings().database_url)
    with engine.begin() as conn:
        for quantity in ("0.5", "NaN"):
            conn.execute(
                sa.text(
                    """INSERT INTO trades (subscription_id, strategy_id, user_id, symbol, market_type, side,
                         quantity, leverage, entry_price, status, entry_fee, exit_fee, fees, flags,
                         created_at, updated_at)
                       VALUES (:sub, :strategy, :user, 'BTCUSDT', 'spot', 'LONG', CAST(:q AS numeric), 1,
                         100, 'OPEN', 0, 0, 0, '[]', now(), now())"""
                ),
                {"sub": sub.json()["id"], "strategy": strategy_id, "user": user.id, "q": quantity},
            )
    engine.dispose()
    response = client.get("/api/positions/current", headers=user.headers)
    assert response.status_code == 200, response.text
    good, bad = response.json()["positions"]
    assert good["quantity"] == "0.5" and good["problems"] == []
    assert bad["quantity"] is None and bad["unrealizedPnl"] is None
    assert bad["problems"][0] == "quantity is not a finite amount in the stored row"
    assert response.json()["summary"]["totalNotional"] is None


# ---- errors keep the connection ---------------------------------------------------------------


def test_an_unexpected_error_answers_500_and_keeps_the_connection(live_api_factory):
    from xcoin_trading.api import create_app

    app = create_app(get_settings())

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    from contextlib import contextmanager

    from tests.fixtures.api import serve

    with contextmanager(serve)(app) as live:
        host, port = live.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("GET", "/boom")
        first = conn.getresponse()
        assert first.status == 500 and json.loads(first.read()) == {"error": "internal error"}
        sock = conn.sock
        assert sock is not None and first.getheader("connection") != "close"
        conn.request("POST", "/auth/login", body=b"{}", headers={"content-type": "application/json"})
        second = conn.getresponse()
        assert second.status == 422 and second.read()
        assert conn.sock is sock  # the same TCP connection carried both
        conn.close()
