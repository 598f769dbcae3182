"""Every REST operation declared once: its route, who may call it, its body and response models, its errors.

The declaration drives routing, body validation (422 naming the field), access checks (401 anonymous,
403 wrong role), CSRF and rate limits, and the OpenAPI 3.1 document, so the document cannot miss a route.
A body is JSON (a pydantic model) or, for a file, an `Upload`: multipart/form-data with one file part whose
size the operation limits itself, so a 413 names the field.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from aiohttp import BodyPartReader, web
from pydantic import BaseModel, ValidationError

from accounts.tokens import Principal
from web.errors import ApiError
from web.ratelimit import RATE_LIMITER

Access = Literal["public", "user", "host", "admin"]
RateScope = Literal["login", "signup", "write", "reserve"]
Handler = Callable[..., Awaitable[Any]]
ModelT = TypeVar("ModelT", bound=BaseModel)

# The roles that pass each access level.
_ROLES: dict[Access, frozenset[str]] = {
    "public": frozenset(),
    "user": frozenset({"viewer", "host", "admin"}),
    "host": frozenset({"host", "admin"}),
    "admin": frozenset({"admin"}),
}

PRINCIPAL: web.RequestKey[Principal | None] = web.RequestKey("pinstream.principal")
"""Request key under which the auth middleware leaves the verified caller (or None)."""


@dataclass(frozen=True)
class Upload:
    """A multipart/form-data body carrying exactly one file, in the part named `field`.

    `max_bytes` gives the live limit for the file; the request body may exceed it only by the multipart
    framing (`FRAMING_BYTES`). The handler gets an `UploadedFile`; the media types are what the document
    promises, the handler checks the content itself (the part's Content-Type is the client's claim).
    """

    field: str
    max_bytes: Callable[[web.Request], int]
    media_types: tuple[str, ...]
    description: str

    FRAMING_BYTES = 16_384


@dataclass(frozen=True)
class UploadedFile:
    field: str
    filename: str | None
    """As the client named it: for display at most, never for the type or a path."""
    data: bytes


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    access: Access
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int
    errors: tuple[int, ...]
    rate_limit: RateScope | None
    upload: Upload | None = None


@dataclass
class Api:
    operations: list[Operation] = field(default_factory=list)

    def route(self, method: str, path: str, *, summary: str, tag: str, access: Access = "public",
              body: type[BaseModel] | None = None, query: type[BaseModel] | None = None,
              response: type[BaseModel] | None = None, status: int = 200, errors: tuple[int, ...] = (),
              rate_limit: RateScope | None = None, upload: Upload | None = None) -> Callable[[Handler], Handler]:
        """Declare a handler `async def handler(request, body?, upload?, query?) -> BaseModel | web.StreamResponse
        | None`."""
        if body is not None and upload is not None:
            raise ValueError("an operation takes a JSON body or an upload, not both")

        def register(handler: Handler) -> Handler:
            self.operations.append(Operation(method.upper(), path, handler, handler.__name__, summary, tag,
                                             access, body, query, response, status, errors, rate_limit, upload))
            return handler

        return register

    def add_to(self, app: web.Application) -> None:
        """One resource per path with a route per method: aiohttp tries each resource under a path prefix in
        turn for every request, so a resource per operation made the hot paths (reserve) slower to find."""
        resources: dict[str, web.Resource] = {}
        for operation in self.operations:
            if operation.path not in resources:
                resources[operation.path] = app.router.add_resource(operation.path)
            resources[operation.path].add_route(operation.method, _wrap(operation))


def _wrap(operation: Operation) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        principal = request.get(PRINCIPAL)
        allowed = _ROLES[operation.access]
        if allowed:
            if principal is None or principal.user_id is None:
                raise ApiError(401, "unauthorized", "sign in to do this")
            if principal.role not in allowed:
                raise ApiError(403, "forbidden", f"this needs the {operation.access} role")
        limiter = request.app.get(RATE_LIMITER)
        if operation.rate_limit is not None and limiter is not None:
            await limiter.check(operation.rate_limit, request.remote, principal.user_id if principal else None)
        args: list[Any] = [request]
        if operation.body is not None:
            args.append(await parse_body(request, operation.body))
        if operation.upload is not None:
            args.append(await read_upload(request, operation.upload))
        if operation.query is not None:
            args.append(_validated(operation.query, dict(request.query)))
        result = await operation.handler(*args)
        if isinstance(result, web.StreamResponse):
            return result
        if result is None:
            return web.Response(status=204 if operation.status == 200 else operation.status)
        return web.json_response(text=result.model_dump_json(), status=operation.status)

    handle.operation = operation  # type: ignore[attr-defined]
    if operation.upload is not None:
        handle.checks_body_size = True  # type: ignore[attr-defined]  # the body-limit middleware leaves it to us
    return handle


async def read_upload(request: web.Request, upload: Upload) -> UploadedFile:
    """The one file part of a multipart body, read up to its limit: 413, 415 or 422 naming the field."""
    limit = upload.max_bytes(request)
    too_large = ApiError(413, "too_large", f"{upload.field}: the file is over the {limit}-byte limit",
                         field=upload.field)
    if request.content_length is not None and request.content_length > limit + Upload.FRAMING_BYTES:
        raise too_large
    if request.content_type != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type", f"send the {upload.field} file as multipart/form-data",
                       field=upload.field)
    try:
        reader = await request.multipart()
        part = await reader.next()
        if not isinstance(part, BodyPartReader) or part.name != upload.field:
            raise ApiError(422, "invalid", f"{upload.field}: send one part named {upload.field} holding the file",
                           field=upload.field)
        data = bytearray()
        while chunk := await part.read_chunk(65_536):
            data += chunk
            if len(data) > limit:
                raise too_large
        if not data:
            raise ApiError(422, "invalid", f"{upload.field}: the file is empty", field=upload.field)
        if await reader.next() is not None:
            raise ApiError(422, "invalid", f"{upload.field}: send only the {upload.field} part", field=upload.field)
    except ValueError:
        raise ApiError(400, "bad_multipart", "the multipart body is malformed", field=upload.field) from None
    return UploadedFile(upload.field, part.filename, bytes(data))


async def parse_body(request: web.Request, model: type[ModelT]) -> ModelT:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    raw = await request.read()
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_json", "the body is not valid JSON") from None
    return _validated(model, data)


def _validated(model: type[ModelT], data: Any) -> ModelT:
    """A body or query string as `model`, or 422 naming the first offending field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or None
        message = first["msg"].removeprefix("Value error, ")
        raise ApiError(422, "invalid", f"{where}: {message}" if where else message, field=where) from None


def openapi_document(api: Api, title: str, version: str) -> dict[str, Any]:
    """OpenAPI 3.1: pydantic's JSON Schema (2020-12) is the dialect 3.1 uses, so models go in unchanged."""
    schemas: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}

    def reference(model: type[BaseModel]) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    error_ref = reference(ErrorResponse)
    for operation in api.operations:
        entry: dict[str, Any] = {"operationId": operation.operation_id, "summary": operation.summary,
                                 "tags": [operation.tag], "responses": {}}
        parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                      for name in _path_parameters(operation.path)]
        if operation.query is not None:
            parameters += _query_parameters(operation.query)
        if parameters:
            entry["parameters"] = parameters
        if operation.access != "public":
            entry["security"] = [{"bearer": []}, {"cookie": []}]
            entry["x-pinstream-role"] = operation.access
        if operation.body is not None:
            entry["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": reference(operation.body)}}}
        if operation.upload is not None:
            entry["requestBody"] = _upload_body(operation.upload)
        success: dict[str, Any] = {"description": "success"}
        if operation.response is not None:
            success["content"] = {"application/json": {"schema": reference(operation.response)}}
        entry["responses"][str(operation.status)] = success
        statuses = set(operation.errors)
        if operation.body is not None or operation.upload is not None:
            statuses |= {400, 415, 422}
        if operation.upload is not None:
            statuses.add(413)
        if operation.query is not None:
            statuses.add(422)
        if operation.access != "public":
            statuses |= {401} | ({403} if operation.access != "user" else set())
        if operation.rate_limit is not None:
            statuses.add(429)
        for status in sorted(statuses):
            entry["responses"][str(status)] = {"description": _ERROR_TEXT.get(status, "error"),
                                               "content": {"application/json": {"schema": error_ref}}}
        paths.setdefault(operation.path, {})[operation.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "pinstream_access"},
            },
        },
    }


def _upload_body(upload: Upload) -> dict[str, Any]:
    file_schema = {"type": "string", "contentMediaType": "application/octet-stream",
                   "description": upload.description}
    return {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "properties": {upload.field: file_schema}, "required": [upload.field]},
        "encoding": {upload.field: {"contentType": ", ".join(upload.media_types)}}}}}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    return [{"name": name, "in": "query", "required": name in required, "schema": property_schema}
            for name, property_schema in schema.get("properties", {}).items()]


def _path_parameters(path: str) -> list[str]:
    return [part[1:-1].split(":")[0] for part in path.split("/") if part.startswith("{")]


_ERROR_TEXT = {400: "malformed request", 401: "not signed in, or the token expired", 403: "not allowed",
               404: "not found", 409: "conflicts with the current state", 413: "body too large",
               415: "wrong content type", 422: "invalid input", 429: "too many requests"}


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx answer has this shape."""

    error: ErrorDetail
