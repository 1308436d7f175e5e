"""Drift thresholds calibrated on the bundled history: how often ordinary months are flagged, and x1.5 months.

    .venv/bin/python bench/drift_calibration.py [--since 2013-01] [--until 2016-12] [--shift-every 4]

Every month of [since, until] is measured against the 24 months before it (``reference_months``), exactly as
the ``drift_report`` asset does (Evidently 0.7, same sampling), once as landed and, every ``--shift-every``
months, with sale prices and living areas x1.5. Column scores (normed Wasserstein / Jensen-Shannon distances)
do not depend on the thresholds, so one Evidently run per month scores every threshold setting; the tables
print the share of months flagged per setting (target: <= 10% of ordinary months, every x1.5 month) and the
per-month figures under the packaged defaults.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from homeprice_assets.config import BUNDLED_DATA, load_config
from homeprice_assets.features.engineering import feature_table
from homeprice_assets.ingest.rules import clean_sales
from homeprice_assets.monitoring.drift import compute_drift, decide
from homeprice_assets.monitoring.settings import DriftSettings


def shifted(raw: pd.DataFrame, factor: float = 1.5) -> pd.DataFrame:
    data = load_config().data
    out = raw.copy()
    for canonical in ("sale_price", "living_sf"):
        col = data.source_name(canonical)
        out[col] = (pd.to_numeric(out[col]) * factor).round().astype(int).astype(str)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--since", default="2013-01")
    parser.add_argument("--until", default="2016-12")
    parser.add_argument("--shift-every", type=int, default=4)
    args = parser.parse_args()
    config = load_config()
    defaults = config.monitoring.drift
    sales = pd.read_csv(BUNDLED_DATA, dtype=str, keep_default_na=False)
    months = sales["sale_date"].str[:7]
    raw = {m: sales[months == m] for m in sorted(months.unique())}
    started = time.perf_counter()
    features = {m: feature_table(clean_sales(part, config.data, month=m).clean) for m, part in raw.items()}
    print(f"features of {len(features)} months in {time.perf_counter() - started:.0f} s", file=sys.stderr)

    measured = [m for m in features if args.since <= m <= args.until]
    # Scores only: no threshold of ours applies inside Evidently's per-column distances.
    scoring = DriftSettings(reference_months=defaults.reference_months, stattest_threshold=None)
    rows = []
    for i, month in enumerate(measured):
        earlier = [m for m in features if m < month][-defaults.reference_months :]
        reference = pd.concat([features[m] for m in earlier], ignore_index=True)
        kinds = [("ordinary", features[month])]
        if i % args.shift_every == 0:
            moved = feature_table(clean_sales(shifted(raw[month]), config.data, month=month).clean)
            kinds.append(("x1.5", moved))
        for kind, current in kinds:
            t = time.perf_counter()
            summary = compute_drift(reference, current, scoring, current_label=month)
            scores = summary.feature_scores
            rows.append({"month": month, "kind": kind, "seconds": time.perf_counter() - t, "scores": scores})
        print(f"{month} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)

    def flagged(scores: dict[str, float], settings: DriftSettings) -> bool:
        return decide(scores, settings)[0]

    grid = []
    for col_t in (0.1, 0.15, 0.2, 0.25, 0.3):
        for share in (0.2, 0.3, 0.4):
            for strong in (0.3, 0.4, 0.5, None):
                s = DriftSettings(
                    stattest_threshold=col_t, drift_share_threshold=share, feature_score_threshold=strong
                )
                normal = [flagged(r["scores"], s) for r in rows if r["kind"] == "ordinary"]
                moved = [flagged(r["scores"], s) for r in rows if r["kind"] == "x1.5"]
                grid.append((col_t, share, strong, sum(normal) / len(normal), sum(moved) / len(moved)))

    n_normal = sum(r["kind"] == "ordinary" for r in rows)
    n_moved = len(rows) - n_normal
    print(
        f"\nShare of months flagged ({n_normal} ordinary months {args.since}..{args.until}, {n_moved} x1.5)"
    )
    print(f"{'column threshold':>16} {'share threshold':>15} {'one-feature':>11} {'ordinary':>9} {'x1.5':>6}")
    for col_t, share, strong, normal, moved in grid:
        mark = (
            "  <- default"
            if (col_t, share, strong)
            == (defaults.stattest_threshold, defaults.drift_share_threshold, defaults.feature_score_threshold)
            else ""
        )
        print(f"{col_t:>16} {share:>15} {strong!s:>11} {normal:>9.1%} {moved:>6.0%}{mark}")

    print(
        f"\nPer month under the packaged defaults (column {defaults.stattest_threshold}, "
        f"share {defaults.drift_share_threshold}, one feature {defaults.feature_score_threshold})"
    )
    print(f"{'month':>7} {'kind':>8} {'share':>6} {'max score':>9} {'feature':>20} {'flagged':>7} {'s':>5}")
    for r in rows:
        drift, share, strong = decide(r["scores"], defaults)
        top = max(r["scores"], key=r["scores"].get)
        print(
            f"{r['month']:>7} {r['kind']:>8} {share:>6.2f} {r['scores'][top]:>9.3f} {top:>20} "
            f"{'yes' if drift else '':>7} {r['seconds']:>5.1f}"
        )
    normal = [decide(r["scores"], defaults)[0] for r in rows if r["kind"] == "ordinary"]
    moved = [decide(r["scores"], defaults)[0] for r in rows if r["kind"] == "x1.5"]
    print(
        f"\ndefaults: {sum(normal)}/{len(normal)} ordinary months flagged ({sum(normal) / len(normal):.1%}, "
        f"target <= 10%); {sum(moved)}/{len(moved)} x1.5 months flagged"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
