"""Whole graph vs a plain script doing the same compute, on the bundled data; prints wall times and ratio.

    .venv/bin/python bench/lifecycle_bench.py [--until 2016-12]

The graph run is `homeprice run` (land, ingest every month with its checks in one Dagster run, then the
lifecycle job with MLflow tracking). The plain script calls the same pure functions in one process:
clean, featurize, split, fit LightGBM, log to MLflow, baseline, validation report, SHAP, model card.
Both run in fresh subprocesses on fresh temporary homes, one after the other, in the same invocation.
The ingest alone (`homeprice ingest` of every landed month, on a third fresh home) is timed too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{cmd[:3]} failed:\n{done.stderr[-3000:]}")
    return elapsed, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--until", default="2016-12")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="homeprice-bench-") as tmp:
        base = {**os.environ, "BENTOML_DO_NOT_TRACK": "true", "DO_NOT_TRACK": "1"}
        for key in ("MLFLOW_TRACKING_URI", "DAGSTER_HOME", "HOMEPRICE_DAGSTER_STORAGE", "HOMEPRICE_CONFIG"):
            base.pop(key, None)
        graph_env = {**base, "HOMEPRICE_HOME": f"{tmp}/graph"}
        graph_s, _ = _timed(
            [sys.executable, "-m", "homeprice_assets.cli", "run", "--until", args.until], graph_env
        )
        ingest_env = {**base, "HOMEPRICE_HOME": f"{tmp}/ingest"}
        cli = [sys.executable, "-m", "homeprice_assets.cli"]
        _timed([*cli, "land", "--until", args.until], ingest_env)
        ingest_s, ingest_out = _timed([*cli, "ingest"], ingest_env)
        Path(f"{tmp}/plain").mkdir()
        plain_s, out = _timed([sys.executable, "-c", PLAIN, args.until, f"{tmp}/plain"], base)
    print(f"\nbundled data through {args.until}; {os.cpu_count()} cores")
    print(f"{'run':<44}{'wall s':>10}{'ratio':>8}")
    print(f"{'plain script (same functions, one process)':<44}{plain_s:>10.1f}{1.0:>8.2f}")
    print(f"{'homeprice run (Dagster graph)':<44}{graph_s:>10.1f}{graph_s / plain_s:>8.2f}")
    print(f"{'homeprice ingest alone (all months, own home)':<44}{ingest_s:>10.1f}{ingest_s / plain_s:>8.2f}")
    print(f"homeprice ingest: {ingest_out.strip().splitlines()[-1]}")
    print(f"plain script validation {out.strip()}")


if __name__ == "__main__":
    main()
