"""MLflow tracking and registry on the real PostgreSQL server, through the same resource and helpers."""

import uuid
from collections.abc import Iterator

import pandas as pd
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient

from homeprice_assets.resources.mlflow import MlflowTracking
from homeprice_assets.training.model import fit_price_model
from homeprice_assets.training.splits import time_split
from homeprice_assets.training.tracking import (
    CHAMPION,
    alias_version,
    input_example,
    load_price_model,
    log_price_model,
    model_uri,
    promote,
)

SERVER = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture
def pg_tracking_uri() -> Iterator[str]:
    """A throwaway database for MLflow's tables."""
    name = f"homeprice_mlflow_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    yield f"{SERVER}/{name}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


def test_runs_models_and_aliases_on_postgres(pg_tracking_uri: str, features: pd.DataFrame, tmp_path) -> None:
    tracking = MlflowTracking(
        tracking_uri=pg_tracking_uri,
        artifact_location=(tmp_path / "artifacts").as_uri(),
        registered_model_name="homeprice-pg",
    )
    split = time_split(features, validation_months=1, window_months=13, end_month="2013-01")
    model = fit_price_model(split.train, {"num_boost_round": 50})
    with tracking.run("pg-train") as run:
        info = log_price_model(model, input_example(split.train), registered_model_name="homeprice-pg")
    assert promote(str(info.registered_model_version), "homeprice-pg").changed
    client = MlflowClient(tracking_uri=pg_tracking_uri)
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert str(alias_version(CHAMPION, "homeprice-pg").version) == "1"
    pyfunc, inner = load_price_model(model_uri(CHAMPION, "homeprice-pg"))
    prices = pyfunc.predict(split.validation[inner.input_fields])["price"]
    assert len(prices) == len(split.validation) and (prices > 0).all()
