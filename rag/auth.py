"""The chat's optional password login: credentials from the environment, salted password
hashes, and throttling of repeated failures.

Names and passwords are compared as UTF-8 bytes (after NFC, so an Arabic name typed with
another composition of its characters still matches) in constant time. Instead of the plain
password, the environment can hold a salted scrypt hash made by `rag chat-password`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .errors import ConfigError

# scrypt with 16 MiB of memory per check: ~50 ms here, costly to guess in bulk.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_SCHEME = "scrypt"


def _utf8(text: str) -> bytes:
    return unicodedata.normalize("NFC", text).encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A salted scrypt hash for RAG_CHAT_PASSWORD_HASH: `scrypt:n:r:p:salt:digest`."""
    if not password:
        raise ConfigError("the password is empty: choose a non-empty password")
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(_utf8(password), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"{_SCHEME}:{SCRYPT_N}:{SCRYPT_R}:{SCRYPT_P}:{_b64(salt)}:{_b64(digest)}"


def _parse_hash(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    try:
        scheme, n, r, p, salt, digest = encoded.strip().split(":")
        if scheme != _SCHEME:
            raise ValueError(scheme)
        n_, r_, p_ = int(n), int(r), int(p)
        if n_ < 2 or n_ & (n_ - 1) or n_ > 2**17 or not 0 < r_ <= 16 or not 0 < p_ <= 4:
            raise ValueError("parameters")
        return n_, r_, p_, _unb64(salt), _unb64(digest)
    except ValueError:
        raise ConfigError(
            "RAG_CHAT_PASSWORD_HASH is not a hash made by `rag chat-password` "
            "(expected scrypt:n:r:p:salt:digest): make one with `rag chat-password`") from None


def verify_password(password: str, encoded: str) -> bool:
    n, r, p, salt, digest = _parse_hash(encoded)
    candidate = hashlib.scrypt(_utf8(password), salt=salt, n=n, r=r, p=p, dklen=len(digest),
                               maxmem=256 * r * (n + p + 2))  # what OpenSSL needs, with room
    return hmac.compare_digest(candidate, digest)


@dataclass(frozen=True)
class Credentials:
    """The one account that may use the chat."""

    username: str
    password: str | None = None
    password_hash: str | None = None

    def __post_init__(self) -> None:
        if self.password_hash is not None:
            _parse_hash(self.password_hash)  # a broken hash fails at start-up, not at each login
        elif not self.password:
            raise ConfigError("set RAG_CHAT_PASSWORD or RAG_CHAT_PASSWORD_HASH together with RAG_CHAT_USERNAME")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Credentials | None:
        """RAG_CHAT_USERNAME with RAG_CHAT_PASSWORD_HASH (preferred) or RAG_CHAT_PASSWORD;
        None when no username is set (login is off)."""
        environ = os.environ if environ is None else environ
        username = environ.get("RAG_CHAT_USERNAME", "")
        password = environ.get("RAG_CHAT_PASSWORD") or None
        password_hash = environ.get("RAG_CHAT_PASSWORD_HASH") or None
        if not username:
            if password or password_hash:
                raise ConfigError("a chat password is set but RAG_CHAT_USERNAME is not: set both, or neither")
            return None
        if password and password_hash:
            raise ConfigError("both RAG_CHAT_PASSWORD and RAG_CHAT_PASSWORD_HASH are set: keep only the hash")
        return cls(username=username, password=None if password_hash else password, password_hash=password_hash)

    def check(self, username: str, password: str) -> bool:
        """Both parts are always compared, in constant time, so timing tells nothing."""
        name_ok = hmac.compare_digest(_utf8(username), _utf8(self.username))
        if self.password_hash is not None:
            password_ok = verify_password(password, self.password_hash)
        else:
            password_ok = hmac.compare_digest(_utf8(password), _utf8(self.password or ""))
        return name_ok and password_ok


@dataclass(frozen=True)
class Accounts:
    """The accounts that may use the chat: RAG_CHAT_USERNAME's (see `Credentials`) and those of
    RAG_CHAT_USERS, `name:hash` entries (hashes from `rag chat-password`) separated by `;` or
    new lines. Each account sees only its own saved chats."""

    accounts: tuple[Credentials, ...]

    def __post_init__(self) -> None:
        names = [_utf8(a.username) for a in self.accounts]
        if len(set(names)) != len(names):
            raise ConfigError("a chat user name is given twice (RAG_CHAT_USERNAME, RAG_CHAT_USERS): keep one of each")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Accounts | None:
        """None when no account is configured (login is off)."""
        environ = os.environ if environ is None else environ
        accounts = [single] if (single := Credentials.from_env(environ)) is not None else []
        marker = f":{_SCHEME}:"
        for entry in environ.get("RAG_CHAT_USERS", "").replace("\n", ";").split(";"):
            if not entry.strip():
                continue
            name, found, rest = entry.strip().partition(marker)
            if not found or not name:
                raise ConfigError(f"RAG_CHAT_USERS has the entry {entry.strip()[:40]!r}, not name:hash: "
                                  "write name:scrypt:… (the hash from `rag chat-password`), entries separated by ;")
            accounts.append(Credentials(username=name, password_hash=_SCHEME + ":" + rest))
        return cls(tuple(accounts)) if accounts else None

    def check(self, username: str, password: str) -> str | None:
        """The name of the account these credentials open, or None. Every account is checked,
        so the time taken does not tell which names exist."""
        matched = None
        for account in self.accounts:
            if account.check(username, password):
                matched = account.username
        return matched


class LoginThrottle:
    """Refuses logins for a while after repeated failures.

    Failures are counted per (client, username) and per client over all names. After
    `free_failures` failures for a key, the next attempt must wait `base_delay` seconds, and
    each further failure doubles the wait (up to `max_delay`). A successful login clears the
    (client, username) record."""

    def __init__(self, free_failures: int = 5, *, client_failures: int = 20, base_delay: float = 1.0,
                 max_delay: float = 900.0, clock: Callable[[], float] = time.monotonic,
                 max_entries: int = 10_000) -> None:
        self.free_failures = free_failures
        self.client_failures = client_failures
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.clock = clock
        self.max_entries = max_entries
        self._failures: dict[tuple[str, ...], tuple[int, float]] = {}  # key → (count, last failure)
        self._lock = threading.Lock()

    def _keys(self, client: str, username: str) -> list[tuple[tuple[str, ...], int]]:
        return [((client, unicodedata.normalize("NFC", username)), self.free_failures),
                ((client,), self.client_failures)]

    def retry_after(self, client: str, username: str) -> float:
        """Seconds before this client may try this name again; 0 when it may now."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key, free in self._keys(client, username):
                count, last = self._failures.get(key, (0, now))
                if count >= free:
                    delay = min(self.max_delay, self.base_delay * 2 ** (count - free))
                    wait = max(wait, last + delay - now)
        return max(0.0, wait)

    def failed(self, client: str, username: str) -> None:
        now = self.clock()
        with self._lock:
            for key, _ in self._keys(client, username):
                count, _ = self._failures.get(key, (0, now))
                self._failures[key] = (count + 1, now)
            if len(self._failures) > self.max_entries:
                self._forget_older_than(now - 2 * self.max_delay)

    def succeeded(self, client: str, username: str) -> None:
        with self._lock:
            self._failures.pop(self._keys(client, username)[0][0], None)

    def _forget_older_than(self, moment: float) -> None:
        for key in [k for k, (_, last) in self._failures.items() if last < moment]:
            del self._failures[key]
