"""/docs in real headless Chromium against a real `bps api`: Swagger UI renders the OpenAPI 3.1
document with every operation, loads nothing from outside the service, shows the request
examples, and "Try it out" with a key under "Authorize" gets a real answer."""
from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import Service

pytestmark = [pytest.mark.browser, pytest.mark.slow]
TIMEOUT_MS = 30_000


def test_docs_renders_every_operation_from_the_service_alone(page: Any, service: Service) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{service.base_url}/docs", wait_until="networkidle")
    page.wait_for_selector("#operations-jobs-submitJob", timeout=TIMEOUT_MS)
    assert page.locator(".info .title").inner_text().startswith("Backprop Service")
    assert page.locator(".errors-wrapper").count() == 0, page.locator(".errors-wrapper").inner_text()
    document = service.client().json("GET", "/openapi.json")[1]
    for item in document["paths"].values():
        for operation in item.values():
            tag, operation_id = operation["tags"][0], operation["operationId"]
            assert page.locator(f"#operations-{tag}-{operation_id}").count() == 1, operation_id
    outside = [url for url in requested if not url.startswith(service.base_url)]
    assert outside == [], "Swagger UI must load nothing from outside the service (no CDN, no validator)"


def test_docs_shows_the_examples_and_tries_a_call_with_a_key(page: Any, service: Service) -> None:
    page.goto(f"{service.base_url}/docs", wait_until="networkidle")
    page.wait_for_selector("#operations-jobs-submitJob", timeout=TIMEOUT_MS)

    page.click("#operations-jobs-submitJob .opblock-summary")
    # the operation's body renders after the click: wait for it, not for a fixed time
    page.wait_for_selector("#operations-jobs-submitJob .examples-select select option", state="attached",
                           timeout=TIMEOUT_MS)
    options = page.locator("#operations-jobs-submitJob .examples-select select option").all_inner_texts()
    assert any("examples/digits.parquet" in option for option in options), options
    body = page.locator("#operations-jobs-submitJob .opblock-section-request-body").inner_text()
    assert "dataset id from POST /v1/datasets" in body and "species" in body, body[:500]

    page.click("button.authorize")
    page.fill(".modal-ux input", service.keys["alice"])
    page.click(".modal-ux .auth-btn-wrapper button.authorize")
    page.click(".modal-ux button.btn-done")
    page.click("#operations-datasets-listDatasets .opblock-summary")
    page.click("#operations-datasets-listDatasets .try-out__btn")
    page.click("#operations-datasets-listDatasets .execute")
    answer = "#operations-datasets-listDatasets .live-responses-table tr.response"
    page.wait_for_selector(answer, timeout=TIMEOUT_MS)
    assert page.locator(f"{answer} .response-col_status").inner_text().strip() == "200"
    assert "x-total-count" in page.locator(f"{answer} .response-col_description").inner_text().lower()
