"""MLflow tracking and registry on the real PostgreSQL server, through the same resource and helpers."""

import uuid
from collections.abc import Iterator

import mlflow
import pandas as pd
import pytest
import sqlalchemy as sa

from homeprice_assets.resources.registry import CHAMPION, ModelRegistry
from homeprice_assets.training.model import fit_price_model
from homeprice_assets.training.splits import time_split
from homeprice_assets.training.tracking import input_example, save_price_model

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
    reg = ModelRegistry(
        tracking_uri=pg_tracking_uri,
        artifact_location=(tmp_path / "artifacts").as_uri(),
        model_name="homeprice-pg",
    ).get()
    split = time_split(features, validation_months=1, window_months=13, end_month="2013-01")
    model = fit_price_model(split.train, {"num_boost_round": 50})
    model_dir = save_price_model(model, tmp_path / "model", input_example(split.train))
    with reg.run("pg-train") as run:
        version = reg.register(run, model_dir)
    assert reg.promote(version.version, reason="first").changed
    assert reg.client.get_run(run.run_id).info.status == "FINISHED"
    assert reg.version_number(CHAMPION) == "1"
    assert not mlflow.get_tracking_uri().startswith("postgresql")  # nothing pointed MLflow here globally
    pyfunc, inner = reg.load("1")
    prices = pyfunc.predict(split.validation[inner.input_fields])["price"]
    assert len(prices) == len(split.validation) and (prices > 0).all()
