"""Schemathesis against the running server's OpenAPI schema: requests generated from
it, valid and invalid, never get a 5xx."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation import GenerationMode

EXAMPLES_PER_OPERATION = 25


def test_no_generated_request_is_a_server_error(server):
    schema = schemathesis.openapi.from_url(f"{server.url}/docs.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/classify", "/classify_json"}
    for operation in operations:
        no_server_error(operation, GenerationMode.POSITIVE, server.url)
        if operation.body:  # the probes and /metrics take nothing to get wrong
            no_server_error(operation, GenerationMode.NEGATIVE, server.url)


def no_server_error(operation, mode: GenerationMode, base_url: str) -> None:
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case):
        response = case.call(base_url=base_url, timeout=60)
        assert response.status_code < 500, (mode, case.method, case.path, response.text[:500])

    check()
