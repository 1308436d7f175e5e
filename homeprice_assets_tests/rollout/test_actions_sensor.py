"""The ``rollout_actions`` sensor on a real registry (SQLite MLflow) and a loopback Slack receiver, fed
``rollout_evaluation`` events as the evaluation asset records them: what counts towards a rollback, where
automation stops and a person must decide, and what a failure half-way through a tick keeps."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from homeprice_assets.monitoring.notify import Notifier
from homeprice_assets.resources.config import ProjectConfigResource
from homeprice_assets.resources.registry import CANDIDATE, CHAMPION, ModelRegistry, Registry
from homeprice_assets.rollout import state as st
from homeprice_assets.rollout.sensors import ROLLOUT_EVALUATION, build_rollout_actions_sensor
from homeprice_assets_tests.helpers import placeholder_versions, project_instance
from homeprice_assets_tests.monitoring.conftest import WebhookReceiver, webhook  # noqa: F401 (fixture)


class World:
    def __init__(self, root: Path, webhook: WebhookReceiver) -> None:  # noqa: F811
        self.registry = ModelRegistry(tracking_uri=f"sqlite:///{root / 'mlflow.db'}", model_name="actions")
        self.reg: Registry = self.registry.get()
        placeholder_versions(self.reg, root)
        self.notifier = Notifier(slack_webhook_url=webhook.url, dedup_db=str(root / "alerts.sqlite"))
        self.webhook = webhook
        self.cursor: str | None = None
        self.instance: dg.DagsterInstance

    def evaluation(
        self, champion: str, month: str, broken: bool, judged: bool = True, **extra: object
    ) -> None:
        """A ``rollout_evaluation`` as the asset records it (its champion judged on ``month``, or not: too
        few sales)."""
        health = {
            "month": month,
            "judged": judged,
            "breaches": ["live PPE10 19% < 25%"] if broken else [],
            "metrics": {"n": 400},
        }
        broken = broken and judged
        metadata = {
            "champion_version": champion,
            "champion_broken": broken,
            "champion_health": health,
            **extra,
        }
        self.instance.report_runless_asset_event(
            dg.AssetMaterialization(ROLLOUT_EVALUATION, metadata=metadata)
        )

    def tick(self, registry: ModelRegistry | None = None) -> dg.SensorResult:
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            resources={
                "settings": ProjectConfigResource(overrides={"rollout": {"rollback": {"failure_limit": 2}}}),
                "registry": registry or self.registry,
                "notifier": self.notifier,
            },
        )
        data = build_rollout_actions_sensor().evaluate_tick(context)
        self.cursor = data.cursor
        return data


@pytest.fixture
def world(tmp_path: Path, webhook: WebhookReceiver) -> World:  # noqa: F811
    w = World(tmp_path, webhook)
    with project_instance() as instance:
        w.instance = instance
        yield w


def test_a_month_evaluated_again_is_not_a_second_breach(world: World) -> None:
    world.reg.promote("1", "first")
    world.reg.promote("2", "second")
    world.evaluation("2", "2014-08", broken=False, judged=False)  # August's first file: too few sales
    world.evaluation("2", "2014-08", broken=True)
    world.evaluation("2", "2014-08", broken=True)  # a second file for August: the same evidence again
    world.tick()
    assert world.reg.version_number(CHAMPION) == "2"
    world.evaluation("2", "2014-08", broken=False)  # August corrected: healthy after all
    world.evaluation("2", "2014-09", broken=True)
    world.tick()
    assert world.reg.version_number(CHAMPION) == "2"  # one broken month since the correction
    world.evaluation("2", "2014-10", broken=False)
    world.evaluation("2", "2014-10", broken=True)  # October corrected to broken: September counts again
    world.tick()
    state = st.current_state(world.reg)
    assert (state.champion, state.previous) == ("1", "2")
    assert state.last_action["figures"]["consecutive_evaluations"] == 2
    assert any("Rollback" in t and "v2 -> v1" in t for t in world.webhook.texts())


def test_an_old_streak_does_not_survive_a_new_reign(world: World) -> None:
    world.reg.promote("1", "first")
    world.reg.promote("2", "second")
    world.evaluation("2", "2014-08", broken=True)  # one breach: v2 keeps serving
    world.tick()
    st.rollback(world.reg, "manual: homeprice rollback")  # a person moves back to v1 ...
    world.evaluation("1", "2014-09", broken=False)
    world.tick()
    st.rollback(world.reg, "manual: homeprice rollback", to="2")  # ... and to v2 again
    world.evaluation("2", "2014-10", broken=True)  # its first breach of this reign
    world.tick()
    assert world.reg.version_number(CHAMPION) == "2"


def test_automation_does_not_roll_back_to_a_version_it_rolled_back_and_says_so(world: World) -> None:
    world.reg.promote("1", "first")
    world.reg.promote("2", "second")
    for month in ("2014-08", "2014-09"):
        world.evaluation("2", month, broken=True)
    world.tick()
    assert st.current_state(world.reg).champion == "1"  # v2 rolled back, and marked so
    for month in ("2014-10", "2014-11"):
        world.evaluation("1", month, broken=True)
    world.tick()
    state = st.current_state(world.reg)
    assert (state.champion, state.previous) == ("1", "2")  # not back to the broken v2
    [alert] = [t for t in world.webhook.texts() if "not possible" in t]
    assert "champion v1" in alert and "was itself rolled back" in alert
    world.tick()  # nothing new: no second alert
    assert len([t for t in world.webhook.texts() if "not possible" in t]) == 1


def test_a_failing_registry_keeps_the_record_for_the_next_tick(world: World) -> None:
    world.reg.promote("1", "first")
    st.start_rollout(world.reg, "3", "shadow", 0.5, reason="test")
    world.evaluation("1", "2014-08", broken=False, decision="promote", candidate_version="3")
    away = ModelRegistry(tracking_uri="http://127.0.0.1:9/", model_name="actions")  # nothing listens there
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        data = world.tick(away)
    assert not data.asset_events and world.reg.version_number(CHAMPION) == "1"
    data = world.tick()  # the registry is back: the same evaluation is acted on
    assert world.reg.version_number(CHAMPION) == "3" and world.reg.version_number(CANDIDATE) is None
    assert [e.metadata["decision"].value for e in data.asset_events] == ["promote"]


def test_a_promotion_interrupted_between_its_alias_moves_is_finished(world: World) -> None:
    world.reg.promote("1", "first")
    st.start_rollout(world.reg, "3", "shadow", 0.5, reason="test")
    world.reg.set_alias(CHAMPION, "3")  # the champion moved, the candidate alias and mode were not cleared
    action = st.promote(world.reg, "3", "live ground truth: candidate better")
    state = st.current_state(world.reg)
    assert action.kind == "promote" and (state.champion, state.candidate, state.active) == ("3", None, False)


def test_a_rollback_interrupted_between_its_alias_moves_is_finished(world: World) -> None:
    """The registry failed after ``previous`` moved to the broken champion and before ``champion`` moved:
    champion and previous name the same version. The next attempt finishes the rollback to its target."""
    world.reg.promote("1", "first")
    world.reg.promote("2", "second")
    world.reg.set_model_tag(st.TAG_ROLLING_BACK, '{"from": "2", "to": "1"}')  # as the rollback wrote it
    world.reg.set_alias("previous", "2", rolled_back_automatically="live PPE10 19% < 25%")  # its first move
    for month in ("2014-08", "2014-09"):
        world.evaluation("2", month, broken=True)
    world.tick()
    state = st.current_state(world.reg)
    assert (state.champion, state.previous) == ("1", "2")
    assert st.TAG_ROLLING_BACK not in world.reg.model_tags()
    assert not [t for t in world.webhook.texts() if "not possible" in t]


def test_a_cursor_of_an_earlier_release_starts_the_streaks_afresh(world: World) -> None:
    """Earlier cursors kept a month without its verdict (or no month): their streaks cannot be trusted to
    count months, so one broken month after the upgrade is one, not a second."""
    world.reg.promote("1", "first")
    world.reg.promote("2", "second")
    for old in ({"2": "2014-08"}, None):
        cursor = {"storage_id": 0, "broken_streak": {"2": 1}}
        world.cursor = json.dumps(cursor | ({"judged_month": old} if old else {}))
        world.evaluation("2", "2014-08", broken=True)
        world.tick()
        assert world.reg.version_number(CHAMPION) == "2"


def test_a_stale_rollback_mark_redirects_nothing(world: World) -> None:
    """The mark is honoured only where a rollback was cut in two (champion and previous on one version):
    left behind otherwise, it does not override ``previous`` or a version named by hand."""
    world.reg.promote("1", "first")
    world.reg.promote("2", "second")
    world.reg.set_model_tag(st.TAG_ROLLING_BACK, '{"from": "2", "to": "3"}')  # stale
    assert st.rollback(world.reg, "manual: homeprice rollback").version == "1"  # previous, not v3
    world.reg.set_model_tag(st.TAG_ROLLING_BACK, '{"from": "1", "to": "2"}')
    assert st.rollback(world.reg, "manual: homeprice rollback", to="3").version == "3"  # as named
