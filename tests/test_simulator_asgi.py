"""The simulator's per-request fast paths answer as before: the plain ASGI app as the Starlette route
it replaced (statuses, headers, bodies byte for byte, 405/404), orjson only where it equals json,
order ids still uuid4, the price kept per instant still follows the clock."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import time
import uuid

import httpx
import pytest

from tests.fixtures.exchange import funded_account
from xcoin_trading.exchange.simulator.wire import dumps, fast_dumps, loads, new_id


def _signed_post(sim, account, path: str, body: dict) -> httpx.Response:
    payload = json.dumps({**body, "timestamp": int(time.time() * 1000)}, separators=(",", ":")).encode()
    secret = account.credentials.api_secret.encode()
    headers = {
        "Content-Type": "application/json",
        "X-AUTH-APIKEY": account.api_key,
        "X-AUTH-SIGNATURE": hmac.new(secret, payload, hashlib.sha256).hexdigest(),
    }
    return httpx.post(sim.url + path, content=payload, headers=headers)


def test_order_answer_is_json_compact_with_starlette_headers(simulator):
    account = funded_account(simulator, {"USDT": "10000"})
    try:
        body = {"side": "buy", "order_type": "market_order", "market": "BTCUSDT", "total_quantity": "0.001",
                "client_order_id": str(uuid.uuid4())}  # fmt: skip
        response = _signed_post(simulator, account, "/exchange/v1/orders/create", body)
        assert response.status_code == 200
        assert response.content == dumps(json.loads(response.content))  # json's bytes, not another encoder's
        order = response.json()["orders"][0]
        assert order["status"] == "filled" and order["total_quantity"] == 0.001
        names = [k.decode().lower() for k, _ in response.headers.raw]
        assert names == ["date", "server", "content-length", "content-type"]
        assert response.headers["content-type"] == "application/json"
        assert int(response.headers["content-length"]) == len(response.content)
    finally:
        account.close()


def test_errors_keep_their_bodies_statuses_and_retry_after(simulator):
    account = funded_account(simulator, {"USDT": "10000"})
    try:
        unsigned = httpx.post(simulator.url + "/exchange/v1/orders/create", content=b"{}")
        assert unsigned.status_code == 401
        assert unsigned.content == (b'{"code":401,"message":"Invalid credentials: X-AUTH-APIKEY and '
                                    b'X-AUTH-SIGNATURE headers are required","status":"error"}')  # fmt: skip
        bad = _signed_post(simulator, account, "/exchange/v1/orders/create", {"side": "up"})
        assert bad.status_code == 422
        assert bad.json()["message"] == "Currency pair is not valid"
        account.admin.set_faults(error_429=1, count=1, retry_after_s=2.5)
        limited = _signed_post(simulator, account, "/exchange/v1/users/balances", {})
        assert limited.status_code == 429
        assert limited.content == b'{"code":429,"message":"Too Many Requests","status":"error"}'
        names = [k.decode().lower() for k, _ in limited.headers.raw]
        assert names == ["date", "server", "retry-after", "content-length", "content-type"]
        assert limited.headers["retry-after"] == "3"
        unknown = httpx.get(simulator.url + "/exchange/v1/nope")
        assert unknown.status_code == 404
        assert unknown.content == b'{"code":404,"message":"not_found","status":"error"}'
    finally:
        account.close()


def test_other_methods_405_and_head_answers_without_a_body(simulator):
    put = httpx.put(simulator.url + "/exchange/v1/markets")
    assert put.status_code == 405
    assert put.text == "Method Not Allowed"
    assert put.headers["content-type"] == "text/plain; charset=utf-8"
    assert set(put.headers["allow"].split(", ")) == {"GET", "POST", "DELETE", "HEAD"}
    get = httpx.get(simulator.url + "/exchange/v1/markets")
    head = httpx.head(simulator.url + "/exchange/v1/markets")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"] == str(len(get.content))


def test_admin_reads_query_parameters_and_reports_bad_json_as_json_does(simulator, sim_admin):
    account = funded_account(simulator, {"USDT": "123.5"})
    try:
        last_wins = httpx.get(
            simulator.url + "/_sim/balances", params=[("api_key", "x"), ("api_key", account.api_key)]
        )
        assert last_wins.json()["balances"] == [
            {"currency": "USDT", "balance": "123.5", "locked_balance": "0"}
        ]
        broken = httpx.post(simulator.url + "/_sim/deposit", content=b'{"api_key": ')
        assert broken.status_code == 422
        try:
            json.loads(b'{"api_key": ')
        except ValueError as exc:
            expected = f"Invalid Request: {exc}"
        assert broken.json()["message"] == expected
    finally:
        account.close()


def _random_value(rng: random.Random, depth: int = 0):
    kind = rng.randint(0, 6 if depth < 3 else 3)
    if kind == 0:
        scale = 10 ** rng.randint(-20, 22)
        return rng.choice([rng.random(), float(rng.randint(0, 10**6)), round(rng.random(), 6)]) * scale
    if kind == 1:
        return rng.choice([rng.randint(-(10**6), 10**6), rng.randint(-(2**70), 2**70)])
    if kind == 2:
        pool = 'abcdef0123456789e-.:,[]{}"\\/ \x00\x1f\x7f\u00e9\u2028\U0001f600'
        return "".join(rng.choice(pool) for _ in range(rng.randint(0, 12)))
    if kind == 3:
        return rng.choice([None, True, False, 0.0, -0.0, -1e-7, 5e-05, 1e16])
    if kind == 4:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {str(_random_value(rng, 3)): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def test_fast_json_paths_give_json_bytes_and_values():
    rng = random.Random(42)
    for _ in range(20_000):
        value = _random_value(rng)
        assert fast_dumps(value) == dumps(value)
        text = dumps(value)
        assert repr(loads(text)) == repr(json.loads(text))


@pytest.mark.parametrize(
    "raw",
    [b"NaN", b"[Infinity]", b"1e400", b"\xef\xbb\xbf{}", b'"\\ud800"', b"-12345678901234567890",
     b'{"a":1', b"\xff", b"[1,]", "{}".encode("utf-16"), b"[" * 3000 + b"]" * 3000],
)  # fmt: skip
def test_loads_reads_or_fails_as_json_loads_does(raw):
    def outcome(read):
        try:
            return repr(read(raw))
        except (ValueError, RecursionError) as exc:
            return f"{type(exc).__name__}: {exc}"

    assert outcome(loads) == outcome(json.loads)


def test_order_ids_are_random_version_4_uuids():
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_price_kept_per_instant_follows_the_clock_and_each_markets_tick():
    from xcoin_trading.exchange.simulator.engine import Exchange
    from xcoin_trading.exchange.simulator.wire import to_decimal

    ex = Exchange.random_walk(seed=7, coins=("BTC",))
    spot, futures = ex.spot_markets["BTCUSDT"], ex.futures_markets["B-BTC_USDT"]
    feed = ex.feed_for(spot)
    seen = set()
    for _ in range(5):
        now = ex.now()
        for market in (spot, futures, spot):  # the two markets share a coin, not a tick
            assert ex.price(market) == market.round_price(to_decimal(feed.price_at(now)))
        seen.add(ex.price(spot))
        ex.advance(now + 3_600_000)
    assert len(seen) > 1  # an hour of random walk moves the price: the kept one was not reused


def test_keep_alive_pipelining_and_connection_close_on_one_socket(simulator):
    """Responses leave joined per event-loop step: each still arrives whole and in order, and a
    `Connection: close` answer is flushed before the socket closes."""
    import socket

    host, port = simulator.url.removeprefix("http://").split(":")
    request = b"GET /_sim/clock HTTP/1.1\r\nHost: x\r\n\r\n"
    closing = b"GET /exchange/v1/markets HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request + request + closing)
        received = b""
        while chunk := sock.recv(65536):  # ends when the server closes after the third answer
            received += chunk
    answers = received.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 3 and all(a.startswith(b"200 OK\r\n") for a in answers)
    clock = json.dumps({"now_ms": simulator.now_ms}, separators=(",", ":")).encode()
    assert answers[0].endswith(b"\r\n\r\n" + clock) and answers[1].endswith(b"\r\n\r\n" + clock)
    assert b"connection: close" in answers[2] and answers[2].endswith(b'"]')
