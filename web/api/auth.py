"""Signing up, logging in and out, refreshing tokens, and who am I."""

from __future__ import annotations

import secrets

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from accounts import service, tokens
from accounts.errors import Unauthorized
from accounts.tokens import ACCESS_COOKIE
from web.api.common import UserOut, caller, runtime, settings, token_policy
from web.api.registry import Api
from web.auth import CSRF_COOKIE, REFRESH_COOKIE

api = Api()
REFRESH_PATH = "/api/auth"


class SignupIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"email": "ann@example.com", "password": "correct horse battery", "display_name": "Ann"}]})

    email: str = Field(max_length=254)
    password: str = Field(max_length=1024)
    display_name: str = Field(min_length=1, max_length=64)


class LoginIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"email": "ann@example.com", "password": "correct horse battery"}]})

    email: str = Field(max_length=254)
    password: str = Field(max_length=1024)


class RefreshIn(BaseModel):
    """Send `{}` to use the pinstream_refresh cookie instead of a token in the body."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"refresh_token": "q3Jx…"}, {}]})

    refresh_token: str | None = Field(None, min_length=1, max_length=256)


class TokensOut(BaseModel):
    access_token: str
    access_expires_at: int
    """Milliseconds since the Unix epoch."""
    refresh_token: str
    refresh_expires_at: int
    csrf_token: str
    """Echo in X-CSRF-Token on state-changing requests authenticated by cookie."""
    user: UserOut


@api.route("POST", "/api/auth/signup", summary="Create a viewer account", tag="auth", body=SignupIn,
           response=UserOut, status=201, errors=(409,), rate_limit="signup")
async def signup(request: web.Request, body: SignupIn) -> UserOut:
    async with runtime(request).db.write() as session:
        user = await service.create_user(session, body.email, body.password, "viewer", body.display_name)
    return UserOut.of(user)


@api.route("POST", "/api/auth/login", summary="Log in: tokens in the body and as cookies", tag="auth",
           body=LoginIn, response=TokensOut, errors=(401,), rate_limit="login")
async def login(request: web.Request, body: LoginIn) -> web.Response:
    async with runtime(request).db.write() as session:
        pair = await service.login(session, body.email, body.password, token_policy(request))
    return _tokens_response(request, pair)


@api.route("POST", "/api/auth/refresh", summary="Swap a refresh token for new tokens (rotates it)", tag="auth",
           body=RefreshIn, response=TokensOut, errors=(401,))
async def refresh(request: web.Request, body: RefreshIn) -> web.Response:
    token = body.refresh_token or request.cookies.get(REFRESH_COOKIE)
    if not token:
        raise Unauthorized("refresh_invalid", "send a refresh token in the body or the pinstream_refresh cookie")
    pair = await tokens.refresh(runtime(request).db, token, token_policy(request))
    return _tokens_response(request, pair)


@api.route("POST", "/api/auth/logout", summary="End the login a refresh token belongs to and clear cookies",
           tag="auth", body=RefreshIn)
async def logout(request: web.Request, body: RefreshIn) -> web.Response:
    token = body.refresh_token or request.cookies.get(REFRESH_COOKIE)
    if token:
        async with runtime(request).db.write() as session:
            await tokens.logout(session, token)
    response = web.Response(status=204)
    response.del_cookie(ACCESS_COOKIE, path="/")
    response.del_cookie(REFRESH_COOKIE, path=REFRESH_PATH)
    response.del_cookie(CSRF_COOKIE, path="/")
    return response


class GuestIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"nickname": "denimfan"}]})

    nickname: str = Field(max_length=64)


class GuestOut(BaseModel):
    guest_token: str
    """Send as `Authorization: Bearer` (or the Socket.IO auth token) to watch and chat as this nickname."""
    nickname: str
    expires_at: int
    """Milliseconds since the Unix epoch."""


@api.route("POST", "/api/auth/guest", summary="A signed guest identity: watch and chat under a nickname",
           tag="auth", body=GuestIn, response=GuestOut, status=201, rate_limit="signup")
async def guest(request: web.Request, body: GuestIn) -> GuestOut:
    policy = token_policy(request)
    token = tokens.issue_guest_token(body.nickname, policy.secret, settings(request).auth.guest_token_hours)
    principal = tokens.verify_guest_token(token, policy.secret)
    assert principal.nickname is not None
    return GuestOut(guest_token=token, nickname=principal.nickname, expires_at=principal.expires_at)


@api.route("GET", "/api/auth/me", summary="The signed-in account", tag="auth", access="user", response=UserOut)
async def me(request: web.Request) -> UserOut:
    async with runtime(request).db.read() as session:
        return UserOut.of(await caller(request, session))


def _tokens_response(request: web.Request, pair: tokens.TokenPair) -> web.Response:
    csrf = secrets.token_urlsafe(24)
    out = TokensOut(access_token=pair.access_token, access_expires_at=pair.access_expires_at,
                    refresh_token=pair.refresh_token, refresh_expires_at=pair.refresh_expires_at,
                    csrf_token=csrf, user=UserOut.of(pair.user))
    response = web.json_response(text=out.model_dump_json())
    auth = settings(request).auth
    access_age, refresh_age = auth.access_token_minutes * 60, auth.refresh_token_days * 86_400
    secure = auth.cookie_secure
    response.set_cookie(ACCESS_COOKIE, pair.access_token, max_age=access_age, path="/", httponly=True,
                        samesite="Lax", secure=secure)
    response.set_cookie(REFRESH_COOKIE, pair.refresh_token, max_age=refresh_age, path=REFRESH_PATH,
                        httponly=True, samesite="Strict", secure=secure)
    response.set_cookie(CSRF_COOKIE, csrf, max_age=refresh_age, path="/", samesite="Strict", secure=secure)
    return response
