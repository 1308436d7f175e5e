"""Serving's Definitions merge with the rest of the graph: ``bento`` sits downstream of ``promoted_model``."""

import dagster as dg

from homeprice_assets.definitions import defs as project
from homeprice_assets.features import assets as feature_assets
from homeprice_assets.ingest import assets as ingest_assets
from homeprice_assets.serving import definitions as serving
from homeprice_assets.training import assets as training_assets


def test_serving_defs_merge_downstream_of_promotion() -> None:
    core = dg.Definitions(
        assets=dg.load_assets_from_modules([ingest_assets, feature_assets, training_assets]),
        resources=project.resources,
    )
    merged = dg.Definitions.merge(core, serving.defs)
    graph = merged.resolve_asset_graph()
    bento, promoted = dg.AssetKey("bento"), dg.AssetKey("promoted_model")
    assert promoted in graph.get(bento).parent_keys
    assert graph.get(bento).automation_condition is not None
    sensor = merged.resolve_sensor_def("serving_automation")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert bento in sensor.asset_selection.resolve(graph)
