"""Drift on the real bundled sales: a normal month does not drift, a month with prices and areas x1.5 does."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest

from homeprice_assets.config import project_config
from homeprice_assets.features.engineering import feature_table
from homeprice_assets.ingest.rules import clean_sales
from homeprice_assets.monitoring.drift import compute_drift
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


def test_normal_month_does_not_drift_shifted_month_does(
    monthly: dict[str, pd.DataFrame], reference: pd.DataFrame, tmp_path: Path
) -> None:
    settings = DriftSettings()
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

    assert not normal.dataset_drift
    assert normal.drift_share < settings.drift_share_threshold
    assert max(normal.feature_scores.values()) < 0.3
    assert moved.dataset_drift and moved.drift_share >= settings.drift_share_threshold
    assert {"log_living_sf", "grade_x_log_living"} <= set(moved.drifted_features)
    assert "log_living_sf" in moved.strongly_drifted and not normal.strongly_drifted
    assert moved.score("log_living_sf") > 0.8 > normal.score("log_living_sf")
    # Target drift is measured on both and is far larger when prices jump by half.
    assert moved.target_drift and moved.score("sale_price") > 3 * normal.score("sale_price")
    # Untouched inputs do not drift just because others did.
    assert not moved.columns["latitude"].drifted and not moved.columns["location"].drifted
    assert "months_since_origin" not in moved.columns  # the time index is excluded by default
    assert normal.reference_rows > 10_000 and normal.current_rows > 500
    assert elapsed < 60


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
