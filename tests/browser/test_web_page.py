"""The web page at `/` in real headless Chromium against real `bps api` + `bps worker`
processes: sign-in, charts of a finished and a running job, predictions, the spec's 422 errors,
tenant isolation, and hostile names that must stay text."""
from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import Service, finished, fresh_view, open_view, sign_in, submit, upload, wait_job
from tests.e2e.flow import LABELS, blobs, csv_bytes

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DOCS_SCREENSHOT = ROOT / "docs" / "job-page.png"  # rewritten only with BPS_UPDATE_SCREENSHOT=1
EPOCHS = 12
XSS_NAME = "<script>window.__xss = 'dataset name'</script>"
XSS_COLUMN = "<img src=x onerror=\"window.__xss = 'column'\">"
XSS_LABEL = "<svg onload=\"window.__xss = 'label'\">"
SPEC = {
    "layers": [{"type": "dense", "units": 16, "activation": "relu"}, {"type": "dense", "activation": "softmax"}],
    "loss": "cross_entropy", "optimizer": {"type": "adam", "learning_rate": 0.05},
    "epochs": EPOCHS, "batch_size": 16, "validation_split": 0.2, "early_stopping": None,
}
# Eight sigmoid layers: the first layers' gradients vanish (warned from epoch 1), then the loss
# leaves its plateau — the picture of docs/job-page.png.
DEEP_EPOCHS = 20
DEEP_SPEC = {**SPEC, "layers": [{"type": "dense", "units": 8, "activation": "sigmoid"}] * 8
             + [{"type": "dense", "activation": "softmax"}], "epochs": DEEP_EPOCHS}
POINTS = "#chart-{name} .scatterlayer .trace:nth-child({n}) .points path"


def csv_field(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


@pytest.fixture(scope="module")
def trained(service: Service) -> dict[str, Any]:
    """alice's flowers dataset and finished job, and a dataset (and its model) whose name, column
    and labels are HTML."""
    client = service.client()
    flowers = upload(client, "flowers.csv", csv_bytes(blobs(30, seed=1)), name="flowers")
    job = finished(client, submit(client, flowers["id"], "species", SPEC))
    deep = finished(client, submit(client, flowers["id"], "species", DEEP_SPEC))
    lines = [f"{csv_field(XSS_COLUMN)},label"] + [f"{i % 7}.5,{csv_field(XSS_LABEL if i % 2 else 'plain')}"
                                                   for i in range(40)]
    hostile_csv = ("\n".join(lines) + "\n").encode()
    hostile = upload(client, "hostile.csv", hostile_csv, name=XSS_NAME)
    assert hostile["name"] == XSS_NAME
    hostile_job = finished(client, submit(client, hostile["id"], "label", {**SPEC, "epochs": 3}))
    return {"flowers": flowers, "job": job, "deep": deep, "hostile": hostile, "hostile_job": hostile_job}


def points(page: Any, chart: str, trace: int = 1) -> int:
    return page.locator(POINTS.format(name=chart, n=trace)).count()


def test_a_wrong_key_is_refused_with_a_message(page, service):
    page.goto(service.base_url + "/")
    page.fill("#api-key", "not-a-key")
    page.click("#sign-in button[type=submit]")
    message = page.locator("#sign-in-error")
    message.wait_for(state="visible")
    assert "refused" in message.inner_text() and "not valid" in message.inner_text()
    assert page.locator("#nav").is_hidden()
    assert page.evaluate("sessionStorage.length") == 0
    assert "not-a-key" not in page.url


def test_finished_job_charts_one_point_per_epoch_reached_by_clicking(page, service, trained):
    requests: list[Any] = []
    page.on("request", lambda request: requests.append(request))
    sign_in(page, service)
    assert page.evaluate("Object.values(sessionStorage)") == [service.keys["alice"]]
    fresh_view(page, lambda: page.click("#nav-jobs"))
    fresh_view(page, lambda: page.select_option("#status-filter", "failed"))
    assert page.locator("a.job-link").count() == 0 and "No failed jobs" in page.locator("#page").inner_text()
    fresh_view(page, lambda: page.select_option("#status-filter", "succeeded"))
    assert set(page.locator("#jobs .status").all_inner_texts()) == {"succeeded"}
    fresh_view(page, lambda: page.click(f"a.job-link[data-job-id='{trained['job']['id']}']"))
    assert page.locator("#job-summary .status").inner_text() == "succeeded"
    assert page.get_attribute("#model-link", "href") == f"#/models/{trained['job']['model_id']}"
    for chart in ("loss", "accuracy", "lr", "grad"):
        page.wait_for_selector(f"#chart-{chart} .main-svg")
    assert [points(page, "loss", n) for n in (1, 2)] == [EPOCHS, EPOCHS]  # loss, val_loss
    assert [points(page, "accuracy", n) for n in (1, 2)] == [EPOCHS, EPOCHS]
    assert points(page, "lr") == EPOCHS
    legend = page.locator("#chart-grad .legendtext").all_text_contents()
    assert {"0.weight", "0.bias", "1.weight", "1.bias"} <= set(legend)
    assert page.evaluate("document.getElementById('chart-grad').layout.yaxis.type") == "log"
    assert all(points(page, "grad", n) == EPOCHS for n in range(1, 5))
    spec = json.loads(page.locator("#spec").inner_text())
    assert spec["epochs"] == EPOCHS and spec["optimizer"]["type"] == "adam" and "beta1" in spec["optimizer"]
    api_calls = [r for r in requests if "/v1/" in r.url]
    assert len(api_calls) >= 4 and not [r.url for r in requests if service.keys["alice"] in r.url]
    assert {r.headers.get("authorization") for r in api_calls} == {f"Bearer {service.keys['alice']}"}


def test_gradient_norms_on_a_log_scale_with_the_jobs_warnings_marked(page, service, trained, tmp_path):
    deep = trained["deep"]
    assert deep["warnings"] and all(w.startswith("vanishing gradients") for w in deep["warnings"]), deep["warnings"]
    sign_in(page, service)
    fresh_view(page, lambda: page.click(f"a.job-link[data-job-id='{deep['id']}']"))
    page.wait_for_selector("#chart-grad .main-svg")
    assert page.evaluate("document.getElementById('chart-grad').layout.yaxis.type") == "log"
    legend = page.locator("#chart-grad .legendtext").all_text_contents()
    params = [f"{i}.{kind}" for i in range(9) for kind in ("weight", "bias")]
    assert legend == params + ["vanishing warning"]
    assert all(points(page, "grad", n) == DEEP_EPOCHS for n in range(1, len(params) + 1))
    assert points(page, "grad", len(params) + 1) == len(deep["warnings"]), "one mark per warning"
    assert page.locator("#warnings li").all_inner_texts() == deep["warnings"]
    bottom = page.evaluate("document.getElementById('warnings').getBoundingClientRect().bottom + window.scrollY")
    shot = DOCS_SCREENSHOT if os.environ.get("BPS_UPDATE_SCREENSHOT") == "1" else tmp_path / "job-page.png"
    page.screenshot(path=str(shot), full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": bottom + 16})
    assert shot.stat().st_size > 0


def without_event_stream(page: Any) -> None:
    """The page as it meets a server without GET /v1/jobs/{id}/events: a 404 problem."""
    problem = {"type": "about:blank", "title": "Not Found", "status": 404, "detail": "no such route", "errors": []}
    page.route("**/v1/jobs/*/events", lambda route: route.fulfill(
        status=404, content_type="application/problem+json", body=json.dumps(problem)))


@pytest.mark.parametrize("transport", ["events", "polling"])
def test_a_running_jobs_charts_grow_live_and_it_can_be_cancelled(page, service, trained, transport):
    client = service.client()
    slow = {**SPEC, "epochs": 2000, "batch_size": 2, "validation_split": 0.1}  # cancelled long before its end
    many = upload(client, "many.csv", csv_bytes(blobs(700, seed=3)), name="many flowers")
    job_id = submit(client, many["id"], "species", slow)
    if transport == "polling":
        without_event_stream(page)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    try:
        wait_job(client, job_id, lambda j: j["status"] == "running" and (j["epoch"] or 0) >= 1, timeout=60)
        sign_in(page, service)
        before = len(requests)
        fresh_view(page, lambda: page.click(f"a.job-link[data-job-id='{job_id}']"))
        page.wait_for_selector("#chart-loss .main-svg")
        first = points(page, "loss")
        assert first >= 1
        page.wait_for_function("([selector, n]) => document.querySelectorAll(selector).length >= n",
                               arg=[POINTS.format(name="loss", n=1), first + 3], timeout=60_000)
        assert page.locator("#job-summary .status").inner_text() == "running"
        mine = [url for url in requests[before:] if job_id in url]
        polls = sum(url.endswith("/epochs") for url in mine) - 1  # the first is the page's initial load
        assert any(url.endswith("/events") for url in mine), mine
        assert polls == 0 if transport == "events" else polls >= 1, mine
        page.click("#cancel-job")
        page.wait_for_selector("#job-summary .status[data-status=cancelled]", timeout=30_000)
    finally:
        client.json("POST", f"/v1/jobs/{job_id}/cancel")


def test_predict_from_pasted_rows_and_a_csv_file_and_download(page, service, trained):
    sign_in(page, service)
    fresh_view(page, lambda: page.click("#nav-models"))
    fresh_view(page, lambda: page.click(f"a.model-link[href='#/models/{trained['job']['model_id']}']"))
    assert page.locator("#classes li").all_inner_texts() == list(LABELS)
    rows = "a,b,c\n0,0,0\n3,-2,1.5\n6,-4,0\n"
    page.fill("#predict-rows", rows)
    page.click("#predict-form button[type=submit]")
    page.wait_for_selector("#predictions")
    assert prediction_rows(page) == list(LABELS)
    headers = page.locator("#predictions th").all_inner_texts()
    assert headers == ["#", "prediction"] + [f"P({label})" for label in LABELS]

    page.fill("#predict-rows", "")
    page.set_input_files("#predict-file", files=[{"name": "rows.csv", "mimeType": "text/csv",
                                                  "buffer": rows.replace("\n", "\r\n").encode()}])
    page.click("#predict-form button[type=submit]")
    page.wait_for_selector("#predictions")
    assert prediction_rows(page) == list(LABELS)

    with page.expect_download() as info:
        page.click("#download-npz")
    assert info.value.suggested_filename.endswith(".npz")
    assert Path(info.value.path()).read_bytes()[:2] == b"PK"


def prediction_rows(page: Any) -> list[str]:
    cells = page.locator("#predictions tbody tr")
    labels = []
    for i in range(cells.count()):
        row = cells.nth(i).locator("td").all_inner_texts()
        probabilities = [float(p) for p in row[2:]]
        assert abs(sum(probabilities) - 1) < 2e-3 and all(0 <= p <= 1 for p in probabilities), row
        labels.append(row[1])
    return labels


def test_a_bad_spec_shows_its_errors_next_to_the_editor_and_the_example_trains(page, service, trained):
    sign_in(page, service)
    fresh_view(page, lambda: page.click("#nav-new-job"))
    page.select_option("#job-dataset", trained["flowers"]["id"])
    page.fill("#job-target", "species")
    bad = {"layers": [{"type": "dense", "units": -3, "activation": "swish"}, {"type": "dense", "activation": "softmax"}],
           "loss": "cross_entropy", "optimizer": {"type": "adam", "learning_rate": 0.01}, "epochs": 5}
    example = page.input_value("#job-spec")
    page.fill("#job-spec", json.dumps(bad))
    page.click("#submit-job")
    errors = page.locator(".editor #error-spec li")
    errors.first.wait_for()
    text = " ".join(errors.all_inner_texts())
    assert "layers.0.units" in text and "layers.0.activation" in text, text
    assert page.locator("#job-spec + #error-spec").count() == 1  # beside the editor

    page.fill("#job-spec", example)
    fresh_view(page, lambda: page.click("#submit-job"))
    assert re.search(r"#/jobs/[0-9a-f-]{36}$", page.url), page.url
    job_id = page.url.rsplit("/", 1)[1]
    finished(service.client(), job_id)
    page.wait_for_selector("#job-summary .status[data-status=succeeded]", timeout=30_000)


def test_another_tenants_ids_answer_not_found_like_a_missing_id(page, service, trained):
    sign_in(page, service, "bob")
    shown = {}
    for kind, own_id in (("jobs", trained["job"]["id"]), ("models", trained["job"]["model_id"]),
                         ("datasets", trained["flowers"]["id"])):
        for label, some_id in (("alice's", own_id), ("missing", str(uuid.uuid4()))):
            open_view(page, f"#/{kind}/{some_id}")
            shown[kind, label] = page.locator("#page .error").inner_text().replace(some_id, "ID")
        assert "not found" in shown[kind, "missing"].lower()
        assert shown[kind, "alice's"] == shown[kind, "missing"]
    open_view(page, "#/jobs")
    assert page.locator("a.job-link").count() == 0


def test_html_in_names_and_labels_stays_text_on_every_page(page, service, trained):
    hostile, job = trained["hostile"], trained["hostile_job"]
    sign_in(page, service)
    views = ["#/datasets", f"#/datasets/{hostile['id']}", "#/jobs", f"#/jobs/{job['id']}", "#/models",
             f"#/models/{job['model_id']}", f"#/new-job?dataset={hostile['id']}"]
    for view in views:
        open_view(page, view)
        page.wait_for_timeout(200)
        assert_inert(page, view)
    open_view(page, f"#/datasets/{hostile['id']}")
    assert page.locator(".dataset-name").inner_text() == XSS_NAME
    assert page.locator("#profile tbody td").first.inner_text() == XSS_COLUMN
    open_view(page, f"#/models/{job['model_id']}")
    assert XSS_LABEL in page.locator("#classes li").all_inner_texts()
    page.fill("#predict-rows", json.dumps([{XSS_COLUMN: 1.5}, {XSS_COLUMN: 4.5}]))
    page.click("#predict-form button[type=submit]")
    page.wait_for_selector("#predictions")
    assert f"P({XSS_LABEL})" in page.locator("#predictions th").all_inner_texts()
    assert_inert(page, "predictions")


def assert_inert(page: Any, where: str) -> None:
    assert page.evaluate("window.__xss") is None, f"a user string ran as script on {where}"
    assert page.locator("img[src=x], svg[onload], #page script").count() == 0, where
