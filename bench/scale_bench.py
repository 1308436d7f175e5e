"""The whole graph on synthetic histories of 100k, 1M and 5M sales: wall time per stage, peak memory, ratios.

    .venv/bin/python bench/scale_bench.py [--sizes 100k 1M 5M] [--incremental 100k 1M] [--keep DIR]

Synthetic histories come from the bundled sales (2010-01 .. 2016-12): each month's homes are resampled with
jitter (price, living area, coordinates) across the same months, and more locations are made by tiling (a
tile is a copy of every location under a new name, at its own price level). Each history lands as monthly
CSV files (``sales_YYYY-MM.csv``, the layout ``homeprice land`` writes) into the landing zone of a fresh
project home; the graph then runs in a fresh subprocess per size, through the same in-process paths
``homeprice run`` uses: ``run_ingest`` (every landed month), the ``drift_report`` of the newest month, and
``run_lifecycle`` (split, fit, validation, promotion, SHAP, model card, Bento).

Incremental cost (sizes named by ``--incremental``): after the full run of 2010-01 .. 2016-11, the month
2016-12 lands and the automated path runs on top of that history: ingest (of the landed zone: only the new
month runs), drift of the new month, the lifecycle job (retrain, validation, promotion, ...). The retrain is
what the lifecycle decides for itself: with the default settings a monthly update of the champion the full
run promoted (``homeprice_assets/training/update.py``; a full refit every ``training.update.max_consecutive``
updates, on drift and on live error), printed with its reason. Two ratios: to the promotion decision (the
path the issue names: ingest, drift, retrain, validation, promotion; the end of ``promoted_model``, when
services following the registry serve the new champion, or of ``validation_report`` when the gates held it
back), against the full run to its own promotion; and the whole lifecycle (explanation, model card and
Bento after the promotion too) against the whole full run.

Peak memory is the largest resident set of the worker process tree (psutil, sampled every 0.2 s, children
included) and the worker's own ``ru_maxrss``. Stage times are the Dagster step durations from the runs' event
logs (summed over the ingest runs). Ratios are measured in the same invocation; nothing here is a test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from homeprice_assets.config import BUNDLED_DATA  # noqa: E402

NEW_MONTH = "2016-12"  # the month the incremental path lands on top of the full history
SEED = 20260101
# A tile is a copy of every location under a new name; sizes above ~10x the bundled data get more tiles,
# so a location holds at most about ten times the bundled sales.
SALES_PER_TILE = 10 * 43_313
GIB = 1024**3


def parse_size(text: str) -> int:
    text = text.strip().lower()
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("km")) * factor)


def label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


# --------------------------------------------------------------------------------------------------------
# synthetic history
def synth_month(base: pd.DataFrame, scale: float, tiles: int, rng: np.random.Generator) -> pd.DataFrame:
    """One month's bundled rows -> about ``scale`` times as many, jittered, spread over ``tiles`` tiles.

    Copy ``j`` of a home keeps a parcel id of its own (``<parcel>-j``), so a parcel's copies form repeat-sale
    chains across months as the originals do; sale ids stay unique.
    """
    n = len(base)
    whole = int(scale)
    counts = np.full(n, whole) + (rng.random(n) < scale - whole)
    idx = np.repeat(np.arange(n), counts)
    copy = np.concatenate([np.arange(c) for c in counts]) if len(idx) else np.array([], dtype=int)
    out = base.iloc[idx].reset_index(drop=True)
    m = len(out)
    tile = copy % tiles
    level = (1.0 + 0.04 * tile) / (1.0 + 0.02 * (tiles - 1))  # each tile its own price level
    price = out["sale_price"].astype(float) * level * rng.lognormal(0.0, 0.05, m)
    out["sale_price"] = np.round(price, -2).astype(np.int64)
    out["tot_sf"] = np.maximum(
        200, np.round(out["tot_sf"].astype(float) * rng.lognormal(0.0, 0.03, m))
    ).astype(np.int64)
    for col in ("latitude", "longitude"):
        out[col] = np.round(out[col].astype(float) + rng.normal(0.0, 0.002, m), 6)
    suffix = pd.Series(copy, dtype=str).radd("-")
    out["pinx"] = out["pinx"] + suffix
    out["sale_id"] = out["sale_id"] + suffix
    out["area"] = out["area"].where(tile == 0, out["area"] + "-t" + pd.Series(tile, dtype=str))
    return out


def write_history(size: int, landing: Path, staged: Path) -> dict[str, int]:
    """Land ``size`` synthetic sales as monthly CSVs; the newest month goes to ``staged`` for later."""
    bundled = pd.read_csv(BUNDLED_DATA, dtype=str, keep_default_na=False)
    scale = size / len(bundled)
    tiles = max(1, math.ceil(size / SALES_PER_TILE))
    rng = np.random.default_rng(SEED)
    landing.mkdir(parents=True, exist_ok=True)
    staged.mkdir(parents=True, exist_ok=True)
    rows, months = 0, bundled["sale_date"].str[:7]
    for month, part in bundled.groupby(months, sort=True):
        frame = synth_month(part, scale, tiles, rng)
        folder = staged if month == NEW_MONTH else landing
        frame.to_csv(folder / f"sales_{month}.csv", index=False)
        rows += len(frame)
    return {"rows": rows, "tiles": tiles, "locations": bundled["area"].nunique() * tiles}


# --------------------------------------------------------------------------------------------------------
# worker: one project home, in its own process
def _step_times(instance, run_ids: list[str]) -> dict[str, float]:
    """Wall seconds per step key (start -> success/failure), summed over ``run_ids``."""
    import dagster as dg

    kinds = {
        dg.DagsterEventType.STEP_START,
        dg.DagsterEventType.STEP_SUCCESS,
        dg.DagsterEventType.STEP_FAILURE,
    }
    out: dict[str, float] = {}
    for run_id in run_ids:
        started: dict[str, float] = {}
        for rec in instance.all_logs(run_id, of_type=kinds):
            key = rec.step_key or "?"
            if rec.dagster_event.event_type == dg.DagsterEventType.STEP_START:
                started[key] = rec.timestamp
            elif key in started:
                out[key] = out.get(key, 0.0) + rec.timestamp - started.pop(key)
    return out


def _decided_at(instance, run_ids: list[str]) -> tuple[str, float] | None:
    """When the lifecycle's promotion decision was made: the end of ``promoted_model`` (the new model is
    live: services follow the registry's aliases), or of ``validation_report`` when the gates held it back."""
    import dagster as dg

    ends: dict[str, float] = {}
    for run_id in run_ids:
        for rec in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS):
            key = rec.step_key or "?"
            ends[key] = max(ends.get(key, 0.0), rec.timestamp)  # the newest run's, whatever the order
    for step in ("promoted_model", "validation_report"):
        if step in ends:
            return step, ends[step]
    return None


def _runs_since(instance, job: str, since: float) -> list[str]:
    import dagster as dg

    after = datetime.fromtimestamp(since - 1, tz=UTC)
    return [r.run_id for r in instance.get_runs(filters=dg.RunsFilter(job_name=job, created_after=after))]


def _drift(instance, month: str | None) -> tuple[bool, str, dict]:
    import dagster as dg

    from homeprice_assets.definitions import defs
    from homeprice_assets.monitoring.sensors.common import MONTH_TAG

    job = dg.define_asset_job("scale_bench_drift", selection=["drift_report"])
    merged = dg.Definitions.merge(defs, dg.Definitions(jobs=[job]))
    result = merged.resolve_job_def("scale_bench_drift").execute_in_process(
        instance=instance, raise_on_error=False, tags={MONTH_TAG: month} if month else None
    )
    meta: dict = {}
    for event in result.get_asset_materialization_events():
        meta = {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}
    keep = ("month", "reference_rows", "reference_rows_used", "current_rows", "dataset_drift")
    return result.success, result.run_id, {k: meta.get(k) for k in keep}


def _phase(instance, month: str | None) -> dict:
    """Ingest every landed month whose files changed, drift of the newest (or ``month``), the lifecycle."""
    from homeprice_assets.cli import run_ingest, run_lifecycle

    out: dict = {}
    t = start = time.time()
    report = run_ingest()
    out["ingest_s"] = time.time() - t
    out["ingest_failed"] = report.failed
    out["ingest_ran"] = sum(o.state == "ran" for o in report.months.values())
    ingest_runs = _runs_since(instance, "ingest_job", t)
    out["ingest_steps"] = _step_times(instance, ingest_runs)
    out["ingest_runs"] = len(ingest_runs)

    t = time.time()
    ok, drift_run, meta = _drift(instance, month)
    out["drift_s"] = time.time() - t
    out["drift_ok"], out["drift"] = ok, meta
    out["drift_steps"] = _step_times(instance, [drift_run])

    t = time.time()
    out["lifecycle_ok"] = run_lifecycle()
    out["lifecycle_s"] = time.time() - t
    lifecycle_runs = _runs_since(instance, "model_lifecycle_job", t)
    out["lifecycle_steps"] = _step_times(instance, lifecycle_runs)
    decided = _decided_at(instance, lifecycle_runs)
    out["decided_by"], out["decided_s"] = (decided[0], decided[1] - start) if decided else (None, None)
    out["fit"] = _fit_facts(instance)
    return out


def _fit_facts(instance) -> dict:
    """How the newest ``price_model`` was made: a full fit or a monthly update (training/update.py)."""
    import dagster as dg

    event = instance.get_latest_materialization_event(dg.AssetKey("price_model"))
    meta = event.asset_materialization.metadata if event and event.asset_materialization else {}
    return {k: getattr(meta.get(k), "value", None) for k in ("fit_mode", "fit_reason", "fit_seconds")}


def worker(home: Path, incremental: bool) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    from homeprice_assets.config import apply_env_defaults

    apply_env_defaults()
    import dagster as dg

    instance = dg.DagsterInstance.get()
    result: dict = {"full": _phase(instance, None)}
    if incremental:
        staged = home / "staged" / f"sales_{NEW_MONTH}.csv"
        t = time.time()
        shutil.copy(staged, home / "landing" / staged.name)
        result["incremental"] = {"land_s": time.time() - t, **_phase(instance, NEW_MONTH)}
    (home / "result.json").write_text(json.dumps(result, indent=2, default=str))


# --------------------------------------------------------------------------------------------------------
# parent: generate, run each size in a fresh process tree, watch its memory, print the table
def _watch(proc: subprocess.Popen, peak: list[int], stop: threading.Event) -> None:
    import psutil

    try:
        root = psutil.Process(proc.pid)
    except psutil.NoSuchProcess:
        return
    while not stop.is_set():
        try:
            rss = root.memory_info().rss
            for child in root.children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    rss += child.memory_info().rss
        except psutil.NoSuchProcess:
            return
        peak[0] = max(peak[0], rss)
        stop.wait(0.2)


def run_size(size: int, root: Path, incremental: bool) -> dict:
    home = root / label(size)
    if home.exists():
        shutil.rmtree(home)
    t = time.time()
    facts = write_history(size, home / "landing", home / "staged")
    facts["generate_s"] = time.time() - t
    print(
        f"[{label(size)}] {facts['rows']:,} synthetic sales, {facts['locations']} locations "
        f"({facts['generate_s']:.0f} s); running the graph ...",
        file=sys.stderr,
        flush=True,
    )
    env = {**os.environ, "HOMEPRICE_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", "DO_NOT_TRACK": "1"}
    for key in (
        "MLFLOW_TRACKING_URI",
        "DAGSTER_HOME",
        "HOMEPRICE_DAGSTER_STORAGE",
        "HOMEPRICE_CONFIG",
        "BENTOML_HOME",
        "HOMEPRICE_LANDING_URL",
        "HOMEPRICE_STORAGE_URL",
    ):
        env.pop(key, None)
    cmd = [sys.executable, __file__, "--worker", str(home)] + (["--with-incremental"] if incremental else [])
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    peak, stop = [0], threading.Event()
    t = time.time()
    with open(home / "worker.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        watcher = threading.Thread(target=_watch, args=(proc, peak, stop), daemon=True)
        watcher.start()
        try:
            code = proc.wait()
        except BaseException:  # the bench was stopped: so is its worker
            proc.kill()
            raise
        stop.set()
        watcher.join()
    facts["worker_s"] = time.time() - t
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    facts["ru_maxrss_gib"] = maxrss * 1024 / GIB if maxrss > before else float("nan")
    facts["peak_tree_rss_gib"] = peak[0] / GIB
    if code != 0:
        tail = (home / "worker.log").read_text()[-4000:]
        sys.exit(f"[{label(size)}] worker failed ({code}):\n{tail}")
    facts.update(json.loads((home / "result.json").read_text()))
    return facts


def total(phase: dict) -> float:
    return phase["ingest_s"] + phase["drift_s"] + phase["lifecycle_s"]


def print_tables(results: dict[int, dict]) -> None:
    print(f"\nscale benchmark; {os.cpu_count()} cores; times in wall seconds")
    head = (
        f"{'size':>6}{'sales':>11}{'ingest':>9}{'drift':>8}{'lifecycle':>11}{'full run':>10}{'peak GiB':>10}"
    )
    print(head)
    for size, r in results.items():
        f = r["full"]
        print(
            f"{label(size):>6}{r['rows']:>11,}{f['ingest_s']:>9.1f}{f['drift_s']:>8.1f}{f['lifecycle_s']:>11.1f}"
            f"{total(f):>10.1f}{r['peak_tree_rss_gib']:>10.2f}"
        )
    print("\nwhere the time goes (full run; Dagster step seconds, ingest summed over its runs)")
    for size, r in results.items():
        f = r["full"]
        steps = {
            **{f"ingest:{k}": v for k, v in f["ingest_steps"].items()},
            **{f"drift:{k}": v for k, v in f["drift_steps"].items()},
            **f["lifecycle_steps"],
        }
        parts = ", ".join(f"{k} {v:.1f}" for k, v in sorted(steps.items(), key=lambda kv: -kv[1]))
        print(f"  {label(size):>4} ({f['ingest_runs']} ingest runs): {parts}")
        if f["drift"]:
            d = f["drift"]
            print(
                f"       drift sample: reference {d['reference_rows_used']} of {d['reference_rows']} rows, "
                f"current {d['current_rows']}"
            )
    print("\ntargets")
    print(f"{'measure':<52}{'value':>10}{'target':>12}")
    for size, r in results.items():
        inc = r.get("incremental")
        if not inc:
            continue
        f = r["full"]
        print(
            f"{f'[{label(size)}] one new month, ingest only / full ingest':<52}"
            f"{inc['ingest_s'] / f['ingest_s']:>10.3f}{'<= 0.05':>12}"
        )
        if inc.get("decided_s") and f.get("decided_s"):
            print(
                f"{f'[{label(size)}] one new month to promotion / full run':<52}"
                f"{inc['decided_s'] / f['decided_s']:>10.3f}{'<= 0.3':>12}"
            )
            print(
                f"      to the promotion decision ({inc['decided_by']}): incremental "
                f"{inc['decided_s']:.1f} s, full run {f['decided_s']:.1f} s ({f['decided_by']})"
            )
        print(
            f"{f'[{label(size)}] the same, whole lifecycle (+ SHAP, card, Bento)':<52}"
            f"{total(inc) / total(f):>10.3f}{'<= 0.3':>12}"
        )
        print(
            f"      incremental: ingest {inc['ingest_s']:.1f} s ({inc['ingest_ran']} month run), drift "
            f"{inc['drift_s']:.1f} s, lifecycle {inc['lifecycle_s']:.1f} s; full run {total(f):.1f} s"
        )
        fit, steps = inc.get("fit") or {}, inc["lifecycle_steps"]
        print(
            f"      incremental retrain: {fit.get('fit_mode')} ({fit.get('fit_reason')}); lifecycle steps: "
            + ", ".join(f"{k} {v:.1f}" for k, v in sorted(steps.items(), key=lambda kv: -kv[1]))
        )
    for size, r in results.items():
        if size >= 5_000_000:
            print(
                f"{f'[{label(size)}] run, peak memory GiB':<52}{r['peak_tree_rss_gib']:>10.2f}{'<= 16':>12}"
            )
    if 1_000_000 in results and 5_000_000 in results:
        ratio = total(results[5_000_000]["full"]) / total(results[1_000_000]["full"])
        print(f"{'5M / 1M wall time (full run)':<52}{ratio:>10.2f}{'<= 5.5':>12}")
    if 100_000 in results and 1_000_000 in results:
        ratio = total(results[1_000_000]["full"]) / total(results[100_000]["full"])
        print(f"{'1M / 100k wall time (full run)':<52}{ratio:>10.2f}{'(info)':>12}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=["100k", "1M", "5M"])
    parser.add_argument(
        "--incremental", nargs="*", default=["100k", "1M"], help="sizes to time one new month on"
    )
    parser.add_argument("--keep", default=None, help="keep the project homes under this folder")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--with-incremental", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # SIGTERM (a bench stopped from outside) unwinds like Ctrl-C, so the worker is stopped with it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if args.worker:
        worker(Path(args.worker), args.with_incremental)
        return
    incremental = {parse_size(s) for s in args.incremental}
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="homeprice-scale-"))
    results: dict[int, dict] = {}
    try:
        for size in sorted(parse_size(s) for s in args.sizes):
            results[size] = run_size(size, root, size in incremental)
            print_tables(results)
            if args.json:
                Path(args.json).write_text(json.dumps({label(k): v for k, v in results.items()}, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
