"""Whole graph vs a plain script doing the same compute, on the bundled data; prints wall times and ratio.

    .venv/bin/python bench/lifecycle_bench.py [--until 2016-12] [--rounds 3] [--no-ingest]
        [--compare-with DIR]

The graph run is `homeprice run` (land, ingest every month with its checks in one Dagster run, then the
lifecycle job with MLflow tracking). The plain script calls the same pure functions in one process:
clean, featurize, split, fit LightGBM, log to MLflow, baseline, validation report, SHAP, model card.
Both run in fresh subprocesses on fresh temporary homes, one after the other, in the same invocation.
The ingest alone (`homeprice ingest` of every landed month, on a third fresh home) is timed too.

On a shared machine one pair of runs says little (a neighbour's job doubles either side): ``--rounds N``
runs the pair N times, alternating which goes first, and prints each round's ratios and their median;
the CPU time (user + system, children included) next to the wall time is what a neighbour's load
inflates least.
``--compare-with DIR`` (another checkout of the repository, e.g. ``git archive <commit> | tar -x -C DIR``)
also runs that checkout's ``homeprice run`` in every round (the three in turn, a different one first each
round), so a change is measured against the code before it in the same invocation, on the same load.
With PYTHONDONTWRITEBYTECODE set (and no .pyc in the venv) every process compiles its imports from
source, a cost both sides pay that a normal install does not: the bench says so.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

PLAIN = r"""
import sys, time
import mlflow, pandas as pd
from homeprice_assets.config import BUNDLED_DATA, load_config
from homeprice_assets.features.engineering import INPUT_FIELDS, feature_table
from homeprice_assets.ingest.rules import clean_sales
from homeprice_assets.training import reports
from homeprice_assets.training.baseline import fit_baseline
from homeprice_assets.training.model import fit_price_model
from homeprice_assets.training.splits import time_split
from homeprice_assets.resources.registry import Registry
from homeprice_assets.training.tracking import input_example, register_price_model

until, out = sys.argv[1], sys.argv[2]
t = time.perf_counter()
sales = pd.read_csv(BUNDLED_DATA, dtype=str)
sales = sales[sales["sale_date"].str[:7] <= until]
clean = pd.concat([clean_sales(part, load_config().data, month=m).clean
                   for m, part in sales.groupby(sales["sale_date"].str[:7])])
split = time_split(feature_table(clean), validation_months=3, window_months=60)
model = fit_price_model(split.train, {})
register_price_model(Registry(tracking_uri=f"sqlite:///{out}/mlflow.db"), model, input_example(split.train))
inputs = split.validation[list(INPUT_FIELDS)].reset_index(drop=True)
preds = {"challenger": model.predict(None, inputs), "baseline": fit_baseline(split.train).predict(inputs)}
rep = reports.validation_report(f"{out}/validation", split.validation.reset_index(drop=True), preds)
y = split.validation["sale_price"].to_numpy()
exp = reports.explanation_report(model, inputs, f"{out}/explanations", y=y)
reports.model_card({"metrics": rep.summary["metrics"], "version": "1"}, f"{out}/model_card.html")
print(f"mdape={rep.summary['metrics']['challenger']['mdape']:.4f}")
"""


class Timing(NamedTuple):
    wall: float
    cpu: float  # user + system of the process and its children: what the neighbours' load inflates least


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[Timing, str]:
    started, cpu = time.perf_counter(), _cpu()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=cwd)
    elapsed = Timing(time.perf_counter() - started, _cpu() - cpu)
    if done.returncode != 0:
        sys.exit(f"{cmd[:3]} failed:\n{done.stderr[-3000:]}")
    return elapsed, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--until", default="2016-12")
    parser.add_argument("--rounds", type=int, default=1, help="pairs of runs (alternating order)")
    parser.add_argument("--no-ingest", action="store_true", help="skip timing homeprice ingest alone")
    parser.add_argument(
        "--compare-with", type=Path, default=None, help="another checkout whose homeprice run to time too"
    )
    args = parser.parse_args()
    if args.compare_with is not None and not (args.compare_with / "homeprice_assets" / "cli.py").is_file():
        sys.exit(f"--compare-with: no homeprice_assets/cli.py under {args.compare_with}")
    base = {**os.environ, "BENTOML_DO_NOT_TRACK": "true", "DO_NOT_TRACK": "1"}
    for key in ("MLFLOW_TRACKING_URI", "DAGSTER_HOME", "HOMEPRICE_DAGSTER_STORAGE", "HOMEPRICE_CONFIG"):
        base.pop(key, None)
    cli = [sys.executable, "-m", "homeprice_assets.cli"]
    pairs: list[tuple[Timing, Timing]] = []
    others: list[Timing] = []  # --compare-with: the other checkout's graph run, round by round
    ingest = ingest_out = out = None
    for round_ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="homeprice-bench-") as tmp:
            Path(f"{tmp}/plain").mkdir()

            def graph() -> Timing:
                env = {**base, "HOMEPRICE_HOME": f"{tmp}/graph"}
                return _timed([*cli, "run", "--until", args.until], env)[0]

            def plain() -> Timing:
                nonlocal out
                timing, out = _timed([sys.executable, "-c", PLAIN, args.until, f"{tmp}/plain"], base)
                return timing

            def other() -> Timing:
                env = {**base, "HOMEPRICE_HOME": f"{tmp}/other", "PYTHONPATH": str(args.compare_with)}
                # run from there: ``-m`` puts the working directory before PYTHONPATH on sys.path
                return _timed([*cli, "run", "--until", args.until], env, cwd=args.compare_with)[0]

            runs = {"graph": graph, "plain": plain, **({"other": other} if args.compare_with else {})}
            names = list(runs)
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            if len(names) == 2 and round_ % 2:
                order = ["plain", "graph"]
            times = {name: runs[name]() for name in order}
            pairs.append((times["graph"], times["plain"]))
            if "other" in times:
                others.append(times["other"])
            if round_ == 0 and not args.no_ingest:
                ingest_env = {**base, "HOMEPRICE_HOME": f"{tmp}/ingest"}
                _timed([*cli, "land", "--until", args.until], ingest_env)
                ingest, ingest_out = _timed([*cli, "ingest"], ingest_env)
    print(
        f"\nbundled data through {args.until}; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}"
    )
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("PYTHONDONTWRITEBYTECODE is set: imports compile from source unless the venv has .pyc files")
    print(f"{'run':<48}{'wall s':>8}{'ratio':>7}{'cpu s':>8}{'ratio':>7}")

    def row(name: str, t: Timing, ref: Timing) -> None:
        print(f"{name:<48}{t.wall:>8.1f}{t.wall / ref.wall:>7.2f}{t.cpu:>8.1f}{t.cpu / ref.cpu:>7.2f}")

    for i, (graph_t, plain_t) in enumerate(pairs, 1):
        tag = f" [{i}]" if len(pairs) > 1 else ""
        row("plain script (same functions, one process)" + tag, plain_t, plain_t)
        row("homeprice run (Dagster graph)" + tag, graph_t, plain_t)
        if others:
            row(f"homeprice run of --compare-with{tag}", others[i - 1], plain_t)
    if len(pairs) > 1:
        wall = statistics.median(g.wall / p.wall for g, p in pairs)
        cpu = statistics.median(g.cpu / p.cpu for g, p in pairs)
        print(f"{f'median ratios of {len(pairs)} rounds':<56}{wall:>7.2f}{'':>8}{cpu:>7.2f}")
        if others:
            wall = statistics.median(o.wall / p.wall for o, (_, p) in zip(others, pairs, strict=True))
            cpu = statistics.median(o.cpu / p.cpu for o, (_, p) in zip(others, pairs, strict=True))
            print(f"{'  --compare-with: median ratios':<56}{wall:>7.2f}{'':>8}{cpu:>7.2f}")
    if ingest is not None:
        row("homeprice ingest alone (all months, own home)", ingest, pairs[0][1])
        print(f"homeprice ingest: {ingest_out.strip().splitlines()[-1]}")
    print(f"plain script validation {out.strip()}")


if __name__ == "__main__":
    main()
