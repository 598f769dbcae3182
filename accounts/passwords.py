"""Password hashing with Argon2id (argon2-cffi's defaults unless `configure` says otherwise).

The hasher is module-level so tests can make it cheap once, while production keeps the library's defaults,
which follow its current recommendation. `needs_rehash` lets a login upgrade hashes made with older
parameters.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

logger = logging.getLogger(__name__)

MIN_LENGTH = 8
# Argon2 takes its input whole; an absurd length would only let one request burn CPU and memory.
MAX_LENGTH = 1024

_hasher = PasswordHasher()
_dummy_hash: str | None = None


def configure(**parameters: Any) -> None:
    """Replace the hasher, e.g. `configure(time_cost=1, memory_cost=8192)` to make tests fast."""
    global _hasher, _dummy_hash
    _hasher = PasswordHasher(**parameters)
    _dummy_hash = None


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether `password` matches; a malformed stored hash counts as a mismatch (and is logged)."""
    try:
        return _hasher.verify(password_hash, password)
    except InvalidHashError:
        logger.warning("stored password hash is malformed")
        return False
    except VerificationError:
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether the hash was made with other parameters than the current hasher's."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


def burn_verification(password: str) -> None:
    """Spend as long as a real verification, so a login for an unknown email does not answer faster than
    one for a known email with a wrong password."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))
    verify_password(_dummy_hash, password)


def password_problem(password: str) -> str | None:
    """Why `password` is unacceptable for a new account, or None."""
    if len(password) < MIN_LENGTH:
        return f"password must have at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"password must have at most {MAX_LENGTH} characters"
    return None
