"""Parquet asset storage: lazy per-month reads and column pruning for consumers that ask for them."""

import dagster as dg
import pandas as pd

from homeprice_assets.resources.storage import COLUMNS, LAZY_PARTITIONS, EncodedParquet

months = dg.StaticPartitionsDefinition(["2014-01", "2014-02", "2014-03"])


@dg.asset(partitions_def=months)
def monthly(context: dg.AssetExecutionContext) -> pd.DataFrame:
    month = context.partition_key
    extra = {"latitude": [47.5, 47.6]} if month != "2014-02" else {}  # an optional column one month lacks
    return pd.DataFrame({"sale_month": [month] * 2, "price": [1.0, 2.0], "note": ["a", "b"], **extra})


def test_lazy_partitions_read_only_what_is_called_and_only_the_columns_asked(
    instance: dg.DagsterInstance, storage, project_home
) -> None:
    for month in ("2014-01", "2014-02"):  # 2014-03 never materialized: a missing month is skipped
        dg.materialize([monthly], partition_key=month, instance=instance, resources={"io_manager": storage})
    seen: dict = {}

    @dg.asset(
        ins={
            "monthly": dg.AssetIn(
                metadata={
                    "allow_missing_partitions": True,
                    LAZY_PARTITIONS: True,
                    COLUMNS: ["sale_month", "latitude", "price"],
                }
            )
        }
    )
    def consumer(monthly: dict) -> None:
        seen["keys"] = sorted(monthly)
        seen["callable"] = all(callable(v) for v in monthly.values())
        seen["jan"], seen["feb"] = monthly["2014-01"](), monthly["2014-02"]()

    @dg.asset(ins={"monthly": dg.AssetIn(metadata={"allow_missing_partitions": True})})
    def eager(monthly: dict) -> None:
        seen["eager"] = monthly

    result = dg.materialize(
        [monthly, consumer, eager],
        selection=["consumer", "eager"],
        instance=instance,
        resources={"io_manager": storage},
    )
    assert result.success
    assert seen["keys"] == ["2014-01", "2014-02"] and seen["callable"]
    assert list(seen["jan"].columns) == ["sale_month", "latitude", "price"]
    assert list(seen["feb"].columns) == ["sale_month", "price"]  # what the month has of what was asked
    pd.testing.assert_frame_equal(seen["jan"], seen["eager"]["2014-01"][["sale_month", "latitude", "price"]])
    assert sorted(seen["eager"]) == ["2014-01", "2014-02"] and "note" in seen["eager"]["2014-02"]

    # Only what is called is read: with February's file unreadable, an eager read fails and a lazy
    # consumer that calls January alone does not.
    february = project_home / "storage" / "monthly" / "2014-02.parquet"
    assert february.is_file()
    february.write_bytes(b"not a parquet file")

    @dg.asset(ins={"monthly": dg.AssetIn(metadata={"allow_missing_partitions": True, LAZY_PARTITIONS: True})})
    def january_only(monthly: dict) -> None:
        seen["january_only"] = monthly["2014-01"]()

    def run(asset: dg.AssetsDefinition) -> bool:
        return dg.materialize(
            [monthly, asset],
            selection=[asset.key],
            instance=instance,
            resources={"io_manager": storage},
            raise_on_error=False,
        ).success

    assert not run(eager)
    assert run(january_only)
    pd.testing.assert_frame_equal(seen["january_only"], seen["eager"]["2014-01"])


def test_a_frame_encoded_ahead_is_stored_as_the_same_file_as_the_frame(
    instance: dg.DagsterInstance, storage, project_home
) -> None:
    """The ingest step's worker hands the IO manager Parquet it encoded itself: the file must be the one
    the frame would have made, byte for byte, and read back as the frame."""
    frame = pd.DataFrame({"sale_month": ["2014-01"] * 3, "price": [1.0, None, 3.0], "note": ["a", None, "c"]})

    @dg.asset(name="monthly", partitions_def=months)
    def as_frame() -> pd.DataFrame:
        return frame

    @dg.asset(name="monthly", partitions_def=months)
    def encoded() -> EncodedParquet:
        return EncodedParquet.of(frame)

    folder = project_home / "storage" / "monthly"
    for month, asset in (("2014-01", as_frame), ("2014-02", encoded)):
        dg.materialize([asset], partition_key=month, instance=instance, resources={"io_manager": storage})
    assert (folder / "2014-01.parquet").read_bytes() == (folder / "2014-02.parquet").read_bytes()
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "2014-02.parquet"), frame)


def test_two_runs_storing_the_same_month_at_once_each_write_whole_files(project_home) -> None:
    """A second file landed while the month's ingest ran: two runs store the same partition together.
    Each write has its own temporary file, so neither fails nor leaves a mixed file behind."""
    import threading

    from upath import UPath

    from homeprice_assets.resources.storage import ParquetIOManager

    manager = ParquetIOManager(base_path=UPath(project_home / "storage"))
    path = UPath(project_home / "storage" / "clean_sales" / "2014-07.parquet")
    frames = [pd.DataFrame({"run": [run] * 5_000, "x": range(5_000)}) for run in (1, 2)]
    errors: list[BaseException] = []

    def store(frame: pd.DataFrame) -> None:
        try:
            for _ in range(25):
                manager.dump_to_path(dg.build_output_context(asset_key="clean_sales"), frame, path)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=store, args=(f,)) for f in frames]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    stored = pd.read_parquet(path)
    assert len(stored) == 5_000 and stored["run"].nunique() == 1
    assert not list(path.parent.glob("*.partial"))
