"""Proof under the real daemon: after `homeprice run`, `dagster dev` and `bentoml serve` run by themselves.

One month lands and, without any other action: exactly one ingest run, a drift report of that month and a
retrain (policy ``both``), the new model promoted and the service answering with it, every alert once at a
loopback webhook; and the daemon's first ticks after `homeprice run` requested nothing (no re-ingest storm,
no drift report per historical month). Slow (several minutes): the timeline is printed for the record.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .daemon_harness import run_scenario, webhook_receiver

MONTH = "2016-07"


@pytest.mark.slow
def test_one_landed_month_is_ingested_measured_retrained_promoted_and_served(tmp_path: Path) -> None:
    with webhook_receiver() as hook:
        out = run_scenario(tmp_path / "stack", hook, since="2015-07", until="2016-06", month=MONTH)
    print(f"\ntimeline (seconds after landing {MONTH}):\n{out.timeline()}")

    # No storm: the first ticks after `homeprice run` requested no ingest, drift report or retrain.
    early = [r for r in out.runs_before_landing() if not r.what.startswith(("bento", "serving"))]
    assert early == [], early
    for name in ("landing_sensor", "retrain_sensor"):
        first_ticks = out.ticks[name]
        assert len(first_ticks) >= 2 and all(not t["runIds"] for t in first_ticks), (name, first_ticks)

    after = out.runs_after_landing()
    assert all(r.status == "SUCCESS" for r in after), [(r.what, r.status) for r in after]
    ingests = [r for r in after if r.what.startswith("ingest")]
    assert [r.what for r in ingests] == [f"ingest {MONTH}"] and ingests[0].trigger == "landing"
    [drift] = [r for r in after if r.what == "drift_report"]
    lifecycles = [r for r in after if r.what.startswith("lifecycle")]
    assert len(lifecycles) == 1, [r.what for r in after]
    # In order: the month is ingested before it is measured and trained on.
    assert ingests[0].ended <= drift.started and ingests[0].ended <= lifecycles[0].started

    # The new model is promoted and the service answers with it (its registry poll picked it up).
    assert int(out.served_version) == int(out.first_version) + 1 and out.serving_at is not None

    # Every alert arrived exactly once; the promotions (v1 by `homeprice run`, then the new one) among them.
    titles = [text.splitlines()[0] for _, text in out.alerts]
    assert len(titles) == len(set(titles)), titles
    assert f"[homeprice] Promoted homeprice v{out.served_version} to champion" in titles, titles
    assert not [t for t in titles if "Run failed" in t], titles
