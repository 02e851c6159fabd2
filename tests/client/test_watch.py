"""Client.wait's event stream against a scripted server: a stream that is full (503) on a
reconnect falls back to polling; a job gone (404) on a reconnect is an error."""
from __future__ import annotations

import httpx
import pytest

from bps_client import ApiError, Client
from bps_client import watch
from tests.client.conftest import mock_client

EPOCH_EVENT = b'event: epoch\nid: 1.running\ndata: {"epoch": 1, "loss": 0.5, "val_loss": 0.6}\n\n'
SUCCEEDED = {"id": "j", "status": "succeeded", "epoch": 2, "epochs": 2}


def scripted_client(reconnect: httpx.Response) -> tuple[Client, list[httpx.Request]]:
    """The first stream sends epoch 1 and drops; every reconnect gets `reconnect`; GET /v1/jobs/j
    answers the succeeded job."""
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if request.url.path.endswith("/events"):
            if "Last-Event-ID" not in request.headers:
                return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=EPOCH_EVENT)
            return reconnect
        return httpx.Response(200, json=SUCCEEDED)

    return mock_client(handler, retries=0), requests


def test_a_full_stream_on_reconnect_falls_back_to_polling(monkeypatch):
    monkeypatch.setattr(watch.time, "sleep", lambda _s: None)
    full = httpx.Response(503, headers={"Retry-After": "5"}, json={"title": "Service Unavailable"})
    client, requests = scripted_client(full)
    assert client.wait("j") == SUCCEEDED
    reconnect = next(r for r in requests if "Last-Event-ID" in r.headers)
    assert reconnect.headers["Last-Event-ID"] == "1.running"
    assert requests[-1].url.path == "/v1/jobs/j", "polled after the 503"


def test_a_job_gone_on_reconnect_raises_its_404(monkeypatch):
    monkeypatch.setattr(watch.time, "sleep", lambda _s: None)
    gone = httpx.Response(404, json={"title": "Not Found", "detail": "job j not found"})
    client, _ = scripted_client(gone)
    with pytest.raises(ApiError) as error:
        client.wait("j")
    assert error.value.status == 404


def test_a_stream_that_keeps_dropping_is_reconnected_with_the_clients_backoff_then_polled(monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr(watch.time, "sleep", sleeps.append)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json=SUCCEEDED)

    client = mock_client(handler, retries=0, backoff_s=0.25)
    assert client.wait("j") == SUCCEEDED
    # the same exponential backoff as Client's retries (transport.retry_delay): backoff_s * 2**attempt
    assert sleeps == [0.25, 0.5, 1.0, 2.0, 4.0] and len(sleeps) == watch.RECONNECTS  # no sleep before polling


def test_a_reconnect_never_sleeps_past_the_timeout(monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr(watch.time, "sleep", sleeps.append)

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = mock_client(handler, retries=0, backoff_s=100.0)
    with pytest.raises(httpx.ConnectError):  # polling after the reconnects: the server is gone
        client.wait("j", timeout=30)
    assert sleeps and all(delay <= 30 for delay in sleeps), sleeps


def test_the_bar_of_an_ended_job_names_its_status_once():
    import io

    out = io.StringIO()
    bar = watch.EpochBar({"id": "j", "status": "cancelled", "epochs": 3}, file=out)
    bar.status({"id": "j", "status": "cancelled", "epochs": 3})
    bar.close()
    assert "cancelled" in out.getvalue() and "cancelled cancelled" not in out.getvalue()
