"""The full replay: every policy month by month over 2012-01..2016-12 on the bundled sales; prints the table.

    nice -n 5 .venv/bin/python bench/replay_bench.py [--from 2012-01 --to 2016-12] [--jobs 2] [--home DIR]

Resumable: a second invocation with the same home skips the months already replayed and rebuilds the report
(HTML, JSON, PNG) from the stored facts. The table printed is the README's; "where the time went" follows it
(per part of a month, summed over policies, and per policy against the never-retrain baseline of the run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="start", default="2012-01")
    parser.add_argument("--to", dest="end", default="2016-12")
    parser.add_argument("--policies", default=None, help="comma-separated (default: the report's five)")
    parser.add_argument("--jobs", type=int, default=2, help="policies replayed at once (one process each)")
    parser.add_argument("--home", default=None, help="replay home (default: $HOMEPRICE_HOME/replay/bench)")
    parser.add_argument("--no-report", action="store_true", help="replay only")
    parser.add_argument(
        "--report-only", action="store_true", help="rebuild the report from the stored facts, replay nothing"
    )
    args = parser.parse_args()

    from homeprice_assets.config import homeprice_home
    from homeprice_assets.replay.policies import DEFAULT_POLICIES
    from homeprice_assets.replay.runner import ReplaySpec, run_replay

    home = Path(args.home or homeprice_home() / "replay" / "bench")
    order = ("monthly", "monthly_no_gates", "live_error", "drift", "never")  # longest first
    chosen = args.policies.split(",") if args.policies else sorted(DEFAULT_POLICIES, key=order.index)
    spec = ReplaySpec(start=args.start, end=args.end, home=str(home), policies=tuple(chosen), jobs=args.jobs)
    started = time.perf_counter()

    last = [-1]

    def progress(done: int, total: int) -> None:
        if done != last[0]:
            last[0] = done
            print(f"[{time.perf_counter() - started:7.0f}s] {done}/{total} policy-months", flush=True)

    if args.report_only:
        spec = ReplaySpec.from_json((home / "spec.json").read_text())
    else:
        run_replay(spec, progress=progress)
    timing_path = home / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    print(f"replay: {time.perf_counter() - started:.0f} s; timing {timing}")
    if args.no_report:
        return 0
    from homeprice_assets.replay.report import build_report, summary_markdown, time_markdown

    report = build_report(spec)
    print(summary_markdown(report.summary))
    print()
    print(time_markdown(report.summary))
    print(f"report: {report.html_path}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(main())
