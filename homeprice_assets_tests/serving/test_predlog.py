"""The prediction log on SQLite and on the real PostgreSQL server, and what happens when it cannot write."""

import time
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from homeprice_assets.serving.predlog import PredictionLog, predictions

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _rows(n: int, version: str = "7", role: str = "champion") -> list[dict]:
    tag = uuid.uuid4().hex[:8]
    return [
        {
            "request_id": f"{tag}-{i}",
            "model_name": "homeprice",
            "model_version": version,
            "model_role": role,
            "parcel_id": f"{tag}-{i}",
            "location": "79",
            "inputs": {"living_sf": 1000 + i},
            "price": 500_000.0 + i,
            "price_lower": 400_000.0,
            "price_upper": 600_000.0,
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("url", ["sqlite", PG_URL], ids=["sqlite", "postgresql"])
def test_rows_are_written_in_batches_with_model_and_role(url: str, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}" if url == "sqlite" else url
    log = PredictionLog(url, batch_size=100, flush_interval_s=0.05)
    rows = _rows(250, version="7", role="shadow")
    log.append(rows)
    deadline = time.monotonic() + 20
    while log.written < 250 and time.monotonic() < deadline:
        time.sleep(0.05)
    log.close()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        stored = conn.execute(
            sa.select(predictions.c.model_version, predictions.c.model_role, predictions.c.inputs).where(
                predictions.c.parcel_id.in_([r["parcel_id"] for r in rows])
            )
        ).all()
    assert len(stored) == 250 and log.failed == 0
    assert {(v, r) for v, r, _ in stored} == {("7", "shadow")}
    assert '"living_sf"' in stored[0][2]


class OwnDatabase:
    """A PostgreSQL database of the test's own, which the test can close to connections (a restart, a
    failover), open again, or drop; dropped at the end whatever happened."""

    def __init__(self) -> None:
        self.name = f"predlog_{uuid.uuid4().hex[:8]}"
        base = PG_URL.rsplit("/", 1)[0]
        self.url = f"{base}/{self.name}"
        self.admin = sa.create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
        self._sql(f'CREATE DATABASE "{self.name}"')

    def _sql(self, statement: str, **params: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(sa.text(statement), params)

    def refuse_connections(self) -> None:
        self._sql(f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS false')
        self._sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n", n=self.name)

    def accept_connections(self) -> None:
        self._sql(f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS true')

    def read_only(self, on: bool) -> None:
        """As a failover to a standby looks to a client: connected, but every write refused."""
        self._sql(f'ALTER DATABASE "{self.name}" SET default_transaction_read_only = {"on" if on else "off"}')
        self._sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n", n=self.name)

    def drop(self) -> None:
        self._sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


@pytest.fixture
def own_database() -> Iterator[OwnDatabase]:
    db = OwnDatabase()
    try:
        yield db
    finally:
        db.drop()
        db.admin.dispose()


def _wait(condition, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.parametrize("outage", ["restart", "read_only", "dropped"])
def test_rows_of_an_outage_are_kept_and_never_block(own_database: OwnDatabase, outage: str) -> None:
    """The log's PostgreSQL database stops taking connections (its sessions killed), or takes them but
    refuses writes (a failover to a standby). ``restart`` / ``read_only``: it comes back, and the rows of the
    outage are written after it, none counted as failed. ``dropped``: it never comes back; the rows are
    kept while the service runs and counted as failed when it stops."""
    failures: list[int] = []
    log = PredictionLog(own_database.url, flush_interval_s=0.05, on_failure=failures.append)
    try:
        log.append(_rows(5))
        _wait(lambda: log.written == 5)
        if outage == "restart":
            own_database.refuse_connections()
        elif outage == "read_only":
            own_database.read_only(True)
        else:
            own_database.drop()
        started = time.perf_counter()
        log.append(_rows(10))
        assert time.perf_counter() - started < 0.5  # the caller never waits for the database
        _wait(lambda: log.unwritten == 10)
        assert log.unwritten == 10 and log.written == 5 and log.failed == 0
        if outage != "dropped":
            own_database.accept_connections() if outage == "restart" else own_database.read_only(False)
            _wait(lambda: log.written == 15)
            assert (log.written, log.unwritten, log.failed, log.pending) == (15, 0, 0, 0)
    finally:
        log.close()
    if outage == "dropped":
        assert log.failed == 10 and sum(failures) == 10 and log.written == 5 and log.pending == 0


def test_rows_are_built_on_the_writer_thread_and_overflow_is_counted(tmp_path) -> None:
    """A request queues a job (O(1)); the writer builds and writes its rows; past the bound rows are dropped
    and counted, and a job that cannot build its rows is counted too."""
    import threading

    failures: list[int] = []
    log = PredictionLog(
        f"sqlite:///{tmp_path / 'p.db'}",
        flush_interval_s=3600,  # nothing is written until close(): the writer's last flush, on its thread
        max_pending_rows=300,
        on_failure=failures.append,
    )
    built_on: list[str] = []

    def build() -> list[dict]:
        built_on.append(threading.current_thread().name)
        return _rows(200)

    def broken() -> list[dict]:
        raise ValueError("cannot serialize")

    log.submit(200, build)
    log.submit(200, build)  # 400 pending > 300: refused, counted
    log.submit(50, broken)
    assert log.pending == 250 and log.written == 0 and built_on == []
    log.close()
    assert built_on == ["prediction-log"]
    assert log.written == 200 and log.failed == 250 and sorted(failures) == [50, 200]
    assert log.pending == 0


@pytest.mark.parametrize("url", ["sqlite", PG_URL], ids=["sqlite", "postgresql"])
def test_ground_truth_reads_predictions_by_parcel_with_the_valuation_date(url: str, tmp_path) -> None:
    from homeprice_assets.serving.predlog import read_predictions

    url = f"sqlite:///{tmp_path / 'p.db'}" if url == "sqlite" else url
    log = PredictionLog(url, batch_size=100, flush_interval_s=0.05)
    rows = _rows(30)
    for i, row in enumerate(rows):
        row["inputs"] = {"living_sf": 1000, **({"sale_date": "2014-05-31"} if i % 2 else {})}
    log.append(rows)
    deadline = time.monotonic() + 20
    while log.written < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    log.close()
    wanted = [r["parcel_id"] for r in rows[:25]] + ["nobody"]
    got = read_predictions(url, wanted, model_name="homeprice", chunk=7).sort_values("request_id")
    assert len(got) == 25 and set(got["parcel_id"]) == set(wanted[:25])
    assert got["created_at"].dt.tz is None  # naive UTC, comparable with sale dates
    dated = got.set_index("parcel_id")["valuation_date"]
    assert str(dated[rows[1]["parcel_id"]].date()) == "2014-05-31" and dated.isna().sum() == 13
    assert read_predictions(url, ["nobody"]).empty


@pytest.mark.parametrize("url", ["sqlite", PG_URL], ids=["sqlite", "postgresql"])
def test_a_row_the_database_refuses_is_counted_and_the_rest_are_written(url: str, tmp_path) -> None:
    """A row refused for what it is (a NUL in a text PostgreSQL cannot store; a missing price SQLite's NOT
    NULL refuses) would be refused on every retry: it is counted as failed, and the rows around it, written
    in the same insert, are written one by one."""
    url = f"sqlite:///{tmp_path / 'p.db'}" if url == "sqlite" else url
    log = PredictionLog(url, batch_size=100, flush_interval_s=0.05)
    rows = _rows(10)
    if url.startswith("postgresql"):
        rows[3]["parcel_id"] = "bad\x00id"
    else:
        rows[3]["price"] = None
    try:
        log.append(rows)
        _wait(lambda: log.written + log.failed == 10)
        log.append(_rows(5))  # and the log goes on
        _wait(lambda: log.written == 14)
        assert (log.written, log.failed, log.unwritten, log.pending) == (14, 1, 0, 0)
    finally:
        log.close()


def test_rows_kept_in_a_long_outage_are_bounded(own_database: OwnDatabase) -> None:
    """Kept rows are built dicts: past ``max_unwritten_rows`` the oldest are dropped and counted."""
    log = PredictionLog(own_database.url, batch_size=5, flush_interval_s=0.05, max_unwritten_rows=10)
    try:
        own_database.refuse_connections()
        log.append(_rows(25))
        _wait(lambda: log.failed >= 15)
        assert log.unwritten == 10 and log.failed == 15 and log.written == 0
        own_database.accept_connections()
        _wait(lambda: log.written == 10)
        assert (log.written, log.failed, log.unwritten, log.pending) == (10, 15, 0, 0)
    finally:
        log.close()
