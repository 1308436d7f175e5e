"""Dagster's local SQLite storage without a disk flush for every event it records.

Dagster's SQLite event log (WAL mode) opens a connection for each event and closes it at once. Closing the
last connection to a WAL database checkpoints the WAL into the database and deletes it: three to five
fsyncs per event (WAL, database, folder). An ingest month records about 16 events (materializations, check
evaluations, a log line), so on a disk with slow flushes most of an ingest was spent waiting for them
(24 months: 29.4 s, against 22.5 s with this storage and 22 s on tmpfs, on one machine in one session).

This storage keeps one connection open to each database the process is writing (the index and the runs it
is executing) and runs their statements on it, so a WAL is checkpointed when it grows (SQLite's
``wal_autocheckpoint``, 1000 pages) or when its run ends, and no event opens a connection of its own;
keeps each other database's engine, so SQLAlchemy compiles a statement once, not once per event; remembers
the index's tables (Dagster asked at every asset event, with a new engine); stamps a new run's database
with the alembic head read once per process (Dagster read the ~90 migration scripts twice for every run,
about 50 ms); and writes with
``synchronous=NORMAL``, the setting SQLite documents for WAL: the
database cannot be corrupted by a crash; a power cut may lose the last transactions. Files and layout are
those of ``storage: sqlite``, so a home made before keeps its history. A run's event file now changes only
at checkpoints, so the live log watcher (the UI's run page) also watches the run's WAL file.

Selected by the repository's ``dagster.yaml`` (``storage: custom``); PostgreSQL (the production profile)
is unaffected.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as db
import yaml
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from dagster._core.event_api import EventLogRecord
from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.schema import SqlEventLogStorageMetadata
from dagster._core.storage.event_log.sqlite import sqlite_event_log
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SqliteEventLogStorage,
    SqliteEventLogStorageWatchdog,
)
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sql import get_alembic_config, safe_commit
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._serdes import ConfigurableClassData
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool, StaticPool
from watchdog.events import FileSystemEvent
from watchdog.observers import Observer

_RUN_ENDED = {
    DagsterEventType.RUN_SUCCESS,
    DagsterEventType.RUN_FAILURE,
    DagsterEventType.RUN_CANCELED,
}
# Runs whose files a process keeps open at once (a run worker executes one; an in-process test a few).
_MAX_KEPT_RUNS = 8
# Materializations remembered with their storage ids (``stored_materialization``): a month's, for a while.
_MAX_REMEMBERED = 256


class _KeptOpen:
    """Engines of one kept-open connection each, to the databases this process writes (LRU).

    The open connection stops SQLite from checkpointing the WAL at every close (module doc), and each
    statement runs on it instead of on a new connection (opening one, with its pragmas, was about 7% of an
    ingest). A ``StaticPool`` engine hands its one connection to every caller: callers take the storage's
    lock first (``_connect``), so one uses it at a time. Releasing a database closes its connection: the
    last close checkpoints the WAL into the database.
    """

    def __init__(self, limit: int) -> None:
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._limit = limit

    def engine(self, conn_string: str) -> Engine | None:
        return self._engines.get(conn_string)

    def hold(self, conn_string: str) -> None:
        if conn_string in self._engines:
            self._engines.move_to_end(conn_string)
            return
        engine = db.create_engine(
            conn_string,
            poolclass=StaticPool,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
        )
        db.event.listen(engine, "connect", _synchronous_normal)
        with engine.connect() as conn:  # opened now, and kept: it counts as open to SQLite from now on
            conn.exec_driver_sql("PRAGMA schema_version").fetchone()
        self._engines[conn_string] = engine
        while len(self._engines) > self._limit:
            self._engines.popitem(last=False)[1].dispose()

    def release(self, conn_string: str) -> None:
        engine = self._engines.pop(conn_string, None)
        if engine is not None:
            engine.dispose()  # closes its connection: the last close checkpoints the WAL

    def release_all(self) -> None:
        while self._engines:
            self._engines.popitem()[1].dispose()


class _Engines:
    """One engine per database file (LRU): its compiled-statement cache outlives the event.

    Dagster builds a new engine for every event, so SQLAlchemy compiled the same INSERTs and SELECTs again
    each time (14% of an ingest). Connections stay per call (``NullPool``): what keeps a WAL open is
    ``_KeptOpen``, for the databases this process writes, not every database it reads.
    """

    def __init__(self, limit: int) -> None:
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._lock = threading.Lock()
        self._limit = limit

    def get(self, conn_string: str) -> Engine:
        with self._lock:
            engine = self._engines.get(conn_string)
            if engine is not None:
                self._engines.move_to_end(conn_string)
                return engine
            engine = db.create_engine(
                conn_string, poolclass=NullPool, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
            )
            db.event.listen(engine, "connect", _synchronous_normal)
            self._engines[conn_string] = engine
            while len(self._engines) > self._limit:
                self._engines.popitem(last=False)
            return engine

    def clear(self) -> None:
        with self._lock:
            self._engines.clear()


def _synchronous_normal(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


class _RunWatchdog(SqliteEventLogStorageWatchdog):
    """Dagster's live watcher of a run's events, woken by its WAL file too (where new events land)."""

    def __init__(self, storage: SqliteEventLogStorage, run_id: str, callback: Any, cursor: Any) -> None:
        super().__init__(storage, run_id, callback, cursor)
        self._patterns = [self._log_path, f"{self._log_path}-wal"]

    def on_modified(self, event: FileSystemEvent) -> None:
        self._process_log()


@functools.cache
def _alembic_scripts() -> ScriptDirectory:
    """The migration scripts of Dagster's SQLite event log, as its ``_initdb`` reads them (once here)."""
    return ScriptDirectory.from_config(get_alembic_config(sqlite_event_log.__file__))


class KeptOpenSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` that flushes to disk at checkpoints, not at every event (module doc)."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._engines = _Engines(limit=64)  # before super's init, which reads the index
        self._kept = _KeptOpen(limit=_MAX_KEPT_RUNS + 1)  # the runs and the index
        self._tables: set[str] = set()
        self._stored: OrderedDict[tuple[Any, str | None], EventLogRecord] = OrderedDict()
        self._storing = threading.local()
        super().__init__(base_dir, inst_data)

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> KeptOpenSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        """Dagster's ``_connect`` (one transaction under the storage's lock) on the shard's kept engine."""
        with self._db_lock:
            conn_string = self.conn_string_for_shard(shard)
            engine = self._kept.engine(conn_string) or self._engines.get(conn_string)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def _initdb(self, engine: Engine, for_index_shard: bool = False) -> None:
        """A new run's database as Dagster makes it (its tables, WAL, stamped at the alembic head), with the
        migration scripts read once per process. The index, and any database this finds not new or that
        another process is creating at the same moment, go through Dagster's own ``_initdb``."""
        if not for_index_shard:
            try:
                with engine.connect() as conn:
                    context = MigrationContext.configure(conn)
                    if context.get_current_revision() is not None:
                        return
                    if not db.inspect(conn).get_table_names():
                        SqlEventLogStorageMetadata.create_all(conn)
                        conn.execute(db.text("PRAGMA journal_mode=WAL;"))
                        context.stamp(_alembic_scripts(), "head")
                        safe_commit(conn)
                        return
            except (db.exc.DatabaseError, sqlite3.DatabaseError):
                pass  # Dagster's retries sort out a concurrent creation
        super()._initdb(engine, for_index_shard)

    def has_table(self, table_name: str) -> bool:
        """Dagster asks at every asset event whether the index has a table (a new engine and connection
        each time); a table that exists stays, so a yes is remembered."""
        if table_name not in self._tables:  # not under the lock: Dagster asks inside its transactions too
            engine = self._engines.get(self.conn_string_for_shard(INDEX_SHARD_NAME))
            with engine.connect() as conn:
                if engine.dialect.has_table(conn, table_name):
                    self._tables.add(table_name)
        return table_name in self._tables

    def _store_asset_event(self, conn: Connection, event: EventLogEntry, event_id: int) -> None:
        super()._store_asset_event(conn, event, event_id)
        self._storing.record = EventLogRecord(event_id, event)  # remembered once its transaction is done

    def stored_materialization(self, asset_key: Any, partition: str | None) -> EventLogRecord | None:
        """The newest materialization of ``asset_key`` (``partition``) that this process stored, with its
        storage id, as ``fetch_materializations`` would return it: the ingest step points each month's
        checks and downstream provenance at the materialization it just stored, without a query."""
        with self._db_lock:
            return self._stored.get((asset_key, partition))

    def store_event(self, event: EventLogEntry) -> None:
        self._storing.record = None
        super().store_event(event)  # creates the run's file on its first event
        record, self._storing.record = self._storing.record, None
        with self._db_lock:
            if record is not None and event.dagster_event_type == DagsterEventType.ASSET_MATERIALIZATION:
                key = (event.dagster_event.asset_key, event.dagster_event.partition)
                self._stored.pop(key, None)
                self._stored[key] = record
                while len(self._stored) > _MAX_REMEMBERED:
                    self._stored.popitem(last=False)
            self._kept.hold(self.conn_string_for_shard(INDEX_SHARD_NAME))
            if not event.run_id:
                return
            run_db = self.conn_string_for_shard(event.run_id)
            if event.is_dagster_event and event.dagster_event_type in _RUN_ENDED:
                self._kept.release(run_db)
            else:
                self._kept.hold(run_db)

    def watch(self, run_id: str, cursor: str | None, callback: Any) -> None:
        """Dagster's ``watch``, with a watcher that also wakes on the run's WAL file."""
        if not self._obs:
            self._obs = Observer()
            self._obs.start()
        handler = _RunWatchdog(self, run_id, callback, cursor)
        self._watchers[run_id][callback] = (
            handler,
            self._obs.schedule(handler, self._base_dir, recursive=True),
        )

    def wipe(self) -> None:
        with self._db_lock:
            self._kept.release_all()
            self._engines.clear()
            self._tables.clear()
            self._stored.clear()
        super().wipe()

    def dispose(self) -> None:
        with self._db_lock:
            self._kept.release_all()
            self._engines.clear()
        super().dispose()


class LocalSqliteStorage(DagsterSqliteStorage):
    """Dagster's ``storage: sqlite`` (same files) with the event log above."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self.base_dir = base_dir
        self._run_storage = SqliteRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = KeptOpenSqliteEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = SqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Any) -> LocalSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)

    @property
    def event_storage_data(self) -> ConfigurableClassData | None:
        return ConfigurableClassData(
            __name__,
            KeptOpenSqliteEventLogStorage.__name__,
            yaml.dump({"base_dir": _event_logs_directory(self.base_dir)}, default_flow_style=False),
        )


def instance_settings(base_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``dagster.yaml`` settings of a local instance with this storage in ``base_dir``."""
    config = {"base_dir": str(base_dir)}
    return {"storage": {"custom": {"module": __name__, "class": "LocalSqliteStorage", "config": config}}}
