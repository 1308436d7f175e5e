"""The service's registry follower against the real registry, without a server."""

import pytest

from homeprice_assets.serving.holder import RolloutFollower, Serving
from homeprice_assets_tests.serving.conftest import Registry

pytestmark = pytest.mark.slow  # trains the session's model


def test_follows_the_champion_and_a_broken_version_keeps_the_old_one(registry: Registry) -> None:
    name = "homeprice-holder"  # not the name the session's server follows
    store = registry.store(name)
    version = registry.register(registry.model, alias="champion", name=name)
    errors: list[Exception] = []
    changes: list[tuple[dict, dict]] = []

    def changed(new: Serving, old: Serving) -> None:
        changes.append((new.roles(), old.roles()))

    follower = RolloutFollower(store, on_change=changed, on_error=errors.append)
    assert follower.poll() and not follower.poll()  # loads it once; nothing new the second time
    assert changes == [({"champion": version}, {})]
    assert follower.serving.champion.inner.trained_through == registry.model.trained_through
    # served models predict on one thread per call; a model loaded for the pipeline keeps every core
    assert follower.serving.champion.inner.predict_threads == 1
    assert store.load(version)[1].predict_threads == 0

    # the alias moves to a version whose artifacts cannot be loaded: counted, and the loaded one keeps serving
    broken = store.client.create_model_version(name, source=str(registry.home / "missing-model"))
    store.set_alias("champion", broken.version)
    assert not follower.poll()
    assert len(errors) == 1 and follower.errors == 1
    assert follower.serving.champion.version == version
