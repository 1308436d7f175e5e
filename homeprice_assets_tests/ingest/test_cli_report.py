"""``homeprice ingest`` says where the user looks why a month failed, once, and retries it only on change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest


@pytest.fixture
def cli(tmp_path: Path):
    home = tmp_path / "home"
    env = {"HOMEPRICE_HOME": str(home), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    def run(*args: str, expect: int = 0) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "homeprice_assets.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == expect, done.stdout[-3000:] + done.stderr[-3000:]
        assert "Traceback" not in done.stdout + done.stderr
        return done.stdout

    run.home = home  # type: ignore[attr-defined]
    return run


def test_failed_month_reason_printed_once_and_retried_on_change(cli) -> None:
    cli("land", "--since", "2012-02", "--until", "2012-03")
    landing = cli.home / "landing"
    good = (landing / "sales_2012-03.csv").read_bytes()
    rows = pd.read_csv(landing / "sales_2012-03.csv", dtype=str)
    (landing / "sales_2012-03.csv").write_text(rows.drop(columns=["tot_sf", "area"]).to_csv(index=False))
    (landing / "2012-02").mkdir()
    (landing / "2012-02" / "empty.csv").write_bytes(b"")
    (landing / "notes.txt").write_text("not sales")

    first = cli("ingest", expect=1)
    lines = first.splitlines()
    assert any(line.startswith("  2012-02  ingested:") and "1 file(s) set aside" in line for line in lines)
    assert "raw_sales.readable_files: 1 of 2 file(s) set aside: 2012-02/empty.csv: empty file" in first
    assert "  2012-03  FAILED" in first
    assert "raw_sales.required_columns:" in first
    assert "'living_sf' (source column 'tot_sf')" in first and "'location' (source column 'area')" in first
    assert "landing zone: notes.txt is in no month: not a sales file" in first
    summary = "ingested 1/2 month(s): 2 ran, 0 unchanged; failed: 2012-03; 1 landed file(s) in no month"
    assert summary in first

    again = cli("ingest", expect=1)  # nothing changed: nothing re-run, the earlier reason once
    assert "2012-03  FAILED earlier, files unchanged (not retried)" in again
    assert again.count("'living_sf' (source column 'tot_sf')") == 1
    assert "0 ran, 1 unchanged; failed: 2012-03" in again

    (landing / "sales_2012-03.csv").write_bytes(good)  # the corrected file: retried, and it passes
    fixed = cli("ingest")
    assert f"  2012-03  ingested: {len(rows)} clean, 0 quarantined" in fixed
    assert "ingested 2/2 month(s): 1 ran, 1 unchanged" in fixed
