"""limit/offset, X-Total-Count and RFC 8288 Link headers on every list, and list entries
that are summaries (GET /v1/datasets carries no column profiles)."""
from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.service.helpers import assert_problem, upload


def links(response) -> dict[str, dict[str, list[str]]]:  # noqa: ANN001
    """rel -> the target's query parameters, from the Link header."""
    found = re.findall(r'<([^>]+)>; rel="(\w+)"', response.headers["Link"])
    return {rel: {"path": [urlsplit(url).path], **parse_qs(urlsplit(url).query)} for url, rel in found}


@pytest.fixture
def five_datasets(client, auth) -> list[str]:  # noqa: ANN001
    return [upload(client, auth, f"a,b\n{i},2\n".encode(), filename=f"d{i}.csv").get_json()["id"]
            for i in range(5)]


def test_pages_walk_the_whole_list_newest_first(client, auth, five_datasets) -> None:  # noqa: ANN001
    first = client.get("/v1/datasets?limit=2", headers=auth)
    assert first.status_code == 200 and first.headers["X-Total-Count"] == "5"
    rels = links(first)
    assert set(rels) == {"first", "next", "last"}
    assert rels["next"]["offset"] == ["2"] and rels["next"]["limit"] == ["2"] and rels["last"]["offset"] == ["4"]
    seen, url = [], "/v1/datasets?limit=2"
    while url:
        page = client.get(url, headers=auth)
        seen += [row["id"] for row in page.get_json()]
        following = links(page).get("next")
        url = following and f"{following['path'][0]}?limit={following['limit'][0]}&offset={following['offset'][0]}"
    assert seen == five_datasets[::-1]
    middle = links(client.get("/v1/datasets?limit=2&offset=2", headers=auth))
    assert middle["prev"]["offset"] == ["0"] and middle["next"]["offset"] == ["4"]


def test_links_keep_the_other_query_parameters(client, auth, five_datasets, published) -> None:  # noqa: ANN001
    response = client.get("/v1/jobs?status=succeeded&limit=3", headers=auth)
    assert response.get_json() == [] and response.headers["X-Total-Count"] == "0"
    assert links(response)["first"]["status"] == ["succeeded"]


def test_past_the_end_is_an_empty_page_with_the_total(client, auth, five_datasets) -> None:  # noqa: ANN001
    response = client.get("/v1/datasets?limit=2&offset=10", headers=auth)
    assert response.get_json() == [] and response.headers["X-Total-Count"] == "5"
    assert links(response)["prev"]["offset"] == ["3"] and "next" not in links(response)


@pytest.mark.parametrize("path", ["/v1/datasets", "/v1/jobs", "/v1/models", "/v1/predictions"])
@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "offset=-1", "limit=ten"])
def test_bad_paging_parameters_are_400(client, auth, path, query) -> None:  # noqa: ANN001
    assert_problem(client.get(f"{path}?{query}", headers=auth), 400, query.split("=")[0])


def test_totals_count_only_the_tenants_rows(client, auth, auth_b, five_datasets) -> None:  # noqa: ANN001
    response = client.get("/v1/datasets", headers=auth_b)
    assert response.get_json() == [] and response.headers["X-Total-Count"] == "0"


def test_dataset_list_entries_are_summaries(client, auth) -> None:  # noqa: ANN001
    """A 1 x 2,000-column upload: the detail has every profile, the list entry none."""
    header = ",".join(f"c{i}" for i in range(2000))
    created = upload(client, auth, f"{header}\n{','.join('1.5' for _ in range(2000))}\n".encode(), filename="w.csv")
    assert created.status_code == 201, created.get_json()
    detail = client.get(f"/v1/datasets/{created.get_json()['id']}", headers=auth)
    assert len(detail.get_json()["columns"]) == 2000 and detail.get_json()["n_columns"] == 2000
    listed = client.get("/v1/datasets", headers=auth)
    (entry,) = listed.get_json()
    assert "columns" not in entry and entry["n_columns"] == 2000 and entry["n_rows"] == 1
    assert {k: v for k, v in detail.get_json().items() if k != "columns"} == entry
    assert len(listed.get_data()) < 1000 < len(detail.get_data()) // 50
