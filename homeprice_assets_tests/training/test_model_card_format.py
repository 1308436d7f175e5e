"""The model card shows money as dollars and shares as percentages (never 2.612e+05)."""

from __future__ import annotations

import re
from pathlib import Path

from homeprice_assets.training import reports as R


def test_money_and_shares_are_formatted_for_people(tmp_path: Path) -> None:
    challenger = {"rmse": 261_234.4, "mae": 120_050.0, "mdape": 0.0812, "ppe10": 0.6123, "r2": 0.8712}
    champion = {"rmse": 255_364.0, "mae": 121_000.0, "mdape": 0.0800, "ppe10": 0.6250, "r2": 0.8801}
    page = R.model_card(
        {"metrics": {"challenger": challenger, "champion": champion}, "champion": {"version": "1"}},
        tmp_path / "card.html",
    ).read_text()
    assert "$261,234" in page and "$255,364" in page and "+$5,870" in page
    assert "-$950" in page  # MAE improved
    assert "8.12%" in page and "61.23%" in page and "-1.27 pts" in page
    assert not re.search(r"\d\.\d+e\+\d\d", page), "a metric is still in scientific notation"


def test_metric_formatting_edge_cases() -> None:
    assert R.metric_value(None, "rmse") == "n/a"
    assert R.metric_value(float("nan"), "rmse") == "n/a"
    assert R.metric_value(0.5, "r2") == "0.5"
    assert R.metric_change(-1234.6, "rmse") == "-$1,235"
    assert R.metric_change(0.0123, "r2") == "+0.0123"
