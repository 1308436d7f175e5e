"""Sale months ("YYYY-MM") as dynamic partitions: a month exists once sales for it have landed.

Dynamic rather than calendar partitions, so that replaying 2010-2016 (or a user's own history) shows exactly
the months that have data, and automation that waits on "all upstream partitions" waits on real months only.
"""

from __future__ import annotations

import warnings
from typing import Any

import dagster as dg

SALE_MONTH = "sale_month"
sale_month_partitions = dg.DynamicPartitionsDefinition(name=SALE_MONTH)


def register_months(instance: dg.DagsterInstance, months: list[str]) -> list[str]:
    """Add months not yet known to the instance; returns the ones added."""
    known = set(instance.get_dynamic_partitions(SALE_MONTH))
    new = sorted(set(months) - known)
    if new:
        instance.add_dynamic_partitions(SALE_MONTH, new)
    return new


def month_check(name: str, asset: str, **kwargs: Any) -> dg.AssetCheckSpec:
    """A check evaluated per sale month: its results are recorded (and shown) per partition of ``asset``.

    Partitioned check specs are a Dagster preview (1.13); the warning is silenced here, once, on purpose:
    a range run must record each month's verdict under its own month.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(name, asset=asset, partitions_def=sale_month_partitions, **kwargs)
