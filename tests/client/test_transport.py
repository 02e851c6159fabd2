"""bps_client.transport: ids go into request paths as one segment each."""
from __future__ import annotations

import httpx

from bps_client.transport import path_id
from tests.client.conftest import mock_client


def test_an_id_stays_one_path_segment():
    paths = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path.decode())
        return httpx.Response(200, json={})

    with mock_client(handler) as client:
        client.job("a/b?c#d")
        client.model("../datasets")
    assert paths == ["/v1/jobs/a%2Fb%3Fc%23d", "/v1/models/..%2Fdatasets"]
    assert path_id("0f9c2d1e-uuid") == "0f9c2d1e-uuid"
