"""Data, target and prediction drift between the training window and the newest month (Evidently 0.7).

Pure: frames in, a summary and two files out; the Dagster asset and the tests call the same function.

Method: Evidently picks the test per column from the data. With more than 1,000 reference rows (always the
case here) numeric columns get the normed Wasserstein distance and categorical ones (``location`` and the 0/1
columns) the Jensen-Shannon distance, each flagged past 0.1 by default; these are distances, not p-values, so
"score" below is the distance (higher = more drift). References larger than ``max_reference_rows`` are sampled
with a fixed seed: the distances move in the third decimal and the report stays at ~2 s on two cores.

The time index (``months_since_origin``) drifts by construction every month and is left out of the drift share
by default; the target (``sale_price``) is reported as target drift but, as prices rise every month, only
counts towards the drift decision when configured so.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from homeprice_assets.features.engineering import CATEGORICAL_FEATURES, FEATURES
from homeprice_assets.monitoring.settings import DriftSettings

TARGET = "sale_price"
PREDICTION = "prediction"
SAMPLE_SEED = 20100101

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    kind: str  # feature | target | prediction
    method: str
    threshold: float
    score: float  # the method's statistic (a distance for the methods Evidently picks at this size)
    drifted: bool
    is_distance: bool  # True: drift when score >= threshold; False: score is a p-value, drift when below


@dataclass(frozen=True)
class DriftSummary:
    """What the ``drift_report`` asset records and the check and alerts read."""

    current_label: str
    reference_rows: int
    reference_rows_used: int
    current_rows: int
    feature_columns: list[str]
    drifted_features: list[str]
    drift_share: float  # share of feature columns (exclusions aside) that drifted
    threshold: float  # drift_share at or above which the dataset counts as drifted
    strongly_drifted: list[str]  # features whose score alone passes ``feature_score_threshold``
    dataset_drift: bool
    target_drift: bool | None
    prediction_drift: bool | None
    method: str
    columns: dict[str, ColumnDrift] = field(default_factory=dict)
    html_path: str | None = None
    json_path: str | None = None

    @property
    def feature_scores(self) -> dict[str, float]:
        return {c: d.score for c, d in self.columns.items() if d.kind == "feature"}

    def score(self, column: str) -> float | None:
        return self.columns[column].score if column in self.columns else None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["feature_scores"] = self.feature_scores
        return out


# Evidently's distance-type tests (drift = score >= threshold); everything else reports a p-value.
_DISTANCE_METHODS = ("wasserstein", "jensen-shannon", "psi", "kl", "hellinger", "energy", "total variation")


def _is_distance(method: str) -> bool:
    m = method.lower()
    return any(name in m for name in _DISTANCE_METHODS)


def _frame(data: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    out = data[columns].copy()
    for col in columns:
        if col in CATEGORICAL_FEATURES:
            out[col] = out[col].astype(str)
        else:
            out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
    return out


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    settings: DriftSettings | None = None,
    out_dir: str | Path | None = None,
    current_label: str = "current",
) -> DriftSummary:
    """Compare ``current`` with ``reference`` feature tables (``sale_features`` rows).

    Target drift is measured when both frames carry ``sale_price``, prediction drift when both carry
    ``prediction``. With ``out_dir`` the Evidently HTML report and a JSON summary are written there.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    settings = settings or DriftSettings()
    if reference.empty or current.empty:
        raise ValueError(
            f"drift needs rows on both sides: reference={len(reference)}, current={len(current)}"
        )
    features = [c for c in FEATURES if c in reference and c in current and c not in settings.exclude_features]
    missing = [c for c in FEATURES if c not in settings.exclude_features and c not in features]
    if missing:
        raise ValueError(f"drift: feature column(s) missing from the feature tables: {missing}")
    kinds = dict.fromkeys(features, "feature")
    for extra, kind in ((TARGET, "target"), (PREDICTION, "prediction")):
        if extra in reference and extra in current:
            kinds[extra] = kind
    columns = list(kinds)

    reference_used = reference
    if len(reference) > settings.max_reference_rows:
        reference_used = reference.sample(settings.max_reference_rows, random_state=SAMPLE_SEED)
    categorical = [c for c in columns if c in CATEGORICAL_FEATURES]
    definition = DataDefinition(
        numerical_columns=[c for c in columns if c not in categorical], categorical_columns=categorical
    )
    ref_ds = Dataset.from_pandas(_frame(reference_used, columns), data_definition=definition)
    cur_ds = Dataset.from_pandas(_frame(current, columns), data_definition=definition)
    preset = DataDriftPreset(columns=columns, threshold=settings.stattest_threshold)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns on constant columns inside Evidently's correlations
        snapshot = Report([preset]).run(cur_ds, ref_ds)

    results: dict[str, ColumnDrift] = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        if not config.get("type", "").endswith("ValueDrift"):
            continue
        col, method = config["column"], config["method"]
        threshold, score = float(config["threshold"]), float(metric["value"])
        distance = _is_distance(method)
        drifted = score >= threshold if distance else score < threshold
        results[col] = ColumnDrift(col, kinds[col], method, threshold, score, drifted, distance)

    drifted_features = [c for c in features if results[c].drifted]
    share = len(drifted_features) / len(features)
    target_drift = results[TARGET].drifted if TARGET in results else None
    prediction_drift = results[PREDICTION].drifted if PREDICTION in results else None
    strong = [
        c
        for c in features
        if settings.feature_score_threshold is not None
        and results[c].is_distance
        and results[c].score >= settings.feature_score_threshold
    ]
    dataset_drift = (
        share >= settings.drift_share_threshold
        or bool(strong)
        or bool(settings.target_drift_counts and target_drift)
    )
    methods = sorted({d.method for d in results.values()})
    summary = DriftSummary(
        current_label=current_label,
        reference_rows=len(reference),
        reference_rows_used=len(reference_used),
        current_rows=len(current),
        feature_columns=features,
        drifted_features=drifted_features,
        drift_share=share,
        threshold=settings.drift_share_threshold,
        strongly_drifted=strong,
        dataset_drift=dataset_drift,
        target_drift=target_drift,
        prediction_drift=prediction_drift,
        method="Evidently DataDriftPreset: " + "; ".join(methods),
        columns=results,
    )
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        html_path, json_path = out / "drift_report.html", out / "drift_summary.json"
        snapshot.save_html(str(html_path))
        paths = {"html_path": str(html_path), "json_path": str(json_path)}
        summary = DriftSummary(**{**summary.__dict__, **paths})
        json_path.write_text(json.dumps(summary.to_dict(), indent=2, default=str))
    return summary
