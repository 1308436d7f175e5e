"""MLflow tracking and registry as a Dagster resource.

dagster-mlflow ships only the older ``mlflow_tracking`` resource, which leaves runs RUNNING unless its end
hook is attached, and knows nothing of the registry or artifact locations. This resource is small: it points
the MLflow client at the configured stores (URLs, so SQLite locally and PostgreSQL/S3 in production) and
opens runs that always end, FAILED when the body raised.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import dagster as dg
import mlflow
from mlflow.entities import Run

from homeprice_assets.config import homeprice_home, mlflow_tracking_uri


class MlflowTracking(dg.ConfigurableResource):
    """Where runs, models and their artifacts go, and what the model is called in the registry."""

    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI or SQLite under the project home
    # default: $HOMEPRICE_MLFLOW_ARTIFACTS or $HOMEPRICE_HOME/mlartifacts; any URL MLflow takes (s3://...)
    artifact_location: str | None = None
    experiment_name: str = "homeprice"
    registered_model_name: str = "homeprice"
    ui_url: str | None = None  # e.g. http://127.0.0.1:5000, for links from Dagster and alerts

    def uri(self) -> str:
        return self.tracking_uri or mlflow_tracking_uri()

    def activate(self) -> str:
        """Point the global MLflow client here; create the experiment with our artifact location."""
        mlflow.set_tracking_uri(self.uri())
        experiment = mlflow.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            location = (
                self.artifact_location
                or os.environ.get("HOMEPRICE_MLFLOW_ARTIFACTS")
                or (homeprice_home() / "mlartifacts").as_uri()
            )
            experiment_id = mlflow.create_experiment(self.experiment_name, artifact_location=location)
        else:
            experiment_id = experiment.experiment_id
        mlflow.set_experiment(experiment_id=experiment_id)
        return experiment_id

    @contextlib.contextmanager
    def run(self, run_name: str, tags: dict[str, str] | None = None) -> Iterator[Run]:
        """An MLflow run that ends FINISHED, or FAILED if the body raises."""
        self.activate()
        if mlflow.active_run() is not None:  # a run left open by an earlier failure in this process
            mlflow.end_run(status="FAILED")
        run = mlflow.start_run(run_name=run_name, tags=tags)
        try:
            yield run
        except BaseException:
            mlflow.end_run(status="FAILED")
            raise
        mlflow.end_run(status="FINISHED")

    def run_link(self, run_id: str) -> str | None:
        """A browser link to a run when ``ui_url`` is set."""
        if not self.ui_url:
            return None
        experiment_id = mlflow.get_run(run_id).info.experiment_id
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
