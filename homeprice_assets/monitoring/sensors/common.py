"""What the sensors share: asset keys, run tags and cursor helpers."""

from __future__ import annotations

import json
from typing import Any

import dagster as dg

TRIGGER_TAG = "homeprice/trigger"
MONTH_TAG = "homeprice/month"
SALE_FEATURES = dg.AssetKey("sale_features")
TRAINING_SET = dg.AssetKey("training_set")
DRIFT_REPORT = dg.AssetKey("drift_report")
# Promotion gates are blocking checks on validation_report; promoted_model moves the champion alias.
VALIDATION_REPORT = dg.AssetKey("validation_report")
PROMOTED_MODEL = dg.AssetKey("promoted_model")
# Run config of the default executor (multi_or_in_process): every step in the run's own process.
IN_PROCESS_RUN_CONFIG = {"execution": {"config": {"in_process": {}}}}


def load_cursor(cursor: str | None) -> dict[str, Any]:
    return json.loads(cursor) if cursor else {}


def values(metadata: Any) -> dict[str, Any]:
    """Metadata entries as plain values."""
    return {k: getattr(v, "value", v) for k, v in (metadata or {}).items()}


def metadata_in_run(instance: dg.DagsterInstance, asset: dg.AssetKey, run_id: str) -> dict[str, Any]:
    """The metadata of ``asset``'s materialization in ``run_id`` (empty: none among the last 20)."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=asset), limit=20).records
    mat = next((r.asset_materialization for r in records if r.run_id == run_id), None)
    return values(mat.metadata if mat else {})
