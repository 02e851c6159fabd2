"""Helpers for the API tests: uploads, .npz bytes, problem+json assertions."""
from __future__ import annotations

import io
from typing import Any

import numpy as np

IRIS_LIKE_CSV = (
    "sepal,petal,colour,species\n"
    + "".join(f"{1 + i % 5}.{i % 7},{2 + i % 3}.5,{'red' if i % 2 else 'blue'},{'setosa' if i % 3 else 'virginica'}\n"
              for i in range(30))
).encode()


def upload(client, headers: dict[str, str], raw: bytes, filename: str = "data.csv", **form: Any):  # noqa: ANN001, ANN201
    data = {"file": (io.BytesIO(raw), filename), **form}
    return client.post("/v1/datasets", data=data, headers=headers, content_type="multipart/form-data")


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def assert_problem(response, status: int, *needles: str) -> dict[str, Any]:  # noqa: ANN001
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status and body["title"] and isinstance(body["errors"], list)
    text = (body["detail"] + " " + " ".join(str(e) for e in body["errors"])).lower()
    for needle in needles:
        assert needle.lower() in text, f"{needle!r} not in {text!r}"
    return body


SMALL_SPEC = {
    "layers": [{"type": "dense", "units": 8, "activation": "relu"}, {"type": "dense", "activation": "softmax"}],
    "loss": "cross_entropy", "optimizer": {"type": "adam", "learning_rate": 0.01}, "epochs": 3, "batch_size": 8,
}


def store_trained_model(settings, tenant_name: str, raw: bytes, fmt: str, *, target: str | None,  # noqa: ANN001
                        spec: dict[str, Any], impute: str | None = None) -> str:
    """Train with the engine in-process (as the worker does) and store Job + Model rows;
    returns the model id."""
    from sqlalchemy import select

    from bps.db import session_scope
    from bps.models import Dataset, Job, Model, Tenant
    from bps.preprocessing import prepare_training_data
    from worker.engine import Network
    from worker.engine.spec import task_for_loss

    X, y, prep = prepare_training_data(raw, fmt, target=target, features=None, input_shape=None,
                                       task=spec["loss"], impute=impute)
    net = Network.from_spec(spec, input_shape=X.shape[1:], n_outputs=prep.n_outputs)
    net.fit(X, y)
    buffer = io.BytesIO()
    net.save(buffer)
    with session_scope(settings.database_url) as session:
        tenant = session.scalar(select(Tenant).where(Tenant.name == tenant_name))
        dataset = session.scalar(select(Dataset).where(Dataset.tenant_id == tenant.id))
        job = Job(tenant_id=tenant.id, dataset_id=dataset.id if dataset else "none", status="succeeded",
                  spec=net.spec, target=target, task=task_for_loss(spec["loss"]))
        session.add(job)
        session.flush()
        model = Model(tenant_id=tenant.id, job_id=job.id, task=prep.task, features=prep.features or None,
                      target=target, classes=prep.classes, input_shape=None, spec=net.spec,
                      metrics={"loss": 0.1}, preprocessing=prep.to_json(), weights=buffer.getvalue())
        session.add(model)
        session.flush()
        job.model_id = model.id
        return model.id
