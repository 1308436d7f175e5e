"""The prediction log: every prediction, with the model version and role that made it, in a SQL table.

A request only puts a job on an in-memory queue: the rows themselves (one dict and one JSON string per home)
are built by a writer thread and inserted in batches, so neither a 100k-row batch nor a slow or broken
database slows or fails a request. Rows the database refuses are kept and written again once it answers (a
failover, a restart: seconds), with a back-off; the rows waiting, queued or kept, are bounded, so a long
outage counts new rows as failed instead of exhausting memory. Rows still unwritten at ``close`` are counted
as failed too.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from homeprice_assets.config import homeprice_home

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("homeprice.serving")

metadata = sa.MetaData()
predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False, index=True),
    sa.Column("model_role", sa.String(32), nullable=False),  # champion | challenger | shadow
    sa.Column("parcel_id", sa.String(64), nullable=True, index=True),  # joins later sales (ground truth)
    sa.Column("location", sa.String(64), nullable=True),
    sa.Column("inputs", sa.Text, nullable=False),  # JSON of the request fields
    sa.Column("price", sa.Float, nullable=False),
    sa.Column("price_lower", sa.Float, nullable=False),
    sa.Column("price_upper", sa.Float, nullable=False),
)


def default_url() -> str:
    return f"sqlite:///{homeprice_home() / 'predictions.db'}"


Rows = list[dict[str, Any]]


class PredictionLog:
    """Batched, off-request-path writer of prediction rows."""

    def __init__(
        self,
        url: str | None = None,
        batch_size: int = 1000,
        flush_interval_s: float = 0.5,
        max_pending_rows: int = 1_000_000,
        on_failure: Callable[[int], None] | None = None,
        max_unwritten_rows: int = 100_000,
    ) -> None:
        self.url = url or default_url()
        if self.url.startswith("sqlite:///"):
            from pathlib import Path

            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = sa.create_engine(self.url, pool_pre_ping=True)
        metadata.create_all(self.engine)
        self.batch_size, self.flush_interval_s = batch_size, flush_interval_s
        self.max_pending_rows = max_pending_rows
        # Kept rows are built dicts (about 1 kB each), not the queue's lazy jobs: a cap of their own.
        self.max_unwritten_rows = max_unwritten_rows
        # jobs: (row count, request time, a function that builds the rows)
        self._queue: queue.SimpleQueue[tuple[int, dt.datetime, Callable[[], Rows]]] = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self.on_failure = on_failure
        self.written = 0
        self.failed = 0
        self._stop = threading.Event()
        self._flushing = threading.Lock()
        # batches the database refused, oldest first, and when to try them again (0: not backing off)
        self._unwritten: list[Rows] = []
        self._retry_at = 0.0
        self._backoff_s = 0.0
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def append(self, rows: Rows) -> None:
        """Queue ready-made rows (never blocks the request)."""
        self.submit(len(rows), lambda: rows)

    def submit(self, n: int, build: Callable[[], Rows]) -> None:
        """Queue ``n`` rows that ``build`` makes later, on the writer thread; O(1) for the caller.

        When more than ``max_pending_rows`` are waiting, the rows are counted as failed instead."""
        with self._lock:
            full = self._pending + n > self.max_pending_rows
            if not full:
                self._pending += n
        if full:
            self._count_failed(n)
            return
        self._queue.put((n, dt.datetime.now(dt.UTC), build))

    @property
    def pending(self) -> int:
        """Rows queued and not yet written or counted as failed."""
        return self._pending

    def _count_failed(self, n: int) -> None:
        self.failed += n
        if self.on_failure:
            self.on_failure(n)

    def _give_up(self, n: int) -> None:
        """``n`` pending rows will not be written: counted as failed, no longer pending."""
        self._count_failed(n)
        self._done(n)

    def _done(self, n: int) -> None:
        with self._lock:
            self._pending -= n

    def _rows(self, n: int, at: dt.datetime, build: Callable[[], Rows]) -> Rows:
        try:
            rows = build()
        except Exception as exc:
            log.warning("prediction log: %d row(s) could not be built: %s", n, exc)
            self._give_up(n)
            return []
        if len(rows) != n:  # keep the pending count honest whatever the builder made
            self._done(n - len(rows))
        for row in rows:
            row.setdefault("created_at", at)
            if not isinstance(row.get("inputs"), str):
                row["inputs"] = json.dumps(row.get("inputs"), default=str)
        return rows

    def _write(self, batch: Rows) -> None:
        """Insert ``batch``, or keep it for a retry (behind any batch already kept: rows keep their order)."""
        rest = batch if self._unwritten else self._insert(batch)
        if rest:
            self._unwritten.append(rest)
            while self.unwritten > self.max_unwritten_rows and len(self._unwritten) > 1:
                dropped = self._unwritten.pop(0)  # a long outage: the oldest kept rows go, counted
                self._give_up(len(dropped))

    def _insert(self, batch: Rows) -> Rows:
        """Write ``batch``; returns the rows to keep for a retry (the database could not be reached).

        Rows the database refuses for what they are (a constraint, a value the driver cannot send) would be
        refused again: one such row fails the whole insert, so the rows are then written one by one and only
        those refused are counted as failed."""
        try:
            with self.engine.begin() as conn:
                conn.execute(predictions.insert(), batch)
        except Exception as exc:
            if _transient(exc):
                self._backoff_s = min(max(2 * self._backoff_s, self.flush_interval_s, 0.5), 30.0)
                self._retry_at = time.monotonic() + self._backoff_s
                log.warning(
                    "prediction log: %d row(s) not written, retried in %.1f s: %s",
                    len(batch),
                    self._backoff_s,
                    exc,
                )
                return batch
            if len(batch) == 1:
                log.warning("prediction log: a row refused, not retried: %s", exc)
                self._give_up(1)
                return []
            for i, row in enumerate(batch):
                if self._insert([row]):
                    return batch[i:]
            return []
        self._backoff_s = 0.0
        self.written += len(batch)
        self._done(len(batch))
        return []

    def _retry(self, final: bool = False) -> None:
        """Write the kept batches once their back-off is over (``final``: now, and count what still fails)."""
        if not self._unwritten or (not final and time.monotonic() < self._retry_at):
            return
        while self._unwritten:
            rest = self._insert(self._unwritten[0])
            if rest:
                self._unwritten[0] = rest
                break
            self._unwritten.pop(0)
        if final:
            for batch in self._unwritten:
                self._give_up(len(batch))
            self._unwritten = []

    @property
    def unwritten(self) -> int:
        """Rows the database refused, kept for a retry."""
        return sum(len(b) for b in list(self._unwritten))

    def flush(self, final: bool = False) -> int:
        """Build and write everything queued now, ``batch_size`` rows per insert; returns rows written.

        Batches the database refused earlier go first, once their back-off is over (``final``: at once, and
        what still fails is counted as failed)."""
        with self._flushing:
            before = self.written
            self._retry(final)
            batch: Rows = []
            while True:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                batch.extend(self._rows(*job))
                while len(batch) >= self.batch_size:
                    self._write(batch[: self.batch_size])
                    batch = batch[self.batch_size :]
            if batch:
                self._write(batch)
            if final:
                self._retry(final=True)
            return self.written - before

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            self.flush()
        self.flush(final=True)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.engine.dispose()


def _transient(exc: Exception) -> bool:
    """Could the same insert succeed later? Only what the rows themselves cause (a constraint, a value the
    driver cannot send, such as a NUL in text) cannot; anything else (a lost connection, a read-only standby
    after a failover, a timeout, a missing table or privilege) is kept and tried again."""
    if isinstance(exc, sa.exc.IntegrityError | sa.exc.DataError):
        return False
    if isinstance(exc, sa.exc.DBAPIError):
        return True
    if isinstance(exc, sa.exc.StatementError):  # raised before the database saw it: the driver's own
        return not isinstance(exc.orig, ValueError | TypeError)
    return not isinstance(exc, ValueError | TypeError)


READ_COLUMNS = (
    "id",
    "request_id",
    "created_at",
    "model_name",
    "model_version",
    "model_role",
    "parcel_id",
    "price",
    "price_lower",
    "price_upper",
    "inputs",
)


def read_predictions(
    url: str | None,
    parcel_ids: list[str] | None = None,
    model_name: str | None = None,
    chunk: int = 5000,
) -> pd.DataFrame:
    """Logged predictions (for ground truth), optionally only for ``parcel_ids`` and one model name.

    ``valuation_date`` is the request's ``sale_date`` (the date the home was priced for) when it gave one.
    Reads in chunks of parcel ids, so a month of sales is a few indexed queries on SQLite or PostgreSQL.
    """
    import pandas as pd

    engine = sa.create_engine(url or default_url())
    try:
        metadata.create_all(engine)  # an empty log is a log with no rows, not an error
        cols = [predictions.c[c] for c in READ_COLUMNS]
        frames = []
        with engine.connect() as conn:
            batches = (
                [None]
                if parcel_ids is None
                else [parcel_ids[i : i + chunk] for i in range(0, len(parcel_ids), chunk)]
            )
            for batch in batches:
                query = sa.select(*cols)
                if batch is not None:
                    query = query.where(predictions.c.parcel_id.in_(batch))
                if model_name is not None:
                    query = query.where(predictions.c.model_name == model_name)
                frames.append(pd.DataFrame(conn.execute(query).fetchall(), columns=list(READ_COLUMNS)))
    finally:
        engine.dispose()
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(READ_COLUMNS))
    out["created_at"] = pd.to_datetime(out["created_at"], utc=True).dt.tz_localize(None)
    day = out["inputs"].astype(str).str.extract(r'"sale_date"\s*:\s*"(\d{4}-\d{2}-\d{2})', expand=False)
    out["valuation_date"] = pd.to_datetime(day, errors="coerce")
    return out.drop(columns=["inputs"])
