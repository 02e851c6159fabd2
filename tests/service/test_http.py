"""service/http.py's query helpers as the views use them: a value outside the allowed ones is a
400 naming the parameter and every allowed value."""
from __future__ import annotations

import pytest

from tests.service.helpers import assert_problem


@pytest.mark.parametrize(("path", "name", "allowed"), [
    ("/v1/jobs?status=done", "status", ["queued", "running", "succeeded", "failed", "cancelled"]),
    ("/v1/predictions/any-id/download?format=xlsx", "format", ["csv", "parquet"]),
])
def test_a_value_outside_the_choices_is_400_naming_them(client, auth, path: str, name: str, allowed: list) -> None:  # noqa: ANN001
    body = assert_problem(client.get(path, headers=auth), 400, name, *allowed)
    assert body["errors"][0]["loc"] == ["query", name]
