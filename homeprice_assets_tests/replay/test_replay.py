"""The replay: a short window through the real Dagster job, and every figure of its report recomputed from the
prediction logs, the registries and the Dagster instances it left behind (no invented numbers)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from homeprice_assets.config import load_config
from homeprice_assets.replay.assets import replay_report
from homeprice_assets.replay.cache import FitCache, fit_key
from homeprice_assets.replay.policies import GATES_OFF, POLICIES, merge, resolve
from homeprice_assets.replay.runner import ReplaySpec, month_range, open_instance, policy_paths
from homeprice_assets.replay.sensors import live_error_breach
from homeprice_assets.resources.registry import ModelRegistry
from homeprice_assets_tests.helpers import project_instance

SMALL = {
    "training": {
        "params": {"num_boost_round": 40, "learning_rate": 0.2, "early_stopping_rounds": 10},
        "explain_sample": 50,
        "validation_months": 1,
        "calibration_months": 1,
        "early_stopping_months": 1,
    }
}
POLICY_NAMES = ["monthly_no_gates", "never"]


# ------------------------------------------------------------------------------------------ pure pieces
def test_policies_are_valid_configuration_overrides() -> None:
    for policy in POLICIES.values():
        config = load_config(None, policy.config_overrides(SMALL))  # validated by the real schema
        assert config.training.params["num_boost_round"] == 40
        if not policy.gates:
            assert config.promotion.max_churn is None and config.promotion.max_mdape == GATES_OFF["max_mdape"]
    assert load_config(
        None, POLICIES["monthly"].config_overrides({})
    ).monitoring.automation.retrain_policy == ("new_data")
    with pytest.raises(ValueError, match="policy: unknown \\['sometimes'\\]"):
        resolve(["monthly", "sometimes"])
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}


def test_month_range_names_a_bad_window() -> None:
    assert month_range("2015-11", "2016-02") == ["2015-11", "2015-12", "2016-01", "2016-02"]
    with pytest.raises(ValueError, match="to: 2015-01 is before from: 2016-01"):
        month_range("2016-01", "2015-01")
    with pytest.raises(ValueError, match="from/to: expected YYYY-MM"):
        month_range("2016-13", "2017-01")


def test_live_error_trigger_needs_enough_sales_and_a_real_excess() -> None:
    health = {"metrics": {"mdape": 0.12, "n": 300}, "offline_mdape": 0.10}
    assert "live MdAPE 12.00% > offline 10.00% x 1.1" in live_error_breach(health, 0.1, 30)
    assert live_error_breach(health, 0.25, 30) is None
    assert live_error_breach({**health, "metrics": {"mdape": 0.5, "n": 10}}, 0.1, 30) is None
    assert live_error_breach({"metrics": {}, "offline_mdape": None}, 0.1, 30) is None


def test_fit_cache_fits_once_per_data_and_settings(tmp_path: Path) -> None:
    calls: list[int] = []

    def fit(frame: pd.DataFrame, params: dict, **kwargs: object) -> dict:
        calls.append(len(frame))
        return {"rows": len(frame), "params": params}

    frame = pd.DataFrame({"sale_month": ["2014-01", "2014-02"], "x": [1.0, 2.0]})
    cache = FitCache(tmp_path)
    assert cache.fit(fit, frame, {"a": 1}, level=0.8) == {"rows": 2, "params": {"a": 1}}
    assert FitCache(tmp_path).fit(fit, frame.copy(), {"a": 1}, level=0.8)["rows"] == 2  # another process
    cache.fit(fit, frame, {"a": 2}, level=0.8)
    assert calls == [2, 2]
    assert [r.hit for r in cache.records] == [False, False]
    assert fit_key(frame, {"a": 1}, level=0.8) != fit_key(frame.iloc[:1], {"a": 1}, level=0.8)


# ------------------------------------------------------------------------------------------ the replay
@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReplaySpec, dg.ExecuteInProcessResult, str]:
    """2014-01..2014-02 after a first model trained on 2013-07..2013-12, through ``replay_job``'s asset."""
    tmp = tmp_path_factory.mktemp("replay")
    uri = f"sqlite:///{tmp / 'project_mlflow.db'}"
    config = {
        "start": "2014-01",
        "end": "2014-02",
        "policies": POLICY_NAMES,
        "history_start": "2013-07",
        "overrides_json": json.dumps(SMALL),
        "home": str(tmp / "replay"),
    }
    with project_instance() as instance:
        result = dg.materialize(
            [replay_report],
            instance=instance,
            resources={"registry": ModelRegistry(tracking_uri=uri)},
            run_config={"ops": {"replay_report": {"config": config}}},
        )
    assert result.success
    spec = ReplaySpec.from_json((tmp / "replay" / "spec.json").read_text())
    return spec, result, uri


def _report(spec: ReplaySpec) -> dict:
    return json.loads((Path(spec.home) / "report" / "replay_report.json").read_text())


def _answers(db: Path, sales: pd.DataFrame, embargo_days: int, horizon_months: int) -> pd.DataFrame:
    """Recomputed here with plain SQL: each sale's latest answer valued in [sale - horizon, sale -
    embargo]."""
    with sqlite3.connect(db) as conn:
        log = pd.read_sql(
            "SELECT parcel_id, model_version, model_role, created_at, inputs, price, price_lower, "
            "price_upper FROM predictions WHERE model_role IN ('champion', 'candidate')",
            conn,
        )
    asked = pd.to_datetime(log["inputs"].map(lambda s: json.loads(s).get("sale_date")))
    created = pd.to_datetime(log["created_at"], format="mixed", utc=True).dt.tz_localize(None)
    log = log.assign(valued_at=np.minimum(asked, created), created=created)
    out = []
    for sale in sales.itertuples():
        mine = log[log["parcel_id"] == str(sale.parcel_id)]
        date = pd.Timestamp(sale.sale_date)
        ok = mine[
            (mine["valued_at"] <= date - pd.Timedelta(days=embargo_days))
            & (mine["valued_at"] >= date - pd.DateOffset(months=horizon_months))
        ]
        if len(ok):
            last = ok.sort_values(["valued_at", "created"]).iloc[-1]
            out.append({"month": sale.sale_month, "y": sale.sale_price, **last.to_dict()})
    return pd.DataFrame(out)


@pytest.mark.slow
def test_report_figures_are_the_logs_and_the_registry(replayed) -> None:
    spec, _result, _uri = replayed
    doc = _report(spec)
    rollout = load_config().rollout
    assert doc["spec"]["start"] == "2014-01" and doc["spec"]["overrides"] == SMALL
    for name in POLICY_NAMES:
        paths = policy_paths(spec, name)
        sales = pd.concat(
            pd.read_parquet(paths.storage / "clean_sales" / f"{m}.parquet") for m in ("2014-01", "2014-02")
        )
        answers = _answers(paths.home / "predictions.db", sales, rollout.embargo_days, rollout.horizon_months)
        assert len(answers) > 300  # most homes that sold were valued ahead of the sale
        monthly = {row["month"]: row for row in doc["policies"][name]["monthly"]}
        assert sorted(monthly) == ["2014-01", "2014-02"]
        for month, rows in answers.groupby("month"):
            y, p = rows["y"].to_numpy(float), rows["price"].to_numpy(float)
            ape = np.abs(p - y) / y
            mine = monthly[month]
            assert mine["n"] == len(rows)
            assert mine["mdape"] == pytest.approx(np.median(ape))
            assert mine["ppe10"] == pytest.approx(np.mean(ape <= 0.10))
            assert mine["median_ratio"] == pytest.approx(np.median(p / y))
            inside = (rows["price_lower"] <= y) & (y <= rows["price_upper"])
            assert mine["coverage"] == pytest.approx(inside.mean())
            assert mine["versions"] == ",".join(sorted(rows["model_version"].unique(), key=int))
        summary = doc["policies"][name]["summary"]
        assert summary["sales"] == len(answers)

        # every decision in the report happened in the policy's registry and Dagster instance
        client = MlflowClient(paths.mlflow_uri)
        versions = {str(v.version): v for v in client.search_model_versions("name = 'homeprice'")}
        later = {k: v for k, v in versions.items() if k != "1"}
        assert summary["retrains"] == len(later)
        assert summary["promotions"] == sum("rollout.promote" in v.tags for v in later.values())
        assert summary["blocked"] == sum(
            v.tags.get("validation_decision") == "blocked" for v in later.values()
        )
        fits = [float(client.get_run(v.run_id).data.tags["replay.fit_seconds"]) for v in later.values()]
        assert summary["fit_seconds"] == pytest.approx(sum(fits))
        instance = open_instance(paths.dagster)
        try:
            runs = {r.run_id: r for r in instance.get_runs()}
            lifecycle = [
                r
                for r in runs.values()
                if r.tags.get("homeprice/lifecycle") == "true"
                and r.tags.get("homeprice/trigger") != "initial"
            ]
            assert summary["lifecycle_runs"] == len(lifecycle)
            for event in doc["policies"][name]["events"]:
                version = versions[event["version"]]
                if event["event"] == "promoted":
                    assert "rollout.promote" in version.tags
                if event["event"] == "blocked":
                    assert version.tags["validation_decision"] == "blocked"
                run = runs[version.tags["replay_dagster_run_id"]]
                assert run.tags["homeprice/trigger"] == event["trigger"]
                assert run.tags["homeprice/month"] == event["month"]
            rollbacks = [
                r
                for r in instance.fetch_materializations(dg.AssetKey("promoted_model"), limit=1000).records
                if r.asset_materialization.metadata["decision"].value == "rollback"
            ]
            assert summary["rollbacks"] == len(rollbacks)
            evaluations = instance.fetch_materializations(
                dg.AssetKey("rollout_evaluation"), limit=1000
            ).records
            assert len(evaluations) == 2  # one per replayed month
            broken = [r for r in evaluations if r.asset_materialization.metadata["champion_broken"].value]
            assert summary["broken_evaluations"] == len(broken)
        finally:
            instance.dispose()

    never = doc["policies"]["never"]["summary"]
    assert never["retrains"] == 0 and never["lifecycle_runs"] == 0
    retrained = doc["policies"]["monthly_no_gates"]["summary"]
    assert retrained["retrains"] == 2 and retrained["promotions"] == 2  # gates off: every model promoted
    # the first month was priced by the same first model in both policies: identical figures
    first = [doc["policies"][n]["monthly"][0] for n in POLICY_NAMES]
    assert first[0]["mdape"] == first[1]["mdape"] and first[0]["versions"] == "1"


@pytest.mark.slow
def test_report_is_html_logged_to_mlflow_and_linked_from_dagster(replayed) -> None:
    spec, result, uri = replayed
    meta = result.asset_materializations_for_node("replay_report")[0].metadata
    html = Path(meta["report"].value).read_text()
    assert "2014-01..2014-02" in html and "data:image/png;base64," in html
    assert "num_boost_round" in html and "in-process" in html  # settings and method are stated
    run = MlflowClient(uri).get_run(meta["mlflow_run_id"].value)
    assert run.info.status == "FINISHED"
    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id, "replay_report")}
    assert {"replay_report/replay_report.html", "replay_report/replay_report.json"} <= artifacts
    doc = _report(spec)
    assert run.data.metrics["never.mdape"] == pytest.approx(doc["policies"]["never"]["summary"]["mdape"])
    assert "| never |" in meta["summary"].value
