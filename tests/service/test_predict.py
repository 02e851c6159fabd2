"""service/predict.py: inputs from each source, the per-process cache, stored Prediction rows."""
from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import update

from bps.db import session_scope
from bps.models import Model, Prediction, Tenant
from service.predict import clear_cache, create_prediction, get_prediction, numeric_instances
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


NUMERIC_RAW = ("a,b,c,label\n" + "".join(f"{i * 0.5},{(i % 7) - 3},{i * i / 10},{'y' if i % 2 else 'n'}\n"
                                         for i in range(30))).encode()


def numeric_preprocessor():  # noqa: ANN201
    from bps.preprocessing import prepare_training_data

    _X, _y, prep = prepare_training_data(NUMERIC_RAW, "csv", target="label", features=None, input_shape=None,
                                         task="cross_entropy")
    return prep


def test_the_numeric_fast_path_gives_exactly_what_the_general_path_gives() -> None:
    prep = numeric_preprocessor()
    rows = [[1.25, -2, 3.5], [0, 0, 0], [1e6, -1e-6, 7]]
    fast = numeric_instances(prep, rows)
    assert fast is not None and fast.dtype == np.float64 and fast.shape == (3, 3)
    np.testing.assert_array_equal(fast, prep.transform_instances(rows))


@pytest.mark.parametrize("rows", [
    [[1.0, 2.0]],  # too short: the general path names the features
    [[1.0, "2", 3.0]],  # text is parsed (or refused) by the general path
    [[1.0, None, 3.0]],  # missing: imputation or a 422 naming the column
    [[1.0, float("nan"), 3.0]],
    [[True, 2.0, 3.0]],  # bool is not a plain number here
    [[[1.0], 2.0, 3.0]],
    [(1.0, 2.0, 3.0)],
    [[10**400, 2.0, 3.0]],
])
def test_the_fast_path_leaves_anything_unusual_to_the_general_path(rows) -> None:  # noqa: ANN001
    assert numeric_instances(numeric_preprocessor(), rows) is None


def test_the_fast_path_skips_models_with_string_features() -> None:
    from bps.preprocessing import prepare_training_data

    raw = b"colour,x,label\nred,1,a\nblue,2,b\nred,3,a\nblue,4,b\n"
    _X, _y, prep = prepare_training_data(raw, "csv", target="label", features=None, input_shape=None,
                                         task="cross_entropy")
    assert numeric_instances(prep, [[1.0, 2.0]]) is None


def test_a_warm_prediction_answers_from_the_cache_and_still_checks_the_tenant(settings, trained) -> None:  # noqa: ANN001
    model_id, tenant_id = trained
    with session_scope(settings.database_url) as session:
        first = create_prediction(session=session, tenant_id=tenant_id, model_id=model_id, instances=[[2.5]],
                                  max_rows=10)
    with session_scope(settings.database_url) as session:  # the weights blob is no longer readable
        session.execute(update(Model).where(Model.id == model_id).values(weights=b"not an npz"))
    with session_scope(settings.database_url) as session:
        warm = create_prediction(session=session, tenant_id=tenant_id, model_id=model_id, instances=[[2.5]],
                                 max_rows=10)
        assert warm.predictions == first.predictions == ["hi"]
        with pytest.raises(NotFound):
            create_prediction(session=session, tenant_id="other", model_id=model_id, instances=[[2.5]], max_rows=10)


def test_a_cached_network_gives_each_thread_its_own_answers() -> None:
    # The engine's layers reuse scratch buffers, and matmul releases the GIL: without the
    # per-network lock, concurrent requests read each other's numbers.
    from concurrent.futures import ThreadPoolExecutor

    from service.predict import SerialNetwork
    from worker.engine import Network

    spec = {"layers": [{"type": "dense", "units": 256, "activation": "relu"}, {"type": "dense", "units": 3}],
            "loss": "mse", "device": "cpu"}
    net = SerialNetwork(Network.from_spec(spec, input_shape=(64,)))
    inputs = [np.random.default_rng(k).normal(size=(200, 64)) for k in range(8)]
    expected = [net.predict(x) for x in inputs]
    with ThreadPoolExecutor(8) as pool:
        for _ in range(5):
            results = list(pool.map(net.predict, inputs))
            for got, want in zip(results, expected, strict=True):
                np.testing.assert_array_equal(got, want)
