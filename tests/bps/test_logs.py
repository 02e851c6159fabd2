"""LOG_FORMAT=json: one JSON object per line, with the job id, attempt and worker on every line
about a job (also from the run watcher thread and from Celery's own task lines) and the request
id on every line of an API request."""
from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest

from bps.config import load_settings
from bps.logs import ContextFilter, JsonFormatter, log_context, make_formatter


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Everything logged at INFO and above during the test, as LOG_FORMAT=json writes it."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.addFilter(ContextFilter(worker="bps-cpu-1@host"))
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield buffer
    root.removeHandler(handler)
    root.setLevel(level)


def parsed(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_every_line_of_a_job_run_names_the_job_the_attempt_and_the_worker(settings, json_lines, monkeypatch):
    from tests.worker.test_runner import add_job, classifier_spec
    from worker import job_store
    from worker.runner import run_job

    real_now = job_store.utcnow

    def now_but_not_in_the_watcher_thread():  # noqa: ANN202  (so the watcher thread logs a failed heartbeat)
        if threading.current_thread().name.startswith("run-watcher-"):
            raise RuntimeError("no heartbeat")
        return real_now()

    monkeypatch.setattr(job_store, "utcnow", now_but_not_in_the_watcher_thread)
    job_id = add_job(settings, classifier_spec(epochs=3))
    with log_context(job_id=job_id, worker="bps-cpu-1@host"):
        run_job(job_id, settings=replace(settings, heartbeat_interval_s=0.001), worker_id="bps-cpu-1@host")
    lines = parsed(json_lines)
    assert any(line["logger"] == "worker.runner" and line["level"] == "WARNING" for line in lines), lines
    assert any(line["logger"] == "worker.runner" and line["level"] == "INFO" for line in lines), lines
    assert all((line["job_id"], line["attempt"], line["worker"]) == (job_id, 1, "bps-cpu-1@host") for line in lines)


def test_celerys_task_lines_name_the_job_from_the_task_arguments(json_lines):
    received = {"name": "bps.train_job", "id": "c0ffee", "args": "('job-42',)", "kwargs": "{}", "eta": None}
    logging.getLogger("celery.worker.strategy").info("Task %(name)s[%(id)s] received", received)
    other = {"name": "celery.ping", "id": "beef", "args": "()", "kwargs": "{}"}
    logging.getLogger("celery.app.trace").info("Task %(name)s[%(id)s] succeeded", other)
    about_the_job, unrelated = parsed(json_lines)
    assert about_the_job["message"] == "Task bps.train_job[c0ffee] received"
    assert (about_the_job["job_id"], about_the_job["attempt"], about_the_job["worker"]) == ("job-42", None, "bps-cpu-1@host")
    assert "job_id" not in unrelated and "worker" not in unrelated


def test_gunicorns_access_line_carries_the_request_id_of_the_response(json_lines):
    atoms = {"h": "10.0.0.1", "r": "GET /healthz HTTP/1.1", "s": "200", "{x-request-id}o": "req-9"}
    logging.getLogger("gunicorn.access").info('%(h)s "%(r)s" %(s)s', atoms)
    (line,) = parsed(json_lines)
    assert line["request_id"] == "req-9" and line["message"] == '10.0.0.1 "GET /healthz HTTP/1.1" 200'


def test_every_line_of_an_api_request_carries_its_request_id(settings, json_lines):
    from service.app import create_app

    app = create_app(settings)

    def fails() -> None:
        logging.getLogger("service.test").info("about to fail")
        raise RuntimeError("boom")

    app.add_url_rule("/fails", view_func=fails)
    response = app.test_client().get("/fails", headers={"X-Request-ID": "req-7"})
    assert response.status_code == 500 and response.headers["X-Request-ID"] == "req-7"
    lines = parsed(json_lines)
    assert [line["message"] for line in lines] == ["about to fail", "unhandled error"]
    assert all(line["request_id"] == "req-7" for line in lines) and "RuntimeError: boom" in lines[1]["exception"]
    app.test_client().get("/healthz")
    logging.getLogger("service.test").info("outside any request")
    assert "request_id" not in parsed(json_lines)[-1]


def test_text_is_the_default_and_other_formats_are_refused():
    assert load_settings({}).log_format == "text" and load_settings({"LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        make_formatter("xml")
