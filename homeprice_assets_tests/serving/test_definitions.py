"""Serving as the code location wires it: ``bento`` sits downstream of ``promoted_model``."""

import dagster as dg

from homeprice_assets.definitions import defs


def test_bento_is_downstream_of_promotion_in_the_code_location() -> None:
    graph = defs.resolve_asset_graph()
    bento, promoted = dg.AssetKey("bento"), dg.AssetKey("promoted_model")
    assert promoted in graph.get(bento).parent_keys
    assert graph.get(bento).automation_condition is not None
    sensor = defs.resolve_sensor_def("serving_automation")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert bento in sensor.asset_selection.resolve(graph)
    # the lifecycle job packages the Bento after promoting, in the same run
    lifecycle = defs.resolve_job_def("model_lifecycle_job")
    assert bento in lifecycle.asset_layer.executable_asset_keys
