"""The local SQLite storage: Dagster's files, no checkpoint per event, live logs still live."""

from __future__ import annotations

import threading
from pathlib import Path

import dagster as dg
import yaml

from homeprice_assets.config import REPO_ROOT
from homeprice_assets.sqlite_storage import KeptOpenSqliteEventLogStorage, instance_settings


def _instance(base: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.local_temp(str(base), overrides=instance_settings(base / "storage"))


def test_the_repository_instance_uses_it() -> None:
    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    custom = config["storage"]["custom"]
    assert (custom["module"], custom["class"]) == ("homeprice_assets.sqlite_storage", "LocalSqliteStorage")
    assert custom["config"]["base_dir"] == {"env": "HOMEPRICE_DAGSTER_STORAGE"}


def test_a_run_is_live_while_it_runs_and_checkpointed_when_it_ends(tmp_path: Path) -> None:
    """A second instance on the same folder (the UI's) is woken by every event of a running run, although
    the run's database file itself is only written when the run ends."""
    writer, reader = _instance(tmp_path), _instance(tmp_path)
    assert isinstance(writer.event_log_storage, KeptOpenSqliteEventLogStorage)
    seen: list[str] = []
    halfway = threading.Event()

    def on_event(entry, cursor) -> None:
        seen.append(entry.user_message)
        if "halfway" in (entry.user_message or ""):
            halfway.set()

    run_files: dict[str, int] = {}

    @dg.asset
    def slow(context) -> int:
        db = Path(writer.event_log_storage.path_for_shard(context.run_id))
        reader.event_log_storage.watch(context.run_id, None, on_event)
        context.log.info("halfway")
        # the watcher reads it before the run goes on; Dagster's own only woke on the database file
        assert halfway.wait(timeout=20), seen
        run_files["during"] = db.stat().st_size
        run_files["wal_during"] = Path(f"{db}-wal").stat().st_size
        return 1

    result = dg.materialize([slow], instance=writer)
    assert result.success
    assert run_files["wal_during"] > 0  # the events were in the WAL, not yet checkpointed
    db = Path(writer.event_log_storage.path_for_shard(result.run_id))
    assert db.stat().st_size >= run_files["during"]
    # the run's end released the file: its WAL went into the database
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0
    records = reader.get_records_for_run(result.run_id).records
    assert any(r.event_log_entry.user_message == "halfway" for r in records)
    reader.event_log_storage.end_watch(result.run_id, on_event)
    reader.dispose()
    writer.dispose()


def test_a_home_made_by_dagsters_sqlite_storage_keeps_its_history(tmp_path: Path) -> None:
    @dg.asset
    def one() -> int:
        return 1

    stock = dg.DagsterInstance.local_temp(
        str(tmp_path), overrides={"storage": {"sqlite": {"base_dir": str(tmp_path / "storage")}}}
    )
    first = dg.materialize([one], instance=stock)
    stock.dispose()

    ours = _instance(tmp_path)
    assert isinstance(ours.event_log_storage, KeptOpenSqliteEventLogStorage)
    assert ours.get_run_by_id(first.run_id).is_success
    assert ours.get_latest_materialization_event(dg.AssetKey("one")).run_id == first.run_id
    second = dg.materialize([one], instance=ours)
    assert ours.get_latest_materialization_event(dg.AssetKey("one")).run_id == second.run_id
    ours.dispose()


def test_it_remembers_the_materializations_it_stored_as_they_are_read_back(tmp_path: Path) -> None:
    """The ingest step points each month's checks at the materialization it just stored: the storage hands
    it the record (storage id included) it would read back, newest per partition, without a query."""
    months = dg.StaticPartitionsDefinition(["2014-01", "2014-02"])

    @dg.asset(partitions_def=months)
    def monthly(context) -> int:
        return 1

    instance = _instance(tmp_path)
    storage = instance.event_log_storage
    assert storage.stored_materialization(dg.AssetKey("monthly"), "2014-01") is None
    for month in ["2014-01", "2014-02", "2014-01"]:
        dg.materialize([monthly], instance=instance, partition_key=month)
    for month in ["2014-01", "2014-02"]:
        remembered = storage.stored_materialization(dg.AssetKey("monthly"), month)
        read = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("monthly"), asset_partitions=[month]), limit=1
        ).records[0]
        assert remembered == read
    assert storage.stored_materialization(dg.AssetKey("monthly"), None) is None
    instance.dispose()
