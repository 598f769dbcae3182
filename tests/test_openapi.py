"""The OpenAPI document covers every /api route, its request examples are valid, and bad bodies are 4xx."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest

from tests.api_client import Client, bearer
from web.api.routes import API


async def _document(client: Client) -> dict[str, Any]:
    response = await client.get("/api/openapi.json")
    assert response.status == 200
    document: dict[str, Any] = await response.json()
    return document


async def test_every_api_route_is_documented(client: Client) -> None:
    document = await _document(client)
    assert document["openapi"] == "3.1.0"
    routes = [(route.method, route.resource.canonical) for route in client.server.app.router.routes()
              if route.resource is not None and route.resource.canonical.startswith("/api")]
    assert len(routes) == len(API.operations)
    for method, path in routes:
        assert method.lower() in document["paths"].get(path, {}), f"{method} {path} is not documented"


async def test_every_request_example_validates(client: Client) -> None:
    document = await _document(client)
    checked = 0
    for operation in API.operations:
        if operation.body is None:
            continue
        extra = operation.body.model_config.get("json_schema_extra")
        examples = extra.get("examples") if isinstance(extra, dict) else None
        assert isinstance(examples, list) and examples, f"{operation.body.__name__} has no examples"
        name = operation.body.__name__
        assert document["components"]["schemas"][name]["examples"] == examples
        schema = {**document, "$ref": f"#/components/schemas/{name}"}
        for example in examples:
            jsonschema.Draft202012Validator(schema).validate(example)
            operation.body.model_validate(example)
            checked += 1
    assert checked >= 8


@pytest.mark.parametrize("operation", [op for op in API.operations if op.body is not None],
                         ids=lambda op: op.operation_id)
async def test_bad_bodies_are_client_errors(client: Client, operation: Any) -> None:
    headers = await bearer(client, "admin@example.com", "admin")
    path = re.sub(r"\{[^}]+\}", "1", operation.path.replace("{slug}", "some-room"))
    response = await client.request(operation.method, path, data=b"{not json", headers={
        **headers, "Content-Type": "application/json"})
    assert response.status == 400 and (await response.json())["error"]["code"] == "bad_json"
    response = await client.request(operation.method, path, data=b"a=b", headers={
        **headers, "Content-Type": "application/x-www-form-urlencoded"})
    assert response.status == 415
    for garbage in ([], "text", 7, None, {"nested": {"deep": [1, 2]}}):
        response = await client.request(operation.method, path, data=json.dumps(garbage), headers={
            **headers, "Content-Type": "application/json"})
        assert response.status < 500, (garbage, response.status)
        if not isinstance(garbage, dict):
            assert response.status == 422, (garbage, response.status)
    wrong_types = {"title": 5, "slug": [], "user_id": "x", "email": None, "refresh_token": 1}
    response = await client.request(operation.method, path, json=wrong_types, headers=headers)
    assert response.status < 500


async def test_validation_error_names_the_field(client: Client) -> None:
    response = await client.post("/api/auth/signup", json={"email": "a@example.com", "password": "x" * 9})
    assert response.status == 422
    assert (await response.json())["error"] == {"code": "invalid", "field": "display_name",
                                                "message": "display_name: Field required"}
    response = await client.post("/api/auth/signup", json={"email": "nope", "password": "x" * 9,
                                                            "display_name": "N"})
    assert response.status == 422 and (await response.json())["error"]["field"] == "email"


async def test_query_parameters_are_documented_and_validated(client: Client) -> None:
    document = await _document(client)
    parameters = {p["name"]: p for p in document["paths"]["/api/shows"]["get"]["parameters"]}
    assert parameters["status"]["in"] == "query"
    assert parameters["status"]["schema"]["enum"] == ["live", "upcoming", "past"]
    assert parameters["limit"]["schema"]["maximum"] == 100
    bad = (("status=soon", "status"), ("limit=0", "limit"), ("limit=x", "limit"), ("colour=red", "colour"))
    for query, field in bad:
        response = await client.get(f"/api/shows?{query}")
        assert response.status == 422, query
        assert (await response.json())["error"]["field"] == field
    assert (await client.get("/api/shows?status=upcoming&limit=5")).status == 200
