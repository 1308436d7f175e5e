"""Shared test helpers: run the real ingest assets in-process against a test instance."""

from __future__ import annotations

import os
import signal
import subprocess

import dagster as dg

from homeprice_assets.features.assets import sale_features
from homeprice_assets.ingest.assets import clean_sales, raw_sales
from homeprice_assets.partitions import register_months
from homeprice_assets.resources.config import ProjectConfigResource
from homeprice_assets.resources.landing import LandingZone

INGEST_ASSETS = [raw_sales, clean_sales, sale_features]


def ingest_month(
    month: str,
    instance: dg.DagsterInstance,
    landing: LandingZone,
    storage: dg.ConfigurableIOManagerFactory,
    settings: ProjectConfigResource | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize raw -> clean -> features for one month, as the ingest job does (without raising)."""
    register_months(instance, [month])
    settings = settings or ProjectConfigResource()
    return dg.materialize(
        INGEST_ASSETS,
        partition_key=month,
        instance=instance,
        resources={"landing": landing, "io_manager": storage, "settings": settings},
        raise_on_error=False,
    )


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def stop_process_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM a server started with ``start_new_session=True`` (and its children); SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def register_model(registry, model, example, tags: dict | None = None) -> str:
    """Register ``model`` as the lifecycle saves it (``register_price_model``); returns the version."""
    from homeprice_assets.training.tracking import register_price_model

    return register_price_model(registry, model, example, tags)
