"""Accounts, keys, strategies and subscriptions: the seed rules and every bad input, on both backends."""

from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa

from xcoin_trading.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationError, VaultError
from xcoin_trading.services import credentials, strategies, subscriptions, users
from xcoin_trading.store.db import session_scope
from xcoin_trading.store.models import Strategy, Subscription
from xcoin_trading.vault import Vault


@pytest.fixture()
def world(store):
    """Two users with keys and one public strategy by the first."""
    vault = Vault.from_settings(store)
    with session_scope(store) as s:
        alice = users.register_user(s, "alice@x.io", "password-alice")
        bob = users.register_user(s, "Bob@X.io", "password-bob1")
        credentials.add_credential(s, vault, alice.id, "alice-key-123456", "alice-secret")
        credentials.add_credential(s, vault, bob.id, "bob-key-12345678", "bob-secret")
        strat = strategies.create_strategy(
            s, alice.id, name="SMA", code="btc-sma", symbol="BTCUSDT", resolution="1m",
            builtin="sma_crossover", is_public=True,
        )  # fmt: skip
        ids = {"alice": alice.id, "bob": bob.id, "strategy": strat.id}
    return store, vault, ids


def _subscribe(store, user_id, strategy_id, **terms):
    terms = {"capital": "1000", "risk_per_trade": "0.01", **terms}
    with session_scope(store) as s:
        return subscriptions.subscribe(s, user_id, strategy_id, **terms).id


def _count(store, strategy_id) -> int:
    with session_scope(store) as s:
        return s.get(Strategy, strategy_id).subscriber_count


def test_login_succeeds_with_the_right_password_and_is_generic_otherwise(world):
    store, _, _ = world
    with session_scope(store) as s:
        assert users.authenticate(s, "BOB@x.io", "password-bob1").email == "bob@x.io"
        with pytest.raises(Unauthorized, match="^Invalid credentials$"):
            users.authenticate(s, "bob@x.io", "wrong-password")
        with pytest.raises(Unauthorized, match="^Invalid credentials$"):
            users.authenticate(s, "nobody@x.io", "password-bob1")


def test_password_is_stored_as_an_argon2_hash(world):
    store, _, ids = world
    with session_scope(store) as s:
        assert users.get_user(s, ids["alice"]).password_hash.startswith("$argon2")


def test_duplicate_email_is_refused(world):
    store, _, _ = world
    with pytest.raises(Conflict, match="already registered"), session_scope(store) as s:
        users.register_user(s, "ALICE@x.io", "another-password")


def test_subscribe_counts_the_subscriber_and_cancel_uncounts(world):
    store, _, ids = world
    sid = _subscribe(store, ids["bob"], ids["strategy"], capital="2500.50", leverage="3")
    assert _count(store, ids["strategy"]) == 1
    with session_scope(store) as s:
        sub = s.get(Subscription, sid)
        assert (sub.capital, sub.leverage, sub.is_active, sub.is_paused) == (
            Decimal("2500.50"),
            Decimal(3),
            True,
            False,
        )
        subscriptions.cancel(s, ids["bob"], sid)
    assert _count(store, ids["strategy"]) == 0
    with session_scope(store) as s:
        assert s.get(Subscription, sid).unsubscribed_at is not None
    # cancelled is history: subscribing again is allowed
    _subscribe(store, ids["bob"], ids["strategy"])
    assert _count(store, ids["strategy"]) == 1


@pytest.mark.parametrize(
    ("terms", "field", "reason"),
    [
        ({"capital": "-5"}, "capital", "greater than 0"),
        ({"capital": "0"}, "capital", "greater than 0"),
        ({"capital": "NaN"}, "capital", "finite"),
        ({"capital": "lots"}, "capital", "must be a number"),
        ({"risk_per_trade": "0"}, "risk_per_trade", r"\(0, 1\]"),
        ({"risk_per_trade": "1.5"}, "risk_per_trade", r"\(0, 1\]"),
        ({"leverage": "0"}, "leverage", r"\(0, 20\]"),
        ({"leverage": "21"}, "leverage", r"\(0, 20\]"),
        ({"max_positions": 0}, "max_positions", "at least 1"),
    ],
)
def test_bad_subscription_terms_name_the_field_and_change_nothing(world, terms, field, reason):
    store, _, ids = world
    with pytest.raises(ValidationError, match=reason) as err:
        _subscribe(store, ids["bob"], ids["strategy"], **terms)
    assert err.value.field == field
    assert _count(store, ids["strategy"]) == 0
    with session_scope(store) as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Subscription)) == 0


def test_unknown_strategy_is_not_found(world):
    store, _, ids = world
    with pytest.raises(NotFound, match="strategy 999 not found"):
        _subscribe(store, ids["bob"], 999)


def test_private_strategy_of_another_user_is_invisible(world):
    store, _, ids = world
    with session_scope(store) as s:
        strategies.update_strategy(s, ids["alice"], ids["strategy"], is_public=False)
    with pytest.raises(NotFound):
        _subscribe(store, ids["bob"], ids["strategy"])


def test_inactive_strategy_cannot_be_subscribed(world):
    store, _, ids = world
    with session_scope(store) as s:
        strategies.update_strategy(s, ids["alice"], ids["strategy"], is_active=False)
    with pytest.raises(ValidationError, match="not active"):
        _subscribe(store, ids["bob"], ids["strategy"])


def test_duplicate_active_subscription_is_refused(world):
    store, _, ids = world
    _subscribe(store, ids["bob"], ids["strategy"])
    with pytest.raises(Conflict, match="already subscribed"):
        _subscribe(store, ids["bob"], ids["strategy"])
    assert _count(store, ids["strategy"]) == 1


def test_pause_twice_and_resume_when_not_paused_are_refused(world):
    store, _, ids = world
    sid = _subscribe(store, ids["bob"], ids["strategy"])
    with session_scope(store) as s:
        subscriptions.pause(s, ids["bob"], sid)
    with pytest.raises(Conflict, match="already paused"), session_scope(store) as s:
        subscriptions.pause(s, ids["bob"], sid)
    with session_scope(store) as s:
        subscriptions.resume(s, ids["bob"], sid)
    with pytest.raises(Conflict, match="not paused"), session_scope(store) as s:
        subscriptions.resume(s, ids["bob"], sid)


def test_acting_on_another_users_subscription_or_keys_is_not_found(world):
    store, vault, ids = world
    sid = _subscribe(store, ids["bob"], ids["strategy"])
    for action in (subscriptions.pause, subscriptions.cancel, subscriptions.get_subscription):
        with pytest.raises(NotFound), session_scope(store) as s:
            action(s, ids["alice"], sid)
    with session_scope(store) as s:
        bob_key = credentials.active_credential(s, ids["bob"]).id
    with pytest.raises(NotFound), session_scope(store) as s:
        credentials.revoke_credential(s, ids["alice"], bob_key)
    with pytest.raises(NotFound), session_scope(store) as s:
        subscriptions.subscribe(
            s, ids["alice"], ids["strategy"], capital=1, risk_per_trade="0.1", broker_credential_id=bob_key
        )
    with session_scope(store) as s:
        assert s.get(Subscription, sid).is_paused is False


def test_updating_terms_validates_like_subscribing(world):
    store, _, ids = world
    sid = _subscribe(store, ids["bob"], ids["strategy"])
    with pytest.raises(ValidationError, match="capital"), session_scope(store) as s:
        subscriptions.update_terms(s, ids["bob"], sid, capital="-1")
    with session_scope(store) as s:
        subscriptions.update_terms(s, ids["bob"], sid, capital="750", risk_per_trade="0.05")
    with session_scope(store) as s:
        assert s.get(Subscription, sid).capital == Decimal(750)


def _create(store, author_id, code, public=False):
    with session_scope(store) as s:
        strategies.create_strategy(
            s, author_id, name="x", code=code, symbol="ETHUSDT", resolution="5m", builtin="rsi_reversion",
            is_public=public,
        )  # fmt: skip


def test_duplicate_strategy_code_is_refused_without_revealing_a_private_one(world):
    store, _, ids = world
    _create(store, ids["alice"], "alice-private")
    answers = []
    for code in ("btc-sma", "alice-private"):  # alice's public and private codes: one answer for both
        with pytest.raises(Conflict) as refused:
            _create(store, ids["bob"], code)
        answers.append(str(refused.value).replace(code, "CODE"))
    assert answers == ["strategy code 'CODE' is not available; choose another"] * 2
    with pytest.raises(Conflict, match="you already have a strategy with code 'alice-private'"):
        _create(store, ids["alice"], "alice-private")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"symbol": "DOGEBTC"}, "symbol"),
        ({"resolution": "7m"}, "resolution"),
        ({"code": "Has Spaces"}, "code"),
        ({"lookback": 0}, "lookback"),
        ({"builtin": None}, "source"),
    ],
)
def test_bad_strategy_fields_are_named(world, fields, field):
    store, _, ids = world
    spec = dict(name="n", code="ok-code", symbol="BTCUSDT", resolution="1m", builtin="sma_crossover") | fields
    with pytest.raises(ValidationError) as err, session_scope(store) as s:
        strategies.create_strategy(s, ids["bob"], **spec)
    assert err.value.field == field


def test_only_the_owner_changes_a_strategy(world):
    store, _, ids = world
    with pytest.raises(Forbidden), session_scope(store) as s:
        strategies.update_strategy(s, ids["bob"], ids["strategy"], name="mine now")


def test_delete_is_refused_while_subscribed_then_soft(world):
    store, _, ids = world
    sid = _subscribe(store, ids["bob"], ids["strategy"])
    with pytest.raises(Conflict, match="1 active subscriptions"), session_scope(store) as s:
        strategies.delete_strategy(s, ids["alice"], ids["strategy"])
    with session_scope(store) as s:
        subscriptions.cancel(s, ids["bob"], sid)
        strategies.delete_strategy(s, ids["alice"], ids["strategy"])
    with session_scope(store) as s:
        row = s.get(Strategy, ids["strategy"])
        assert row is not None and row.deleted_at is not None and not row.is_active
        assert strategies.list_strategies(s, ids["alice"]) == []


def test_empty_api_key_is_refused(world):
    store, vault, ids = world
    with pytest.raises(ValidationError) as err, session_scope(store) as s:
        credentials.add_credential(s, vault, ids["bob"], "  ", "secret")
    assert err.value.field == "api_key"


def test_keys_are_encrypted_at_rest_and_decrypt_for_the_owner(world):
    store, vault, ids = world
    with session_scope(store) as s:
        cred = credentials.active_credential(s, ids["alice"])
        assert "alice-secret" not in cred.api_secret_encrypted and cred.api_secret_encrypted.startswith("v1:")
        keys = credentials.decrypt(vault, cred)
        assert keys.api_secret.reveal() == "alice-secret"
        assert "alice-secret" not in repr(keys) and "alice" not in repr(cred)


def test_ciphertext_moved_to_another_user_does_not_decrypt(world):
    store, vault, ids = world
    with session_scope(store) as s:
        alice = credentials.active_credential(s, ids["alice"])
        bob = credentials.active_credential(s, ids["bob"])
        bob.api_secret_encrypted = alice.api_secret_encrypted
        with pytest.raises(VaultError, match="failed authentication"):
            credentials.decrypt(vault, bob)


def test_new_keys_replace_old_ones_and_subscriptions_follow(world):
    store, vault, ids = world
    sid = _subscribe(store, ids["bob"], ids["strategy"])
    with session_scope(store) as s:
        new = credentials.add_credential(s, vault, ids["bob"], "bob-key-new-9999", "bob-secret-2")
        new_id = new.id
    with session_scope(store) as s:
        assert s.get(Subscription, sid).broker_credential_id == new_id
        assert credentials.active_credential(s, ids["bob"]).id == new_id


def test_a_futures_pair_is_traded_through_one_subscription_with_one_position(world):
    """The exchange nets a futures pair into one position per account: xcoin refuses what it could
    not tell apart."""
    store, _, ids = world
    with session_scope(store) as s:
        make = dict(name="f", symbol="B-BTC_USDT", resolution="5m", builtin="sma_crossover", is_public=True)
        first = strategies.create_strategy(s, ids["alice"], code="fut-a", **make).id
        second = strategies.create_strategy(s, ids["alice"], code="fut-b", **make).id
        spot = strategies.create_strategy(s, ids["alice"], code="spot-b", **{**make, "symbol": "BTCUSDT"}).id
    with pytest.raises(ValidationError, match="must be 1 on futures") as err:
        _subscribe(store, ids["bob"], first, max_positions=2)
    assert err.value.field == "max_positions"
    sid = _subscribe(store, ids["bob"], first)
    with pytest.raises(Conflict, match="already trade B-BTC_USDT futures through strategy 'fut-a'"):
        _subscribe(store, ids["bob"], second)
    _subscribe(store, ids["bob"], spot, max_positions=3)  # spot positions are xcoin's own trades
    with pytest.raises(ValidationError, match="must be 1 on futures"), session_scope(store) as s:
        subscriptions.update_terms(s, ids["bob"], sid, max_positions=2)
    with session_scope(store) as s:
        subscriptions.cancel(s, ids["bob"], sid)
    _subscribe(store, ids["bob"], second)  # once the first has ended, the pair is free again


def test_what_subscribers_trade_cannot_change_while_they_are_subscribed(world):
    store, _, ids = world
    sid = _subscribe(store, ids["bob"], ids["strategy"])
    for change in ({"symbol": "B-BTC_USDT"}, {"symbol": "ETHUSDT"}, {"resolution": "5m"},
                   {"is_active": False}):  # fmt: skip
        refused = pytest.raises(Conflict, match="cannot change while strategy 'btc-sma' has 1 active")
        with refused, session_scope(store) as s:
            strategies.update_strategy(s, ids["alice"], ids["strategy"], **change)
    with session_scope(store) as s:  # unchanged values and cosmetic fields are fine
        strategies.update_strategy(s, ids["alice"], ids["strategy"], symbol="BTCUSDT", name="SMA 2")
        assert s.get(Strategy, ids["strategy"]).symbol == "BTCUSDT"
    with session_scope(store) as s:
        subscriptions.cancel(s, ids["bob"], sid)
    with session_scope(store) as s:
        strategies.update_strategy(s, ids["alice"], ids["strategy"], symbol="B-BTC_USDT")


def test_search_matches_percent_and_underscore_literally(world):
    store, _, ids = world
    _create(store, ids["alice"], "a_b-1")
    _create(store, ids["alice"], "axb-2")
    with session_scope(store) as s:
        found = lambda q: sorted(x.code for x in strategies.list_strategies(s, ids["alice"], search=q))  # noqa: E731
        assert found("a_b") == ["a_b-1"]
        assert found("%") == []
        assert found("\\") == []
