"""The model holder and the alias follower against the real registry, without a server."""

import mlflow
import pytest
from mlflow import MlflowClient

from homeprice_assets.serving.holder import AliasFollower, ModelHolder
from homeprice_assets.training.tracking import input_example, log_price_model, set_alias
from homeprice_assets_tests.serving.conftest import Registry

pytestmark = pytest.mark.slow  # trains the session's model


def test_two_roles_side_by_side_and_a_broken_version_keeps_the_old_one(registry: Registry) -> None:
    mlflow.set_tracking_uri(registry.uri)
    name = "homeprice-holder"  # not the name the session's server follows
    version = str(
        log_price_model(
            registry.model, input_example(registry.train), registered_model_name=name
        ).registered_model_version
    )
    set_alias("champion", version, name)
    holder = ModelHolder()
    errors: list[Exception] = []
    swaps: list[tuple[str, str | None]] = []
    champion = AliasFollower(
        holder,
        name,
        on_swap=lambda new, old: swaps.append((new.version, old.version if old else None)),
        on_error=errors.append,
    )
    assert champion.poll() and not champion.poll()  # loads it once; nothing new the second time
    assert swaps == [(version, None)]

    # a second role (a shadow following `challenger`) is held next to the champion, independently
    set_alias("challenger", version, name)
    shadow = AliasFollower(holder, name, alias="challenger", role="shadow")
    assert shadow.poll()
    assert holder.roles() == {"champion": version, "shadow": version}
    assert holder.get("shadow") is not holder.get("champion")

    # the alias moves to a version whose artifacts cannot be loaded: counted, and the loaded one keeps serving
    broken = MlflowClient().create_model_version(name, source=str(registry.home / "missing-model"))
    set_alias("champion", broken.version, name)
    assert not champion.poll()
    assert len(errors) == 1 and champion.errors == 1
    assert holder.get("champion").version == version
