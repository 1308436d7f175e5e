"""The drift check: fails when the newest month drifted past the configured threshold.

Not blocking: nothing downstream of ``drift_report`` needs stopping; a failed drift check is the signal that
the retrain sensor (policy ``drift``/``both``) and the check-alert sensor act on.
"""

from __future__ import annotations

import dagster as dg

from homeprice_assets.monitoring.drift import DriftSummary

DRIFT_CHECK_NAME = "drift_within_threshold"
DRIFT_CHECK = dg.AssetCheckSpec(
    DRIFT_CHECK_NAME,
    asset="drift_report",
    description="Share of features drifted (each past monitoring.drift.stattest_threshold) below "
    "monitoring.drift.drift_share_threshold and no single feature past "
    "monitoring.drift.feature_score_threshold (thresholds calibrated in bench/drift_calibration.py).",
)


def drift_within_threshold(
    summary: DriftSummary, feature_score_threshold: float | None
) -> dg.AssetCheckResult:
    """Pass/fail with the figures a person needs to judge the drift without opening the report."""
    scores = summary.feature_scores
    top = sorted(scores.items(), key=lambda kv: -kv[1])[:5]
    n_drifted, n_features = len(summary.drifted_features), len(summary.feature_columns)
    strong = f"; strongly drifted: {', '.join(summary.strongly_drifted)}" if summary.strongly_drifted else ""
    return dg.AssetCheckResult(
        check_name=DRIFT_CHECK_NAME,
        passed=not summary.dataset_drift,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{summary.current_label}: {n_drifted}/{n_features} features drifted "
            f"({summary.drift_share:.0%}, threshold {summary.threshold:.0%}){strong}"
        ),
        metadata={
            "month": summary.current_label,
            "drift_share": summary.drift_share,
            "drift_share_threshold": summary.threshold,
            "feature_score_threshold": -1.0 if feature_score_threshold is None else feature_score_threshold,
            "drifted_features": dg.MetadataValue.json(summary.drifted_features),
            "strongly_drifted": dg.MetadataValue.json(summary.strongly_drifted),
            "top_scores": dg.MetadataValue.json(dict(top)),
            "target_drift": str(summary.target_drift),
            "reference_months": summary.reference_label,
            "decision": summary.decision,
        },
    )
