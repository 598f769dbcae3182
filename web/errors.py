"""One error format for every client: `{"error": {"code", "message", "field"}}` with the right status.

Handlers raise `ApiError`, services raise `DomainError` (each class fixes its status); aiohttp's own HTTP
exceptions (404, 405, 413, …) are rewritten into the same shape,
and anything unexpected becomes a 500 that names the request id but never the exception text.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from accounts.errors import DomainError
from config.logs import request_id
from media.api import MediaError

logger = logging.getLogger(__name__)

_DEFAULT_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid",
    429: "rate_limited", 500: "internal_error", 503: "unavailable",
}


class ApiError(web.HTTPException):
    """A client-facing error; `field` names the offending input when there is one."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        super().__init__(headers=headers, text=message)
        self.code, self.message, self.field = code, message, field


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: Any = None) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    response = web.json_response({"error": body}, status=status, headers=headers)
    if status == 401:
        response.headers.setdefault("WWW-Authenticate", "Bearer")  # RFC 6750: how to authenticate
    return response


def _kept_headers(exc: web.HTTPException) -> dict[str, str]:
    """Headers the exception set (Allow, Retry-After, CORS…), minus those describing its plain-text body."""
    return {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except ApiError as exc:
        return error_response(exc.status_code, exc.code, exc.message, exc.field, _kept_headers(exc))
    except DomainError as exc:
        return error_response(exc.http_status, exc.code, exc.message, exc.field)
    except MediaError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.field)
    except web.HTTPException as exc:
        if exc.status_code < 400:
            raise
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status_code}:") else exc.reason
        return error_response(exc.status_code, _DEFAULT_CODES.get(exc.status_code, "error"), message,
                              headers=_kept_headers(exc))
    except Exception:
        logger.exception("unhandled error", extra={"path": request.path, "method": request.method})
        return error_response(500, "internal_error",
                              f"internal error; quote request id {request_id.get()} when reporting it")
