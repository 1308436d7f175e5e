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
from html import escape
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
    reference_label: str = "reference"  # e.g. "2014-06..2016-05 (24 months)"
    html_path: str | None = None
    json_path: str | None = None

    @property
    def feature_scores(self) -> dict[str, float]:
        return {c: d.score for c, d in self.columns.items() if d.kind == "feature"}

    def score(self, column: str) -> float | None:
        return self.columns[column].score if column in self.columns else None

    @property
    def decision(self) -> str:
        """The verdict in one sentence, with the rule that made it (shown in the report and the alert)."""
        why = []
        if self.drift_share >= self.threshold:
            why.append(f"{self.drift_share:.0%} of features drifted (threshold {self.threshold:.0%})")
        if self.strongly_drifted:
            why.append("one feature past the single-feature threshold: " + ", ".join(self.strongly_drifted))
        if self.dataset_drift and not why:
            why.append("target drift counts (monitoring.drift.target_drift_counts)")
        if self.dataset_drift:
            return f"drift: {'; '.join(why)} -> the drift check fails (retrain under policy drift/both)"
        return (
            f"no drift: {self.drift_share:.0%} of features drifted (threshold {self.threshold:.0%}) and no "
            "feature past the single-feature threshold -> the drift check passes, nothing is retrained for it"
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["feature_scores"] = self.feature_scores
        out["decision"] = self.decision
        return out


# Evidently's own per-column threshold for the distances it picks on large samples (normed Wasserstein,
# Jensen-Shannon); ``stattest_threshold: null`` means this.
EVIDENTLY_DISTANCE_THRESHOLD = 0.1


def decide(
    scores: dict[str, float], settings: DriftSettings, drifted: list[str] | None = None
) -> tuple[bool, float, list[str]]:
    """(dataset drift?, share of features drifted, strongly drifted features) from per-feature distances.

    ``drifted`` are the features whose own test flagged them (Evidently, with the same per-column threshold);
    without it a feature counts as drifted when its distance reaches ``stattest_threshold``. The one rule
    for the asset, its check, the report header and the calibration bench (bench/drift_calibration.py).
    """
    if not scores:
        raise ValueError("drift: no feature scores to decide on")
    column = settings.stattest_threshold or EVIDENTLY_DISTANCE_THRESHOLD
    flagged = drifted if drifted is not None else [c for c, v in scores.items() if v >= column]
    share = len(flagged) / len(scores)
    strong = [
        c
        for c, v in scores.items()
        if settings.feature_score_threshold is not None and v >= settings.feature_score_threshold
    ]
    return share >= settings.drift_share_threshold or bool(strong), share, strong


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


def sample_reference(reference: pd.DataFrame, settings: DriftSettings) -> pd.DataFrame:
    """The reference rows the report measures: all of them up to ``max_reference_rows``, else a sample
    with a fixed seed. Taken before the champion scores the reference, so scoring costs the sample only."""
    if len(reference) > settings.max_reference_rows:
        return reference.sample(settings.max_reference_rows, random_state=SAMPLE_SEED)
    return reference


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    settings: DriftSettings | None = None,
    out_dir: str | Path | None = None,
    current_label: str = "current",
    reference_label: str = "reference",
    reference_rows: int | None = None,
) -> DriftSummary:
    """Compare ``current`` with ``reference`` feature tables (``sale_features`` rows).

    Target drift is measured when both frames carry ``sale_price``, prediction drift when both carry
    ``prediction``. With ``out_dir`` the Evidently HTML report and a JSON summary are written there.
    ``reference_rows``: the size of the whole reference when ``reference`` is already its sample
    (``sample_reference``), for the record.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
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

    reference_used = sample_reference(reference, settings)
    categorical = [c for c in columns if c in CATEGORICAL_FEATURES]
    definition = DataDefinition(
        numerical_columns=[c for c in columns if c not in categorical], categorical_columns=categorical
    )
    ref_ds = Dataset.from_pandas(_frame(reference_used, columns), data_definition=definition)
    cur_ds = Dataset.from_pandas(_frame(current, columns), data_definition=definition)
    # The preset covers the features only, with our share threshold, so the page's own "Dataset Drift is
    # (NOT) detected" uses the same columns and threshold as the decision; target and prediction alongside.
    preset = DataDriftPreset(
        columns=features, threshold=settings.stattest_threshold, drift_share=settings.drift_share_threshold
    )
    extras = [
        ValueDrift(column=c, threshold=settings.stattest_threshold) for c in columns if c not in features
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns on constant columns inside Evidently's correlations
        snapshot = Report([preset, *extras]).run(cur_ds, ref_ds)

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
    target_drift = results[TARGET].drifted if TARGET in results else None
    prediction_drift = results[PREDICTION].drifted if PREDICTION in results else None
    distances = {c: results[c].score for c in features if results[c].is_distance}
    _, share, strong = decide({c: results[c].score for c in features}, settings, drifted=drifted_features)
    strong = [c for c in strong if c in distances]  # p-values are not distances: no single-feature rule
    dataset_drift = (
        share >= settings.drift_share_threshold
        or bool(strong)
        or bool(settings.target_drift_counts and target_drift)
    )
    methods = sorted({d.method for d in results.values()})
    summary = DriftSummary(
        current_label=current_label,
        reference_rows=max(len(reference), reference_rows or 0),
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
        reference_label=reference_label,
    )
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        html_path, json_path = out / "drift_report.html", out / "drift_summary.json"
        snapshot.save_html(str(html_path))
        _add_decision_header(html_path, summary, settings)
        paths = {"html_path": str(html_path), "json_path": str(json_path)}
        summary = DriftSummary(**{**summary.__dict__, **paths})
        json_path.write_text(json.dumps(summary.to_dict(), indent=2, default=str))
    return summary


def decision_html(summary: DriftSummary, settings: DriftSettings) -> str:
    """Our section on top of Evidently's page: the month, the reference window, the scores and the verdict."""
    column = settings.stattest_threshold or EVIDENTLY_DISTANCE_THRESHOLD
    rows = "".join(
        f"<tr><td>{escape(d.column)}</td><td>{escape(d.kind)}</td><td>{d.score:.3f}</td>"
        f"<td>{d.threshold:g}</td><td>{'drifted' if d.drifted else ''}"
        f"{' (strong)' if d.column in summary.strongly_drifted else ''}</td></tr>"
        for d in sorted(summary.columns.values(), key=lambda d: (d.kind != "feature", -d.score))
    )
    colour = "#b00020" if summary.dataset_drift else "#1b5e20"
    strong = (
        f"any one feature at a distance of {settings.feature_score_threshold:g} or more"
        if settings.feature_score_threshold is not None
        else "no single-feature rule"
    )
    return (
        '<section id="homeprice-drift-decision" style="font-family:sans-serif;margin:16px;padding:12px;'
        f'border:2px solid {colour};border-radius:6px;background:#fff">'
        f"<h2 style='margin-top:0'>homeprice drift report: {escape(summary.current_label)}</h2>"
        f"<p><b>Month measured:</b> {escape(summary.current_label)} ({summary.current_rows:,} sales)<br>"
        f"<b>Reference window:</b> {escape(summary.reference_label)} ({summary.reference_rows:,} sales, "
        f"{summary.reference_rows_used:,} used)<br>"
        f"<b>Rule:</b> drift when at least {summary.threshold:.0%} of the {len(summary.feature_columns)} "
        f"features drifted (per-column threshold {column:g}), or {strong}.<br>"
        f"<b>Share of features drifted:</b> {summary.drift_share:.0%}<br>"
        f"<b style='color:{colour}'>Decision: {escape(summary.decision)}</b></p>"
        "<p>The Evidently page below measures the same features with the same per-column and share "
        "thresholds; its own dataset verdict knows only the share rule, the single-feature rule is ours.</p>"
        "<table border='1' cellpadding='3' style='border-collapse:collapse'>"
        "<tr><th>column</th><th>kind</th><th>score (distance)</th><th>threshold</th><th></th></tr>"
        f"{rows}</table></section>"
    )


def _add_decision_header(path: Path, summary: DriftSummary, settings: DriftSettings) -> None:
    html = path.read_text(encoding="utf-8")
    section = decision_html(summary, settings)
    at = html.find("<body")
    if at >= 0:
        at = html.index(">", at) + 1
        html = html[:at] + section + html[at:]
    else:
        html = section + html
    path.write_text(html, encoding="utf-8")
