"""The OpenAPI schema: the served one is the one checked in (docs/openapi.json), and every body
the API defines forbids fields it does not declare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from api.openapi import render
from tests.integration.api_support import sqlite_api

CHECKED_IN = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
REGENERATE = ".venv/bin/python -m api.openapi > docs/openapi.json"


def _served(tmp_path: Path) -> dict[str, Any]:
    with sqlite_api(tmp_path) as api:
        answer = api.client.get("/openapi.json")
        assert answer.status_code == 200
        schema: dict[str, Any] = answer.json()
        return schema


def test_the_served_schema_is_the_checked_in_one(tmp_path: Path) -> None:
    served = render(_served(tmp_path))
    assert served == CHECKED_IN.read_text(), (
        f"docs/openapi.json is out of date with the app; regenerate it: {REGENERATE}")


def test_every_defined_body_forbids_extra_fields(tmp_path: Path) -> None:
    components = _served(tmp_path)["components"]["schemas"]
    objects = {name: schema for name, schema in components.items()
               if schema.get("type") == "object"}
    assert {"ErrorBody", "JobDetail", "JobSubmit", "PoolPublic", "TokenIssued"} <= set(objects)
    open_ones = [name for name, schema in objects.items()
                 if schema.get("additionalProperties") is not False]
    assert open_ones == []


def test_every_operation_documents_its_answers(tmp_path: Path) -> None:
    schema = _served(tmp_path)
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            answers = operation["responses"]
            successes = [status for status in answers if status.startswith("2")]
            assert successes, (method, path)
            for status in successes:
                content = answers[status]["content"]
                body = content.get("application/json", content.get("text/plain"))
                assert body and body["schema"], (method, path, status)
            for status, answer in answers.items():
                if not status.startswith("2"):
                    assert answer["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
            if operation.get("security"):
                assert "401" in answers, (method, path)
