"""The replay as a Dagster job: ``replay_job`` materializes ``replay_report`` (config: window, policies).

The report is logged to MLflow (experiment ``homeprice-replay``) through the project's registry resource, and
its materialization links the HTML, the JSON of every figure and the MLflow run, so it is one click from the
Dagster UI. The replay itself runs in separate homes under ``$HOMEPRICE_HOME/replay/``: it never touches the
project's own instance, registry or prediction log.
"""

import json

import dagster as dg
from pydantic import Field

from homeprice_assets.config import homeprice_home
from homeprice_assets.replay.policies import DEFAULT_POLICIES, resolve
from homeprice_assets.replay.runner import REPLAY_OVERRIDES, ReplaySpec, month_range, run_replay
from homeprice_assets.resources.registry import ModelRegistry


class ReplayConfig(dg.Config):
    start: str = Field("2012-01", description="first replayed sale month")
    end: str = Field("2016-12", description="last replayed sale month")
    policies: list[str] = Field(default_factory=lambda: list(DEFAULT_POLICIES), description="policies")
    jobs: int = Field(1, ge=1, description="policies replayed at once (one process each)")
    history_start: str | None = Field(None, description="first history month (None: all bundled data)")
    overrides_json: str = Field(
        json.dumps(REPLAY_OVERRIDES), description="JSON configuration overrides shared by every policy"
    )
    home: str | None = Field(None, description="replay home (default $HOMEPRICE_HOME/replay/START_END)")


@dg.asset(group_name="replay", kinds={"html", "mlflow"})
def replay_report(
    context: dg.AssetExecutionContext, config: ReplayConfig, registry: ModelRegistry
) -> dg.MaterializeResult:
    """Replay the retraining policies month by month on the bundled sales and report which pays for itself."""
    from homeprice_assets.replay.report import build_report, summary_markdown

    month_range(config.start, config.end)
    policies = tuple(p.name for p in resolve(config.policies))
    spec = ReplaySpec(
        start=config.start,
        end=config.end,
        home=config.home or str(homeprice_home() / "replay" / f"{config.start}_{config.end}"),
        policies=policies,
        overrides=json.loads(config.overrides_json),
        history_start=config.history_start,
        jobs=config.jobs,
    )
    run_replay(spec, progress=lambda done, total: context.log.info(f"replay: {done}/{total} policy-months"))
    reg = registry.get()
    report = build_report(spec, tracking_uri=reg.tracking_uri, ui_url=reg.ui_url)
    rows = {row["policy"]: row for row in (p["summary"] for p in report.summary["policies"].values())}
    return dg.MaterializeResult(
        metadata={
            "window": f"{spec.start}..{spec.end}",
            "policies": ", ".join(policies),
            "summary": dg.MetadataValue.md(summary_markdown(report.summary)),
            "report": dg.MetadataValue.path(str(report.html_path)),
            "report_url": dg.MetadataValue.url(report.html_path.as_uri()),
            "figures_json": dg.MetadataValue.path(str(report.json_path)),
            "mlflow_run_id": report.mlflow_run_id or "none",
            **({"mlflow_run": dg.MetadataValue.url(report.mlflow_link)} if report.mlflow_link else {}),
            **{
                f"{name}_mdape": float(row["mdape"]) for name, row in rows.items() if row["mdape"] is not None
            },
            **{f"{name}_retrains": int(row["retrains"]) for name, row in rows.items()},
        }
    )


replay_job = dg.define_asset_job(
    "replay_job",
    selection=[replay_report],
    description="Replay retraining policies month by month (valuations, landing, automation, live error).",
)
defs = dg.Definitions(assets=[replay_report], jobs=[replay_job])
