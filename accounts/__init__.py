"""Accounts: users and roles, passwords, access/refresh/guest tokens, stream keys, and the shared domain
errors (`accounts.errors`) that every domain package raises."""

from accounts.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, Unauthorized
from accounts.service import (
    authenticate,
    create_user,
    ensure_first_admin,
    find_user_by_email,
    get_user,
    login,
)
from accounts.stream_keys import rotate_stream_key, user_for_stream_key
from accounts.tokens import (
    Principal,
    TokenPair,
    TokenPolicy,
    issue_access_token,
    issue_guest_token,
    logout,
    refresh,
    verify_access_token,
    verify_guest_token,
    verify_token,
)
from accounts.user import ROLES, Role, User

__all__ = [
    "ROLES", "Conflict", "DomainError", "Forbidden", "Invalid", "NotFound", "Principal", "Role", "TokenPair",
    "TokenPolicy", "Unauthorized", "User", "authenticate", "create_user", "ensure_first_admin",
    "find_user_by_email", "get_user", "issue_access_token", "issue_guest_token", "login", "logout", "refresh",
    "rotate_stream_key", "user_for_stream_key", "verify_access_token", "verify_guest_token", "verify_token",
]
