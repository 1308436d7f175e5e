"""Drift on the real bundled sales: a normal month does not drift, a month with prices and areas x1.5 does."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest

from homeprice_assets.config import load_config, project_config
from homeprice_assets.features.engineering import feature_table
from homeprice_assets.ingest.rules import clean_sales
from homeprice_assets.monitoring.drift import compute_drift, decide
from homeprice_assets.monitoring.settings import DriftSettings

MONTH = "2016-06"


def shifted(raw: pd.DataFrame, factor: float = 1.5) -> pd.DataFrame:
    """Source rows with sale price and living area multiplied (source column names, values as text)."""
    config = project_config().data
    out = raw.copy()
    for canonical in ("sale_price", "living_sf"):
        col = config.source_name(canonical)
        out[col] = (pd.to_numeric(out[col]) * factor).round().astype(int).astype(str)
    return out


def features_of(raw: pd.DataFrame) -> pd.DataFrame:
    return feature_table(clean_sales(raw, project_config().data).clean)


@pytest.fixture(scope="module")
def monthly(bundled_sales: pd.DataFrame) -> dict[str, pd.DataFrame]:
    months = bundled_sales["sale_date"].str[:7]
    return {m: bundled_sales[months == m] for m in sorted(months.unique())}


@pytest.fixture(scope="module")
def reference(monthly: dict[str, pd.DataFrame]) -> pd.DataFrame:
    before = [m for m in monthly if m < MONTH][-24:]
    return features_of(pd.concat([monthly[m] for m in before], ignore_index=True))


@pytest.mark.slow  # Evidently twice on a reference of over 10,000 sales
def test_normal_month_does_not_drift_shifted_month_does(
    monthly: dict[str, pd.DataFrame], reference: pd.DataFrame, tmp_path: Path
) -> None:
    settings = load_config().monitoring.drift  # the packaged (calibrated) defaults
    started = time.perf_counter()
    normal = compute_drift(reference, features_of(monthly[MONTH]), settings, tmp_path / "n", MONTH)
    elapsed = time.perf_counter() - started
    moved = compute_drift(reference, features_of(shifted(monthly[MONTH])), settings, tmp_path / "s", MONTH)
    print(
        f"normal: share={normal.drift_share:.3f} drifted={normal.drifted_features} "
        f"max={max(normal.feature_scores.values()):.3f} target={normal.score('sale_price'):.3f} "
        f"({elapsed:.1f}s)"
    )
    print(
        f"shifted: share={moved.drift_share:.3f} drifted={moved.drifted_features} "
        f"log_living_sf={moved.score('log_living_sf'):.3f} target={moved.score('sale_price'):.3f}"
    )

    assert not normal.dataset_drift and normal.decision.startswith("no drift")
    assert normal.drift_share < settings.drift_share_threshold
    assert max(normal.feature_scores.values()) < 0.3
    # x1.5: a few features drift (below the share threshold), one of them far: the single-feature rule fires.
    assert moved.dataset_drift and "log_living_sf" in moved.decision
    assert {"log_living_sf", "grade_x_log_living"} <= set(moved.drifted_features)
    assert "log_living_sf" in moved.strongly_drifted and not normal.strongly_drifted
    assert moved.score("log_living_sf") > 0.8 > normal.score("log_living_sf")
    # Target drift is measured on both and is far larger when prices jump by half.
    assert moved.target_drift and moved.score("sale_price") > 3 * normal.score("sale_price")
    # Untouched inputs do not drift just because others did.
    assert not moved.columns["latitude"].drifted and not moved.columns["location"].drifted
    assert "months_since_origin" not in moved.columns  # the time index is excluded by default
    assert normal.reference_rows > 10_000 and normal.current_rows > 500


def test_report_files_and_json_summary(
    monthly: dict[str, pd.DataFrame], reference: pd.DataFrame, tmp_path: Path
) -> None:
    current = features_of(shifted(monthly[MONTH]))
    rng = pd.Series(range(len(reference))).mod(7).to_numpy() / 100
    reference = reference.assign(prediction=reference["sale_price"] * (0.97 + rng))
    current = current.assign(prediction=current["sale_price"] * 1.0)
    summary = compute_drift(reference, current, DriftSettings(max_reference_rows=5_000), tmp_path, MONTH)
    assert summary.reference_rows_used == 5_000 < summary.reference_rows
    assert summary.prediction_drift is True and summary.columns["prediction"].kind == "prediction"
    html = Path(summary.html_path).read_text()
    assert len(html) > 10_000 and "log_living_sf" in html
    data = json.loads(Path(summary.json_path).read_text())
    assert data["dataset_drift"] is True and data["current_label"] == MONTH
    assert data["feature_scores"]["log_living_sf"] == pytest.approx(summary.score("log_living_sf"))
    assert "Wasserstein" in data["method"] and "Jensen-Shannon" in data["method"]


def test_missing_feature_is_named(reference: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="bldg_grade"):
        compute_drift(reference, reference.drop(columns=["bldg_grade"]).head(100))


def test_report_header_names_month_window_scores_and_decision(
    monthly: dict[str, pd.DataFrame], reference: pd.DataFrame, tmp_path: Path
) -> None:
    settings = load_config().monitoring.drift
    current = features_of(shifted(monthly[MONTH]))
    summary = compute_drift(
        reference, current, settings, tmp_path, MONTH, reference_label="2014-06..2016-05 (24 months)"
    )
    html = Path(summary.html_path).read_text()
    header = html[html.index('<section id="homeprice-drift-decision"') :]
    header = header[: header.index("</section>")]
    body = html.index(">", html.index("<body")) + 1
    assert html.index('<section id="homeprice-drift-decision"') == body  # on top of Evidently's page
    for text in (
        f"homeprice drift report: {MONTH}",
        "2014-06..2016-05 (24 months)",
        f"at least {settings.drift_share_threshold:.0%}",
        f"per-column threshold {settings.stattest_threshold:g}",
        f"{summary.score('log_living_sf'):.3f}",
        "Decision: drift",
        "log_living_sf",
    ):
        assert text in header, text
    # Evidently's own dataset statement uses our share threshold, not its default 0.5.
    assert f"Dataset drift detection threshold is {settings.drift_share_threshold:g}" in html
    assert json.loads(Path(summary.json_path).read_text())["decision"] == summary.decision


def test_decision_rule_share_and_single_feature() -> None:
    s = DriftSettings(stattest_threshold=0.15, drift_share_threshold=0.3, feature_score_threshold=0.5)
    calm = {"a": 0.05, "b": 0.16, "c": 0.1, "d": 0.02}
    assert decide(calm, s) == (False, 0.25, [])
    assert decide({**calm, "c": 0.2}, s)[0]  # 2 of 4 features past 0.15
    assert decide({**calm, "d": 0.7}, s) == (True, 0.5, ["d"])
    one_far = {"a": 0.05, "b": 0.05, "c": 0.05, "d": 0.7}
    assert decide(one_far, s) == (True, 0.25, ["d"])
    assert decide(one_far, s.model_copy(update={"feature_score_threshold": None})) == (False, 0.25, [])
    with pytest.raises(ValueError, match="no feature scores"):
        decide({}, s)


@pytest.mark.slow  # five months ingested, then the drift report
def test_drift_report_reads_its_window_and_records_the_sample(
    instance, landing, storage, bundled_sales: pd.DataFrame
) -> None:
    """The asset reads the current month and its reference window only (lazily), and samples the reference
    before scoring it: the metadata says how many of how many reference rows were measured."""
    import dagster as dg

    from homeprice_assets.ingest.landing import land_history
    from homeprice_assets.monitoring.assets import drift_report
    from homeprice_assets.resources.config import ProjectConfigResource
    from homeprice_assets.resources.registry import ModelRegistry
    from homeprice_assets_tests.helpers import INGEST_ASSETS, ingest_month

    months = land_history(landing, load_config().data, since="2016-01", until="2016-05")
    rows = {}
    for month in months:
        result = ingest_month(month, instance, landing, storage)
        assert result.success
        rows[month] = result.asset_materializations_for_node("sale_features")[0].metadata["rows"].value
    settings = ProjectConfigResource(
        overrides={"monitoring": {"drift": {"reference_months": 3, "max_reference_rows": 1000}}}
    )
    result = dg.materialize(
        [*INGEST_ASSETS, drift_report],
        selection=["drift_report"],
        instance=instance,
        resources={
            "landing": landing,
            "io_manager": storage,
            "settings": settings,
            "registry": ModelRegistry(),
        },
    )
    meta = {k: v.value for k, v in result.asset_materializations_for_node("drift_report")[0].metadata.items()}
    assert meta["month"] == "2016-05"
    assert meta["reference_months"] == "2016-02..2016-04 (3 months)"  # 2016-01 is outside the window
    assert meta["reference_rows"] == rows["2016-02"] + rows["2016-03"] + rows["2016-04"] > 1000
    assert meta["reference_rows_used"] == 1000
    assert meta["current_rows"] == rows["2016-05"]


def test_choose_months_judges_only_the_months_it_needs() -> None:
    """Readiness is asked newest first and only until the reference window is full."""
    import dagster as dg

    from homeprice_assets.monitoring.assets import choose_months

    months = [f"2015-{m:02d}" for m in range(1, 13)]
    asked: list[str] = []

    def ready(month: str) -> bool:
        asked.append(month)
        return month not in ("2015-12", "2015-09")

    current, reference, held_back = choose_months(months, ready, None, 3)
    assert (current, reference, held_back) == (
        "2015-11",
        ["2015-07", "2015-08", "2015-10"],
        ["2015-09", "2015-12"],
    )
    assert asked == ["2015-12", "2015-11", "2015-10", "2015-09", "2015-08", "2015-07"]
    assert choose_months(months, ready, "2015-03", 0)[1] == ["2015-01", "2015-02"]
    with pytest.raises(dg.Failure, match="2015-12 is not ready"):
        choose_months(months, ready, "2015-12", 3)
    with pytest.raises(dg.Failure, match="no sale month has passed"):
        choose_months(months, lambda m: False, None, 3)
