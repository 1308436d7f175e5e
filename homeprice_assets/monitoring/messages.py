"""Alert messages: what people are told, as typed values (no channel, no I/O).

Each constructor names the facts a person needs to act (what failed, where, how badly, which run) and a
``key`` that says when two alerts are "the same" for deduplication. ``notify`` delivers them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class AlertLinks:
    """Turns run ids into URLs people can click (the Dagster UI and the MLflow UI)."""

    dagster_base_url: str = "http://127.0.0.1:3000"
    mlflow_base_url: str | None = None

    def dagster_run(self, run_id: str | None) -> str | None:
        return f"{self.dagster_base_url.rstrip('/')}/runs/{run_id}" if run_id else None

    def mlflow_run(self, run_id: str | None, experiment_id: str | None = None) -> str | None:
        if not run_id or not self.mlflow_base_url:
            return None
        base = self.mlflow_base_url.rstrip("/")
        if experiment_id:
            return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
        return f"{base}/#/runs/{run_id}"


@dataclass(frozen=True)
class Alert:
    """One message. ``key`` identifies "the same alert" for deduplication."""

    kind: str
    key: str
    title: str
    lines: tuple[str, ...]
    severity: str = "warning"  # info | warning | error
    dagster_run_url: str | None = None
    mlflow_run_url: str | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        """Plain-text body shared by every channel (Slack renders it as-is)."""
        body = [f"[homeprice] {self.title}", *self.lines]
        if self.dagster_run_url:
            body.append(f"Dagster run: {self.dagster_run_url}")
        if self.mlflow_run_url:
            body.append(f"MLflow run: {self.mlflow_run_url}")
        return "\n".join(body)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def data_validation_failed(
    links: AlertLinks,
    *,
    asset: str,
    check: str,
    failed_rows: int | None,
    total_rows: int | None = None,
    partition: str | None = None,
    description: str | None = None,
    run_id: str | None = None,
) -> Alert:
    where = f"{asset}[{partition}]" if partition else asset
    rows = "unknown" if failed_rows is None else f"{failed_rows}"
    if failed_rows is not None and total_rows:
        rows += f" of {total_rows} rows ({failed_rows / total_rows:.1%})"
    elif failed_rows is not None:
        rows += " rows"
    lines = [f"Check `{check}` failed on {where}.", f"Rows failing: {rows}."]
    if description:
        lines.append(description)
    return Alert(
        kind="data_validation_failed",
        key=f"check:{asset}:{check}:{partition or '-'}",
        title=f"Data validation failed: {check} on {where}",
        lines=tuple(lines),
        severity="error",
        dagster_run_url=links.dagster_run(run_id),
        facts={
            "asset": asset,
            "check": check,
            "partition": partition,
            "failed_rows": failed_rows,
            "total_rows": total_rows,
        },
    )


def drift_detected(
    links: AlertLinks,
    *,
    month: str,
    drifted: Mapping[str, float],
    share: float,
    threshold: float,
    method: str,
    target_score: float | None = None,
    report_path: str | None = None,
    run_id: str | None = None,
    mlflow_run_id: str | None = None,
    mlflow_experiment_id: str | None = None,
    decision: str | None = None,
) -> Alert:
    top = sorted(drifted.items(), key=lambda kv: -kv[1])
    lines = [
        f"Newest month {month}: {share:.0%} of features drifted (threshold {threshold:.0%}, {method}).",
        "Drifted features: " + (", ".join(f"{k}={_fmt(v)}" for k, v in top) or "none"),
    ]
    if decision:
        lines.append(f"Decision: {decision}")
    if target_score is not None:
        lines.append(f"Target (sale_price) drift score: {_fmt(target_score)}")
    if report_path:
        lines.append(f"Report: {report_path}")
    return Alert(
        kind="drift_detected",
        key=f"drift:{month}",
        title=f"Drift detected in {month}",
        lines=tuple(lines),
        severity="warning",
        dagster_run_url=links.dagster_run(run_id),
        mlflow_run_url=links.mlflow_run(mlflow_run_id, mlflow_experiment_id),
        facts={"month": month, "drifted": dict(drifted), "share": share, "threshold": threshold},
    )


def promotion_succeeded(
    links: AlertLinks,
    *,
    model_name: str,
    old_version: str | None,
    new_version: str,
    metric: str,
    old_value: float | None,
    new_value: float,
    run_id: str | None = None,
    mlflow_run_id: str | None = None,
    mlflow_experiment_id: str | None = None,
) -> Alert:
    if old_value is None:
        change = f"{metric} {_fmt(new_value)} (first champion)"
    else:
        change = f"{metric} {_fmt(old_value)} -> {_fmt(new_value)} ({new_value - old_value:+.4g})"
    return Alert(
        kind="promotion_succeeded",
        key=f"promotion:{model_name}:{new_version}",
        title=f"Promoted {model_name} v{new_version} to champion",
        lines=(f"Champion: v{old_version or '-'} -> v{new_version}.", f"Metric change: {change}."),
        severity="info",
        dagster_run_url=links.dagster_run(run_id),
        mlflow_run_url=links.mlflow_run(mlflow_run_id, mlflow_experiment_id),
        facts={
            "model_name": model_name,
            "old_version": old_version,
            "new_version": new_version,
            "metric": metric,
            "old_value": old_value,
            "new_value": new_value,
        },
    )


def promotion_blocked(
    links: AlertLinks,
    *,
    model_name: str,
    version: str,
    gates: Mapping[str, Mapping[str, Any]],
    reason: str = "",
    run_id: str | None = None,
    mlflow_run_id: str | None = None,
    mlflow_experiment_id: str | None = None,
) -> Alert:
    """One alert per blocked challenger: every gate it failed, each with its figures."""
    names = ", ".join(gates)
    lines = [f"Gate(s) {', '.join(f'`{g}`' for g in gates)} did not pass; the champion is unchanged."]
    for gate, figures in gates.items():
        lines.append(f"{gate}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in figures.items()))
    if reason:
        lines.append(f"Decision: {reason}")
    return Alert(
        kind="promotion_blocked",
        key=f"blocked:{model_name}:{version}:{run_id or '-'}",
        title=f"Promotion of {model_name} v{version} blocked by {names}",
        lines=tuple(lines),
        severity="warning",
        dagster_run_url=links.dagster_run(run_id),
        mlflow_run_url=links.mlflow_run(mlflow_run_id, mlflow_experiment_id),
        facts={"model_name": model_name, "version": version, "gates": {g: dict(f) for g, f in gates.items()}},
    )


def run_failed(
    links: AlertLinks,
    *,
    job_name: str,
    run_id: str,
    error: str | None = None,
    failed_steps: Sequence[str] = (),
    partition: str | None = None,
) -> Alert:
    where = f" (partition {partition})" if partition else ""
    lines = [f"Run {run_id} of job `{job_name}`{where} failed."]
    if failed_steps:
        lines.append("Failed steps: " + ", ".join(failed_steps))
    if error:
        lines.append("Error: " + error.strip().splitlines()[0][:500])
    return Alert(
        kind="run_failed",
        key=f"run_failure:{run_id}",
        title=f"Run failed: {job_name}",
        lines=tuple(lines),
        severity="error",
        dagster_run_url=links.dagster_run(run_id),
        facts={"job_name": job_name, "run_id": run_id, "failed_steps": list(failed_steps)},
    )


def month_needs_confirmation(
    links: AlertLinks,
    *,
    month: str,
    level: float | None,
    reference: float | None,
    change: float | None,
    max_change: float,
    run_id: str | None = None,
) -> Alert:
    """The month's price level jumped: held back until a person confirms the data (or fixes it)."""
    money = "n/a" if level is None else f"${level:,.0f}/sq ft"
    ref = "n/a" if reference is None else f"${reference:,.0f}/sq ft"
    moved = "n/a" if change is None else f"{change:+.1%}"
    return Alert(
        kind="month_needs_confirmation",
        key=f"price_level:{month}:{run_id or '-'}",
        title=f"Price level of {month} jumped {moved}: confirm the month",
        lines=(
            f"Median price per sq ft of {month}: {money} against {ref} in the recent months "
            f"({moved}; bound ±{max_change:.0%}).",
            f"{month} is held back from drift measurement and training until a person confirms it.",
            f"If the data is right, accept it: homeprice accept-month {month}",
            "If it is wrong, land corrected files for the month; they are checked afresh.",
        ),
        severity="warning",
        dagster_run_url=links.dagster_run(run_id),
        facts={"month": month, "level": level, "reference": reference, "change": change},
    )
