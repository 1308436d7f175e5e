"""What an ingest month costs the local event log: no database connection of its own.

Dagster's SQLite event log opened (and closed) a connection for every event and asked for every asset event
whether a table exists, on yet another one: about 5 connections per event, 16 events per month. The local
storage (``homeprice_assets.sqlite_storage``) runs them on the connection it keeps open.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import dagster as dg
import pandas as pd
import sqlalchemy as db
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from homeprice_assets.resources.landing import LocalLandingZone
from homeprice_assets.resources.storage import ParquetStorage
from homeprice_assets.sqlite_storage import KeptOpenSqliteEventLogStorage, instance_settings
from homeprice_assets_tests.helpers import ingest_range

MONTHS = ["2014-01", "2014-02", "2014-03", "2014-04"]


def _connections_and_events(root: Path, months: list[str], sales: pd.DataFrame) -> tuple[int, int]:
    """Connections opened (every SQLAlchemy engine in the process) and events stored by one ingest run."""
    zone = LocalLandingZone(root=str(root / "landing"))
    for month in months:
        rows = sales[sales["sale_date"].str.startswith(month)]
        zone.write_bytes(f"sales_{month}.csv", rows.to_csv(index=False).encode())
    opened: list[object] = []

    def count(dbapi_connection: object, _record: object) -> None:
        opened.append(dbapi_connection)

    with dg.instance_for_test(overrides=instance_settings(root / "dagster")) as instance:
        db.event.listen(db.engine.Engine, "connect", count)
        try:
            result = ingest_range(months, instance, zone, ParquetStorage(base_dir=str(root / "storage")))
        finally:
            db.event.remove(db.engine.Engine, "connect", count)
        assert result.success
        events = len(instance.get_records_for_run(result.run_id, limit=100_000).records)
    return len(opened), events


def test_more_months_open_no_more_connections(tmp_path: Path, bundled_sales: pd.DataFrame) -> None:
    two, two_events = _connections_and_events(tmp_path / "two", MONTHS[:2], bundled_sales)
    four, four_events = _connections_and_events(tmp_path / "four", MONTHS, bundled_sales)
    assert four_events - two_events >= 2 * 14  # each month stores its materializations, checks, log line
    # what a run opens (creating it, its first events) does not grow with its months
    assert four - two <= 2, (two, four)


def _schema(path: Path) -> tuple[list, list, list]:
    with sqlite3.connect(path) as conn:
        return (
            sorted(conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall(), key=str),
            conn.execute("SELECT version_num FROM alembic_version").fetchall(),
            conn.execute("PRAGMA journal_mode").fetchall(),
        )


def test_a_new_runs_database_is_the_one_dagster_makes(tmp_path: Path) -> None:
    """The storage stamps a run's database from migration scripts it read once; Dagster's own ``_initdb``
    reads them twice per run. Same tables, indexes, alembic revision and journal mode, for every run."""
    made = {}
    for name, storage_class in (("ours", KeptOpenSqliteEventLogStorage), ("dagster", SqliteEventLogStorage)):
        storage = storage_class(str(tmp_path / name))
        for run in ("first", "second"):
            engine = db.create_engine(storage.conn_string_for_shard(run))
            storage._initdb(engine)
            storage._initdb(engine)  # a database made already is left as it is
            engine.dispose()
            made[name, run] = _schema(tmp_path / name / f"{run}.db")
    assert made["ours", "first"] == made["dagster", "first"] == made["ours", "second"]
    tables, [(revision,)], [(journal,)] = made["ours", "first"]
    assert journal == "wal" and revision and any(name == "event_logs" for _, name, _ in tables)
