"""Property-based fuzzing of the whole API from its own OpenAPI spec (schemathesis): no 5xx, answers match the spec."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from forecasting.api import ApiState, create_app
from tests.fixtures.api import api_settings

TOKEN = "fuzz-token"
SLOW_MODELS = {"arima", "lstm", "tcn"}
UPLOADS = {"/predict", "/validate"}


def map_query(_context: Any, query: dict[str, Any] | None) -> dict[str, Any] | None:
    """Keep generated uploads on the fast baseline models (the slow ones are trained in tests/test_api.py)."""
    if isinstance(query, dict) and isinstance(query.get("model"), str) and query["model"] in SLOW_MODELS:
        return {**query, "model": "naive"}
    return query


APP = create_app()  # its settings are given by the fixture below, before the first request
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
schema.hook(map_query)


@pytest.fixture(scope="module", autouse=True)
def fuzzed_store(worker_db: Path) -> Iterator[None]:
    """Point the fuzzed app at the worker-filled store, with a token so auth is fuzzed too."""
    APP.state.headroom = ApiState(api_settings(worker_db, api_token=TOKEN, api_timeout=60, api_concurrency=2))
    yield
    APP.state.headroom.close()


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_spec(case: Any) -> None:
    """Every generated request gets a documented, schema-valid answer and never a server error."""
    # An upload can match the export's shape and still be unusable (no CPU query, two points): that is a
    # 422 saying why, so "schema-valid data is accepted" does not hold for the upload endpoints.
    excluded = [positive_data_acceptance] if case.operation.path in UPLOADS else []
    response = case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, excluded_checks=excluded)
    assert response.status_code < 500
