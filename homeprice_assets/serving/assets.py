"""The deployable artifact: a Bento holding the service and the champion that ``promoted_model`` left."""

import dagster as dg

from homeprice_assets.resources.registry import ModelRegistry
from homeprice_assets.serving.build import build_bento, import_version
from homeprice_assets.training.assets import promoted_model

PROMOTED_MODEL = dg.AssetKey("promoted_model")


def champion_of_latest_promotion(instance: dg.DagsterInstance) -> str | None:
    """The champion version recorded by the newest ``promoted_model`` materialization (None: none yet)."""
    event = instance.get_latest_materialization_event(PROMOTED_MODEL)
    mat = event.asset_materialization if event else None
    value = mat.metadata.get("champion_version") if mat else None
    return str(value.value) if value is not None else None


@dg.asset(
    group_name="serving",
    deps=[promoted_model],
    kinds={"bentoml"},
    automation_condition=dg.AutomationCondition.eager(),
)
def bento(context: dg.AssetExecutionContext, registry: ModelRegistry) -> dg.MaterializeResult:
    """Import the champion of the latest promotion into the BentoML store and build the Bento around it.

    The version comes from ``promoted_model``'s materialization, not from re-reading the ``champion`` alias,
    which another run may have moved since. ``bentoml containerize <tag>`` turns the result into an image;
    ``bentoml serve <tag>`` runs it pinned to this model.
    """
    reg = registry.get()
    version = champion_of_latest_promotion(context.instance)
    if version is None:
        raise dg.Failure("promoted_model has not recorded a champion yet: nothing to serve")
    model = import_version(reg, version)
    context.log.info(f"building the Bento around {model.tag} (registered {reg.model_name} v{version})")
    built = build_bento(model)
    return dg.MaterializeResult(
        metadata={
            "bento_tag": str(built.tag),
            "model_tag": str(model.tag),
            "model_version": version,
            "bento_path": dg.MetadataValue.path(str(built.path)),
            "dockerfile": dg.MetadataValue.path(str(built.path) + "/env/docker/Dockerfile"),
            "containerize": f"bentoml containerize {built.tag}",
        }
    )
