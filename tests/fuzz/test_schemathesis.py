"""Schemathesis against the app's own /openapi.json, in-process (WSGI), authenticated with a
real key: every operation, schema-valid (positive) and schema-violating (negative) requests,
every Schemathesis check. Zero 5xx, every response conforming to the document.

Prints `schemathesis: N cases, M 5xx, statuses {...}` (run with -s) for the README."""
from __future__ import annotations

import collections
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from bps.db import session_scope
from bps.tenants import create_api_key

pytest.importorskip("schemathesis")

import schemathesis  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import CHECKS, load_all_checks  # noqa: E402

EXAMPLES_PER_OPERATION = 40
# A schema-valid request may still be refused for what JSON Schema cannot express: a dataset id
# that names no dataset (404/422), file bytes that are not CSV/Parquet/.npz (422), a spec that
# does not fit the data (422), a job already finished (409). Everything else is Schemathesis' default.
POSITIVE_EXPECTED = ["2xx", "401", "404", "409", "413", "422", "429"]


@pytest.fixture
def app(settings, monkeypatch):  # noqa: ANN001, ANN201
    import worker.queue
    from service.app import create_app

    monkeypatch.setattr(worker.queue, "publish_job", lambda *_args: None)  # no broker needed here
    return create_app(replace(settings, max_upload_bytes=64 * 1024, max_prediction_rows=50))


@pytest.fixture
def key(settings) -> str:  # noqa: ANN001
    with session_scope(settings.database_url) as session:
        return create_api_key(session=session, tenant_name="fuzzer")


def all_checks() -> list:
    load_all_checks()
    return list(CHECKS.get_all())


def run_operation(operation, mode: GenerationMode, headers: dict[str, str], statuses: collections.Counter) -> None:  # noqa: ANN001
    checks = all_checks()

    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def exercise(case) -> None:  # noqa: ANN001
        response = case.call(headers=headers)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=checks, headers=headers)

    try:
        exercise()
    except Unsatisfiable:  # an operation with nothing to make invalid (no parameters, no body)
        pass


def test_every_operation_conforms_and_never_answers_5xx(app, key) -> None:  # noqa: ANN001
    from schemathesis.config import SchemathesisConfig

    # A NUL anywhere in a JSON body is a 400 by design (PostgreSQL text cannot hold it), which free
    # `Any` fields cannot publish; tests/service/test_isolation_and_garbage.py checks that 400.
    config = SchemathesisConfig.from_dict({
        "headers": {"Authorization": f"Bearer {key}"},
        "generation": {"allow-x00": False},
        "checks": {"positive_data_acceptance": {"expected-statuses": POSITIVE_EXPECTED}}})
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app, config=config)
    headers = {"Authorization": f"Bearer {key}"}
    statuses: collections.Counter = collections.Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run_operation(operation, mode, headers, statuses)
    cases, server_errors = sum(statuses.values()), sum(n for code, n in statuses.items() if code >= 500)
    print(f"\nschemathesis: {cases} cases, {server_errors} 5xx, statuses {dict(sorted(statuses.items()))}")
    assert server_errors == 0
    assert cases >= len(operations) * 10
