"""Shared test helpers: run the real ingest assets in-process against a test instance."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
from dagster._core.definitions.partitions.context import partition_loading_context

from homeprice_assets.ingest.assets import ingest_sales
from homeprice_assets.ingest.report import partition_blocks, range_tags
from homeprice_assets.partitions import register_months, sale_month_partitions
from homeprice_assets.resources.config import ProjectConfigResource
from homeprice_assets.resources.landing import LandingZone
from homeprice_assets.sqlite_storage import instance_settings

# raw_sales, clean_sales, quarantined_sales and sale_features: one range-aware step computes all four
INGEST_ASSETS = [ingest_sales]
DUMMY_AWS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


class IngestResult:
    """An ingest run's result; ``output_for_node`` reads a month's stored frame back (the step writes each
    month through the IO manager as it goes instead of returning one output for the whole run)."""

    def __init__(
        self,
        result: dg.ExecuteInProcessResult,
        instance: dg.DagsterInstance,
        storage: Any,
        months: list[str],
    ) -> None:
        self.result, self.instance, self.storage, self.months = result, instance, storage, months

    def __getattr__(self, name: str) -> Any:
        return getattr(self.result, name)

    def asset_materializations_for_node(self, node: str) -> list[dg.AssetMaterialization]:
        """The materializations of asset ``node`` (the step that made them is ``ingest_sales``)."""
        key = dg.AssetKey(node)
        return [
            e.materialization for e in self.result.get_asset_materialization_events() if e.asset_key == key
        ]

    def output_for_node(self, node: str, output: str | None = None, month: str | None = None) -> pd.DataFrame:
        """``output_for_node("raw_sales")``, ``("clean_sales", "quarantined_sales")``: the month's frame."""
        key = dg.AssetKey(output or node)
        month = month or self.months[-1]
        io = (
            self.storage.create_io_manager(None)
            if hasattr(self.storage, "create_io_manager")
            else self.storage
        )
        with (
            partition_loading_context(dynamic_partitions_store=self.instance),
            dg.build_input_context(
                asset_key=key, partition_key=month, asset_partitions_def=sale_month_partitions
            ) as context,
        ):
            value = io.load_input(context)
        return value[month] if isinstance(value, dict) else value


def _materialize(
    months: list[str],
    instance: dg.DagsterInstance,
    landing: LandingZone,
    storage: Any,
    settings: ProjectConfigResource | None,
    selection: list[str] | None = None,
) -> IngestResult:
    register_months(instance, months)
    tags = range_tags(months) if len(months) > 1 else None
    result = dg.materialize(
        INGEST_ASSETS,
        selection=selection,
        partition_key=months[0] if len(months) == 1 else None,
        tags=tags,
        instance=instance,
        resources={
            "landing": landing,
            "io_manager": storage,
            "settings": settings or ProjectConfigResource(),
        },
        raise_on_error=False,
    )
    return IngestResult(result, instance, storage, months)


def ingest_month(
    month: str,
    instance: dg.DagsterInstance,
    landing: LandingZone,
    storage: dg.ConfigurableIOManagerFactory,
    settings: ProjectConfigResource | None = None,
    selection: list[str] | None = None,
) -> IngestResult:
    """Materialize raw -> clean -> features for one month, as the ingest job does (without raising).

    ``selection``: some of the assets only, e.g. ``["raw_sales", "clean_sales", "quarantined_sales"]``.
    """
    return _materialize([month], instance, landing, storage, settings, selection)


def ingest_range(
    months: list[str],
    instance: dg.DagsterInstance,
    landing: LandingZone,
    storage: dg.ConfigurableIOManagerFactory,
    settings: ProjectConfigResource | None = None,
) -> IngestResult:
    """Materialize raw -> clean -> features for ``months`` (adjacent partitions) in one run, as
    ``homeprice ingest`` does; ``output_for_node(..., month=...)`` reads one month back."""
    register_months(instance, sorted(months))
    [block] = partition_blocks(instance, months)
    return _materialize(block, instance, landing, storage, settings)


def check_results(
    result: dg.ExecuteInProcessResult | IngestResult, month: str | None = None
) -> dict[str, dg.AssetCheckEvaluation]:
    """Check evaluations by name (of ``month`` only, in a range run)."""
    return {
        e.check_name: e for e in result.get_asset_check_evaluations() if month is None or e.partition == month
    }


def stop_process_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM a server started with ``start_new_session=True`` and everything in its process group; SIGKILL
    what is still there after ``timeout``. The leader exiting is not enough: `homeprice dev` exited on
    SIGTERM while the `dagster dev` it started kept running, with its code server, after the daemon test."""
    deadline = time.monotonic() + timeout
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)  # anyone left in the group?
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.poll()


def register_model(registry, model, example, tags: dict | None = None) -> str:
    """Register ``model`` as the lifecycle saves it (``register_price_model``); returns the version."""
    from homeprice_assets.training.tracking import register_price_model

    return register_price_model(registry, model, example, tags)


def placeholder_versions(registry, folder: Path, n: int = 3) -> None:
    """Register the model with versions 1..``n`` whose source holds no model: for tests of the rollout's
    alias and tag moves, which never load one."""
    registry.client.create_registered_model(registry.model_name)
    for _ in range(n):
        registry.client.create_model_version(registry.model_name, source=str(folder / "no-model"))


@contextmanager
def project_instance(base_dir: str | os.PathLike[str] | None = None) -> Iterator[dg.DagsterInstance]:
    """A test instance on the storage a local homeprice instance uses (``sqlite_storage``), in ``base_dir``
    (a new temporary folder if None). The files have the layout of Dagster's default SQLite storage, so a
    process pointed at ``base_dir`` as its ``DAGSTER_HOME`` reads the same runs and events. Dagster's stock
    test storage flushes the disk for every event, which made in-process runs far slower than a user's."""
    with ExitStack() as stack:
        if base_dir is None:
            base_dir = stack.enter_context(tempfile.TemporaryDirectory())
        base = Path(base_dir)
        base.mkdir(parents=True, exist_ok=True)
        # No compute-log capture: in-process runs read no captured stdout, and the local capture left idle
        # `tail -F` processes behind.
        noop_logs = {
            "module": "dagster._core.storage.noop_compute_log_manager",
            "class": "NoOpComputeLogManager",
        }
        overrides = {**instance_settings(base), "compute_logs": noop_logs}
        yield stack.enter_context(dg.instance_for_test(temp_dir=str(base), overrides=overrides))
