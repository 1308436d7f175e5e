"""The landing zone: local folders, S3 on a local moto server, and the `homeprice land` command."""

import re
import subprocess
import sys
from pathlib import Path

import boto3
import pandas as pd
import pytest

from homeprice_assets.config import load_config
from homeprice_assets.ingest.landing import land_history
from homeprice_assets.resources.landing import (
    LocalLandingZone,
    S3LandingZone,
    landing_zone_from_url,
    month_of,
)
from homeprice_assets_tests.helpers import check_results, ingest_month

CONFIG = load_config().data


@pytest.fixture
def s3_endpoint(moto_s3: str) -> str:
    """moto's S3 server with a bucket of sales."""
    boto3.client("s3", endpoint_url=moto_s3).create_bucket(Bucket="sales")
    return moto_s3


def test_month_of_paths() -> None:
    assert month_of("sales_2014-06.csv") == "2014-06"
    assert month_of("2014-06/export.parquet") == "2014-06"
    assert month_of("2013-01/sales_2014-06.csv") == "2014-06"  # the most specific (last) wins
    assert month_of("sales.csv") is None
    assert month_of("2014-13.csv") is None


def test_landing_url_picks_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOMEPRICE_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    s3 = landing_zone_from_url("s3://bucket/some/prefix")
    assert isinstance(s3, S3LandingZone) and (s3.bucket, s3.prefix) == ("bucket", "some/prefix")
    assert s3.endpoint_url == "http://127.0.0.1:9"
    local = landing_zone_from_url(str(tmp_path))
    assert isinstance(local, LocalLandingZone) and local.describe() == str(tmp_path)
    with pytest.raises(ValueError, match="no bucket"):
        landing_zone_from_url("s3:///prefix")
    with pytest.raises(ValueError, match="unsupported scheme 'gs'"):
        landing_zone_from_url("gs://bucket/x")


def test_s3_landing_zone_end_to_end(s3_endpoint: str, instance, storage, bundled_sales) -> None:
    zone = S3LandingZone(bucket="sales", prefix="seattle/incoming", endpoint_url=s3_endpoint)
    months = land_history(zone, CONFIG, since="2016-01", until="2016-02")
    files = zone.list_files()
    assert [f.key for f in files] == ["sales_2016-01.csv", "sales_2016-02.csv"]
    assert all(len(f.fingerprint) == 32 for f in files)  # S3 ETags
    objects = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket="sales")["Contents"]
    assert {o["Key"] for o in objects} == {f"seattle/incoming/sales_{m}.csv" for m in months}
    result = ingest_month("2016-02", instance, zone, storage)
    assert result.success
    clean = result.output_for_node("clean_sales", "clean_sales")
    assert len(clean) == bundled_sales["sale_date"].str.startswith("2016-02").sum()


def test_land_command(tmp_path: Path) -> None:
    env_home = tmp_path / "home"
    cmd = [sys.executable, "-m", "homeprice_assets.cli", "land", "--until", "2010-03"]
    env = {"HOMEPRICE_HOME": str(env_home), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "landed 3 month(s) 2010-01..2010-03" in done.stdout
    assert sorted(p.name for p in (env_home / "landing").iterdir()) == [
        "sales_2010-01.csv",
        "sales_2010-02.csv",
        "sales_2010-03.csv",
    ]
    bad = subprocess.run([*cmd[:-1], "2010-3x"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "until: expected a month like 2014-06, got '2010-3x'" in bad.stderr


def test_ingest_command_runs_only_months_whose_files_changed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"HOMEPRICE_HOME": str(home), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "homeprice_assets.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    cli("land", "--since", "2012-01", "--until", "2012-02")
    assert "ingested 2/2 month(s): 2 ran, 0 unchanged" in cli("ingest")
    assert "ingested 2/2 month(s): 0 ran, 2 unchanged" in cli("ingest")
    (home / "landing" / "2012-02").mkdir()
    (home / "landing" / "2012-02" / "late.csv").write_text(
        (home / "landing" / "sales_2012-02.csv").read_text().splitlines()[0] + "\n"
    )  # a header-only file
    assert "ingested 2/2 month(s): 1 ran, 1 unchanged" in cli("ingest")
    # the instance is the repository's dagster.yaml, with its storage under the project home
    assert (home / "dagster").is_dir()


def test_s3_landing_and_s3_asset_storage(s3_endpoint: str, instance) -> None:
    """The production shape: sales land in S3 and every asset is stored in S3, up to the training split."""
    import dagster as dg

    from homeprice_assets.resources.config import ProjectConfigResource
    from homeprice_assets.resources.storage import S3ParquetStorage, storage_from_url
    from homeprice_assets.training.assets import model_datasets
    from homeprice_assets_tests.helpers import INGEST_ASSETS

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="assets")
    zone = S3LandingZone(bucket="sales", prefix="in", endpoint_url=s3_endpoint)
    storage = S3ParquetStorage(bucket="assets", prefix="homeprice", endpoint_url=s3_endpoint)
    months = land_history(zone, CONFIG, since="2013-01", until="2013-04")
    for month in months:
        assert ingest_month(month, instance, zone, storage).success
    result = dg.materialize(
        [*INGEST_ASSETS, model_datasets],
        selection=["training_set", "validation_set"],
        instance=instance,
        resources={"landing": zone, "io_manager": storage, "settings": ProjectConfigResource()},
    )
    train = result.output_for_node("model_datasets", "training_set")
    assert sorted(train["sale_month"].unique()) == ["2013-01"]
    keys = {
        o["Key"]
        for o in boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket="assets")["Contents"]
    }
    assert {f"homeprice/sale_features/{m}.parquet" for m in months} <= keys
    assert {"homeprice/training_set.parquet", "homeprice/validation_set.parquet"} <= keys
    chosen = storage_from_url("s3://assets/homeprice")
    assert isinstance(chosen, S3ParquetStorage) and (chosen.bucket, chosen.prefix) == ("assets", "homeprice")


def test_land_reads_the_history_as_ingest_reads_the_landed_files(
    tmp_path: Path, bundled_sales, instance, storage
) -> None:
    """A history in the user's own format (semicolons, decimal commas, day.month.year dates, latin-1):
    ``land`` once ignored ``data.read`` (a date format there failed it, a missing one let pandas guess)."""
    from homeprice_assets.resources.config import ProjectConfigResource

    rows = bundled_sales[bundled_sales["sale_date"].str.startswith(("2015-11", "2015-12"))].copy()
    rows["baths"] = rows["baths"].str.replace(".", ",", regex=False)
    rows["sale_date"] = pd.to_datetime(rows["sale_date"]).dt.strftime("%d.%m.%Y")
    rows.loc[rows.index[:2], "sale_date"] = ["31.02.2015", "03.11.2115"]  # unreadable, in the future
    source = tmp_path / "export.csv"
    source.write_bytes(rows.to_csv(index=False, sep=";").encode("latin-1"))
    read = {"delimiter": ";", "decimal": ",", "date_format": "%d.%m.%Y", "encoding": "latin-1"}
    settings = ProjectConfigResource(overrides={"data": {"read": read}})
    zone = LocalLandingZone(root=str(tmp_path / "landing"))
    notes: list[str] = []
    months = land_history(zone, settings.get().data, source=source, report=notes.append)
    assert months == ["2015-11", "2015-12"]
    assert notes == [
        "2 row(s) with a missing, unreadable or future sale date are in sales_undated.csv, which ingest "
        "lists as in no month and leaves out: correct them, land again"
    ]
    result = ingest_month("2015-12", instance, zone, storage, settings=settings)
    assert result.success
    clean = result.output_for_node("clean_sales", "clean_sales")
    assert len(clean) == (rows["sale_date"].str.endswith("12.2015")).sum()
    assert clean["baths"].notna().all() and (clean["baths"] % 1 != 0).any()  # decimal commas read
    assert len(result.output_for_node("clean_sales", "quarantined_sales")) == 0
    # the undated rows hold back no month (all of them in the newest one failed its quarantine_rate)
    [aside] = zone.scan(settings.get().data).set_aside
    assert aside.key == "sales_undated.csv" and "no parsable date" in aside.reason

    # month/day/year dates and no date format: land refuses, naming what it tried; a file landed by other
    # means fails its month, and the check shows a value and the setting
    us = rows.assign(sale_date=pd.to_datetime(bundled_sales["sale_date"]).dt.strftime("%m/%d/%Y"))
    (tmp_path / "us.csv").write_text(us.to_csv(index=False))
    with pytest.raises(ValueError, match=r"no value of column 'sale_date' reads as ISO 8601 .*'%m/%d/%Y'"):
        land_history(zone, CONFIG, source=tmp_path / "us.csv")
    zone.write_bytes("2015-11/us.csv", (tmp_path / "us.csv").read_bytes())
    failed = ingest_month("2015-11", instance, zone, storage)
    check = check_results(failed, "2015-11")["quarantine_rate"]
    assert not check.passed
    assert re.search(r"e.g. unparsable_date sale_date=1[12]/\d\d/2015 ", check.description)
    assert (
        "(dates are read as ISO 8601 unless a date format is set: set data.read.date_format"
        in check.description
    )
