from __future__ import annotations

import json
import subprocess
import sys
import uuid

import mlflow
import numpy as np
import pandas as pd
import pytest

from homeprice_assets.resources.registry import Registry
from homeprice_assets.training import tracking as T
from homeprice_assets.training.model import HomePriceModel

from .conftest import Fitted


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    root = tmp_path_factory.mktemp("tracking")
    return Registry(
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        model_name=f"homeprice-test-{uuid.uuid4().hex[:8]}",
        artifact_location=(root / "artifacts").as_uri(),
    )


@pytest.fixture(scope="module")
def registered(
    fitted: Fitted, registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, str]:
    """(model URI, run id) of the fitted model saved as a pyfunc and registered as version 1."""
    model_dir = T.save_price_model(
        fitted.model, tmp_path_factory.mktemp("saved") / "model", T.input_example(fitted.split.train)
    )
    with registry.run(run_name="tracking-test") as run:
        version = registry.register(run, model_dir, tags={"trained_through": fitted.model.trained_through})
    assert version.status == "READY" and str(version.version) == "1"
    assert version.run_id == run.run_id
    return str(registry.download("1")), run.run_id


def test_registered_version_loads_as_the_model(fitted: Fitted, registry: Registry, registered: tuple) -> None:
    uri, _ = registered
    pyfunc, inner = registry.load("1")
    assert isinstance(inner, HomePriceModel)
    assert inner.locations == fitted.model.locations
    rows = fitted.inputs.head(25)
    pd.testing.assert_frame_equal(
        pyfunc.predict(rows).reset_index(drop=True), fitted.model.predict(None, rows).reset_index(drop=True)
    )
    # serving sends JSON: dates as strings, optional fields absent
    served = pyfunc.predict(
        rows.assign(sale_date=rows["sale_date"].dt.strftime("%Y-%m-%d")).drop(columns="lot_sf")
    )
    assert served["price"].notna().all()
    assert inner.explain(rows.head(3)).shape[0] == 3
    info = mlflow.models.get_model_info(uri)
    assert info.metadata["trained_through"] == fitted.model.trained_through
    assert registry.get_version("1").tags["trained_through"] == fitted.model.trained_through
    assert any(r.startswith("lightgbm==") for r in _requirements(uri))


def _requirements(uri: str) -> list[str]:
    path = mlflow.pyfunc.get_model_dependencies(uri)
    return [line.strip() for line in open(path) if line.strip()]


def test_loads_in_another_process(fitted: Fitted, registered: tuple[str, str]) -> None:
    uri, _ = registered
    rows = fitted.inputs.head(3)
    code = (
        "import sys, json, mlflow, pandas as pd\n"
        "from homeprice_assets.training.tracking import coerce_inputs\n"
        "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "rows = coerce_inputs(pd.read_json(sys.stdin, orient='split'))\n"
        "inner = m.unwrap_python_model()\n"
        "print(json.dumps({'price': m.predict(rows)['price'].tolist(), 'cls': type(inner).__name__,"
        " 'through': inner.trained_through}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, uri],
        input=rows.to_json(orient="split", date_format="iso"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["cls"] == "HomePriceModel" and out["through"] == fitted.model.trained_through
    np.testing.assert_allclose(out["price"], fitted.model.predict(None, rows)["price"], rtol=1e-9)


def test_feature_mismatch_names_the_columns(fitted: Fitted, registered: tuple[str, str]) -> None:
    uri, _ = registered
    good = fitted.inputs
    T.check_feature_mismatch(good, uri)  # the training table's inputs match
    with pytest.raises(T.FeatureMismatchError, match=r"missing column.*'bldg_grade'") as err:
        T.check_feature_mismatch(good.drop(columns=["bldg_grade"]), uri)
    assert err.value.missing == ["bldg_grade"]
    # serving may omit optional fields, but never a required one
    T.check_feature_mismatch(good.drop(columns=["bldg_grade", "sale_date"]), uri, require_optional=False)
    with pytest.raises(T.FeatureMismatchError, match="'living_sf'"):
        T.check_feature_mismatch(good.drop(columns=["living_sf"]), uri, require_optional=False)
    with pytest.raises(T.FeatureMismatchError) as err:
        T.check_feature_mismatch(good.assign(pool=1.0, beds=good["beds"].astype(str) + " beds"), uri)
    assert err.value.extra == ["pool"]
    assert err.value.retyped == {"beds": ("double", "string")}
    # JSON integers arrive as int64, which MLflow refuses for a double column; coerce_inputs fixes them
    ints = good.assign(living_sf=good["living_sf"].round().astype("int64"))
    with pytest.raises(T.FeatureMismatchError, match="'living_sf' \\(model expects double, got long\\)"):
        T.check_feature_mismatch(ints, uri)
    T.check_feature_mismatch(T.coerce_inputs(ints), uri)
    assert "retyped column(s) 'beds' (model expects double, got string)" in str(err.value)


def test_saving_drops_only_the_pickle_warning(
    fitted: Fitted, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    """MLflow's "Passing a Python object as `python_model`" at every save is by design here (the code goes
    with the model): dropped; MLflow's other messages still reach the log."""
    import logging

    with caplog.at_level(logging.INFO, logger="mlflow"):
        T.save_price_model(fitted.model, tmp_path / "model", T.input_example(fitted.split.train))
        logging.getLogger("mlflow.pyfunc").warning("another warning")
    messages = [r.getMessage() for r in caplog.records]
    assert not any("Passing a Python object" in m for m in messages)
    assert "another warning" in messages
