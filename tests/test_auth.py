"""Chat login: UTF-8 credentials in constant time, salted hashes, throttling of failures."""

from __future__ import annotations

import subprocess
import sys
import unicodedata

import pytest

from rag.auth import Accounts, Credentials, LoginThrottle, hash_password, verify_password
from rag.errors import ConfigError

from .conftest import ROOT

ARABIC_NAME = "محلل"
ARABIC_PASSWORD = "كلمة سرّ طويلة ١٢٣"


def test_arabic_name_and_password_log_in_and_wrong_ones_do_not():
    credentials = Credentials.from_env({"RAG_CHAT_USERNAME": ARABIC_NAME, "RAG_CHAT_PASSWORD": ARABIC_PASSWORD})
    assert credentials.check(ARABIC_NAME, ARABIC_PASSWORD)
    assert not credentials.check(ARABIC_NAME, ARABIC_PASSWORD + "x")
    assert not credentials.check("محلل٢", ARABIC_PASSWORD)
    assert not credentials.check("", "")
    assert not credentials.check("analyst", "pass")  # ASCII against non-ASCII: no TypeError


def test_names_match_whatever_the_unicode_composition():
    decomposed = unicodedata.normalize("NFD", "José")
    credentials = Credentials(username="José", password="pässword")
    assert decomposed != "José" and credentials.check(decomposed, unicodedata.normalize("NFD", "pässword"))


def test_salted_hash_verifies_only_its_password():
    encoded = hash_password(ARABIC_PASSWORD)
    assert encoded.startswith("scrypt:") and ARABIC_PASSWORD not in encoded
    assert encoded != hash_password(ARABIC_PASSWORD)  # a fresh salt each time
    assert verify_password(ARABIC_PASSWORD, encoded)
    assert not verify_password(ARABIC_PASSWORD[:-1], encoded)
    credentials = Credentials.from_env({"RAG_CHAT_USERNAME": ARABIC_NAME, "RAG_CHAT_PASSWORD_HASH": encoded})
    assert credentials.password is None
    assert credentials.check(ARABIC_NAME, ARABIC_PASSWORD) and not credentials.check(ARABIC_NAME, "guess")


@pytest.mark.parametrize("environ, message", [
    ({"RAG_CHAT_USERNAME": "a", "RAG_CHAT_PASSWORD_HASH": "plain-text"}, "rag chat-password"),
    ({"RAG_CHAT_USERNAME": "a", "RAG_CHAT_PASSWORD_HASH": "scrypt:3:8:1:AA:AA"}, "rag chat-password"),
    ({"RAG_CHAT_USERNAME": "a"}, "RAG_CHAT_PASSWORD"),
    ({"RAG_CHAT_PASSWORD": "p"}, "RAG_CHAT_USERNAME"),
    ({"RAG_CHAT_USERNAME": "a", "RAG_CHAT_PASSWORD": "p", "RAG_CHAT_PASSWORD_HASH": hash_password("p")}, "only"),
])
def test_unusable_login_settings_fail_at_start_with_the_fix(environ, message):
    with pytest.raises(ConfigError, match=message):
        Credentials.from_env(environ)


def test_no_username_means_no_login():
    assert Credentials.from_env({}) is None


def test_chat_password_command_prints_a_working_hash():
    proc = subprocess.run([sys.executable, "-m", "rag.cli", "chat-password", "--stdin"], input=ARABIC_PASSWORD + "\n",
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=True)
    encoded = proc.stdout.strip()
    assert verify_password(ARABIC_PASSWORD, encoded)
    assert "RAG_CHAT_PASSWORD_HASH" in proc.stderr


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_five_failures_then_a_growing_wait_and_success_clears_it():
    clock = Clock()
    throttle = LoginThrottle(5, base_delay=1.0, max_delay=60.0, clock=clock)
    for _ in range(5):
        assert throttle.retry_after("10.0.0.1", ARABIC_NAME) == 0
        throttle.failed("10.0.0.1", ARABIC_NAME)
    assert throttle.retry_after("10.0.0.1", ARABIC_NAME) == pytest.approx(1.0)
    assert throttle.retry_after("10.0.0.2", ARABIC_NAME) == 0  # another client is not held up
    waits = []
    for _ in range(8):
        clock.now += throttle.retry_after("10.0.0.1", ARABIC_NAME)
        throttle.failed("10.0.0.1", ARABIC_NAME)
        waits.append(throttle.retry_after("10.0.0.1", ARABIC_NAME))
    assert waits == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    clock.now += 60
    throttle.succeeded("10.0.0.1", ARABIC_NAME)
    assert throttle.retry_after("10.0.0.1", ARABIC_NAME) == 0


def test_one_client_guessing_many_names_is_held_up_too():
    throttle = LoginThrottle(5, client_failures=20, clock=Clock())
    for n in range(20):
        assert throttle.retry_after("10.0.0.9", f"user{n}") == 0
        throttle.failed("10.0.0.9", f"user{n}")
    assert throttle.retry_after("10.0.0.9", "someone-new") > 0


def test_several_accounts_each_open_with_their_own_password():
    users = f"{ARABIC_NAME}:{hash_password('first secret')};\nbob:{hash_password('second secret')}"
    accounts = Accounts.from_env({"RAG_CHAT_USERNAME": "admin", "RAG_CHAT_PASSWORD": "third secret",
                                  "RAG_CHAT_USERS": users})
    assert [a.username for a in accounts.accounts] == ["admin", ARABIC_NAME, "bob"]
    assert accounts.check(ARABIC_NAME, "first secret") == ARABIC_NAME
    assert accounts.check("bob", "second secret") == "bob"
    assert accounts.check("admin", "third secret") == "admin"
    assert accounts.check("bob", "first secret") is None
    assert Accounts.from_env({}) is None


@pytest.mark.parametrize(("users", "message"), [
    ("bob", "not name:hash"),
    ("bob:plain-password", "not name:hash"),
    (f"bob:{hash_password('x')};bob:{hash_password('y')}", "given twice"),
])
def test_unusable_user_lists_fail_at_start_with_the_fix(users, message):
    with pytest.raises(ConfigError, match=message):
        Accounts.from_env({"RAG_CHAT_USERS": users})
