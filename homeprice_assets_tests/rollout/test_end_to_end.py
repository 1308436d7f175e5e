"""Replaying months against the real service, prediction log, registry and Dagster assets and sensor.

Models are trained through 2014-06 on the bundled sales. For each later month M the homes that sold in M
are priced by the service *before* M lands (valued as of a date 30+ days before the month), then M lands,
is ingested, ``ground_truth[M]`` and ``rollout_evaluation`` are materialized and the ``rollout_actions``
sensor ticks, as the daemon would run them:

- 2014-07, shadow: a better candidate (v3) against a weak champion (v1): ``inconclusive`` while the
  minimum sample is out of reach, then ``promote``;
- 2014-08, A/B at 20%: a candidate trained on shuffled prices (v2) is ``stop``ped; the champion stays;
- 2014-09: v2 forced to champion with ``homeprice rollback --to 2``: rolled back to ``previous`` by the
  sensor after one evaluation, with an alert carrying the figures to a loopback webhook.
"""

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow import MlflowClient

from homeprice_assets.cli import main as homeprice
from homeprice_assets.config import load_config
from homeprice_assets.features.engineering import feature_table
from homeprice_assets.ingest.assets import clean_sales, raw_sales
from homeprice_assets.ingest.landing import land_history
from homeprice_assets.ingest.rules import clean_sales as clean_rows
from homeprice_assets.monitoring.notify import Notifier
from homeprice_assets.partitions import register_months
from homeprice_assets.resources.config import ProjectConfigResource
from homeprice_assets.resources.landing import LocalLandingZone
from homeprice_assets.resources.registry import ModelRegistry, Registry
from homeprice_assets.resources.storage import ParquetStorage
from homeprice_assets.rollout.assets import PredictionLogResource, ground_truth, rollout_evaluation
from homeprice_assets.rollout.sensors import build_rollout_actions_sensor
from homeprice_assets.rollout.state import current_state
from homeprice_assets.training.metrics import mdape
from homeprice_assets.training.model import fit_price_model
from homeprice_assets.training.splits import time_split
from homeprice_assets.training.tracking import coerce_inputs, input_example
from homeprice_assets_tests.helpers import project_instance, register_model
from homeprice_assets_tests.monitoring.conftest import WebhookReceiver, webhook  # noqa: F401 (fixture)
from homeprice_assets_tests.serving.conftest import home_payload, start_server, stop_server, wait_ready

pytestmark = pytest.mark.slow
NAME = "homeprice-e2e"
TRAINED_THROUGH = "2014-06"


@dataclass
class World:
    home: Path
    uri: str
    reg: Registry
    instance: dg.DagsterInstance
    landing: LocalLandingZone
    storage: ParquetStorage
    log_url: str
    notifier: Notifier
    clean: pd.DataFrame
    server: object
    cursor: str | None = None

    def resources(self, **rollout: object) -> dict:
        overrides = {"rollout": {"min_pairs": 100, "rollback": {"failure_limit": 1}} | rollout}
        return {
            "settings": ProjectConfigResource(overrides=overrides),
            "registry": ModelRegistry(tracking_uri=self.uri, model_name=NAME),
            "prediction_log": PredictionLogResource(url=self.log_url),
            "landing": self.landing,
            "io_manager": self.storage,
            "notifier": self.notifier,
        }

    def value_homes_of(self, month: str) -> int:
        """The homes that will sell in ``month``, priced now as of 31 days before the month starts."""
        sold = self.clean[self.clean["sale_month"] == month]
        as_of = str((pd.Timestamp(f"{month}-01") - pd.Timedelta(days=31)).date())
        homes = [
            home_payload(r) | {"parcel_id": str(r["parcel_id"]), "sale_date": as_of}
            for _, r in sold.iterrows()
        ]
        for i in range(0, len(homes), 250):
            r = requests.post(
                f"{self.server.url}/predict_batch", json={"homes": homes[i : i + 250]}, timeout=120
            )
            assert r.status_code == 200, r.text[:300]
        self.wait_logged()
        return len(homes)

    def wait_logged(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            info = requests.post(f"{self.server.url}/model_info", json={}, timeout=10).json()
            if info["shadow_pending"] == 0 and info["log_pending"] == 0:
                time.sleep(0.3)  # the last insert commits
                return
            time.sleep(0.2)
        raise AssertionError("prediction log did not drain")

    def follow(self, **expected: object) -> dict:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = requests.post(f"{self.server.url}/model_info", json={}, timeout=10).json()
            if all(info.get(k) == v for k, v in expected.items()):
                return info
            time.sleep(0.2)
        raise AssertionError(f"service did not follow {expected}: {info}")

    def land(self, month: str) -> None:
        land_history(self.landing, load_config().data, since=month, until=month)
        register_months(self.instance, [month])
        result = dg.materialize(
            [raw_sales, clean_sales], partition_key=month, instance=self.instance, resources=self.resources()
        )
        assert result.success

    def ground_truth(self, month: str) -> dict:
        result = dg.materialize(
            [raw_sales, clean_sales, ground_truth],
            selection=[ground_truth],
            partition_key=month,
            instance=self.instance,
            resources=self.resources(),
        )
        assert result.success
        return result.asset_materializations_for_node("ground_truth")[0].metadata

    def evaluate(self, **rollout: object) -> dict:
        result = dg.materialize(
            [raw_sales, clean_sales, ground_truth, rollout_evaluation],
            selection=[rollout_evaluation],
            instance=self.instance,
            resources=self.resources(**rollout),
        )
        assert result.success
        return {
            k: v.value
            for k, v in result.asset_materializations_for_node("rollout_evaluation")[0].metadata.items()
        }

    def tick(self) -> None:
        sensor = build_rollout_actions_sensor()
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources=self.resources()
        )
        data = sensor.evaluate_tick(context)
        self.cursor = data.cursor
        for event in data.asset_events:  # as the daemon records them: the Bento follows the champion
            self.instance.report_runless_asset_event(event)


def _register(reg: Registry, model, train: pd.DataFrame, validation: pd.DataFrame) -> str:
    version = register_model(reg, model, input_example(train))
    out = model.predict(None, coerce_inputs(validation[list(model.input_fields)]))
    run_id = reg.get_version(version).run_id
    reg.client.log_metric(
        run_id, "val_mdape", mdape(validation["sale_price"], out["price"])
    )  # as validation does
    return version


@pytest.fixture
def world(
    tmp_path: Path,
    bundled_sales: pd.DataFrame,
    webhook: WebhookReceiver,  # noqa: F811 (the imported fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[World]:
    home = tmp_path / "home"
    home.mkdir()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("HOMEPRICE_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("HOMEPRICE_MODEL_NAME", NAME)
    clean = clean_rows(bundled_sales, load_config().data).clean
    split = time_split(feature_table(clean), validation_months=1, window_months=13, end_month=TRAINED_THROUGH)
    train, validation = split.train, split.validation
    weak = fit_price_model(train, {"num_boost_round": 6, "use_market_index": False})
    shuffled = train.assign(sale_price=np.random.default_rng(0).permutation(train["sale_price"].to_numpy()))
    bad = fit_price_model(shuffled, {"num_boost_round": 60})
    good = fit_price_model(train, {"num_boost_round": 200})
    reg = Registry(tracking_uri=uri, model_name=NAME)
    assert [_register(reg, m, train, validation) for m in (weak, bad, good)] == ["1", "2", "3"]
    reg.promote("1", "first model")
    log_url = f"sqlite:///{tmp_path / 'predictions.db'}"
    server = start_server(
        SimpleNamespace(uri=uri, home=home),
        tmp_path,
        poll_seconds=0.3,
        extra_env={"HOMEPRICE_MODEL_NAME": NAME, "HOMEPRICE_PREDICTION_LOG_URL": log_url},
    )
    notifier = Notifier(
        slack_webhook_url=webhook.url, dedup_db=str(tmp_path / "alerts.sqlite"), dedup_minutes=60
    )
    try:
        wait_ready(server)
        with project_instance(tmp_path / "dagster") as instance:
            yield World(
                home,
                uri,
                reg,
                instance,
                LocalLandingZone(root=str(home / "landing")),
                ParquetStorage(base_dir=str(home / "storage")),
                log_url,
                notifier,
                clean,
                server,
            )
    finally:
        stop_server(server)


def test_replayed_months_promote_stop_and_roll_back(
    world: World,
    webhook: WebhookReceiver,  # noqa: F811 (the imported fixture)
    capsys: pytest.CaptureFixture[str],
) -> None:
    figures: dict[str, dict] = {}
    # ---- 2014-07: shadow; the better v3 against the weak champion v1
    assert homeprice(["rollout", "start", "--mode", "shadow", "--version", "3"]) == 0
    world.follow(rollout_mode="shadow", candidate_version="3", champion_version="1")
    world.value_homes_of("2014-07")
    world.land("2014-07")
    gt = world.ground_truth("2014-07")
    assert gt["v1_champion_n"].value > 300 and gt["v3_shadow_n"].value == gt["v1_champion_n"].value
    assert gt["sales_without_prediction"].value == gt["sales"].value - gt["matched_sales"].value
    few = world.evaluate(min_pairs=100_000)
    assert few["decision"] == "inconclusive" and "too few pairs" in few["reason"]
    world.tick()
    assert current_state(world.reg).candidate == "3"  # inconclusive: nothing happens
    won = world.evaluate()
    figures["shadow"] = won
    assert won["decision"] == "promote", won["reason"]
    assert won["mdape_candidate"] < won["mdape_champion"] and won["statistic"] >= won["boundary"]
    assert Path(won["report"]).is_file() and "Decision: promote" in Path(won["report"]).read_text()
    assert MlflowClient(world.uri).get_run(won["mlflow_run_id"]).info.status == "FINISHED"
    world.tick()
    state = current_state(world.reg)
    assert (state.champion, state.previous, state.active) == ("3", "1", False)
    assert any("promoted homeprice-e2e v3" in t for t in webhook.texts())
    world.follow(champion_version="3", rollout_mode="off")

    # ---- 2014-08: A/B at 20%; v2 (shuffled prices) loses and is stopped, v3 stays
    assert homeprice(["rollout", "start", "--mode", "ab", "--weight", "0.2", "--version", "2"]) == 0
    world.follow(rollout_mode="ab", candidate_version="2")
    world.value_homes_of("2014-08")
    world.land("2014-08")
    world.ground_truth("2014-08")
    lost = world.evaluate()
    figures["ab"] = lost
    assert lost["decision"] == "stop", lost["reason"]
    assert lost["mdape_candidate"] > lost["mdape_champion"]
    share = lost["comparison"]["n_candidate"] / (
        lost["comparison"]["n_candidate"] + lost["comparison"]["n_champion"]
    )
    assert abs(share - 0.2) < 0.05, share
    world.tick()
    state = current_state(world.reg)
    assert (state.champion, state.active) == ("3", False)
    assert any("stopped candidate homeprice-e2e v2" in t for t in webhook.texts())

    # ---- 2014-09: v2 forced to champion; the sensor rolls it back after one evaluation
    assert homeprice(["rollback", "--to", "2"]) == 0
    world.follow(champion_version="2", previous_version="3")
    world.value_homes_of("2014-09")
    world.land("2014-09")
    started = time.perf_counter()
    world.ground_truth("2014-09")
    broken = world.evaluate()
    world.tick()
    elapsed = time.perf_counter() - started
    figures["rollback"] = broken | {"seconds_from_ground_truth_to_rollback": elapsed}
    assert broken["champion_broken"] and broken["champion_version"] == "2"
    state = current_state(world.reg)
    assert (state.champion, state.previous) == ("3", "2")
    record = state.last_action
    assert record["kind"] == "rollback" and "live PPE10" in record["reason"]
    assert record["figures"]["live_n"] > 100 and record["figures"]["consecutive_evaluations"] == 1
    # the rollback is a promoted_model event too, so the bento asset rebuilds around v3
    moved = world.instance.get_latest_materialization_event(dg.AssetKey("promoted_model"))
    assert moved.asset_materialization.metadata["champion_version"].value == "3"
    assert moved.asset_materialization.metadata["decision"].value == "rollback"
    # the live figures per version, as the registry carries them for the services' Prometheus gauges
    live = state.live
    assert live == broken["live_by_version"] and {"1", "2", "3"} <= set(live)
    assert live["2"]["ppe10"] < live["3"]["ppe10"] and live["2"]["months"] == ["2014-08", "2014-09"]
    assert world.reg.get_version("2").tags["live_matched_sales"] == str(live["2"]["n"])
    alert = next(t for t in webhook.texts() if "Rollback" in t)
    assert "v2 -> v3" in alert and "live PPE10" in alert and "live_mdape=" in alert
    world.follow(champion_version="3")
    (world.home / "rollout_e2e_figures.json").write_text(json.dumps(figures, default=str, indent=1))
    with capsys.disabled():
        for scenario, f in figures.items():
            print(
                f"\n[rollout e2e] {scenario}: decision={f['decision']} n_pairs={f['n_pairs']} "
                f"mdape_candidate={f['mdape_candidate']:.4f} mdape_champion={f['mdape_champion']:.4f} "
                f"statistic={f['statistic']:.2f} boundary={f['boundary']:.2f} "
                f"champion_broken={f['champion_broken']} health={f['champion_health']['metrics']} "
                f"breaches={f['champion_health']['breaches']} "
                f"seconds_to_rollback={f.get('seconds_from_ground_truth_to_rollback', '-')}"
            )
