"""The lifecycle assets in-process on three years of real sales: registry state read back via MlflowClient."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from homeprice_assets.features.assets import sale_features
from homeprice_assets.ingest.assets import clean_sales, raw_sales
from homeprice_assets.monitoring.notify import Notifier
from homeprice_assets.monitoring.sensors.alerts import build_promotion_alert_sensor
from homeprice_assets.partitions import register_months
from homeprice_assets.resources.config import ProjectConfigResource
from homeprice_assets.resources.landing import LocalLandingZone
from homeprice_assets.resources.registry import CHALLENGER, CHAMPION, PREVIOUS, ModelRegistry
from homeprice_assets.resources.storage import ParquetStorage
from homeprice_assets.serving.assets import bento
from homeprice_assets.training import assets as lifecycle
from homeprice_assets.training.baseline import MedianPriceBaseline
from homeprice_assets.training.metrics import mdape
from homeprice_assets_tests.monitoring.conftest import WebhookReceiver
from homeprice_model.model import EXPLAIN_METHOD

pytestmark = pytest.mark.slow

ALL_ASSETS = [raw_sales, clean_sales, sale_features, *dg.load_assets_from_modules([lifecycle]), bento]
MODEL = "homeprice-lifecycle-test"


class Env:
    def __init__(self, root: Path, features: pd.DataFrame) -> None:
        self.root = root
        self.instance = dg.DagsterInstance.ephemeral()
        self.storage_dir = root / "storage"
        self.registry = ModelRegistry(
            tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
            artifact_location=(root / "mlartifacts").as_uri(),
            model_name=MODEL,
        )
        self.reg = self.registry.get()
        # sale_features as the ingest job stores it, for 2013-01..2015-12 (36 real months)
        window = features[(features["sale_month"] >= "2013-01") & (features["sale_month"] <= "2015-12")]
        for month, part in window.groupby("sale_month"):
            path = self.storage_dir / "sale_features" / f"{month}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            part.reset_index(drop=True).to_parquet(path, index=False)
        register_months(self.instance, sorted(window["sale_month"].unique()))

    def run(self, selection: list[str], **overrides: dict) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            ALL_ASSETS,
            selection=selection,
            instance=self.instance,
            resources=self.resources(overrides),
            raise_on_error=False,
        )

    def resources(self, overrides: dict | None = None) -> dict:
        return {
            "io_manager": ParquetStorage(base_dir=str(self.storage_dir)),
            "registry": self.registry,
            "settings": ProjectConfigResource(overrides=overrides or {}),
            "landing": LocalLandingZone(root=str(self.root / "landing")),
        }

    def alias(self, alias: str) -> str | None:
        return self.reg.version_number(alias)

    def checks(self, result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
        return {e.check_name: e for e in result.get_asset_check_evaluations()}


# Quick fits and a small SHAP sample: these runs test the lifecycle's hand-offs, not accuracy (the forward
# accuracy of the default parameters is test_model.py's). SHAP on 2000 rows was 44% of this file's time.
QUICK = {"num_boost_round": 300, "early_stopping_rounds": 30}
EXPLAIN = 200

LIFECYCLE = [
    "training_set",
    "validation_set",
    "price_model",
    "validation_report",
    "promoted_model",
    "model_explanations",
    "model_card",
]


def env_in(tmp_path_factory: pytest.TempPathFactory, features: pd.DataFrame, name: str) -> Iterator[Env]:
    """An ``Env`` in a new folder ``name``, with ``HOMEPRICE_HOME`` (reports) inside it while it lives."""
    root = tmp_path_factory.mktemp(name)
    old_home = os.environ["HOMEPRICE_HOME"]
    os.environ["HOMEPRICE_HOME"] = str(root / "home")
    yield Env(root, features)
    os.environ["HOMEPRICE_HOME"] = old_home


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, features: pd.DataFrame) -> Iterator[Env]:
    yield from env_in(tmp_path_factory, features, "lifecycle")


@pytest.fixture(scope="module")
def first(env: Env) -> dg.ExecuteInProcessResult:
    result = env.run(LIFECYCLE, training={"params": QUICK, "explain_sample": EXPLAIN})
    assert result.success
    return result


def _meta(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    events = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in events[-1].materialization.metadata.items()}


def test_first_model_is_trained_validated_and_promoted(env: Env, first: dg.ExecuteInProcessResult) -> None:
    client = env.reg.client
    assert env.alias(CHAMPION) == env.alias(CHALLENGER) == "1"
    assert env.alias(PREVIOUS) is None
    champion = env.reg.get_version("1")
    assert champion.tags["validation_decision"] == "pass"
    assert "no champion yet" in champion.tags["validation_reason"]
    run = client.get_run(champion.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train_start"] == "2013-01" and run.data.params["train_end"] == "2015-09"
    artifacts = {a.path for a in client.list_artifacts(champion.run_id)}
    assert {"validation", "explanations", "model_card"} <= artifacts

    report = _meta(first, "validation_report")
    # sane: far better than pricing every home at the median, within the absolute gate
    validation = pd.read_parquet(env.storage_dir / "validation_set.parquet")
    training = pd.read_parquet(env.storage_dir / "training_set.parquet")
    naive = mdape(validation["sale_price"], MedianPriceBaseline().fit(training).predict(validation)["price"])
    assert report["challenger_mdape"] < 0.13 < naive / 2
    assert report["challenger_mdape"] < report["baseline_mdape"]
    assert 0.7 <= report["challenger_interval_coverage"] <= 0.9
    assert {c.check_name for c in env.checks(first).values() if c.passed} >= set(lifecycle.GATES)

    card = Path(_meta(first, "model_card")["model_card"])
    html = card.read_text()
    assert "first model" in html and "Intended use" in html and "data:image/png;base64" in html
    calibration = run.data.params["calibration_range"]
    assert calibration == "2014-10..2015-09" and calibration in html  # training.calibration_months: 12
    assert f"Global importance ({EXPLAIN_METHOD})" in html
    assert _meta(first, "model_explanations")["method"] == EXPLAIN_METHOD


def test_a_new_champion_is_live_before_its_explanation_is_drawn(first: dg.ExecuteInProcessResult) -> None:
    # TreeSHAP takes seconds; the promotion (what serving follows) does not wait for it
    order = [e.step_key for e in first.all_events if e.is_step_start]
    assert order.index("model_explanations") > order.index("promoted_model")
    assert order.index("model_card") > order.index("model_explanations")


def test_promotion_is_idempotent(env: Env, first: dg.ExecuteInProcessResult) -> None:
    again = env.run(["promoted_model"])
    assert again.success
    assert _meta(again, "promoted_model")["changed"] is False
    assert env.alias(CHAMPION) == "1"
    assert env.alias(PREVIOUS) is None


def test_a_promotion_makes_the_bento_due(env: Env, first: dg.ExecuteInProcessResult) -> None:
    """The serving automation sensor's condition: each update of promoted_model requests a new Bento."""
    defs = dg.Definitions(assets=ALL_ASSETS, resources=env.resources())
    before = dg.evaluate_automation_conditions(defs=defs, instance=env.instance)  # the sensor's first tick
    assert before.get_num_requested(dg.AssetKey("bento")) == 0
    assert env.run(["promoted_model"]).success  # a promotion (here: a no-op re-run) updates promoted_model
    after = dg.evaluate_automation_conditions(defs=defs, instance=env.instance, cursor=before.cursor)
    assert after.get_num_requested(dg.AssetKey("bento")) == 1
    assert after.get_num_requested(dg.AssetKey("promoted_model")) == 0


def test_bento_packages_the_champion(env: Env, first: dg.ExecuteInProcessResult) -> None:
    import bentoml

    result = env.run(["bento"])
    assert result.success
    meta = _meta(result, "bento")
    assert meta["model_version"] == "1" and meta["model_tag"] == f"{MODEL}:v1"
    built = bentoml.get(meta["bento_tag"])
    assert [str(m.tag) for m in built.info.all_models] == [f"{MODEL}:v1"]
    assert Path(meta["dockerfile"]).is_file()


def test_challenger_on_corrupted_labels_is_not_promoted(env: Env, first: dg.ExecuteInProcessResult) -> None:
    path = env.storage_dir / "training_set.parquet"
    good = pd.read_parquet(path)
    corrupted = good.copy()
    corrupted["sale_price"] = np.random.default_rng(0).permutation(corrupted["sale_price"].to_numpy())
    corrupted.to_parquet(path, index=False)
    try:
        result = env.run(["price_model", "validation_report", "promoted_model"])
    finally:
        good.to_parquet(path, index=False)
    assert not result.success
    checks = env.checks(result)
    assert not checks["absolute_accuracy"].passed and not checks["not_worse_than_champion"].passed
    assert checks["absolute_accuracy"].blocking
    # the champion did not move; the blocked challenger says why
    assert env.alias(CHAMPION) == "1"
    assert env.alias(CHALLENGER) == "2"
    challenger = env.reg.get_version("2")
    assert challenger.tags["validation_decision"] == "blocked"
    assert "absolute_accuracy" in challenger.tags["validation_reason"]
    assert "promoted_model" not in {
        e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
    }
    # and materializing promotion on its own still refuses it
    alone = env.run(["promoted_model"])
    assert not alone.success
    assert env.alias(CHAMPION) == "1"


def test_validation_names_a_missing_feature(env: Env, first: dg.ExecuteInProcessResult) -> None:
    path = env.storage_dir / "validation_set.parquet"
    good = pd.read_parquet(path)
    good.drop(columns=["bldg_grade"]).to_parquet(path, index=False)
    try:
        result = env.run(["validation_report"])
    finally:
        good.to_parquet(path, index=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "missing column(s) ['bldg_grade']" in failure.step_failure_data.error.message


def test_a_model_pickled_by_an_older_release_still_predicts(features: pd.DataFrame) -> None:
    """Old champions stay loadable when the class gains attributes (here: one its pickle lacks)."""
    import pickle

    from homeprice_assets.training.model import fit_price_model
    from homeprice_assets.training.splits import time_split

    split = time_split(features, validation_months=1, window_months=14, end_month="2012-02")
    model = fit_price_model(split.train, {"num_boost_round": 50})
    expected = model.predict(None, split.validation)["price"].to_numpy()
    del model.__dict__["comparables"]  # as if pickled before the attribute existed
    old = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(old.predict(None, split.validation)["price"].to_numpy(), expected)


# The second run's model must pass whatever it scores, so the relative gates are opened wide.
LENIENT = {
    "max_mdape_increase": 10.0,
    "max_churn": None,
    "max_ppe10_decrease": None,
    "max_coverage_decrease": None,
    "max_rmse_increase": None,
}


def test_back_to_back_runs_each_handle_their_own_model(env: Env, first: dg.ExecuteInProcessResult) -> None:
    """Each run validates, promotes and documents the version it trained, and the second run is judged
    against the champion the first one left (not one read before it ran, nor a newer challenger)."""
    before = env.alias(CHAMPION)
    a = env.run(LIFECYCLE, training={"params": QUICK, "explain_sample": EXPLAIN}, promotion=LENIENT)
    after_a = env.alias(CHAMPION)
    b = env.run(
        LIFECYCLE,
        training={"params": {**QUICK, "time_feature": False}, "explain_sample": EXPLAIN},
        promotion=LENIENT,
    )
    assert a.success and b.success
    va, vb = _meta(a, "price_model")["model_version"], _meta(b, "price_model")["model_version"]
    assert int(vb) == int(va) + 1
    assert after_a == va != before  # the first run promoted its own model over the earlier champion

    report_a, report_b = _meta(a, "validation_report"), _meta(b, "validation_report")
    assert (report_a["challenger_version"], report_a["champion_version"]) == (va, before)
    assert (report_b["challenger_version"], report_b["champion_version"]) == (vb, va)
    assert env.reg.get_version(vb).tags["validated_against"] == va
    assert _meta(b, "promoted_model")["previous_version"] == va
    assert (_meta(a, "model_explanations")["model_version"], _meta(b, "model_card")["model_version"]) == (
        va,
        vb,
    )

    # The card diffs each version's own logged features: v(b) was trained without the time feature.
    assert "months_since_origin" in env.reg.features_of(va)["features"]
    assert "months_since_origin" not in env.reg.features_of(vb)["features"]
    card = Path(_meta(b, "model_card")["model_card"]).read_text()
    assert f"v{vb}" in card
    assert "Removed: months_since_origin" in card


def test_in_shadow_mode_a_passing_challenger_becomes_the_candidate(
    env: Env, first: dg.ExecuteInProcessResult, webhook: WebhookReceiver
) -> None:
    """rollout.mode shadow: the offline gates let the version in, live ground truth decides the rest."""
    champion = env.alias(CHAMPION)
    notifier = Notifier(slack_webhook_url=webhook.url, dedup_db=str(env.root / "alerts.sqlite"))
    sensor = build_promotion_alert_sensor()

    def tick(cursor: str | None) -> str | None:
        context = dg.build_sensor_context(
            instance=env.instance, cursor=cursor, resources={"notifier": notifier, "registry": env.registry}
        )
        sensor(context)
        return context.cursor

    cursor = tick(None)  # the promotions so far
    webhook.posts.clear()
    result = env.run(
        LIFECYCLE,
        training={"params": QUICK, "explain_sample": EXPLAIN},
        promotion=LENIENT,
        rollout={"mode": "shadow"},
    )
    assert result.success
    version = _meta(result, "price_model")["model_version"]
    promoted = _meta(result, "promoted_model")
    assert (promoted["decision"], promoted["changed"]) == ("candidate", False)
    assert promoted["candidate_version"] == version and promoted["champion_version"] == champion
    assert env.alias(CHAMPION) == champion and env.alias("candidate") == version
    assert env.reg.model_tags()["rollout.mode"] == "shadow"
    # the Bento keeps serving the champion; the card says this version is not the champion
    assert _meta(result, "model_card")["decision"] == f"not champion (champion is v{champion})"
    # the rollout's start is announced once, with the mode (the alert sensor reads promoted_model)
    cursor = tick(cursor)
    [text] = webhook.texts()
    assert f"v{version}" in text and "shadow" in text
    tick(cursor)
    assert len(webhook.posts) == 1
    # back to direct promotion for any later test of this module
    from homeprice_assets.rollout import state as rollout_state

    rollout_state.stop_rollout(env.reg, "test over")


def test_promotion_acts_only_against_the_champion_it_was_validated_against(
    env: Env, first: dg.ExecuteInProcessResult
) -> None:
    """The gates compared the challenger with one champion: if another serves by the time promoted_model
    runs, it refuses (validate again); and it never brings back a version rolled back since."""
    from homeprice_assets.rollout import state as rollout_state

    settings = {"training": {"params": QUICK, "explain_sample": EXPLAIN}, "promotion": LENIENT}

    def refusal(result: dg.ExecuteInProcessResult) -> str:
        assert not result.success
        failure = result.failure_data_for_node("promoted_model")
        assert failure is not None
        return str(failure.error)

    assert env.run(LIFECYCLE, **settings).success  # a champion with a previous version to roll back to
    champion, previous = env.alias(CHAMPION), env.alias(PREVIOUS)
    validated = env.run(["training_set", "validation_set", "price_model", "validation_report"], **settings)
    assert validated.success
    version = _meta(validated, "price_model")["model_version"]
    assert env.reg.get_version(version).tags["validated_against"] == champion

    rollout_state.rollback(env.reg, "test: the champion moved meanwhile")
    assert env.alias(CHAMPION) == previous
    text = refusal(env.run(["promoted_model"], **settings))
    assert f"validated against champion {champion}, but the champion is now {previous}" in text
    assert env.alias(CHAMPION) == previous

    assert env.run(["validation_report", "promoted_model"], **settings).success  # judged again: in place
    assert env.alias(CHAMPION) == version
    rollout_state.rollback(env.reg, "test: broken on live sales")
    assert env.alias(CHAMPION) == previous
    text = refusal(env.run(["promoted_model"], **settings))
    assert f"v{version} was rolled back from champion (test: broken on live sales)" in text
    assert env.alias(CHAMPION) == previous


@contextmanager
def _broken(stored: Path, how: str) -> Iterator[None]:
    """The champion's stored files made unreadable for a while: the whole folder gone, or its pickled model
    replaced by a folder (reading it raises IsADirectoryError, an OSError)."""
    target = stored if how == "folder gone" else next(stored.rglob("python_model.pkl"))
    away = target.with_name(target.name + ".away")
    target.rename(away)
    if how != "folder gone":
        target.mkdir()
    try:
        yield
    finally:
        if how != "folder gone":
            target.rmdir()
        away.rename(target)


@pytest.mark.parametrize("how", ["folder gone", "model file unreadable"])
def test_a_champion_the_store_cannot_serve_fails_validation_instead_of_waving_the_challenger_in(
    env: Env, first: dg.ExecuteInProcessResult, how: str
) -> None:
    """The champion's files gone from the artifact store (an outage, a wrong bucket), or there but not
    readable (a half-synced store, NFS): the validation run fails, to be retried, rather than judging the
    challenger as if it were the first model or leaving the champion out."""
    champion = env.alias(CHAMPION)
    stored = Path(env.reg.client.get_model_version_download_uri(MODEL, champion).removeprefix("file://"))
    assert stored.is_dir()
    with _broken(stored, how):
        result = env.run(
            ["training_set", "validation_set", "price_model", "validation_report"],
            training={"params": QUICK, "explain_sample": EXPLAIN},
            promotion=LENIENT,
        )
    assert not result.success
    assert result.failure_data_for_node("validation_report") is not None
    version = _meta(result, "price_model")["model_version"]
    assert "validation_decision" not in env.reg.get_version(version).tags
    assert env.alias(CHAMPION) == champion


def test_a_champion_this_release_cannot_load_is_left_out_and_said_so(
    env: Env, first: dg.ExecuteInProcessResult
) -> None:
    """The champion's files are there but its pickled model does not load (another release's code): the
    challenger is judged by the absolute gates alone, the report says why, and the card still renders."""
    champion = env.alias(CHAMPION)
    stored = Path(env.reg.client.get_model_version_download_uri(MODEL, champion).removeprefix("file://"))
    [pickled] = list(stored.rglob("python_model.pkl"))
    original = pickled.read_bytes()
    pickled.write_bytes(b"not a pickle of this release")
    try:
        result = env.run(LIFECYCLE, training={"params": QUICK, "explain_sample": EXPLAIN}, promotion=LENIENT)
    finally:
        pickled.write_bytes(original)
    assert result.success
    report = _meta(result, "validation_report")
    assert report["champion_version"] == champion
    assert f"v{champion} could not score the validation set" in report["champion_not_scored"]
    assert "champion_mdape" not in report
    assert _meta(result, "model_card")["model_version"] == _meta(result, "price_model")["model_version"]
