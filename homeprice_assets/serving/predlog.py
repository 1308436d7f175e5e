"""The prediction log: every prediction, with the model version and role that made it, in a SQL table.

Requests only put rows on an in-memory queue; a writer thread inserts them in batches. A slow or broken
database therefore never slows or fails a request: rows that cannot be written are counted (and the
queue is bounded, so a long outage drops the oldest work instead of exhausting memory).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from homeprice_assets.config import homeprice_home

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


class PredictionLog:
    """Batched, off-request-path writer of prediction rows."""

    def __init__(
        self,
        url: str | None = None,
        batch_size: int = 1000,
        flush_interval_s: float = 0.5,
        max_queue: int = 1_000_000,
        on_failure: Callable[[int], None] | None = None,
    ) -> None:
        self.url = url or default_url()
        if self.url.startswith("sqlite:///"):
            from pathlib import Path

            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = sa.create_engine(self.url, pool_pre_ping=True)
        metadata.create_all(self.engine)
        self.batch_size, self.flush_interval_s = batch_size, flush_interval_s
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=max_queue)
        self.on_failure = on_failure
        self.written = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Queue rows (never blocks the request; a full queue counts the rows as failed)."""
        now = dt.datetime.now(dt.UTC)
        for row in rows:
            row.setdefault("created_at", now)
            if not isinstance(row.get("inputs"), str):
                row["inputs"] = json.dumps(row.get("inputs"), default=str)
            try:
                self._queue.put_nowait(row)
            except queue.Full:
                self._count_failed(1)

    def _count_failed(self, n: int) -> None:
        self.failed += n
        if self.on_failure:
            self.on_failure(n)

    def _drain(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        while len(batch) < self.batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def flush(self) -> int:
        """Write what is queued now; returns rows written."""
        total = 0
        while batch := self._drain():
            try:
                with self.engine.begin() as conn:
                    conn.execute(predictions.insert(), batch)
                self.written += len(batch)
                total += len(batch)
            except Exception as exc:
                log.warning("prediction log: %d row(s) not written: %s", len(batch), exc)
                self._count_failed(len(batch))
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            self.flush()
        self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.engine.dispose()
