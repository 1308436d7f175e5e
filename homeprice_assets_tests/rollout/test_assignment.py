"""Sticky A/B assignment: deterministic per home and rollout, and the share matches the weight."""

import subprocess
import sys

import pytest

from homeprice_assets.rollout.assignment import bucket, in_candidate_arm


@pytest.mark.parametrize("weight", [0.05, 0.2, 0.5])
def test_share_of_5000_parcels_is_within_3_points_of_the_weight(weight: float) -> None:
    parcels = [f"{i:010d}" for i in range(5000)]
    share = sum(in_candidate_arm(p, weight, salt="7") for p in parcels) / len(parcels)
    assert abs(share - weight) <= 0.03, share


def test_same_parcel_same_arm_in_another_process() -> None:
    parcels = [f"..{i:010d}" for i in range(200)]
    here = [in_candidate_arm(p, 0.3, "12") for p in parcels]
    assert here == [in_candidate_arm(p, 0.3, "12") for p in parcels]
    code = (
        "from homeprice_assets.rollout.assignment import in_candidate_arm as a;"
        f"print(''.join('1' if a(p, 0.3, '12') else '0' for p in {parcels!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "".join("1" if x else "0" for x in here)


def test_no_key_stays_with_the_champion_and_salt_redraws() -> None:
    assert not in_candidate_arm(None, 0.99) and not in_candidate_arm("", 0.99)
    assert 0 <= bucket("x") < 1
    a = [in_candidate_arm(str(i), 0.5, "1") for i in range(1000)]
    b = [in_candidate_arm(str(i), 0.5, "2") for i in range(1000)]
    assert a != b  # a new rollout (candidate version) draws a new split
