"""`homeprice rollout ...` and `homeprice rollback` against a real registry: actions, state, refusals."""

from pathlib import Path

import dagster as dg
import pytest
import yaml

from homeprice_assets.cli import main
from homeprice_assets.resources.registry import Registry
from homeprice_assets.rollout.state import current_state
from homeprice_assets.sqlite_storage import instance_settings
from homeprice_assets_tests.helpers import placeholder_versions
from homeprice_assets_tests.monitoring.conftest import WebhookReceiver, webhook  # noqa: F401 (fixture)


@pytest.fixture
def reg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("HOMEPRICE_MODEL_NAME", "homeprice-cli")
    registry = Registry(tracking_uri=uri, model_name="homeprice-cli")
    placeholder_versions(registry, tmp_path)
    return registry


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_rollout_and_rollback_commands(
    reg: Registry,
    capsys: pytest.CaptureFixture[str],
    webhook: WebhookReceiver,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("HOMEPRICE_SLACK_WEBHOOK_URL", webhook.url)
    home = tmp_path / "dagster"  # the champion moves are reported to this Dagster instance
    home.mkdir()
    (home / "dagster.yaml").write_text(
        yaml.safe_dump({**instance_settings(home / "storage"), "telemetry": {"enabled": False}})
    )
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    own_instance = dg.DagsterInstance.from_config(str(home))
    code, _, err = run(capsys, "rollout", "start", "--mode", "shadow", "--version", "2")
    assert code == 2 and "no champion yet" in err  # refused: nothing to compare with
    reg.promote("1", "first")
    reg.set_alias("challenger", "2")

    code, out, _ = run(capsys, "rollout", "start", "--mode", "ab", "--weight", "0.25")
    assert code == 0 and "v2 is the candidate in ab mode" in out and "weight 0.25" in out
    state = current_state(reg)
    assert (state.candidate, state.mode, state.weight) == ("2", "ab", 0.25)

    code, _, err = run(capsys, "rollout", "start", "--mode", "shadow", "--version", "3")
    assert code == 2 and "already running" in err
    code, out, _ = run(capsys, "rollout", "status")
    assert code == 0 and "v2 in ab, weight 0.25" in out and "champion     v1" in out

    code, out, _ = run(capsys, "rollout", "stop")
    assert code == 0 and "candidate v2 removed" in out and not current_state(reg).active
    code, _, err = run(capsys, "rollout", "stop")
    assert code == 2 and "no rollout is running" in err
    code, _, err = run(capsys, "rollout", "promote")
    assert code == 2 and "no candidate to promote" in err

    code, _, err = run(capsys, "rollback")
    assert code == 2 and "no 'previous' version" in err
    code, _, err = run(capsys, "rollback", "--to", "42")
    assert code == 2 and "v42 does not exist" in err
    code, out, _ = run(capsys, "rollback", "--to", "3")
    assert code == 0 and "champion v1 -> v3" in out
    [alert] = webhook.texts()  # a manual rollback is announced like the sensor's
    assert "Rollback: homeprice-cli champion v1 -> v3" in alert and "manual: homeprice rollback" in alert
    code, out, _ = run(capsys, "rollback")
    assert code == 0 and "champion v3 -> v1" in out
    assert (current_state(reg).champion, current_state(reg).previous) == ("1", "3")
    assert "manual: homeprice rollback" in current_state(reg).last_action["reason"]
    code, _, err = run(capsys, "rollout", "start", "--mode", "shadow", "--version", "1")
    assert code == 2 and "already the champion" in err

    # the operator promotes a candidate before the evaluation has decided
    code, out, _ = run(capsys, "rollout", "start", "--mode", "shadow", "--version", "2")
    assert code == 0
    code, out, _ = run(capsys, "rollout", "promote")
    assert code == 0 and "champion v1 -> v2" in out
    state = current_state(reg)
    assert (state.champion, state.previous, state.active) == ("2", "1", False)
    assert state.last_action["reason"] == "manual: homeprice rollout promote"
    alert = webhook.texts()[-1]
    assert "promoted homeprice-cli v2 to champion" in alert
    event = own_instance.get_latest_materialization_event(dg.AssetKey("promoted_model")).asset_materialization
    assert event.description.startswith("promote by homeprice rollout promote: manual")
    assert event.metadata["alerted"].value is True  # the promotion alert sensor will not repeat it
