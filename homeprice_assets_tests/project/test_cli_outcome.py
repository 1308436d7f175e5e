"""What ``homeprice run`` prints after its in-process lifecycle run: each check, and why anything failed."""

from __future__ import annotations

import dagster as dg
import pytest

from homeprice_assets.cli import print_outcome


@dg.asset(check_specs=[dg.AssetCheckSpec("gate", asset="scored", blocking=True)])
def scored() -> dg.MaterializeResult:
    return dg.MaterializeResult(
        check_results=[dg.AssetCheckResult(check_name="gate", passed=False, description="MdAPE 0.19 > 0.15")]
    )


@dg.asset(deps=["scored"])
def broken() -> None:
    raise ValueError("registry answered 500\nsecond line")


@dg.asset
def fine() -> None:
    pass


def test_failed_checks_and_steps_say_why(capsys: pytest.CaptureFixture[str]) -> None:
    result = dg.materialize([scored, fine], raise_on_error=False)
    print_outcome(result)
    assert capsys.readouterr().out == "  check scored.gate: FAILED: MdAPE 0.19 > 0.15\n"

    result = dg.materialize([broken], raise_on_error=False)
    print_outcome(result)
    assert capsys.readouterr().out == "  step broken FAILED: ValueError: registry answered 500\n"


@pytest.mark.parametrize("profile", ["local", "production"])
def test_the_serve_hint_carries_the_profile(
    profile: str, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a production run the hint named only the tracking URI: a service started from it logged live
    predictions to the local SQLite file instead of the production PostgreSQL."""
    import time

    from homeprice_assets.cli import _print_next_steps
    from homeprice_assets.resources.registry import Registry
    from homeprice_assets_tests.helpers import placeholder_versions

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("HOMEPRICE_PROFILE", profile)
    registry = Registry(tracking_uri=uri)
    placeholder_versions(registry, tmp_path, n=1)
    registry.set_alias("champion", "1")
    _print_next_steps(time.perf_counter(), trained=True)
    [hint] = [line for line in capsys.readouterr().out.splitlines() if "serve it" in line]
    if profile == "production":
        assert "HOMEPRICE_PROFILE=production" in hint and "MLFLOW_TRACKING_URI" not in hint
    else:
        assert f"MLFLOW_TRACKING_URI={uri}" in hint and "HOMEPRICE_PROFILE" not in hint
