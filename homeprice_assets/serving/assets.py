"""The deployable artifact: a Bento holding the service and the promoted champion."""

import dagster as dg

from homeprice_assets.resources.mlflow import MlflowTracking
from homeprice_assets.serving.build import build_bento, import_version
from homeprice_assets.training.assets import promoted_model
from homeprice_assets.training.tracking import CHAMPION, alias_version


@dg.asset(
    group_name="serving",
    deps=[promoted_model],
    kinds={"bentoml"},
    automation_condition=dg.AutomationCondition.eager(),
)
def bento(context: dg.AssetExecutionContext, mlflow_tracking: MlflowTracking) -> dg.MaterializeResult:
    """Import the champion from the MLflow registry into the BentoML store and build the Bento around it.

    ``bentoml containerize <tag>`` turns the result into an image; ``bentoml serve <tag>`` runs it pinned
    to this model.
    """
    mlflow_tracking.activate()
    name = mlflow_tracking.registered_model_name
    champion = alias_version(CHAMPION, name)
    if champion is None:
        raise dg.Failure(f"no '{CHAMPION}' alias on '{name}': nothing to serve yet")
    model = import_version(name, str(champion.version))
    context.log.info(f"building the Bento around {model.tag} (registered {name} v{champion.version})")
    built = build_bento(model)
    return dg.MaterializeResult(
        metadata={
            "bento_tag": str(built.tag),
            "model_tag": str(model.tag),
            "model_version": str(champion.version),
            "bento_path": dg.MetadataValue.path(str(built.path)),
            "dockerfile": dg.MetadataValue.path(str(built.path) + "/env/docker/Dockerfile"),
            "containerize": f"bentoml containerize {built.tag}",
        }
    )
