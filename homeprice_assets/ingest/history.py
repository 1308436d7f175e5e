"""The newest materialization of each of many months, in two queries instead of one query per month.

An ingest run judges each month against the months before it (row counts, price levels) and the
``homeprice ingest`` report asks, per month, what the last ingest of the same files said. Asked month by
month, each answer was a query of its own: in an 84-month run, hundreds of event-log queries (about 7% of
the run). These helpers read what a run needs once, at its start.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence

import dagster as dg
from dagster._core.events import DagsterEventType


def latest_records(
    instance: dg.DagsterInstance,
    key: dg.AssetKey,
    months: Collection[str],
    usable: Callable[[dg.AssetMaterialization], bool] | None = None,
    fallback_limit: int = 30,
) -> dict[str, dg.EventLogRecord]:
    """``key``'s newest materialization record of each of ``months`` (months never materialized are absent).

    ``usable``: when the newest record of a month is not usable, the newest one that is (among the month's
    ``fallback_limit`` newest), as reading the month's history newest first finds it.
    """
    if not months:  # no partitions to the storage means every partition
        return {}
    ids = instance.event_log_storage.get_latest_storage_id_by_partition(
        key, DagsterEventType.ASSET_MATERIALIZATION, set(months)
    )
    if not ids:
        return {}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, storage_ids=list(ids.values())), limit=len(ids)
    ).records
    out = {str(r.asset_materialization.partition): r for r in records if r.asset_materialization}
    for month, record in list(out.items()):
        if usable is not None and not usable(record.asset_materialization):
            del out[month]
            older = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, asset_partitions=[month]), limit=fallback_limit
            ).records
            found = [r for r in older if r.asset_materialization and usable(r.asset_materialization)]
            if found:
                out[month] = found[0]
    return out


def prior_months(known: Iterable[str], months: Sequence[str], lookback: int) -> set[str]:
    """The ``lookback`` registered months before each of ``months``: what their checks compare with."""
    ordered = sorted(known)
    return {m for month in months for m in _before(ordered, month, lookback)}


def window(values: dict[str, float], known: Iterable[str], month: str, lookback: int) -> dict[str, float]:
    """The values of the ``lookback`` registered months before ``month`` that have one."""
    return {m: values[m] for m in _before(sorted(known), month, lookback) if m in values}


def _before(ordered: Sequence[str], month: str, lookback: int) -> list[str]:
    """The ``lookback`` months of ``ordered`` (sorted) just before ``month``."""
    return [m for m in ordered if m < month][-lookback:]
