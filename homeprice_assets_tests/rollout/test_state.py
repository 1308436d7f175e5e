"""Rollout state and actions on a real MLflow registry (SQLite): aliases, tags, refusals, decisions."""

import json
from pathlib import Path

import pytest

from homeprice_assets.resources.registry import Registry
from homeprice_assets.rollout import state as st
from homeprice_assets.rollout.settings import RolloutSettings
from homeprice_assets_tests.helpers import placeholder_versions


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module (creating one costs seconds); each test has its own model name."""
    return f"sqlite:///{tmp_path_factory.mktemp('state') / 'mlflow.db'}"


@pytest.fixture
def reg(store: str, tmp_path: Path, request: pytest.FixtureRequest) -> Registry:
    registry = Registry(tracking_uri=store, model_name=f"m-{abs(hash(request.node.nodeid))}")
    placeholder_versions(registry, tmp_path)
    return registry


def test_first_model_is_promoted_directly_then_shadow_makes_a_candidate(reg: Registry) -> None:
    shadow = RolloutSettings(mode="shadow")
    first = st.decide_promotion(reg, "1", shadow)
    assert first.action == "promote" and "first model" in first.reason
    st.apply_promotion(reg, first, "gates passed")
    assert st.current_state(reg).champion == "1" and not st.current_state(reg).active

    second = st.decide_promotion(reg, "2", shadow)
    assert second.action == "candidate"
    action = st.apply_promotion(reg, second, "gates passed")
    state = st.current_state(reg)
    assert (state.champion, state.candidate, state.mode, state.active) == ("1", "2", "shadow", True)
    assert state.started_at and action is not None and action.kind == "start"
    assert st.apply_promotion(reg, second, "gates passed") is None  # idempotent

    # a newer validated challenger replaces the candidate under test
    third = st.decide_promotion(reg, "3", RolloutSettings(mode="ab", weight=0.3))
    assert "replaces candidate v2" in third.reason
    st.apply_promotion(reg, third, "gates passed")
    state = st.current_state(reg)
    assert (state.candidate, state.mode, state.weight) == ("3", "ab", 0.3)
    assert state.last_action["kind"] == "replace"
    assert state.last_action["figures"]["replaced_candidate"] == "2"

    direct = st.decide_promotion(reg, "2", RolloutSettings(mode="direct"))
    assert direct.action == "promote"


def test_promote_candidate_stop_and_rollback_record_reason_and_figures(reg: Registry) -> None:
    reg.promote("1", "first")
    st.start_rollout(reg, "2", "shadow", 0.5, "manual")
    action = st.promote_candidate(reg, "candidate wins", {"n_pairs": 400, "statistic": 31.2})
    state = st.current_state(reg)
    assert (state.champion, state.previous, state.candidate, state.mode) == ("2", "1", None, None)
    assert reg.model_tags().get(st.TAG_MODE) is None  # the rollout is over
    tags = reg.get_version("2").tags
    record = json.loads(tags["rollout.promote"])
    assert record["reason"] == "candidate wins" and record["figures"]["n_pairs"] == 400
    assert action.previous_champion == "1"

    back = st.rollback(reg, "live MdAPE 31% > 12% x 1.25", figures={"live_mdape": 0.31})
    state = st.current_state(reg)
    assert (state.champion, state.previous) == ("1", "2") and back.figures["from"] == "2"
    assert json.loads(reg.model_tags()[st.TAG_LAST])["kind"] == "rollback"

    st.start_rollout(reg, "3", "ab", 0.2, "manual")
    st.stop_rollout(reg, "candidate loses")
    state = st.current_state(reg)
    assert state.champion == "1" and state.candidate is None and not state.active


@pytest.mark.parametrize(
    ("setup", "call", "message"),
    [
        ([], lambda r: st.start_rollout(r, "2", "shadow", 0.5, "x"), "no champion yet"),
        (["p1"], lambda r: st.start_rollout(r, "9", "shadow", 0.5, "x"), "v9 does not exist"),
        (["p1"], lambda r: st.start_rollout(r, "1", "shadow", 0.5, "x"), "already the champion"),
        (["p1"], lambda r: st.start_rollout(r, "2", "canary", 0.5, "x"), "mode: expected one of"),
        (["p1"], lambda r: st.start_rollout(r, "2", "ab", 1.5, "x"), "weight"),
        (["p1", "s2"], lambda r: st.start_rollout(r, "3", "ab", 0.2, "x"), "already running"),
        (["p1"], lambda r: st.stop_rollout(r, "x"), "no rollout is running"),
        (["p1"], lambda r: st.promote_candidate(r, "x"), "no candidate to promote"),
        (["p1"], lambda r: st.rollback(r, "x"), "no 'previous' version"),
        (["p1"], lambda r: st.rollback(r, "x", to="1"), "already the champion"),
        (["p1"], lambda r: st.rollback(r, "x", to="7"), "v7 does not exist"),
        ([], lambda r: st.rollback(r, "x"), "no champion"),
    ],
)
def test_actions_that_make_no_sense_are_refused(reg: Registry, setup: list[str], call, message: str) -> None:
    for step in setup:
        if step.startswith("p"):
            reg.promote(step[1:], "setup")
        else:
            st.start_rollout(reg, step[1:], "shadow", 0.5, "setup")
    before = st.current_state(reg)
    with pytest.raises(ValueError, match=message):
        call(reg)
    assert st.current_state(reg) == before  # a refusal changes nothing


def test_state_of_an_unregistered_model_is_empty(store: str) -> None:
    reg = Registry(tracking_uri=store, model_name="nothing-here")
    assert st.current_state(reg) == st.RolloutState()
    assert st.parse_state({"candidate": "2"}, {st.TAG_MODE: "ab", st.TAG_WEIGHT: "bad"}).weight == 0.0
    assert not st.parse_state({}, {st.TAG_MODE: "shadow"}).active  # a mode without a candidate is no rollout
