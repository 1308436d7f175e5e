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
