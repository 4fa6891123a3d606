"""Property-based fuzzing of every operation against the API's own OpenAPI schema (schemathesis)
on SQLite, once with a member's token and once with an admin's: no answer is a server error,
every answer's status is documented and its body matches the schema."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from api.openapi import openapi_schema
from tests.integration.api_support import Api, sqlite_api

EXAMPLES_PER_OPERATION = 20
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


@dataclass
class Fuzzed:
    api: Api
    member: dict[str, str]
    admin: dict[str, str]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    with sqlite_api(tmp_path_factory.mktemp("fuzz")) as api:
        member = api.token("team-a")
        api.submit(member)  # something to read, page through and cancel
        yield Fuzzed(api, member, api.token("ops", "admin"))


# The schema as the app serves it (it needs no database); each call goes to the module's app.
# (A lazy schema from a fixture would be neater, but schemathesis 4.32's lazy loader breaks on
# pytest 9: it rewrites Function._nodeid, which pytest 9 no longer has.)
schema = schemathesis.openapi.from_dict(openapi_schema())
fuzz_settings = settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None,
                         database=None, suppress_health_check=list(HealthCheck))


@schema.parametrize()
@fuzz_settings
def test_as_a_member(case: schemathesis.Case, fuzzed: Fuzzed) -> None:
    case.call_and_validate(app=fuzzed.api.app, headers=fuzzed.member, checks=CHECKS)


@schema.parametrize()
@fuzz_settings
def test_as_an_admin(case: schemathesis.Case, fuzzed: Fuzzed) -> None:
    case.call_and_validate(app=fuzzed.api.app, headers=fuzzed.admin, checks=CHECKS)
