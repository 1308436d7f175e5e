"""Monthly warm-start updates (training/update.py): when the lifecycle updates the champion, and how."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from homeprice_assets.monitoring.sensors.common import TRIGGER_TAG
from homeprice_assets.partitions import register_months
from homeprice_assets.resources.registry import CHAMPION
from homeprice_assets.training.metrics import mdape
from homeprice_assets.training.model import fit_price_model
from homeprice_assets.training.settings import UpdateSettings
from homeprice_assets.training.splits import time_split
from homeprice_assets.training.update import update_plan, update_price_model
from homeprice_assets_tests.training.test_lifecycle_assets import ALL_ASSETS, EXPLAIN, LIFECYCLE, Env, env_in
from homeprice_model import MODEL_CODE_VERSION

QUICK = {"num_boost_round": 300, "early_stopping_rounds": 30}
SETTINGS = UpdateSettings()


def _window(features: pd.DataFrame, end: str, months: int = 30) -> pd.DataFrame:
    return time_split(features, validation_months=3, window_months=months + 3, end_month=end).train


@pytest.fixture(scope="module")
def champion_and_update(features: pd.DataFrame):
    """A champion trained through 2015-05 and its update by 2015-06, with the full refit through 2015-06."""
    old, new = _window(features, "2015-08"), _window(features, "2015-09")
    assert old["sale_month"].max() == "2015-05" and new["sale_month"].max() == "2015-06"
    champion = fit_price_model(old, QUICK)
    champion.facts = {**champion.facts, "fit_mode": "full", "updates_since_full": 0}
    before = pickle.dumps(champion)
    updated = update_price_model(champion, new, SETTINGS, base_version="7")
    full = fit_price_model(new, QUICK)
    return champion, before, updated, full, new


def test_the_plan_updates_only_a_compatible_champion_with_new_months(champion_and_update) -> None:
    champion, _, updated, _, new = champion_and_update

    def plan(**kw):
        args = {
            "champion": champion,
            "champion_code_version": MODEL_CODE_VERSION,
            "train": new,
            "params": QUICK,
            "settings": SETTINGS,
        }
        return update_plan(**{**args, **kw})

    def refused(text: str, **kw) -> bool:
        """A full refit, for the reason that names ``text``."""
        p = plan(**kw)
        return p.update is False and text in p.reason

    assert plan().update and plan().reason == "update 1 of at most 3 since a full refit"
    assert refused("no champion", champion=None)
    assert refused("drift", trigger="drift")
    assert refused("live", trigger="live_error")
    assert plan(trigger="new_data").update
    assert refused("requested", force_full=True)
    assert refused("parameters changed", params={**QUICK, "num_leaves": 31})
    assert refused("model code", champion_code_version="0")
    assert refused("off", settings=UpdateSettings(max_consecutive=0))
    # the champion's own months again: nothing to update with
    same = new[new["sale_month"] <= champion.trained_through]
    assert refused("no months after", train=same)
    # a location the champion's trees have no category for
    moved = new.assign(location=np.where(new["sale_month"] == "2015-06", "brand-new-area", new["location"]))
    assert refused("never seen", train=moved)
    # chained updates: a full refit after max_consecutive of them (as if the update were a month older)
    chained = pickle.loads(pickle.dumps(updated))
    chained.trained_through = "2015-05"
    assert plan(champion=chained).reason == "update 2 of at most 3 since a full refit"
    chained.facts["updates_since_full"] = 3
    assert refused("3 updates since the last full refit", champion=chained)


def test_an_update_carries_the_champion_a_month_on_and_prices_like_a_full_refit(
    champion_and_update, features: pd.DataFrame
) -> None:
    champion, before, updated, full, new = champion_and_update
    assert pickle.dumps(champion) == before  # the champion itself is untouched
    assert updated.trained_through == "2015-06" == full.trained_through
    assert updated.booster.num_trees() == champion.booster.num_trees() + SETTINGS.rounds
    assert updated.facts["fit_mode"] == "update" and updated.facts["updates_since_full"] == 1
    assert updated.facts["update_base_version"] == "7"
    assert updated.facts["train_rows"] == len(new)
    assert updated.facts["update_months"] == "2014-07..2015-06"
    # the newest month's parcels are known for repeat sales; the intervals keep the champion's scores
    june = new[new["sale_month"] == "2015-06"]
    assert set(june["parcel_id"]) <= set(updated.last_sales.parcels)
    np.testing.assert_array_equal(updated.calibration_scores, champion.calibration_scores)

    # valued in the next quarter: the update is about as good as refitting from scratch (one quarter's MdAPE
    # is noisy: over five cut-offs the mean was 8.18% updated, 8.14% refit, 8.36% unchanged; update.py)
    later = features[features["sale_month"].between("2015-07", "2015-09")].reset_index(drop=True)
    inputs = later[list(updated.input_fields)]
    y = later["sale_price"].to_numpy()
    errors = {
        name: mdape(y, m.predict(None, inputs)["price"].to_numpy())
        for name, m in (("champion", champion), ("update", updated), ("full", full))
    }
    assert errors["update"] <= errors["full"] + 0.003, errors
    moved = np.log(updated.predict(None, inputs)["price"]) - np.log(champion.predict(None, inputs)["price"])
    assert 0.001 < np.median(np.abs(moved)) < 0.1  # it learnt something, and nothing wild
    # and it survives the pickle the pyfunc is logged with
    again = pickle.loads(pickle.dumps(updated))
    np.testing.assert_allclose(
        again.predict(None, inputs.head(50))["price"], updated.predict(None, inputs.head(50))["price"]
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, features: pd.DataFrame) -> Iterator[Env]:
    yield from env_in(tmp_path_factory, features, "update")


def _run(env: Env, tags: dict | None = None, full_refit: bool = False) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        ALL_ASSETS,
        selection=LIFECYCLE,
        instance=env.instance,
        resources=env.resources(
            {
                "training": {"params": QUICK, "explain_sample": EXPLAIN},
                "promotion": {"max_mdape_increase": 0.5},
            }
        ),
        tags=tags or {},
        run_config={"ops": {"price_model": {"config": {"full_refit": full_refit}}}},
        raise_on_error=False,
    )


def _model_meta(result: dg.ExecuteInProcessResult) -> dict:
    events = [
        e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "price_model"
    ]
    return {k: v.value for k, v in events[-1].materialization.metadata.items()}


def _land_month(env: Env, features: pd.DataFrame, month: str) -> None:
    part = features[features["sale_month"] == month].reset_index(drop=True)
    path = Path(env.storage_dir) / "sale_features" / f"{month}.parquet"
    part.to_parquet(path, index=False)
    register_months(env.instance, [month])


def test_the_lifecycle_updates_on_a_new_month_and_refits_on_drift(env: Env, features: pd.DataFrame) -> None:
    first = _run(env)
    assert first.success
    meta = _model_meta(first)
    assert meta["fit_mode"] == "full" and meta["fit_reason"] == "no champion to update"
    v1 = env.alias(CHAMPION)
    assert v1 == meta["model_version"]

    _land_month(env, features, "2016-01")
    second = _run(env, tags={TRIGGER_TAG: "new_data"})
    assert second.success
    meta = _model_meta(second)
    assert (meta["fit_mode"], meta["update_base_version"]) == ("update", v1)
    version = env.reg.get_version(meta["model_version"])
    run = env.reg.client.get_run(version.run_id)
    assert run.data.tags["homeprice.fit_mode"] == "update"
    assert run.data.metrics["updates_since_full"] == 1.0
    # validated against the champion it was built from, on the same recent months
    report = {
        k: v.value
        for k, v in second.asset_materializations_for_node("validation_report")[-1].metadata.items()
    }
    assert report["champion_version"] == v1
    card = second.asset_materializations_for_node("model_card")[-1].metadata["model_card"].value
    assert "Fit: <b>update</b> (update 1 of at most 3 since a full refit)" in Path(card).read_text()

    _land_month(env, features, "2016-02")
    drift = _run(env, tags={TRIGGER_TAG: "drift"})
    assert drift.success
    assert (_model_meta(drift)["fit_mode"], _model_meta(drift)["fit_reason"]) == (
        "full",
        "triggered by drift",
    )

    _land_month(env, features, "2016-03")
    forced = _run(env, full_refit=True)
    assert forced.success
    assert _model_meta(forced)["fit_reason"] == "full refit requested"
