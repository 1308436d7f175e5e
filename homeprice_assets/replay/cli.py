"""``homeprice replay``: the policies replayed month by month, then the report (HTML, JSON, MLflow)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from homeprice_assets.replay.policies import DEFAULT_POLICIES, POLICIES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="start", required=True, help="first replayed sale month, e.g. 2012-01")
    parser.add_argument("--to", dest="end", required=True, help="last replayed sale month, e.g. 2016-12")
    parser.add_argument(
        "--policy",
        action="append",
        default=None,
        help=f"policy to replay (repeat, or comma-separated; default {','.join(DEFAULT_POLICIES)}; "
        f"known: {', '.join(POLICIES)})",
    )
    parser.add_argument("--jobs", type=int, default=1, help="policies replayed at once, one process each")
    parser.add_argument("--home", default=None, help="replay home (default $HOMEPRICE_HOME/replay/FROM_TO)")
    parser.add_argument(
        "--history-from", default=None, help="first month of history before --from (default: all bundled)"
    )
    parser.add_argument(
        "--overrides",
        default=None,
        help="JSON of configuration overrides for every policy (default: the replay's training settings)",
    )


def spec_from_args(args: argparse.Namespace):
    from homeprice_assets.config import homeprice_home
    from homeprice_assets.replay.policies import resolve
    from homeprice_assets.replay.runner import ReplaySpec, month_range

    month_range(args.start, args.end)  # a malformed window fails here, naming it
    names = [n for item in (args.policy or [",".join(DEFAULT_POLICIES)]) for n in item.split(",") if n]
    policies = tuple(p.name for p in resolve(names))
    home = args.home or str(homeprice_home() / "replay" / f"{args.start}_{args.end}")
    extra = {"overrides": json.loads(args.overrides)} if args.overrides else {}
    return ReplaySpec(
        start=args.start,
        end=args.end,
        home=home,
        policies=policies,
        history_start=args.history_from,
        jobs=max(1, args.jobs),
        **extra,
    )


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from homeprice_assets.replay.report import build_report, summary_markdown
    from homeprice_assets.replay.runner import run_replay

    spec = spec_from_args(args)
    total = len(spec.months()) * len(spec.policies)
    bar = tqdm(total=total, desc="replay", unit="policy-month", file=sys.stderr, disable=None)

    def progress(done: int, _total: int) -> None:
        bar.update(max(0, done - bar.n))

    try:
        run_replay(spec, progress=progress)
    finally:
        bar.close()
    report = build_report(spec)
    print(summary_markdown(report.summary))
    print(f"report: {report.html_path}")
    print(f"figures: {report.json_path}")
    if report.mlflow_run_id:
        print(
            f"MLflow run: {report.mlflow_run_id}" + (f" ({report.mlflow_link})" if report.mlflow_link else "")
        )
    print(f"replay home: {Path(spec.home)}")
    return 0
