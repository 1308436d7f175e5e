"""Shadow pricing off the request path: the candidate prices what the champion answered, later, in bulk.

A request only queues its batch (O(1)); one worker thread drains everything queued, prices it in one
vectorized call per candidate version and hands the rows to the prediction log. Batching is what keeps the
shadow's cost small next to the request path (one model call per drain, not one per request). Close drains
the queue before the log closes, so a shutdown or a flip of mode loses no shadow row.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from homeprice_assets.serving.batch import Batch, concat_columns, outputs
from homeprice_assets.serving.holder import LoadedModel

log = logging.getLogger("homeprice.serving")


@dataclass(frozen=True)
class ShadowJob:
    request_id: str
    batch: Batch
    model: LoadedModel


Predict = Callable[[LoadedModel, dict[str, np.ndarray]], Any]
Done = Callable[[ShadowJob, tuple[np.ndarray, np.ndarray, np.ndarray]], None]


class ShadowPricer:
    """One worker thread; ``submit`` never blocks; failures are counted, never raised to a caller."""

    def __init__(
        self,
        predict: Predict,
        done: Done,
        max_pending_rows: int = 200_000,
        on_failure: Callable[[int], None] | None = None,
        collect_s: float = 0.05,
    ) -> None:
        self.predict, self.done = predict, done
        self.collect_s = collect_s  # wait this long after a job for more: fewer, larger model calls
        self.max_pending_rows, self.on_failure = max_pending_rows, on_failure
        self._queue: queue.SimpleQueue[ShadowJob | None] = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self.priced = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
        self._thread.start()

    def submit(self, job: ShadowJob) -> None:
        n = len(job.batch)
        with self._lock:
            full = self._pending + n > self.max_pending_rows
            if not full:
                self._pending += n
        if full:
            self._fail(n, "queue full")
            return
        self._queue.put(job)

    @property
    def pending(self) -> int:
        return self._pending

    def _fail(self, n: int, why: str) -> None:
        self.failed += n
        log.warning("shadow: %d row(s) not priced: %s", n, why)
        if self.on_failure:
            self.on_failure(n)

    def _price(self, jobs: list[ShadowJob]) -> None:
        """One model call for all jobs of one candidate version; per job only if the bulk call fails."""
        try:
            prices, lowers, uppers = outputs(
                self.predict(jobs[0].model, concat_columns([j.batch for j in jobs]))
            )
            start = 0
            for job in jobs:
                end = start + len(job.batch)
                self.done(job, (prices[start:end], lowers[start:end], uppers[start:end]))
                start = end
                self.priced += len(job.batch)
            return
        except Exception as exc:
            if len(jobs) == 1:
                self._fail(len(jobs[0].batch), repr(exc))
                return
        for job in jobs:  # one bad job (e.g. a location the candidate never saw) spoils only itself
            self._price([job])

    def _drain(self, first: ShadowJob) -> bool:
        jobs, stop = [first], False
        while len(jobs) < 10_000:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                stop = True
                break
            jobs.append(job)
        by_version: dict[str, list[ShadowJob]] = {}
        for job in jobs:
            by_version.setdefault(job.model.version, []).append(job)
        for group in by_version.values():
            self._price(group)
        with self._lock:
            self._pending -= sum(len(j.batch) for j in jobs)
        return stop

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                break
            if self.collect_s:
                time.sleep(self.collect_s)
            if self._drain(job):
                break

    def close(self, timeout: float = 30) -> None:
        """Price everything queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout=timeout)
