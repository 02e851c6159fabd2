"""GET /v1/models, DELETE /v1/models/{id}, GET /v1/predictions (?model_id=), DELETE
/v1/predictions/{id}: newest first, tenant-scoped, and a deleted model never served again."""
from __future__ import annotations

import pytest

from tests.service.helpers import SMALL_SPEC, assert_problem, store_trained_model, upload

CSV = ("x,label\n" + "".join(f"{i - 10},{'low' if i < 10 else 'high'}\n" for i in range(20))).encode()


pytestmark = pytest.mark.usefixtures("fresh_model_cache")


@pytest.fixture
def model_ids(client, auth, settings) -> list[str]:  # noqa: ANN001
    """Two of alice's models, oldest first."""
    upload(client, auth, CSV)
    return [store_trained_model(settings, "alice", CSV, "csv", target="label", spec=SMALL_SPEC) for _ in range(2)]


def predict(client, auth, model_id: str):  # noqa: ANN001, ANN201
    return client.post(f"/v1/models/{model_id}/predictions", headers=auth, json={"instances": [[-5], [5]]})


def test_models_list_newest_first_as_summaries(client, auth, model_ids) -> None:  # noqa: ANN001
    response = client.get("/v1/models", headers=auth)
    assert response.status_code == 200 and response.headers["X-Total-Count"] == "2"
    listed = response.get_json()
    assert [m["id"] for m in listed] == model_ids[::-1]
    detail = client.get(f"/v1/models/{model_ids[1]}", headers=auth).get_json()
    assert listed[0] == {k: v for k, v in detail.items() if k not in ("features", "input_shape", "spec")}
    assert listed[0]["classes"] == ["high", "low"] and detail["features"] == ["x"]


def test_deleted_model_answers_404_and_its_cached_network_does_not_serve(client, auth, model_ids) -> None:  # noqa: ANN001
    doomed, kept = model_ids
    assert predict(client, auth, doomed).status_code == 201  # now cached in this process
    assert predict(client, auth, kept).status_code == 201
    assert client.delete(f"/v1/models/{doomed}", headers=auth).status_code == 204
    for response in (client.get(f"/v1/models/{doomed}", headers=auth), predict(client, auth, doomed),
                     client.get(f"/v1/models/{doomed}/download", headers=auth),
                     client.delete(f"/v1/models/{doomed}", headers=auth)):
        assert_problem(response, 404, "not found")
    assert [m["id"] for m in client.get("/v1/models", headers=auth).get_json()] == [kept]
    remaining = client.get("/v1/predictions", headers=auth).get_json()
    assert [p["model_id"] for p in remaining] == [kept], "a deleted model's predictions go with it"


def test_deleting_a_model_that_another_process_cached_still_refuses_it(client, auth, model_ids) -> None:  # noqa: ANN001
    """Another API process's cache is not reachable: predict checks the database first."""
    from service import predict as predict_module

    doomed = model_ids[0]
    assert predict(client, auth, doomed).status_code == 201
    cached = dict(predict_module._cache)
    assert client.delete(f"/v1/models/{doomed}", headers=auth).status_code == 204
    predict_module._cache.update(cached)  # as if this process had not been the one that deleted it
    assert_problem(predict(client, auth, doomed), 404, f"model {doomed} not found")


def test_predictions_list_filter_and_delete(client, auth, model_ids) -> None:  # noqa: ANN001
    first, second = model_ids
    made = [predict(client, auth, model_id).get_json() for model_id in (first, second, first)]
    response = client.get("/v1/predictions", headers=auth)
    assert response.headers["X-Total-Count"] == "3"
    listed = response.get_json()
    assert [p["id"] for p in listed] == [p["id"] for p in made[::-1]]
    detail = client.get(f"/v1/predictions/{made[2]['id']}", headers=auth).get_json()
    assert listed[0] == {k: v for k, v in detail.items() if k not in ("predictions", "probabilities")}
    assert listed[0]["n"] == 2 and listed[0]["status"] == "succeeded"
    only_first = client.get(f"/v1/predictions?model_id={first}&limit=1", headers=auth)
    assert only_first.headers["X-Total-Count"] == "2" and [p["id"] for p in only_first.get_json()] == [made[2]["id"]]
    assert client.delete(f"/v1/predictions/{made[0]['id']}", headers=auth).status_code == 204
    assert_problem(client.get(f"/v1/predictions/{made[0]['id']}", headers=auth), 404, "not found")
    assert [p["id"] for p in client.get(f"/v1/predictions?model_id={first}", headers=auth).get_json()] == [
        made[2]["id"]]


def test_another_tenants_models_and_predictions_are_404_and_unlisted(client, auth, auth_b, model_ids) -> None:  # noqa: ANN001
    made = predict(client, auth, model_ids[0]).get_json()
    for path in (f"/v1/models/{model_ids[0]}", f"/v1/predictions/{made['id']}"):
        assert_problem(client.delete(path, headers=auth_b), 404, "not found")
    assert client.get("/v1/models", headers=auth_b).get_json() == []
    assert client.get(f"/v1/predictions?model_id={model_ids[0]}", headers=auth_b).get_json() == []
    assert client.get(f"/v1/models/{model_ids[0]}", headers=auth).status_code == 200
    assert client.get(f"/v1/predictions/{made['id']}", headers=auth).status_code == 200


@pytest.mark.parametrize("status", ["queued", "running"])
def test_an_asynchronous_prediction_in_flight_blocks_deleting_it_and_its_model(client, auth, settings, model_ids,
                                                                               status) -> None:  # noqa: ANN001
    from sqlalchemy import update

    from bps.db import session_scope
    from bps.models import Prediction

    made = predict(client, auth, model_ids[0]).get_json()
    with session_scope(settings.database_url) as session:
        session.execute(update(Prediction).where(Prediction.id == made["id"]).values(status=status))
    assert_problem(client.delete(f"/v1/predictions/{made['id']}", headers=auth), 409, "queued or running")
    assert_problem(client.delete(f"/v1/models/{model_ids[0]}", headers=auth), 409, "1 asynchronous prediction")
    with session_scope(settings.database_url) as session:
        session.execute(update(Prediction).where(Prediction.id == made["id"]).values(status="failed"))
    assert client.delete(f"/v1/models/{model_ids[0]}", headers=auth).status_code == 204
    assert_problem(client.get(f"/v1/predictions/{made['id']}", headers=auth), 404, "not found")
