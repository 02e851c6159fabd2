"""bps/predict.py: inputs from each source, the per-process cache, stored Prediction rows."""
from __future__ import annotations

import numpy as np
import pytest

from bps.db import session_scope
from bps.models import Prediction, Tenant
from bps.predict import clear_cache, create_prediction, get_prediction
from bps.problems import NotFound, PayloadTooLarge
from tests.service.helpers import store_trained_model

RAW = ("x,label\n" + "".join(f"{v},{'hi' if v > 0 else 'lo'}\n" for v in np.linspace(-3, 3, 40))).encode()
SPEC = {"layers": [{"type": "dense", "units": 8, "activation": "tanh"}, {"type": "dense", "activation": "softmax"}],
        "loss": "cross_entropy", "optimizer": {"type": "adam", "learning_rate": 0.05}, "epochs": 80, "batch_size": 8}


@pytest.fixture
def trained(settings) -> tuple[str, str]:  # noqa: ANN001
    clear_cache()
    with session_scope(settings.database_url) as session:
        session.add(Tenant(name="t"))
    model_id = store_trained_model(settings, "t", RAW, "csv", target="label", spec=SPEC)
    with session_scope(settings.database_url) as session:
        return model_id, session.query(Tenant).one().id


def test_predict_records_and_store(settings, trained) -> None:  # noqa: ANN001
    model_id, tenant_id = trained
    with session_scope(settings.database_url) as session:
        row = create_prediction(session=session, tenant_id=tenant_id, model_id=model_id,
                                records=[{"x": -2.5}, {"x": 2.5}], max_rows=10)
    with session_scope(settings.database_url) as session:
        stored = get_prediction(session=session, tenant_id=tenant_id, prediction_id=row.id)
        assert stored.predictions == ["lo", "hi"] and stored.n == 2 and len(stored.probabilities[0]) == 2
        with pytest.raises(NotFound):
            get_prediction(session=session, tenant_id="other", prediction_id=row.id)
        with pytest.raises(NotFound):
            create_prediction(session=session, tenant_id="other", model_id=model_id, instances=[[1]], max_rows=10)
        with pytest.raises(PayloadTooLarge):
            create_prediction(session=session, tenant_id=tenant_id, model_id=model_id, instances=[[1]] * 11,
                              max_rows=10)
        assert session.query(Prediction).count() == 1
