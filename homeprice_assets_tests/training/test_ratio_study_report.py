"""The ratio study (IAAO) in the validation report and the model card, on synthetic valuations whose
equity is known: a fair model and a regressive one (valuations pulled towards the mean price)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from homeprice_assets.training import reports as R


@pytest.fixture(scope="module")
def validation() -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    rng = np.random.default_rng(3)
    n = 3000
    y = np.exp(rng.normal(13.2, 0.45, n))
    frame = pd.DataFrame(
        {
            "sale_price": y,
            "location": rng.choice(["10", "20", "30"], n),
            "sale_month": rng.choice(["2016-01", "2016-02", "2016-03"], n),
        }
    )
    fair = y * np.exp(rng.normal(0, 0.09, n))
    centre = np.log(np.median(y))
    regressive = np.exp(centre + 0.6 * (np.log(fair) - centre))

    def priced(p: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({"price": p, "price_lower": p * 0.85, "price_upper": p * 1.15})

    return frame, {"challenger": priced(regressive), "champion": priced(fair)}


def test_report_has_ratio_study_by_decile_and_location_with_bands(
    validation: tuple[pd.DataFrame, dict[str, pd.DataFrame]], tmp_path: Path
) -> None:
    frame, preds = validation
    report = R.validation_report(tmp_path, frame, preds)
    summary = json.loads(report.json_path.read_text())
    fair, regressive = summary["ratio_study"]["champion"], summary["ratio_study"]["challenger"]
    assert fair["within_bands"] == {"median_ratio": True, "cod": True, "prd": True, "prb": True}
    assert regressive["within_bands"]["prd"] is False and regressive["within_bands"]["prb"] is False
    assert regressive["overall"]["prb"] < -0.1
    # the figures join the accuracy metrics (logged to MLflow, gated on, diffed in the card)
    for key in ("median_ratio", "cod", "prd", "prb"):
        assert summary["metrics"]["challenger"][key] == pytest.approx(regressive["overall"][key])
    # by value decile: the regressive model values the cheapest decile high and the dearest low
    deciles = regressive["by_decile"]
    assert [d["decile"] for d in deciles] == list(range(1, 11))
    assert deciles[0]["median_ratio"] > 1.1 > 0.9 > deciles[-1]["median_ratio"]
    assert [r["location"] for r in regressive["by_location"]] == ["10", "20", "30"]
    assert summary["iaao_bands"]["cod"] == [0.0, 15.0]
    page = report.html_path.read_text()
    assert "Ratio study (IAAO)" in page and "OUT of band" in page and "by value decile" in page
    assert (tmp_path / "ratio_study.png").stat().st_size > 10_000


def test_model_card_ratio_section_and_closer_to_ideal_is_better(
    validation: tuple[pd.DataFrame, dict[str, pd.DataFrame]], tmp_path: Path
) -> None:
    frame, preds = validation
    summary = R.validation_report(tmp_path / "val", frame, preds).summary
    metrics = summary["metrics"]
    page = R.model_card(
        {
            "metrics": {"challenger": metrics["challenger"], "champion": metrics["champion"]},
            "champion": {"version": "1"},
            "ratio_study": json.loads(json.dumps(R._json_safe(summary["ratio_study"]["challenger"]))),
        },
        tmp_path / "card.html",
    ).read_text()
    assert "Ratio study (IAAO)" in page and "By value decile" in page and "0.98-1.03" in page
    assert '<td class="worse">no</td>' in page  # PRD / PRB out of band
    rows = {r["metric"]: r for r in R.metric_diff(metrics["challenger"], metrics["champion"])}
    assert rows["prb"]["better"] is False and rows["prd"]["better"] is False  # further from 0 / 1
    assert rows["cod"]["better"] is (metrics["challenger"]["cod"] < metrics["champion"]["cod"])
    assert R.metric_diff({"prb": 0.01}, {"prb": -0.03})[0]["better"] is True
    old = R.model_card({"metrics": {"challenger": metrics["challenger"]}}, tmp_path / "old.html")
    assert "No ratio study for this model" in old.read_text()
