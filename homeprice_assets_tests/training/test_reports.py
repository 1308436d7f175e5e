from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from homeprice_assets.training import reports as R
from homeprice_assets.training.baseline import fit_baseline
from homeprice_assets.training.model import fit_price_model
from homeprice_model.model import EXPLAIN_METHOD

from .conftest import Fitted


@pytest.fixture(scope="module")
def scored(fitted: Fitted) -> dict[str, pd.DataFrame]:
    """Challenger, an older champion (trained six months earlier) and the baseline on one window."""
    train = fitted.split.train
    champion = fit_price_model(train[train["sale_month"] < "2015-07"], {"num_boost_round": 200})
    return {
        "challenger": fitted.model.predict(None, fitted.inputs),
        "champion": champion.predict(None, fitted.inputs),
        "baseline": fit_baseline(train).predict(fitted.inputs),
    }


def test_validation_report(fitted: Fitted, scored: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    report = R.validation_report(tmp_path, fitted.split.validation, scored, facts=fitted.split.summary())
    page = report.html_path.read_text()
    for section in (
        "Metrics",
        "Prediction intervals",
        "Valuation churn",
        "Predicted vs actual",
        "Error by month",
        "Error by location",
        "data:image/png;base64,",
        "2016-03",
    ):
        assert section in page, section
    assert report.plot_path.stat().st_size > 10_000
    summary = json.loads(report.json_path.read_text())
    assert set(summary["metrics"]) == {"challenger", "champion", "baseline"}
    assert 0 < summary["metrics"]["challenger"]["interval_coverage"] <= 1
    assert "interval_coverage" not in summary["metrics"]["baseline"]
    assert 0 <= summary["churn"] <= 1
    assert [r["month"] for r in summary["error_by_month"]["challenger"]] == ["2016-01", "2016-02", "2016-03"]
    assert len(summary["error_by_location"]["baseline"]) >= 20
    with pytest.raises(ValueError, match="rows"):
        R.validation_report(tmp_path, fitted.split.validation.head(5), scored)


def test_explanations_shap_and_fallback(fitted: Fitted, tmp_path: Path) -> None:
    y = fitted.split.validation["sale_price"].to_numpy()
    shap_report = R.explanation_report(fitted.model, fitted.inputs, tmp_path / "shap", y=y, max_rows=500)
    assert shap_report.method == EXPLAIN_METHOD and shap_report.fallback_reason is None
    imp = pd.read_csv(shap_report.csv_path)
    assert {"feature", "importance"} == set(imp.columns)
    assert {"market_index", "log_living_sf", "location"} <= set(imp["feature"])
    assert shap_report.plot_path.stat().st_size > 10_000
    assert "SHAP failed" not in shap_report.html_path.read_text()

    fallback = R.explanation_report(
        fitted.model, fitted.inputs, tmp_path / "perm", y=y, max_rows=300, force_fallback=True
    )
    assert fallback.method.startswith("permutation importance")
    page = fallback.html_path.read_text()
    assert "SHAP failed" in page and "force_fallback" in page
    assert fallback.importances.iloc[0]["importance"] > 0


def test_model_card_diff_against_champion(
    fitted: Fitted, scored: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    report = R.validation_report(tmp_path / "val", fitted.split.validation, scored)
    metrics = report.summary["metrics"]
    model = fitted.model
    facts = {
        "model_name": "homeprice",
        "version": "2",
        "run_id": "r123",
        "trained_through": model.trained_through,
        "data_window": fitted.split.summary(),
        "row_counts": {"train": len(fitted.split.train)},
        "metrics": metrics,
        "churn": report.summary["churn"],
        "interval": {
            "level": 0.8,
            "coverage": metrics["challenger"]["interval_coverage"],
            "width": metrics["challenger"]["interval_median_width"],
            "calibration_range": "2015-10..12",
        },
        "hyperparameters": {"num_leaves": 63, "learning_rate": 0.05},
        "features": model.feature_names,
        "champion": {
            "version": "1",
            "trained_through": "2015-06",
            "features": model.feature_names[:-1],
            "hyperparameters": {"num_leaves": 31, "learning_rate": 0.05},
        },
        "images": {"Predicted vs actual": report.plot_path},
    }
    page = R.model_card(facts, tmp_path / "card.html").read_text()
    for text in (
        "What changed since the champion",
        "version 1",
        "Hyperparameter changes",
        "num_leaves",
        f"Added: {model.feature_names[-1]}",  # the feature the champion lacks
        "Metrics against the baseline",
        "Price intervals",
        "Intended use",
        "Limits",
        "data:image/png;base64,",
        "mdape",
        "2016-03",
    ):
        assert text in page, text
    first = R.model_card(
        {"metrics": {"challenger": metrics["challenger"]}}, tmp_path / "first.html"
    ).read_text()
    assert "no serving champion yet" in first
