"""Time-ordered splits of a feature table.

Home prices move with the market, so every held-out slice is *later* than the rows a model learns from:
validation is the most recent months, the conformal calibration slice is the end of the training period and
the early-stopping slice is the end of what remains. A random split would leak the future price level.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd


def month_of(frame: pd.DataFrame) -> pd.Series:
    """``YYYY-MM`` of each row: ``sale_month`` when present, else derived from ``sale_date``."""
    if "sale_month" in frame:
        return frame["sale_month"].astype(str)
    return pd.to_datetime(frame["sale_date"]).dt.strftime("%Y-%m")


def shift_month(month: str, n: int) -> str:
    """``month`` moved by ``n`` months (``YYYY-MM``)."""
    return (pd.Period(month, freq="M") + n).strftime("%Y-%m")


def _range(frame: pd.DataFrame) -> tuple[str, str] | None:
    if not len(frame):
        return None
    months = month_of(frame)
    return (months.min(), months.max())


def split_tail(frame: pd.DataFrame, months: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(head, tail): the tail holds the last ``months`` calendar months present in ``frame``'s range.

    The cut is by calendar month, not by row count, so every row of a month falls on the same side.
    """
    if months <= 0 or not len(frame):
        return frame, frame.iloc[0:0]
    m = month_of(frame)
    first_tail = shift_month(m.max(), -(months - 1))
    in_tail = m >= first_tail
    return frame.loc[~in_tail], frame.loc[in_tail]


@dataclass(frozen=True)
class TrainingSplit:
    """Training slices for one fit; ``fit`` + ``early_stopping`` + ``calibration`` = the training rows."""

    fit: pd.DataFrame  # trees learn from these (early stopping rows excluded only while choosing rounds)
    early_stopping: pd.DataFrame  # last months of ``fit``: the inner, time-ordered early-stopping slice
    calibration: pd.DataFrame  # last months of training: conformal scores on data the trees never saw

    @property
    def fit_all(self) -> pd.DataFrame:
        """Rows the trees are finally refit on (fit + early-stopping months)."""
        return pd.concat([self.fit, self.early_stopping])

    def ranges(self) -> dict[str, tuple[str, str] | None]:
        return {
            "fit": _range(self.fit),
            "early_stopping": _range(self.early_stopping),
            "calibration": _range(self.calibration),
        }


def training_split(
    train: pd.DataFrame, calibration_months: int = 3, early_stopping_months: int = 3
) -> TrainingSplit:
    """Cut the calibration slice from the end of ``train``, then the early-stopping slice before it."""
    rest, calibration = split_tail(train, calibration_months)
    fit, early = split_tail(rest, early_stopping_months)
    if not len(fit):
        months = month_of(train)
        span = f"{months.nunique()} month(s), {months.min()}..{months.max()}" if len(train) else "no month"
        raise ValueError(
            f"training data spans {span}: too few for {calibration_months} calibration and "
            f"{early_stopping_months} early-stopping months and at least one to fit on (the validation set "
            "takes the newest training.validation_months before that); land more history"
        )
    return TrainingSplit(fit=fit, early_stopping=early, calibration=calibration)


@dataclass(frozen=True)
class TimeSplit:
    """Training and validation sets of one window, with the month ranges that the run records."""

    train: pd.DataFrame
    validation: pd.DataFrame
    window: tuple[str, str]
    train_range: tuple[str, str]
    validation_range: tuple[str, str]

    def summary(self) -> dict[str, object]:
        """JSON-friendly facts for MLflow params, Dagster metadata and the model card."""
        return {
            "window_start": self.window[0],
            "window_end": self.window[1],
            "train_start": self.train_range[0],
            "train_end": self.train_range[1],
            "validation_start": self.validation_range[0],
            "validation_end": self.validation_range[1],
            "train_rows": len(self.train),
            "validation_rows": len(self.validation),
        }


def time_split(
    table: pd.DataFrame,
    validation_months: int = 3,
    window_months: int | None = None,
    end_month: str | None = None,
) -> TimeSplit:
    """Training = months before the last ``validation_months`` of the window; validation = those months.

    ``end_month`` (``YYYY-MM``) closes the window (default: the newest month in ``table``); ``window_months``
    bounds it (default: all history). Rows after ``end_month`` are ignored, never used for training.
    """
    months = month_of(table)
    end = end_month or months.max()
    start = shift_month(end, -(window_months - 1)) if window_months else months.min()
    in_window = (months >= start) & (months <= end)
    first_validation = shift_month(end, -(validation_months - 1))
    is_val = in_window & (months >= first_validation)
    is_train = in_window & (months < first_validation)
    train = table.loc[is_train].sort_values("sale_date", kind="stable")
    validation = table.loc[is_val].sort_values("sale_date", kind="stable")
    if not len(train) or not len(validation):
        raise ValueError(
            f"empty split: {int(is_train.sum())} training and {int(is_val.sum())} validation rows in window "
            f"{start}..{end} with {validation_months} validation month(s)"
        )
    return TimeSplit(
        train=train,
        validation=validation,
        window=(max(start, months[in_window].min()), end),
        train_range=_range(train),  # type: ignore[arg-type]
        validation_range=(first_validation, end),
    )


def window_table(
    loaders: Mapping[str, Callable[[], pd.DataFrame] | pd.DataFrame],
    window_months: int | None = None,
    usable: Callable[[str], bool] = lambda month: True,
) -> pd.DataFrame:
    """The months of ``time_split``'s window, read one at a time, newest first, as one table.

    The same rows ``time_split(all months, window_months=...)`` would keep: the window ends at the newest
    month that has rows and spans ``window_months`` calendar months back from it. Months before the window
    are never read, so the cost follows the window, not the whole history. Empty table when none has rows.
    """
    frames: list[pd.DataFrame] = []
    start: str | None = None
    for month in sorted(loaders, reverse=True):
        if start is not None and month < start:
            break
        if not usable(month):
            continue
        item = loaders[month]
        frame = item() if callable(item) else item
        if not len(frame):
            continue
        if start is None and window_months:
            start = shift_month(month_of(frame).max(), -(window_months - 1))
        frames.append(frame)
    if not frames:
        return pd.DataFrame()
    frames.reverse()  # oldest first, as the stored months are read otherwise
    table = pd.concat(frames, ignore_index=True)
    frames.clear()
    return table
