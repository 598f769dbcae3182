"""Verified access tokens are remembered until their expiry, never past it, never across a key change, and
never when verification failed; the cache stays within its bound."""

from __future__ import annotations

import pytest

from accounts.errors import Unauthorized
from accounts.token_cache import VerifiedTokens
from accounts.tokens import Principal, issue_access_token, verify_token
from accounts.user import User
from store import clock

SECRET = "token-cache-test-secret-with-at-least-32-bytes"


def _user(user_id: int) -> User:
    return User(id=user_id, email=f"u{user_id}@example.com", display_name="U", role="viewer", created_at=0,
                disabled=False)


def test_a_verified_token_is_remembered_until_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def counting(token: str, secret: str) -> Principal:
        calls.append(token)
        return verify_token(token, secret)

    cache = VerifiedTokens(verifier=counting)
    token = issue_access_token(_user(1), SECRET, 1)
    first = cache.verify(token, SECRET)
    assert cache.verify(token, SECRET) == first and len(calls) == 1
    monkeypatch.setattr(clock, "now_ms", lambda: first.expires_at)  # the server clock reaches `exp`
    cache.verify(token, SECRET)
    assert len(calls) == 2  # past its expiry the cache does not answer: the token is verified again


def test_another_key_or_a_bad_token_is_never_answered_from_the_cache() -> None:
    cache = VerifiedTokens()
    token = issue_access_token(_user(1), SECRET, 1)
    cache.verify(token, SECRET)
    with pytest.raises(Unauthorized):
        cache.verify(token, SECRET.replace("t", "T"))  # the key rotated: the old signature no longer verifies
    with pytest.raises(Unauthorized):
        cache.verify(token[:-3] + "AAA", SECRET)
    with pytest.raises(Unauthorized):
        cache.verify(token[:-3] + "AAA", SECRET)  # failures are not remembered: checked (and refused) again
    assert len(cache) == 0


def test_the_cache_is_bounded() -> None:
    cache = VerifiedTokens(max_entries=5)
    tokens = [issue_access_token(_user(index), SECRET, 1) for index in range(1, 9)]
    for token in tokens:
        cache.verify(token, SECRET)
    assert len(cache) == 5
    assert cache.verify(tokens[0], SECRET).user_id == 1  # evicted, so verified afresh
