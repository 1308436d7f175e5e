from __future__ import annotations

import pandas as pd
import pytest

from homeprice_assets.training.splits import shift_month, time_split, training_split, window_table


def test_time_split_has_no_leakage(features: pd.DataFrame) -> None:
    split = time_split(features, validation_months=3, window_months=24, end_month="2015-12")
    assert split.validation_range == ("2015-10", "2015-12")
    assert split.train_range == ("2014-01", "2015-09")
    assert split.train["sale_date"].max() < split.validation["sale_date"].min()
    assert set(split.train["sale_id"]).isdisjoint(split.validation["sale_id"])
    # rows after end_month never enter either side
    assert split.validation["sale_month"].max() == "2015-12"
    months = features["sale_month"]
    assert len(split.train) + len(split.validation) == int(
        ((months >= "2014-01") & (months <= "2015-12")).sum()
    )
    assert split.summary()["train_rows"] == len(split.train)


def test_training_split_is_time_ordered(features: pd.DataFrame) -> None:
    train = time_split(features, validation_months=3, end_month="2015-12").train
    ts = training_split(train, calibration_months=3, early_stopping_months=2)
    assert ts.ranges()["calibration"] == ("2015-07", "2015-09")
    assert ts.ranges()["early_stopping"] == ("2015-05", "2015-06")
    assert ts.fit["sale_date"].max() < ts.early_stopping["sale_date"].min()
    assert ts.early_stopping["sale_date"].max() < ts.calibration["sale_date"].min()
    assert len(ts.fit) + len(ts.early_stopping) + len(ts.calibration) == len(train)


def test_empty_split_fails_clearly(features: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="empty split"):
        time_split(features, validation_months=3, window_months=3)


def test_too_short_a_history_says_how_long_it_is(features: pd.DataFrame) -> None:
    train = time_split(features, validation_months=3, end_month="2015-12").train
    short = train[train["sale_date"] >= "2015-05-01"]  # 5 months
    with pytest.raises(
        ValueError, match=r"spans 5 month\(s\), 2015-05..2015-09: too few for 3 calibration and 2"
    ):
        training_split(short, calibration_months=3, early_stopping_months=2)


def test_window_table_reads_only_the_window_and_gives_the_same_split(features: pd.DataFrame) -> None:
    """The lazily read window gives exactly the split of all months; months before it are never read."""
    by_month = {m: f.reset_index(drop=True) for m, f in features.groupby("sale_month")}
    newest = max(by_month)
    by_month[newest] = by_month[newest].iloc[0:0]  # an empty newest month does not end the window
    read: list[str] = []

    def loader(month: str):
        def load() -> pd.DataFrame:
            read.append(month)
            return by_month[month]

        return load

    table = window_table({m: loader(m) for m in by_month}, window_months=24)
    assert len(read) < len(by_month) and min(read) >= shift_month(max(read), -24)
    pruned = time_split(table, validation_months=3, window_months=24)
    full = time_split(pd.concat(by_month.values(), ignore_index=True), validation_months=3, window_months=24)
    assert pruned.summary() == full.summary()
    for a, b in ((pruned.train, full.train), (pruned.validation, full.validation)):
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    assert window_table({m: loader(m) for m in [newest]}).empty
