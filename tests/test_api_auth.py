"""Auth through HTTP against real Postgres: register, login, JWT checks on every protected route,
login throttling (in-process and real Redis), the embedded JWT secret, and OAuth sign-in.

OAuth: no network reaches Google here, so the sign-in flow is driven by `FakeProvider`, a test
double of the external identity provider registered through `create_app(oauth_providers=...)`.
The Google provider itself is checked for what needs no network: configuration and its URL.
"""

from __future__ import annotations

import os
import stat
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import jwt
import pytest

from tests.fixtures.api import PASSWORD, signup
from xcoin_trading.api.oauth import OAuthIdentity
from xcoin_trading.api.ratelimit import LoginThrottle, MemoryCounter, RedisCounter
from xcoin_trading.config import get_settings, reset_settings
from xcoin_trading.errors import ConfigError, Unauthorized

OPEN_ROUTES = {"/health", "/auth/register", "/auth/login"}


def documented_routes(app) -> list[tuple[str, str]]:
    return [
        (method.upper(), path.replace("{strategy_id}", "1").replace("{subscription_id}", "1"))
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    ]


def protected_routes(app) -> list[tuple[str, str]]:
    return [(m, p) for m, p in documented_routes(app) if p.startswith(("/api/", "/auth/me"))]


def test_register_returns_a_working_token_and_never_the_password(api):
    response = api.post(
        "/auth/register", json={"email": "Ana@Example.com", "password": PASSWORD, "name": "Ana"}
    )
    assert response.status_code == 201
    body = response.json()
    assert body["user"]["email"] == "ana@example.com" and body["tokenType"] == "Bearer"
    assert PASSWORD not in response.text and "hash" not in response.text.lower()
    me = api.get("/auth/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status_code == 200 and me.json()["id"] == body["user"]["id"]


def test_register_twice_is_a_conflict(api):
    signup(api, "bo@example.com")
    response = api.post("/auth/register", json={"email": "bo@example.com", "password": PASSWORD})
    assert response.status_code == 409
    assert response.json() == {"error": "email bo@example.com is already registered"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "password": PASSWORD}, "email"),
        ({"email": "c@example.com", "password": "short"}, "password"),
        ({"email": "c@example.com"}, "password"),
        ({"email": "c@example.com", "password": PASSWORD, "isAdmin": True}, "isAdmin"),
    ],
)
def test_bad_registration_names_the_field_and_creates_nothing(api, body, field):
    response = api.post("/auth/register", json=body)
    assert response.status_code == 422
    assert response.json()["error"].startswith(field)
    login = api.post("/auth/login", json={"email": "c@example.com", "password": PASSWORD})
    assert login.status_code == 401


def test_wrong_password_and_unknown_email_get_the_same_answer(api):
    signup(api, "dee@example.com")
    wrong = api.post("/auth/login", json={"email": "dee@example.com", "password": "not the password"})
    unknown = api.post("/auth/login", json={"email": "nobody@example.com", "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"error": "Invalid credentials"}
    ok = api.post("/auth/login", json={"email": "DEE@example.com", "password": PASSWORD})
    assert ok.status_code == 200 and ok.json()["user"]["email"] == "dee@example.com"


def _tokens(user_id: int, secret: str) -> dict[str, str]:
    now = datetime.now(UTC)
    good = {"sub": str(user_id), "typ": "access", "iss": "xcoin", "iat": now, "exp": now + timedelta(hours=1)}
    valid = jwt.encode(good, secret, algorithm="HS256")
    head, payload, sig = valid.split(".")
    forged_payload = jwt.encode({**good, "sub": str(user_id + 1)}, "x" * 40, algorithm="HS256").split(".")[1]
    return {
        "missing": "",
        "expired": jwt.encode(
            {**good, "iat": now - timedelta(hours=2), "exp": now - timedelta(seconds=1)}, secret
        ),
        "tampered": f"{head}.{forged_payload}.{sig}",
        "other secret": jwt.encode(good, "y" * 48, algorithm="HS256"),
        "alg none": jwt.encode(good, None, algorithm="none"),
        "wrong alg HS512": jwt.encode(good, secret, algorithm="HS512"),
        "no expiry": jwt.encode({k: v for k, v in good.items() if k != "exp"}, secret, algorithm="HS256"),
        "oauth state as token": jwt.encode({**good, "typ": "oauth_state"}, secret, algorithm="HS256"),
        "garbage": "not.a.jwt",
    }


def test_every_protected_route_refuses_bad_tokens(api, jwt_secret_env):
    user = signup(api)
    routes = protected_routes(api.app)
    assert len(routes) >= 20
    for kind, token in _tokens(user.id, jwt_secret_env).items():
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        for method, path in routes:
            response = api.request(method, path, headers=headers, json={})
            assert response.status_code == 401, (kind, method, path, response.text)
            assert set(response.json()) == {"error"}
    # the same forged claims, correctly signed, are accepted: the checks above are about the token
    assert api.get("/api/broker/status", headers=user.headers).status_code == 200


def test_open_routes_need_no_token(api):
    paths = {p for _, p in documented_routes(api.app)}
    assert paths >= OPEN_ROUTES
    # nothing else is open: every other documented route is either OAuth sign-in or protected
    others = paths - OPEN_ROUTES - {p for _, p in protected_routes(api.app)}
    assert all(p.startswith("/auth/oauth/") for p in others), others
    assert api.get("/health").status_code == 200


def test_a_deactivated_user_s_token_stops_working(api):
    from xcoin_trading.store.db import session_scope
    from xcoin_trading.store.models import User

    user = signup(api)
    with session_scope(get_settings()) as session:
        session.get(User, user.id).is_active = False
    assert api.get("/auth/me", headers=user.headers).status_code == 401


def _throttle_client(api_factory, backend, redis_url_factory, monkeypatch, **limits):
    if backend == "redis":
        monkeypatch.setenv("XCOIN_REDIS_URL", redis_url_factory())
        reset_settings()
    client = api_factory(throttle=None) if not limits else None
    if limits:
        settings = get_settings()
        counter = RedisCounter.from_url(settings.redis_url) if backend == "redis" else MemoryCounter()
        client = api_factory(throttle=LoginThrottle(counter, **limits))
    return client


@pytest.fixture(params=["memory", "redis"])
def throttle_backend(request):
    return request.param


@pytest.fixture()
def lazy_redis(request):
    return lambda: request.getfixturevalue("redis_url")


def test_five_failures_lock_the_email_even_for_the_right_password(
    api_factory, throttle_backend, lazy_redis, monkeypatch
):
    client = _throttle_client(api_factory, throttle_backend, lazy_redis, monkeypatch)
    assert isinstance(
        client.app.state.throttle.counter, RedisCounter if throttle_backend == "redis" else MemoryCounter
    )
    victim, bystander = signup(client), signup(client)
    for _ in range(5):
        assert (
            client.post("/auth/login", json={"email": victim.email, "password": "guess guess"}).status_code
            == 401
        )
    locked = client.post("/auth/login", json={"email": victim.email, "password": PASSWORD})
    assert locked.status_code == 429
    assert "too many failed login attempts" in locked.json()["error"]
    assert 0 < int(locked.headers["Retry-After"]) <= 900
    assert (
        client.post("/auth/login", json={"email": bystander.email, "password": PASSWORD}).status_code == 200
    )


def test_failures_from_one_address_are_limited_across_emails(
    api_factory, throttle_backend, lazy_redis, monkeypatch
):
    client = _throttle_client(api_factory, throttle_backend, lazy_redis, monkeypatch, per_email=100, per_ip=3)
    user = signup(client)
    for n in range(3):
        wrong = client.post("/auth/login", json={"email": f"spray{n}@example.com", "password": "guess guess"})
        assert wrong.status_code == 401
    assert client.post("/auth/login", json={"email": user.email, "password": PASSWORD}).status_code == 429


def test_a_successful_login_clears_the_email_s_failures(
    api_factory, throttle_backend, lazy_redis, monkeypatch
):
    client = _throttle_client(api_factory, throttle_backend, lazy_redis, monkeypatch, per_email=3, per_ip=100)
    user = signup(client)
    for _ in range(2):
        client.post("/auth/login", json={"email": user.email, "password": "typo typo"})
    assert client.post("/auth/login", json={"email": user.email, "password": PASSWORD}).status_code == 200
    for _ in range(2):
        client.post("/auth/login", json={"email": user.email, "password": "typo typo"})
    assert client.post("/auth/login", json={"email": user.email, "password": PASSWORD}).status_code == 200


def test_the_lock_ends_with_its_window():
    now = [1000.0]
    throttle = LoginThrottle(MemoryCounter(clock=lambda: now[0]), per_email=2, per_ip=50, window_seconds=60)
    throttle.failed("a@x.io", "1.2.3.4")
    throttle.failed("a@x.io", "1.2.3.4")
    with pytest.raises(Exception, match="retry in 60 seconds"):
        throttle.check("a@x.io", "1.2.3.4")
    now[0] += 60.5
    throttle.check("a@x.io", "1.2.3.4")  # window over: allowed again


def test_redis_counts_are_shared_by_every_api_process(redis_url):
    """Two workers (two counters on the same Redis) see one count, and Redis expires the window."""
    a, b = RedisCounter.from_url(redis_url), RedisCounter.from_url(redis_url)
    throttle_a = LoginThrottle(a, per_email=2, window_seconds=1)
    throttle_b = LoginThrottle(b, per_email=2, window_seconds=1)
    throttle_a.failed("e@x.io", "10.0.0.1")
    throttle_b.failed("e@x.io", "10.0.0.2")
    with pytest.raises(Exception, match="too many"):
        throttle_a.check("e@x.io", "10.0.0.3")
    time.sleep(1.2)
    throttle_b.check("e@x.io", "10.0.0.3")


def test_embedded_default_generates_a_private_jwt_secret_once(api_sqlite, xcoin_home):
    from xcoin_trading.api import create_app

    key = xcoin_home / "jwt.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    user = signup(api_sqlite)
    second_app = create_app(get_settings())  # a restart: same secret, tokens stay valid
    assert second_app.state.tokens.user_id(user.token) == user.id


def test_outside_embedded_a_jwt_secret_is_required(postgres_url, master_key_env, monkeypatch):
    from xcoin_trading.api import create_app

    monkeypatch.setenv("XCOIN_DATABASE_URL", postgres_url)
    monkeypatch.delenv("XCOIN_JWT_SECRET", raising=False)
    reset_settings()
    with pytest.raises(ConfigError, match="XCOIN_JWT_SECRET"):
        create_app(get_settings())


# ---- OAuth ----------------------------------------------------------------------------------


class FakeProvider:
    """Test double of an external identity provider: codes map to identities."""

    name = "fakeid"

    def __init__(self):
        self.codes: dict[str, OAuthIdentity] = {}

    def authorization_url(self, state: str) -> str:
        return f"https://id.example/authorize?state={state}"

    def identity(self, code: str) -> OAuthIdentity:
        if code not in self.codes:
            raise Unauthorized("the identity provider refused the authorization code")
        return self.codes[code]


@pytest.fixture()
def oauth(api_factory):
    provider = FakeProvider()
    return api_factory(oauth_providers={"fakeid": provider}), provider


def _state(client) -> str:
    start = client.get("/auth/oauth/fakeid/authorize")
    assert start.status_code == 200
    assert parse_qs(urlparse(start.json()["authorizationUrl"]).query)["state"] == [start.json()["state"]]
    return start.json()["state"]


def test_oauth_sign_in_creates_the_account_once(oauth):
    client, provider = oauth
    provider.codes["c1"] = provider.codes["c2"] = OAuthIdentity(
        "fakeid", "sub-1", "Eve@Example.com", True, "Eve"
    )
    first = client.get("/auth/oauth/fakeid/callback", params={"code": "c1", "state": _state(client)})
    assert first.status_code == 200, first.text
    assert (
        first.json()["user"]["email"] == "eve@example.com"
        and first.json()["user"]["oauthProvider"] == "fakeid"
    )
    again = client.get("/auth/oauth/fakeid/callback", params={"code": "c2", "state": _state(client)})
    assert again.json()["user"]["id"] == first.json()["user"]["id"]
    me = client.get("/auth/me", headers={"Authorization": f"Bearer {again.json()['token']}"})
    assert me.status_code == 200
    # no password was ever set: password login for that account fails
    assert (
        client.post("/auth/login", json={"email": "eve@example.com", "password": PASSWORD}).status_code == 401
    )


def test_oauth_links_a_verified_email_to_the_existing_account(oauth):
    client, provider = oauth
    user = signup(client, "fay@example.com")
    provider.codes["c"] = OAuthIdentity("fakeid", "sub-fay", "fay@example.com", True)
    response = client.get("/auth/oauth/fakeid/callback", params={"code": "c", "state": _state(client)})
    assert response.status_code == 200 and response.json()["user"]["id"] == user.id


def test_oauth_refuses_unverified_email_bad_state_and_refused_codes(oauth):
    client, provider = oauth
    signup(client, "gus@example.com")
    provider.codes["unverified"] = OAuthIdentity("fakeid", "sub-x", "gus@example.com", False)
    unverified = client.get(
        "/auth/oauth/fakeid/callback", params={"code": "unverified", "state": _state(client)}
    )
    assert unverified.status_code == 401
    state = _state(client)
    tampered = state[:-2] + ("AA" if not state.endswith("AA") else "BB")
    assert (
        client.get(
            "/auth/oauth/fakeid/callback", params={"code": "unverified", "state": tampered}
        ).status_code
        == 401
    )
    assert (
        client.get(
            "/auth/oauth/fakeid/callback", params={"code": "nope", "state": _state(client)}
        ).status_code
        == 401
    )
    assert client.get("/auth/oauth/google/authorize").status_code == 404  # not configured here


def test_google_is_configured_from_the_environment(api_factory, monkeypatch):
    monkeypatch.setenv("XCOIN_GOOGLE_CLIENT_ID", "cid.apps.googleusercontent.com")
    monkeypatch.setenv("XCOIN_GOOGLE_CLIENT_SECRET", "g-secret")
    monkeypatch.setenv("XCOIN_GOOGLE_REDIRECT_URI", "https://xcoin.example/oauth/google")
    reset_settings()
    client = api_factory()
    assert client.get("/auth/oauth/providers").json() == {"providers": ["google"]}
    start = client.get("/auth/oauth/google/authorize").json()
    url = urlparse(start["authorizationUrl"])
    query = parse_qs(url.query)
    assert url.netloc == "accounts.google.com"
    assert query["client_id"] == ["cid.apps.googleusercontent.com"]
    assert query["redirect_uri"] == ["https://xcoin.example/oauth/google"]
    assert query["state"] == [start["state"]] and "openid" in query["scope"][0]
    assert "g-secret" not in start["authorizationUrl"]
