"""The production instance profile (deploy/postgres) on the real PostgreSQL server: the ingest job runs."""

import os

import dagster as dg
import pytest
import sqlalchemy as sa

from homeprice_assets.config import REPO_ROOT, load_config
from homeprice_assets.ingest.landing import land_history
from homeprice_assets_tests.helpers import ingest_month

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_instance(monkeypatch: pytest.MonkeyPatch, tmp_path):
    schema = "homeprice_test_dagster"
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    monkeypatch.setenv("HOMEPRICE_DAGSTER_PG_URL", url)
    monkeypatch.setenv("DAGSTER_HOME", str(REPO_ROOT / "deploy" / "postgres"))
    monkeypatch.setenv("HOMEPRICE_DAGSTER_STORAGE", str(tmp_path / "dagster-local"))
    instance = dg.DagsterInstance.get()
    yield instance
    instance.dispose()
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))


def test_ingest_on_postgres_instance(pg_instance, landing, storage) -> None:
    assert type(pg_instance.run_storage).__name__ == "PostgresRunStorage"
    land_history(landing, load_config().data, since="2011-05", until="2011-05")
    result = ingest_month("2011-05", pg_instance, landing, storage)
    assert result.success
    assert pg_instance.get_dynamic_partitions("sale_month") == ["2011-05"]
    assert "2011-05" in pg_instance.get_materialized_partitions(dg.AssetKey("sale_features"))
    assert os.environ["DAGSTER_HOME"].endswith("deploy/postgres")
    assert not (REPO_ROOT / "deploy" / "postgres" / "storage").exists()
