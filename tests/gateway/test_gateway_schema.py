"""Property tests over the OpenAPI schema (schemathesis 4): whatever the input, the gateway
answers without a server error, with a documented status code and a body that matches the
documented schema. Live streams (SSE) are left out: they never end by themselves.

The app under test is a second instance over the same databases and chain, because the ASGI
transport runs the app's lifespan on its own event loop."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from gateway_stack import Stack
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api_schema(stack: Stack) -> Any:
    from gateway.app import create_app

    app = create_app(stack.settings, manifest=stack.devnet.manifest)
    return schemathesis.openapi.from_asgi("/openapi.json", app).exclude(path_regex=r"/events")


def test_the_schema_documents_every_route(api_schema: Any) -> None:
    labels = {op.ok().label for op in api_schema.get_all_operations()}
    for expected in ("POST /v1/jobs", "GET /v1/jobs/{job_id}", "GET /v1/jobs/{job_id}/result", "GET /v1/jobs",
                     "POST /v1/blobs", "GET /v1/blobs/{blob_id}", "GET /v1/providers", "GET /v1/models",
                     "GET /v1/stats", "GET /v1/balances/{address}", "POST /v1/auth/verify", "POST /v1/embeddings"):
        assert expected in labels


def test_the_api_never_fails_on_any_input_and_conforms_to_its_schema(api_schema: Any) -> None:
    failures: list[str] = []
    calls: dict[str, int] = {}
    for result in api_schema.get_all_operations():
        op = result.ok()
        try:
            _property_test(op, calls)()
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report
            failures.append(f"{op.label}: {exc}")
    assert not failures, "\n\n".join(failures)
    assert len(calls) >= 20 and sum(calls.values()) >= 80, calls


def _property_test(op: Any, calls: dict[str, int]) -> Any:
    @given(case=op.as_strategy())
    @settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
              database=None)
    def run(case: Any) -> None:
        calls[op.label] = calls.get(op.label, 0) + 1
        case.call_and_validate(checks=CHECKS)

    return run
