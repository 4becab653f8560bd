"""Parallel requests against a real uvicorn server on Postgres and Redis: each case fires 10–50
requests released together by a barrier, then checks the database invariant and that nothing
answered 500."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import sqlalchemy as sa

from tests.fixtures.api import PASSWORD, fire, signup
from xcoin_trading.config import get_settings

pytestmark = pytest.mark.usefixtures("live_api")


def _db():
    return sa.create_engine(get_settings().database_url)


def _one(sql: str, **params):
    engine = _db()
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).one()
    finally:
        engine.dispose()


def _statuses(responses) -> Counter:
    return Counter(r.status_code for r in responses)


def _user_with_keys(client) -> dict[str, str]:
    user = signup(client)
    keys = client.post(
        "/api/broker/keys", json={"apiKey": "race-key-0001", "apiSecret": "race-secret"}, headers=user.headers
    )
    assert keys.status_code == 201, keys.text
    return user.headers


def _strategy(client, headers, code: str, symbol: str = "BTCUSDT", public: bool = True) -> int:
    response = client.post(
        "/api/strategy-upload/strategies",
        json={"name": code, "code": code, "symbol": symbol, "resolution": "5m", "builtin": "sma_crossover",
              "isPublic": public},
        headers=headers,
    )  # fmt: skip
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _subscribe(client, headers, strategy_id: int):
    return client.post(
        f"/api/strategies/{strategy_id}/subscribe",
        json={"capital": 1000, "riskPerTrade": 0.01},
        headers=headers,
    )


def _counts_match_rows() -> None:
    mismatched = _one(
        """SELECT count(*) FROM strategies s WHERE s.subscriber_count <>
           (SELECT count(*) FROM subscriptions x WHERE x.strategy_id = s.id AND x.is_active)"""
    )[0]
    assert mismatched == 0


def test_parallel_cancels_of_one_subscription_count_once(live_api):
    with live_api.client() as client:
        owner = _user_with_keys(client)
        strategy_id = _strategy(client, owner, "race-cancel")
        users = [_user_with_keys(client) for _ in range(4)]
        subs = [_subscribe(client, h, strategy_id).json()["id"] for h in users]

    results = fire(
        live_api, 30, lambda c, i: c.delete(f"/api/strategies/subscriptions/{subs[0]}", headers=users[0])
    )
    assert _statuses(results) == {200: 1, 409: 29}
    assert _one("SELECT subscriber_count FROM strategies WHERE id = :id", id=strategy_id)[0] == 3
    _counts_match_rows()
    with live_api.client() as client:  # everyone else can still stop trading
        for headers, sub in zip(users[1:], subs[1:], strict=True):
            assert client.delete(f"/api/strategies/subscriptions/{sub}", headers=headers).status_code == 200
    assert _one("SELECT subscriber_count FROM strategies WHERE id = :id", id=strategy_id)[0] == 0


def test_deleting_a_strategy_and_subscribing_to_it_serialise(live_api):
    with live_api.client() as client:
        owner = _user_with_keys(client)
        users = [_user_with_keys(client) for _ in range(15)]
        strategy_ids = [_strategy(client, owner, f"race-del-{n}") for n in range(3)]
    for strategy_id in strategy_ids:  # several rounds: the delete lands at a different point each time

        def request(c, i, strategy_id=strategy_id):
            if i % 4 == 0:
                return c.delete(f"/api/strategy-upload/strategies/{strategy_id}", headers=owner)
            return _subscribe(c, users[i % len(users)], strategy_id)

        results = fire(live_api, 20, request)
        assert 500 not in _statuses(results)
        deleted, active = _one(
            """SELECT s.deleted_at IS NOT NULL,
                      (SELECT count(*) FROM subscriptions x WHERE x.strategy_id = s.id AND x.is_active)
               FROM strategies s WHERE s.id = :id""",
            id=strategy_id,
        )
        assert not (deleted and active), f"deleted strategy {strategy_id} has {active} active subscriptions"
        _counts_match_rows()


def test_parallel_duplicate_subscribes_answer_one_201_and_409s(live_api):
    with live_api.client() as client:
        owner = _user_with_keys(client)
        strategy_id = _strategy(client, owner, "race-dup")
    results = fire(live_api, 20, lambda c, i: _subscribe(c, owner, strategy_id))
    assert _statuses(results) == {201: 1, 409: 19}
    assert all(r.json()["error"] for r in results if r.status_code == 409)
    _counts_match_rows()


def test_one_futures_subscription_per_pair_under_parallel_subscribes(live_api):
    with live_api.client() as client:
        owner = _user_with_keys(client)
        ids = [_strategy(client, owner, f"race-fut-{n}", symbol="B-BTC_USDT") for n in range(10)]
    results = fire(live_api, 10, lambda c, i: _subscribe(c, owner, ids[i]))
    assert _statuses(results) == {201: 1, 409: 9}
    active = _one(
        """SELECT count(*) FROM subscriptions x JOIN strategies s ON s.id = x.strategy_id
           WHERE x.is_active AND s.symbol = 'B-BTC_USDT'"""
    )[0]
    assert active == 1


def test_parallel_registrations_of_one_email_answer_409_not_500(live_api):
    results = fire(
        live_api,
        20,
        lambda c, i: c.post("/auth/register", json={"email": "dup@example.com", "password": PASSWORD}),
    )
    assert _statuses(results) == {201: 1, 409: 19}
    assert _one("SELECT count(*) FROM users WHERE email = 'dup@example.com'")[0] == 1


def test_parallel_creates_of_one_strategy_code_answer_409_not_500(live_api):
    with live_api.client() as client:
        users = [signup(client).headers for _ in range(10)]
    body = {
        "name": "x",
        "code": "race-code",
        "symbol": "BTCUSDT",
        "resolution": "5m",
        "builtin": "sma_crossover",
    }
    results = fire(
        live_api, 10, lambda c, i: c.post("/api/strategy-upload/strategies", json=body, headers=users[i])
    )
    assert _statuses(results) == {201: 1, 409: 9}


def test_parallel_pauses_and_resumes_succeed_exactly_once(live_api):
    with live_api.client() as client:
        owner = _user_with_keys(client)
        sub = _subscribe(client, owner, _strategy(client, owner, "race-pause")).json()["id"]
    for action in ("pause", "resume", "pause"):
        results = fire(
            live_api,
            20,
            lambda c, i, a=action: c.post(f"/api/strategies/subscriptions/{sub}/{a}", headers=owner),
        )
        assert _statuses(results) == {200: 1, 409: 19}, action


def test_parallel_key_uploads_leave_one_active_set_and_delete_disconnects(live_api):
    with live_api.client() as client:
        owner = _user_with_keys(client)
        sub = _subscribe(client, owner, _strategy(client, owner, "race-keys")).json()["id"]

    def upload(c, i):
        return c.post(
            "/api/broker/keys", json={"apiKey": f"key-{i:04d}-xxxx", "apiSecret": "s"}, headers=owner
        )

    results = fire(live_api, 20, upload)
    assert set(_statuses(results)) <= {201, 409} and 201 in _statuses(results)
    assert _one("SELECT count(*) FROM broker_credentials WHERE is_active")[0] == 1
    # the subscription trades with the one active set
    assert _one(
        """SELECT c.is_active FROM subscriptions x JOIN broker_credentials c ON c.id = x.broker_credential_id
           WHERE x.id = :id""",
        id=sub,
    )[0]
    with live_api.client() as client:
        assert client.delete(f"/api/strategies/subscriptions/{sub}", headers=owner).status_code == 200
        assert client.delete("/api/broker/keys", headers=owner).status_code == 200
        status = client.get("/api/broker/status", headers=owner).json()
    assert status["connected"] is False


class CountingHasher:
    """Wraps the argon2 hasher: how many verifications ran, and how many at once at most."""

    def __init__(self, inner):
        self.inner, self.calls, self.running, self.peak = inner, 0, 0, 0
        self.lock = threading.Lock()

    def verify(self, hashed, password):
        with self.lock:
            self.calls += 1
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            return self.inner.verify(hashed, password)
        finally:
            with self.lock:
                self.running -= 1

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture()
def counting_hasher(monkeypatch):
    from xcoin_trading.services import users

    hasher = CountingHasher(users._hasher)
    monkeypatch.setattr(users, "_hasher", hasher)
    return hasher


def test_parallel_wrong_passwords_verify_at_most_the_limit(live_api, counting_hasher):
    with live_api.client() as client:
        victim = signup(client)
    counting_hasher.calls = 0
    results = fire(
        live_api,
        50,
        lambda c, i: c.post("/auth/login", json={"email": victim.email, "password": "guess guess"}),
    )
    statuses = _statuses(results)
    assert set(statuses) == {401, 429}
    assert statuses[401] <= 5 and counting_hasher.calls <= 5  # the documented 5 per email per window
    with live_api.client() as client:
        assert (
            client.post("/auth/login", json={"email": victim.email, "password": PASSWORD}).status_code == 429
        )


def _failed_logins_in_parallel(live_api_factory, n: int, *, per_ip: int):
    """`n` parallel logins from one address, each to its own unknown email with a wrong password."""
    from xcoin_trading.api.ratelimit import LoginThrottle, RedisCounter

    throttle = LoginThrottle(RedisCounter.from_url(get_settings().redis_url), per_email=100, per_ip=per_ip)
    login = {"password": "guess1234"}
    return fire(
        live_api_factory(throttle=throttle),
        n,
        lambda c, i: c.post("/auth/login", json={**login, "email": f"spray{i}@example.com"}),
    )


def test_parallel_spray_from_one_address_verifies_at_most_the_ip_limit(live_api_factory, counting_hasher):
    results = _failed_logins_in_parallel(live_api_factory, 40, per_ip=10)
    statuses = _statuses(results)
    assert set(statuses) == {401, 429}
    assert counting_hasher.calls <= 10


def test_concurrent_password_checks_are_bounded_per_process(live_api_factory, counting_hasher):
    results = _failed_logins_in_parallel(live_api_factory, 30, per_ip=100)
    assert _statuses(results) == {401: 30}
    assert counting_hasher.calls == 30
    assert counting_hasher.peak <= getattr(get_settings(), "password_check_concurrency", 4)


def test_moving_a_strategy_to_futures_races_subscribes_without_breaking_their_rules(live_api):
    """A spot strategy moved to a futures pair while users subscribe with maxPositions 5: either the
    move is refused (409, subscribers exist) or it came first and the subscribes met the futures rules."""
    with live_api.client() as client:
        owner = _user_with_keys(client)
        users = [_user_with_keys(client) for _ in range(12)]
        for n in range(3):
            strategy_id = _strategy(client, owner, f"race-move-{n}")

            def request(c, i, strategy_id=strategy_id):
                if i % 4 == 0:
                    return c.put(
                        f"/api/strategy-upload/strategies/{strategy_id}",
                        json={"symbol": "B-ETH_USDT"},
                        headers=owner,
                    )
                return c.post(
                    f"/api/strategies/{strategy_id}/subscribe",
                    json={"capital": 1000, "riskPerTrade": 0.01, "maxPositions": 5},
                    headers=users[i % len(users)],
                )

            results = fire(live_api, 16, request)
            assert 500 not in _statuses(results)
            broken = _one(
                """SELECT count(*) FROM subscriptions x JOIN strategies s ON s.id = x.strategy_id
                   WHERE s.id = :id AND x.is_active AND s.symbol LIKE 'B-%' AND x.max_positions <> 1""",
                id=strategy_id,
            )[0]
            assert broken == 0
    _counts_match_rows()


def test_parallel_wrong_passwords_are_limited_in_process_memory_too(live_api_factory, counting_hasher):
    from xcoin_trading.api.ratelimit import LoginThrottle, MemoryCounter

    live = live_api_factory(throttle=LoginThrottle(MemoryCounter()))  # the embedded default's counter
    with live.client() as client:
        victim = signup(client)
    counting_hasher.calls = 0
    results = fire(
        live, 40, lambda c, i: c.post("/auth/login", json={"email": victim.email, "password": "guess guess"})
    )
    assert set(_statuses(results)) == {401, 429}
    assert counting_hasher.calls <= 5


def test_parallel_first_sign_ins_of_one_oauth_identity_make_one_account(live_api_factory):
    from tests.test_api_auth import FakeProvider
    from xcoin_trading.api.oauth import OAuthIdentity

    provider = FakeProvider()
    provider.codes["c"] = OAuthIdentity("fakeid", "sub-race", "race@example.com", True, "Race")
    live = live_api_factory(oauth_providers={"fakeid": provider})

    def sign_in(c, i):
        state = c.get("/auth/oauth/fakeid/authorize").json()["state"]
        return c.get("/auth/oauth/fakeid/callback", params={"code": "c", "state": state})

    results = fire(live, 20, sign_in)
    assert _statuses(results) == {200: 20}
    assert len({r.json()["user"]["id"] for r in results}) == 1
    assert _one("SELECT count(*) FROM users WHERE email = 'race@example.com'")[0] == 1


def test_a_burst_beyond_the_store_pool_answers_200_not_500(live_api):
    """100 reads at once on one process: more than its 30 store connections and 40 worker threads.
    Each waits for a connection without holding a thread; before, every thread could wait for a
    connection held by a request waiting for a thread, and 40 of 100 answered 500 after the pool's
    30 s timeout."""
    client = live_api.client()
    user = signup(client)
    client.close()
    responses = fire(live_api, 100, lambda c, i: c.get("/api/strategies/subscriptions", headers=user.headers))
    assert _statuses(responses) == Counter({200: 100})
