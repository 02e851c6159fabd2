"""bps_client.transport: ids go into request paths as one segment each; the API key goes with
every request, through a caller's own httpx.Client too."""
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


def sent_authorization(monkeypatch, api_key, http_headers=None):  # noqa: ANN001, ANN201
    """The Authorization header of a JSON request and of an event stream that a Client with
    `api_key` sends through an httpx.Client of the caller's (with `http_headers`)."""
    from bps_client import Client

    monkeypatch.setenv("BPS_API_KEY", "from-env")
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        if request.url.path.endswith("/events"):
            return httpx.Response(200, text="event: job\ndata: {}\n\n", headers={"Content-Type": "text/event-stream"})
        return httpx.Response(200, json={})

    http = httpx.Client(base_url="http://bps.test", headers=http_headers, transport=httpx.MockTransport(handler))
    with Client("http://bps.test", api_key, http=http) as client:
        client.job("j")
        assert list(client.events("j")) == [("job", None, {})]
    given = (http_headers or {}).get("Authorization")
    assert http.headers.get("Authorization") == given, "the caller's client is left as it was given"
    assert len(set(seen)) == 1, seen
    return seen[0]


def test_the_api_key_goes_with_the_requests_of_a_given_http_client(monkeypatch):
    assert sent_authorization(monkeypatch, "k") == "Bearer k"
    assert sent_authorization(monkeypatch, "k", {"Authorization": "Bearer its-own"}) == "Bearer k"
    assert sent_authorization(monkeypatch, None) == "Bearer from-env"
    assert sent_authorization(monkeypatch, None, {"Authorization": "Bearer its-own"}) == "Bearer its-own"


def test_the_development_key_goes_only_to_the_default_url_of_a_given_http_client(monkeypatch, tmp_path):
    from bps_client import Client

    monkeypatch.delenv("BPS_API_KEY", raising=False)
    monkeypatch.delenv("BPS_URL", raising=False)
    monkeypatch.setenv("BPS_VAR_DIR", str(tmp_path))
    (tmp_path / "dev-api-key").write_text("dev-secret\n")
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.headers.get("Authorization")))
        return httpx.Response(200, json={})

    for base_url in ("https://remote.example", "http://127.0.0.1:8000"):
        http = httpx.Client(base_url=base_url, transport=httpx.MockTransport(handler))
        with Client(http=http) as client:
            client.job("j")
            assert client.url == base_url
    assert seen == [("remote.example", None), ("127.0.0.1", "Bearer dev-secret")]
