"""The replay report: one HTML page (PNG plots embedded), a JSON of every figure, logged to MLflow.

Built from stored facts only (``facts.py``): the report can be rebuilt at any time from a replay home, and
the tests recompute its figures from the prediction logs, registries and Dagster instances independently.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from homeprice_assets.replay import facts as F
from homeprice_assets.replay.policies import POLICIES
from homeprice_assets.replay.runner import MODEL_NAME, ReplaySpec, open_instance, policy_paths
from homeprice_assets.training.reports import pyplot

REPLAY_EXPERIMENT = "homeprice-replay"
MARKERS = {"promoted": ("^", "tab:green"), "blocked": ("x", "tab:orange"), "rollback": ("v", "tab:red")}
TABLE_COLUMNS = (
    ("policy", "policy", "{}"),
    ("mdape", "MdAPE", "{:.2%}"),
    ("ppe10", "PPE10", "{:.1%}"),
    ("median_ratio", "median ratio", "{:.3f}"),
    ("coverage", "80% interval coverage", "{:.1%}"),
    ("worst_monthly_mdape", "worst month MdAPE", "{:.2%}"),
    ("sales", "sales judged", "{:,}"),
    ("retrains", "retrains", "{}"),
    ("promotions", "promotions", "{}"),
    ("blocked", "blocked", "{}"),
    ("rollbacks", "rollbacks", "{}"),
    ("broken_evaluations", "months champion broken", "{}"),
    ("fit_seconds", "training compute (s)", "{:.0f}"),
    ("lifecycle_seconds", "lifecycle runs (s)", "{:.0f}"),
)


@dataclass(frozen=True)
class Report:
    summary: dict[str, Any]  # the whole JSON document
    html_path: Path
    json_path: Path
    mlflow_run_id: str | None = None
    mlflow_link: str | None = None


def collect(spec: ReplaySpec, name: str, months: list[str]) -> F.PolicyFacts:
    """One policy's facts from its stores."""
    from homeprice_assets.config import load_config
    from homeprice_assets.serving.predlog import read_predictions

    paths = policy_paths(spec, name)
    rollout = load_config(None, POLICIES[name].config_overrides(spec.overrides)).rollout
    predictions = read_predictions(paths.log_url, model_name=MODEL_NAME)
    sales = F.stored_sales(paths.storage, months)
    live, unmatched = F.live_answers(sales, predictions, rollout.embargo_days, rollout.horizon_months)
    instance = open_instance(paths.dagster)
    try:
        runs, rollbacks = F.dagster_runs(instance), F.dagster_rollbacks(instance)
        broken = F.broken_evaluations(instance)
    finally:
        instance.dispose()
    versions = F.registry_versions(paths.mlflow_uri, MODEL_NAME, Path(spec.home) / "fit_cache")
    return F.PolicyFacts(name, live, unmatched, versions, runs, rollbacks, broken)


def replayed_months(spec: ReplaySpec, name: str) -> list[str]:
    path = policy_paths(spec, name).progress
    if not path.is_file():
        return []
    return [json.loads(line)["month"] for line in path.read_text().splitlines()]


def where_time_went(spec: ReplaySpec) -> dict[str, Any]:
    """Wall seconds by part of a month (summed over months) per policy, from the runner's month records."""
    out: dict[str, Any] = {}
    for name in spec.policies:
        path = policy_paths(spec, name).progress
        parts: dict[str, float] = {}
        for line in path.read_text().splitlines() if path.is_file() else []:
            for part, seconds in json.loads(line)["seconds"].items():
                parts[part] = parts.get(part, 0.0) + float(seconds)
        out[name] = {k: round(v, 1) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])}
    timing = Path(spec.home) / "timing.json"
    out["_processes"] = json.loads(timing.read_text()) if timing.is_file() else {}
    return out


def compute(spec: ReplaySpec) -> dict[str, Any]:
    """Every figure of the report, as one JSON-ready document."""
    policies: dict[str, Any] = {}
    first_version = "1"  # the base home's first model: every policy starts from it
    for name in spec.policies:
        months = replayed_months(spec, name)
        if not months:
            continue
        facts = collect(spec, name, months)
        policy = POLICIES[name]
        policies[name] = {
            "description": policy.description,
            "sensors": list(policy.sensors),
            "overrides": policy.config_overrides({}),
            "live_error_margin": policy.live_error_margin,
            "summary": F.summarize(facts, first_version),
            "monthly": F.monthly_metrics(facts.live).to_dict(orient="records"),
            "unmatched": facts.unmatched,
            "events": F.events(facts, first_version).to_dict(orient="records"),
            "versions": facts.versions.drop(columns=["run_id"]).to_dict(orient="records"),
        }
    return {
        "title": f"Replay {spec.start}..{spec.end}",
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "spec": json.loads(spec.to_json()),
        "policies": policies,
        "time": where_time_went(spec),
    }


def summary_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [p["summary"] for p in doc["policies"].values()]


def _fmt(value: Any, pattern: str) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "n/a"
    return pattern.format(value)


def summary_markdown(doc: dict[str, Any]) -> str:
    """The comparison table as Markdown (the README's)."""
    head = "| " + " | ".join(label for _, label, _ in TABLE_COLUMNS) + " |"
    rule = "| " + " | ".join("---" for _ in TABLE_COLUMNS) + " |"
    body = [
        "| " + " | ".join(_fmt(row.get(k), f) for k, _, f in TABLE_COLUMNS) + " |"
        for row in summary_rows(doc)
    ]
    return "\n".join([head, rule, *body])


def time_markdown(doc: dict[str, Any]) -> str:
    """Where the wall time went, per policy: parts of a month summed over months, and the ratio of each
    policy's total to the never-retrain policy's in the same run (the cost of its automation)."""
    spent = {k: v for k, v in doc["time"].items() if not k.startswith("_")}
    parts = sorted(
        {p for v in spent.values() for p in v}, key=lambda p: -sum(v.get(p, 0) for v in spent.values())
    )
    base = sum(spent.get("never", {}).values()) or None
    head = "| policy | " + " | ".join(parts) + " | total (s) | x never |"
    rule = "| --- " * (len(parts) + 3) + "|"
    rows = []
    for name, values in spent.items():
        total = sum(values.values())
        ratio = f"{total / base:.1f}" if base else "n/a"
        cells = " | ".join(f"{values.get(p, 0.0):.0f}" for p in parts)
        rows.append(f"| {name} | {cells} | {total:.0f} | {ratio} |")
    return "\n".join([head, rule, *rows])


def _plots(doc: dict[str, Any], out: Path) -> dict[str, Path]:
    from matplotlib.ticker import PercentFormatter

    plt = pyplot()

    paths: dict[str, Path] = {}
    policies = doc["policies"]
    for metric, label in (("mdape", "MdAPE"), ("ppe10", "PPE10"), ("coverage", "80% interval coverage")):
        fig, ax = plt.subplots(figsize=(11, 4.2))
        for name, p in policies.items():
            monthly = pd.DataFrame(p["monthly"])
            if monthly.empty:
                continue
            x = pd.PeriodIndex(monthly["month"], freq="M").to_timestamp()
            (line,) = ax.plot(x, monthly[metric], label=name, lw=1.4)
            by_month = dict(zip(monthly["month"], monthly[metric], strict=True))
            for kind, (marker, _color) in MARKERS.items():
                hits = [e["month"] for e in p["events"] if e["event"] == kind and e["month"] in by_month]
                if hits:
                    ax.scatter(
                        pd.PeriodIndex(hits, freq="M").to_timestamp(),
                        [by_month[m] for m in hits],
                        marker=marker,
                        color=line.get_color(),
                        s=36,
                        zorder=3,
                    )
        handles = [
            plt.Line2D([], [], ls="", marker=m, color="gray", label=k) for k, (m, _) in MARKERS.items()
        ]
        ax.legend(handles=ax.get_legend_handles_labels()[0] + handles, fontsize=8, ncol=4)
        ax.set_ylabel(label)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_title(
            f"Live {label} by sale month (valuations made before the sale); events marked at the month "
            "whose arrival triggered them"
        )
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / f"{metric}_by_month.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths[metric] = path
    fig, ax = plt.subplots(figsize=(11, 0.6 + 0.5 * max(1, len(policies))))
    for i, (_name, p) in enumerate(policies.items()):
        for kind, (marker, color) in MARKERS.items():
            hits = [e["month"] for e in p["events"] if e["event"] == kind]
            if hits:
                ax.scatter(
                    pd.PeriodIndex(hits, freq="M").to_timestamp(), [i] * len(hits), marker=marker, c=color
                )
    ax.set_yticks(range(len(policies)), list(policies))
    ax.set_title("Events: promoted (green), blocked by the gates (orange), rolled back (red)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths["events"] = out / "events.png"
    fig.savefig(paths["events"], dpi=110)
    plt.close(fig)
    return paths


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" style="max-width:100%">'


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0, classes="t")


def render_html(doc: dict[str, Any], plots: dict[str, Path]) -> str:
    spec = doc["spec"]
    e = html.escape
    table = pd.DataFrame(
        [{label: _fmt(row.get(k), f) for k, label, f in TABLE_COLUMNS} for row in summary_rows(doc)]
    )
    parts = [
        f"<h1>{e(doc['title'])}: which retraining policy pays for itself?</h1>",
        "<h2>Data window and settings</h2><ul>",
        f"<li>Replayed sale months {e(spec['start'])}..{e(spec['end'])} of the bundled Seattle sales; "
        f"history before them from {e(str(spec['history_start'] or 'the first bundled month'))}; the first "
        "model (version 1, the same for every policy) trained through the month before "
        f"{e(spec['start'])}.</li>",
        "<li>Configuration overrides shared by every policy: "
        f"<code>{e(json.dumps(spec['overrides']))}</code> over the packaged defaults (training.params "
        "over the model's DEFAULT_PARAMS: a faster learning rate "
        "and fewer rounds than the defaults, so that a 60-month replay fits in the time budget).</li>",
        f"<li>Reproduce: <code>homeprice replay --from {e(spec['start'])} --to {e(spec['end'])} --policy "
        f"{e(','.join(spec['policies']))}</code> (or <code>bench/replay_bench.py</code>).</li>",
        "</ul><h2>How</h2><ul>",
        "<li>Before a month lands, every home that sells in it is priced through the service's own pricing "
        "path (the BentoML service class <code>bento.service:HomePrice</code> instantiated in-process, not "
        "over HTTP; its follower polls the registry once before each month), valued as of embargo+1 days "
        "before the month starts, and logged to the policy's prediction log.</li>",
        "<li>Then the month lands; the sensors are evaluated as the daemon would (landing_sensor, "
        "rollout_actions, the policy's retrain trigger) and the runs they request execute in-process on the "
        "policy's own Dagster instance, registry and stores. ground_truth and rollout_evaluation are "
        "materialized after each ingest, as their automation conditions ask. The monthly_retrain schedule is "
        "off (it would make every policy 'monthly'); the Bento build is left out (the service follows the "
        "registry). Alerts go to the log.</li>",
        "<li>Live error: each sale joined to the latest answer (champion, or A/B candidate) valued at least "
        "embargo_days and at most horizon_months before it (rollout.groundtruth.join_ground_truth).</li>",
        "<li>Training compute: fits with identical training rows and settings are computed once and "
        "shared between policies (a content-addressed fit cache); 'training compute' counts every fit a "
        "policy asked for at the seconds it took when computed (cache hits included); 'lifecycle runs' is "
        "the wall time of the policy's lifecycle runs as Dagster recorded them (cache hits make it lower "
        "than it would be alone).</li>",
        "</ul><h2>Policies compared</h2>",
        _table(table),
        "<ul>",
        *[f"<li><b>{e(n)}</b>: {e(p['description'])}</li>" for n, p in doc["policies"].items()],
        "</ul>",
    ]
    for key in ("mdape", "events", "ppe10", "coverage"):
        if key in plots:
            parts.append(_img(plots[key]))
    parts.append("<h2>Events</h2>")
    for name, p in doc["policies"].items():
        events = pd.DataFrame(p["events"])
        parts.append(f"<h3>{e(name)}</h3>" + (_table(events) if len(events) else "<p>none</p>"))
    parts.append("<h2>By month</h2>")
    for name, p in doc["policies"].items():
        parts.append(f"<details><summary>{e(name)}</summary>{_table(pd.DataFrame(p['monthly']))}</details>")
    parts.append("<h2>Where the time went (wall seconds, summed over months)</h2>")
    parts.append(f"<pre>{e(time_markdown(doc))}</pre>")
    parts.append(f"<pre>{e(json.dumps(doc['time'].get('_processes', {}), indent=1))}</pre>")
    style = (
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}"
        "table.t{border-collapse:collapse;font-size:13px}table.t td,table.t th{padding:3px 8px;"
        "border-bottom:1px solid #ddd;text-align:right}</style>"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(doc['title'])}</title>{style}</head>"
        + (f"<body>{''.join(parts)}<p><small>generated {e(doc['generated_at'])}</small></p></body></html>")
    )


def build_report(
    spec: ReplaySpec, tracking_uri: str | None = None, ui_url: str | None = None, log_to_mlflow: bool = True
) -> Report:
    """Compute, write (``<home>/report/``) and log the report to MLflow (experiment ``homeprice-replay``)."""
    doc = compute(spec)
    out = Path(spec.home) / "report"
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(doc, out)
    json_path = out / "replay_report.json"
    json_path.write_text(json.dumps(doc, indent=1, default=str))
    html_path = out / "replay_report.html"
    html_path.write_text(render_html(doc, plots))
    (out / "summary.md").write_text(summary_markdown(doc) + "\n\n" + time_markdown(doc) + "\n")
    run_id = link = None
    if log_to_mlflow:
        from homeprice_assets.resources.registry import Registry

        reg = Registry(tracking_uri=tracking_uri, experiment_name=REPLAY_EXPERIMENT, ui_url=ui_url)
        with reg.run(f"replay-{spec.start}-{spec.end}", tags={"homeprice.stage": "replay"}) as run:
            run.log_params({"start": spec.start, "end": spec.end, "policies": ",".join(spec.policies)})
            run.log_params({"overrides": json.dumps(spec.overrides, sort_keys=True)})
            for row in summary_rows(doc):
                run.log_metrics(
                    {
                        f"{row['policy']}.{k}": float(row[k])
                        for k in (
                            "mdape",
                            "ppe10",
                            "median_ratio",
                            "coverage",
                            "retrains",
                            "promotions",
                            "blocked",
                            "rollbacks",
                            "fit_seconds",
                        )
                        if row.get(k) is not None
                    }
                )
            run.log_artifacts(out, "replay_report")
        run_id, link = run.run_id, reg.run_link(run.run_id)
    return Report(doc, html_path, json_path, run_id, link)
