"""``homeprice``: replay arrivals into the landing zone, run the graph in-process, or open the Dagster UI."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

if TYPE_CHECKING:
    from dagster import DagsterInstance

    from homeprice_assets.ingest.report import IngestReport
    from homeprice_assets.resources.registry import Registry

from homeprice_assets.config import REPO_ROOT, apply_env_defaults, homeprice_home, mlflow_tracking_uri


def _progress(desc: str):
    return lambda it: tqdm(list(it), desc=desc, unit="month", file=sys.stderr, disable=None)


def cmd_land(args: argparse.Namespace) -> int:
    from homeprice_assets.config import project_config
    from homeprice_assets.ingest.landing import land_history
    from homeprice_assets.resources.landing import landing_zone_from_url

    zone = landing_zone_from_url(args.landing)
    months = land_history(
        zone,
        project_config().data,
        until=args.until,
        since=args.since,
        source=args.source,
        progress=_progress("landing"),
        report=lambda note: print(f"note: {note}", file=sys.stderr),
    )
    print(
        f"landed {len(months)} month(s) {months[0] if months else ''}..{months[-1] if months else ''} "
        f"into {zone.describe()}"
    )
    return 0


# The in-process ingest run prints nothing: each month's outcome (and why it failed) is printed once after.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def _month_bar(total: int) -> Callable[[str], None]:
    """A progress bar over the months an ingest run covers, advanced as each month finishes."""
    bar = tqdm(total=total, desc="ingest", unit="month", file=sys.stderr, disable=None)

    def done(month: str) -> None:
        bar.set_postfix_str(month, refresh=False)
        bar.update(1)
        if bar.n >= total:
            bar.close()

    return done


def run_ingest(months: Sequence[str] | None = None, instance: DagsterInstance | None = None) -> IngestReport:
    """Register landed months as partitions; ingest every month whose files changed, in one in-process run.

    Each month is "ran", "unchanged" (the same files were ingested successfully before), "failed", or
    "failed_before" (the same files failed before: not retried until they or the data settings change), or
    "accepted" (they failed only checks a person accepted since: unchanged, and used).
    The months run together (one Dagster run per range of adjacent partitions, usually one), each with its
    own materializations and checks; ``months`` limits the run to those months.
    """
    import dagster as dg

    from homeprice_assets.definitions import defs
    from homeprice_assets.ingest.report import ingest_months
    from homeprice_assets.partitions import register_months

    return ingest_months(
        defs.resolve_job_def("ingest_job"),
        instance or dg.DagsterInstance.get(),
        defs.resources["landing"],
        months,
        run_config=QUIET,
        config=defs.resources["settings"].get().data,
        progress=_month_bar,
        register=register_months,
    )


def run_lifecycle(instance: DagsterInstance | None = None) -> bool:
    """Run the model lifecycle job once, in-process, logging each step as it finishes."""
    import dagster as dg

    from homeprice_assets.definitions import defs

    job = defs.resolve_job_def("model_lifecycle_job")
    config = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    print("training, validating and promoting (progress below) ...", file=sys.stderr)
    result = job.execute_in_process(
        instance=instance or dg.DagsterInstance.get(), raise_on_error=False, run_config=config
    )
    print_outcome(result)
    return result.success


def print_outcome(result: Any) -> None:
    """Each check of an in-process run, with a failed check's reason, and each failed step's error in one
    line: "FAILED" alone sent people up the log to find why."""
    for check in result.get_asset_check_evaluations():
        reason = f": {check.description}" if check.description else ""
        verdict = "passed" if check.passed else f"FAILED{reason}"
        print(f"  check {check.asset_key.to_user_string()}.{check.check_name}: {verdict}")
    for event in result.all_events:  # why a step stopped, in one line (the traceback is in the log above)
        error = event.step_failure_data.error if event.is_step_failure else None
        while error is not None and error.cls_name == "DagsterExecutionStepExecutionError" and error.cause:
            error = error.cause  # the asset's own exception
        if error is not None and error.cls_name != "DagsterAssetCheckFailedError":  # (said by its check)
            first = (error.message.strip().splitlines() or [error.cls_name])[0]
            print(f"  step {event.step_key} FAILED: {first}")


def _report_ingest(report: IngestReport) -> list[str]:
    """One line per month (with the reasons of a failure, never a traceback); returns the failed months."""
    for line in report.lines():
        print(line)
    return report.failed


def cmd_ingest(args: argparse.Namespace) -> int:
    return 1 if _report_ingest(run_ingest()) else 0


def _land_ahead(args: argparse.Namespace) -> Callable[[], None]:
    """Start ``cmd_land`` in a forked process; returns the call that waits for it to finish.

    ``homeprice run`` imports the definitions (SciPy, MLflow, LightGBM, Dagster's assets: seconds) while
    the landing writes its files on the other core. The landing modules are imported first, so the fork
    inherits them and nothing is imported twice. A landing that fails there runs again here, so its error
    (or its success) is what ``homeprice land`` gives. Elsewhere than Linux it lands at once.
    """
    from homeprice_assets.ingest.landing import check_bounds  # pandas, the landing zone: for the fork
    from homeprice_assets.resources import landing as zones  # noqa: F401

    check_bounds(args.until, args.since)  # a wrong month is said at once, as landing alone says it
    if sys.platform != "linux":
        cmd_land(args)
        return lambda: None
    import multiprocessing

    sys.stdout.flush()  # what is buffered now is printed once, by this process
    sys.stderr.flush()
    process = multiprocessing.get_context("fork").Process(
        target=_land_in_child, args=(args,), name="homeprice-land"
    )
    process.start()

    def finish() -> None:
        process.join()
        if process.exitcode != 0:
            cmd_land(args)

    return finish


def _land_in_child(args: argparse.Namespace) -> None:
    try:
        cmd_land(args)
    except BaseException:  # the parent lands again and reports the error as `homeprice land` would
        sys.exit(1)


def cmd_run(args: argparse.Namespace) -> int:
    import dagster as dg

    started = time.perf_counter()
    landed = (lambda: None) if args.no_land else _land_ahead(args)
    from homeprice_assets.definitions import defs  # noqa: F401  (imported while the months land)

    instance = dg.DagsterInstance.get()  # one for both runs
    landed()
    results = run_ingest(instance=instance)
    failed = _report_ingest(results)
    trained = run_lifecycle(instance) if len(failed) < len(results.months) else False
    _print_next_steps(started, trained)
    return 1 if failed or not trained else 0


def _print_next_steps(started: float, trained: bool) -> None:
    from homeprice_assets.resources.registry import CHAMPION, Registry

    print(f"\ndone in {time.perf_counter() - started:.0f} s. Where to look next:")
    print(f"  project home     {homeprice_home()}")
    print("  Dagster UI       make dev   -> http://127.0.0.1:3000")
    if mlflow_tracking_uri().startswith(("http://", "https://")):  # a tracking server has its own UI
        print(f"  MLflow UI        {mlflow_tracking_uri()}")
    else:
        print(
            f"  MLflow UI        .venv/bin/mlflow ui --backend-store-uri {mlflow_tracking_uri()} "
            "-> http://127.0.0.1:5000"
        )
    registry = Registry()
    champion = registry.version(CHAMPION)
    if champion is not None:
        card = homeprice_home() / "reports" / f"v{champion.version}" / "model_card.html"
        uri = registry.model_uri(champion.version)
        print(f"  champion         {registry.model_name} v{champion.version} ({uri})")
        print(f"  model card       {card}")
        # under the production profile the service reads the same env file (its prediction log included)
        stores = (
            "HOMEPRICE_PROFILE=production"
            if os.environ.get("HOMEPRICE_PROFILE") == "production"
            else f"MLFLOW_TRACKING_URI={mlflow_tracking_uri()}"
        )
        print(
            f"  serve it         HOMEPRICE_HOME={homeprice_home()} {stores} \\\n"
            "                   .venv/bin/bentoml serve bento.service:HomePrice --port 3001 "
            "-> http://127.0.0.1:3001/ui/"
        )
    if not trained:
        print("  the model lifecycle did not finish: see the failed check or step above, or the Dagster UI")


def cmd_accept_month(args: argparse.Namespace) -> int:
    """Confirm a month held back by the price-level check: the data is right, the market moved."""
    import dagster as dg

    from homeprice_assets.ingest.status import accept_month

    accepted = accept_month(dg.DagsterInstance.get(), args.month, note=args.note)
    print(
        f"accepted {args.month} ({', '.join(accepted)}): the sensors take it up at their next tick "
        "(`make dev`), or `homeprice run --no-land` trains on it now"
    )
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    dagster = Path(sys.executable).with_name("dagster")  # the venv's, whether or not it is activated
    cmd = [str(dagster), "dev", "-w", str(REPO_ROOT / "workspace.yaml"), "-p", str(args.port)]
    print(" ".join(cmd), f"(DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
    return subprocess.call(cmd, cwd=REPO_ROOT)


def _preflight() -> None:
    """Production: reach every store now (PreflightError names each one that does not answer)."""
    from homeprice_assets.profiles import preflight, resolve_name

    if resolve_name() == "production":
        preflight()


def cmd_check(args: argparse.Namespace) -> int:
    """The profile's stores, each reached once: 0 when all answer, 3 (naming each failure) otherwise."""
    from homeprice_assets.profiles import (
        PIPELINE_STORES,
        env_file_path,
        preflight,
        redact,
        resolve_name,
    )

    profile = resolve_name()
    print(f"profile      {profile}")
    if profile == "production":
        path, _ = env_file_path()
        print(f"  env file   {path if path.is_file() else 'none (the environment only)'}")
    if profile == "local":
        for var in ("DAGSTER_HOME", "MLFLOW_TRACKING_URI", "HOMEPRICE_HOME"):
            print(f"  {var}={redact(os.environ.get(var, ''))}")
    remote = {s.var: os.environ.get(s.var, "") for s in PIPELINE_STORES}
    stores = [
        s
        for s in PIPELINE_STORES
        if "://" in remote[s.var] and not remote[s.var].startswith(("sqlite", "file"))
    ]
    checks = preflight(stores, raise_on_error=False)
    for check in checks:
        print(f"  {check.line()}")
    failed = [c for c in checks if not c.ok]
    if failed:  # each is named above, with its URL and reason: said once
        print(f"homeprice: error: {len(failed)} of {len(checks)} store(s) did not answer", file=sys.stderr)
        return 3
    print(f"all {len(checks)} store(s) answered" if checks else "no remote store configured")
    return 0


def _rollout_registry() -> Registry:
    from homeprice_assets.resources.registry import Registry

    return Registry()


def _print_state(reg: Registry) -> None:
    from homeprice_assets.rollout.state import current_state

    state = current_state(reg)
    print(f"model        {reg.model_name} ({reg.tracking_uri})")
    print(f"champion     {'v' + state.champion if state.champion else 'none'}")
    print(f"previous     {'v' + state.previous if state.previous else 'none'}")
    if state.active:
        share = f", weight {state.weight:g}" if state.mode == "ab" else ""
        print(f"rollout      v{state.candidate} in {state.mode}{share}, since {state.started_at}")
    else:
        print("rollout      none")
    if state.last_action:
        last = state.last_action
        print(f"last action  {last.get('kind')} v{last.get('version')} at {last.get('at')}")
        print(f"             {last.get('reason')}")


def cmd_rollout(args: argparse.Namespace) -> int:
    """start / status / stop / promote a rollout (the running services follow within one poll)."""
    from homeprice_assets.config import load_config
    from homeprice_assets.rollout import state as st

    reg = _rollout_registry()
    if args.action == "start":
        version = args.version or reg.version_number(st.CHALLENGER)
        if version is None:
            raise ValueError("version: no 'challenger' alias to roll out; name one with --version VERSION")
        weight = args.weight if args.weight is not None else load_config().rollout.weight
        action = st.start_rollout(reg, version, args.mode, weight, reason="manual: homeprice rollout start")
        print(f"started: v{action.version} is the candidate in {args.mode} mode")
    elif args.action == "stop":
        action = st.stop_rollout(reg, reason="manual: homeprice rollout stop")
        print(f"stopped: candidate v{action.version} removed; champion unchanged")
    elif args.action == "promote":  # the operator decides before the evaluation does
        action = st.promote_candidate(reg, reason="manual: homeprice rollout promote")
        print(f"promoted: champion v{action.previous_champion} -> v{action.version}")
        _record_champion_move(action, reg.model_name, "homeprice rollout promote")
    _print_state(reg)
    return 0


def _record_champion_move(action: Any, model_name: str, source: str) -> None:
    """Tell Dagster the champion moved (a ``promoted_model`` event), so the Bento is rebuilt around it, and
    send the action's alert (the event says it was sent, so the promotion alert sensor does not repeat it)."""
    import dagster as dg

    from homeprice_assets.monitoring.notify import Notifier
    from homeprice_assets.rollout.sensors import action_alert, champion_moved

    dg.DagsterInstance.get().report_runless_asset_event(champion_moved(action, source))
    Notifier.from_settings().process_config_and_initialize().send(action_alert(action, model_name))


def cmd_rollback(args: argparse.Namespace) -> int:
    """champion -> previous (or --to VERSION); the services follow within one poll."""
    from homeprice_assets.rollout import state as st

    reg = _rollout_registry()
    action = st.rollback(reg, reason="manual: homeprice rollback", to=args.to)
    print(f"rolled back: champion v{action.previous_champion} -> v{action.version}")
    _record_champion_move(action, reg.model_name, "homeprice rollback")
    _print_state(reg)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from homeprice_assets.replay.cli import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="homeprice", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def landing_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--until", help="last sale month to land, e.g. 2014-06 (default: all)")
        p.add_argument("--since", help="first sale month to land (default: the first)")
        p.add_argument("--source", default=None, help="CSV (or .csv.gz) to replay (default: bundled data)")
        p.add_argument(
            "--landing",
            default=None,
            help="landing URL: folder or s3://bucket/prefix "
            "(default: $HOMEPRICE_LANDING_URL or $HOMEPRICE_HOME/landing)",
        )

    p_land = sub.add_parser("land", help="write sales into the landing zone as one file per month")
    landing_args(p_land)
    p_land.set_defaults(func=cmd_land)

    p_ingest = sub.add_parser("ingest", help="run the ingest job for every landed month whose files changed")
    p_ingest.set_defaults(func=cmd_ingest)

    p_run = sub.add_parser("run", help="land the bundled data and materialize the whole graph in-process")
    landing_args(p_run)
    p_run.add_argument("--no-land", action="store_true", help="process what has landed already")
    p_run.set_defaults(func=cmd_run)

    p_dev = sub.add_parser("dev", help="open the Dagster UI (sensors and schedules run there)")
    p_dev.add_argument("--port", type=int, default=3000)
    p_dev.set_defaults(func=cmd_dev)

    p_accept = sub.add_parser(
        "accept-month", help="confirm a month held back by the price-level check (its data is right)"
    )
    p_accept.add_argument("month", help="the sale month, e.g. 2016-08")
    p_accept.add_argument("--note", default="", help="why it is right (kept with the acceptance)")
    p_accept.set_defaults(func=cmd_accept_month)

    p_rollout = sub.add_parser(
        "rollout", help="start, show, stop or promote a live rollout of a candidate model"
    )
    rollout_sub = p_rollout.add_subparsers(dest="action", required=True)
    p_start = rollout_sub.add_parser("start", help="make a version the candidate, in shadow or A/B mode")
    p_start.add_argument("--mode", choices=["shadow", "ab"], required=True)
    p_start.add_argument("--weight", type=float, default=None, help="A/B share (default: rollout.weight)")
    p_start.add_argument("--version", default=None, help="version to roll out (default: the challenger)")
    rollout_sub.add_parser("status", help="champion, previous, candidate, mode, weight, last action")
    rollout_sub.add_parser("stop", help="end the rollout; the champion stays")
    rollout_sub.add_parser("promote", help="make the candidate champion now, before the evaluation decides")
    p_rollout.set_defaults(func=cmd_rollout)

    p_rollback = sub.add_parser("rollback", help="move champion back to previous (or to --to VERSION)")
    p_rollback.add_argument("--to", default=None, help="version to make champion (default: previous)")
    p_rollback.set_defaults(func=cmd_rollback)

    p_replay = sub.add_parser("replay", help="replay retraining policies month by month and compare them")
    from homeprice_assets.replay.cli import add_arguments as replay_arguments

    replay_arguments(p_replay)
    p_replay.set_defaults(func=cmd_replay)

    p_check = sub.add_parser(
        "check", help="validate the profile and reach every store (PostgreSQL, S3, MLflow)"
    )
    p_check.set_defaults(func=cmd_check)
    _add_profile_flags(parser, sub)
    return parser


def _add_profile_flags(parser: argparse.ArgumentParser, sub: argparse._SubParsersAction) -> None:
    """``--profile`` before or after the command (``homeprice --profile production run``, ``homeprice dev
    --profile production``); the subcommands' copies never reset the global one (SUPPRESS)."""
    text = "local (default) or production: every store in its production place ($HOMEPRICE_PROFILE)"
    parser.add_argument("--profile", default=None, help=text)
    for command in sub.choices.values():
        command.add_argument("--profile", default=argparse.SUPPRESS, help=text)


def main(argv: Sequence[str] | None = None) -> int:
    from homeprice_assets.profiles import PreflightError

    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", category=Warning, module=r"(dagster|mlflow|homeprice_assets)\b")
    if getattr(args, "source", None) is None and hasattr(args, "source"):
        from homeprice_assets.config import BUNDLED_DATA

        args.source = BUNDLED_DATA
    if getattr(args, "landing", None):
        os.environ["HOMEPRICE_LANDING_URL"] = args.landing  # before the profile: it validates this too
    try:
        apply_env_defaults(getattr(args, "profile", None))
        if args.func is not cmd_check:
            _preflight()  # every store answers before any command touches one
        return args.func(args)
    except ValueError as exc:  # configuration and input errors: say what is wrong, no traceback
        print(f"homeprice: error: {exc}", file=sys.stderr)
        return 2
    except PreflightError as exc:  # a store is down or unreachable: name it, before anything ran
        print(f"homeprice: error: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
