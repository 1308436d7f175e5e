"""Someone else's export, adopted through configuration alone: other column names, another date format,
no sale id, no parcel id, no coordinates. It lands, ingests, trains, promotes and serves: no code edited."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import requests

from homeprice_assets.config import BUNDLED_DATA, REPO_ROOT
from homeprice_assets.resources.registry import CHAMPION, Registry
from homeprice_assets_tests.helpers import stop_process_group
from homeprice_assets_tests.serving.conftest import Server, free_port, wait_ready, wait_up

pytestmark = pytest.mark.slow

CONFIG = """
data:
  columns:
    sale_price: price
    sale_date: date_of_sale
    living_sf: sqft_living
    location: district
    lot_sf: sqft_lot
    bldg_grade: grade
    waterfront: on_water
  date_format: "%d/%m/%Y"
training:
  window_months: 18
  validation_months: 2
  calibration_months: 3
  params: {num_boost_round: 300, early_stopping_rounds: 30}
  explain_sample: 200
"""


def _export(path: Path) -> pd.DataFrame:
    """The bundled sales as another agency exports them: renamed, day-first dates, no ids, no coordinates."""
    sales = pd.read_csv(BUNDLED_DATA, dtype=str)
    sales = sales[(sales["sale_date"] >= "2014-07") & (sales["sale_date"] < "2016-01")]
    out = sales.drop(columns=["sale_id", "pinx", "latitude", "longitude"]).rename(
        columns={
            "sale_price": "price",
            "sale_date": "date_of_sale",
            "tot_sf": "sqft_living",
            "area": "district",
            "lot_sf": "sqft_lot",
            "bldg_grade": "grade",
            "wfnt": "on_water",
        }
    )
    out["date_of_sale"] = pd.to_datetime(out["date_of_sale"]).dt.strftime("%d/%m/%Y")
    out.to_csv(path, index=False)
    return out


def test_an_export_without_ids_or_coordinates_trains_promotes_and_serves(tmp_path: Path) -> None:
    export = _export(tmp_path / "agency_export.csv")
    config = tmp_path / "homeprice.yaml"
    config.write_text(CONFIG)
    home = tmp_path / "home"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("HOMEPRICE_", "DAGSTER_HOME"))},
        "HOMEPRICE_HOME": str(home),
        "HOMEPRICE_CONFIG": str(config),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "BENTOML_HOME": str(tmp_path / "bentoml"),
    }
    homeprice = str(Path(sys.executable).with_name("homeprice"))
    done = subprocess.run(
        [homeprice, "run", "--source", str(tmp_path / "agency_export.csv")],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "ingested 18/18 month(s)" in done.stdout

    registry = Registry(tracking_uri=env["MLFLOW_TRACKING_URI"])
    champion = registry.version_number(CHAMPION)
    assert champion == "1"
    logged = registry.features_of(champion)
    assert not {"latitude", "longitude", "rot45_x", "rot45_y"} & set(logged["features"])
    assert not {"latitude", "longitude"} & set(logged["input_fields"])

    port = free_port()
    log_path = tmp_path / "serve.log"
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("bentoml")),
            "serve",
            "bento.service:HomePrice",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=REPO_ROOT,
        env={**env, "HOMEPRICE_SERVING_POLL_SECONDS": "1"},
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(f"http://127.0.0.1:{port}", proc, log_path, home / "predictions.db")
    try:
        wait_up(server)
        wait_ready(server)
        row = export.iloc[0]
        home_request = {"location": str(row["district"]), "living_sf": float(row["sqft_living"])}
        answer = requests.post(f"{server.url}/predict", json={"home": home_request}, timeout=60)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model_version"] == "1" and body["price"] > 0
        assert body["price_lower"] < body["price"] < body["price_upper"]
        info = requests.post(f"{server.url}/model_info", json={}, timeout=30).json()
        # The service describes the model it serves: a model trained without coordinates takes none.
        assert info["champion_version"] == "1"
        assert info["uses_coordinates"] is False
        assert not {"min_latitude", "max_latitude"} & set(info["bounds"])
    finally:
        stop_process_group(proc)
