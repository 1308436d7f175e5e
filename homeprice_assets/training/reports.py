"""Validation report, SHAP explanations and the model card: pure functions from data to files.

Every HTML page embeds its pictures as base64 PNGs, so a page opened from disk (or downloaded from MLflow's
artifact view) shows everything without its sibling files.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape

from homeprice_assets.training import metrics as M

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TEMPLATES = Path(__file__).resolve().parent / "templates"
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
.note{background:#fff6d5;padding:.5em 1em;border-left:4px solid #e0b000}
.better{color:#106b10}.worse{color:#a01010}
"""


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, imported when a picture is drawn: importing it costs every
    process that loads the definitions (each CLI call, run worker, code server) about half a second."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_base64(path: str | Path) -> str:
    """A PNG file as a ``data:`` URI for an ``<img src>``."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def _save(fig: Figure, path: Path) -> Path:
    plt = pyplot()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _table(frame: pd.DataFrame, floatfmt: str = "{:.4f}") -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return "" if not np.isfinite(v) else floatfmt.format(v)
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in r) + "</tr>" for r in frame.itertuples(False)
    )
    return f"<table><tr>{head}</tr>{rows}</table>"


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


# ---------------------------------------------------------------------------------------------------------
@dataclass
class ValidationReport:
    html_path: Path
    json_path: Path
    plot_path: Path
    summary: dict[str, Any] = field(default_factory=dict)


def validation_report(
    out_dir: str | Path,
    validation: pd.DataFrame,
    predictions: dict[str, pd.DataFrame],
    facts: dict[str, Any] | None = None,
    challenger: str = "challenger",
    champion: str = "champion",
    churn_threshold: float = 0.10,
    title: str = "homeprice validation report",
) -> ValidationReport:
    """Score every model in ``predictions`` on the same ``validation`` rows and write HTML + JSON + PNG.

    ``validation`` needs ``sale_price``, ``location`` and ``sale_month`` (or ``sale_date``); each prediction
    frame is row-aligned with it and has ``price`` (and optionally ``price_lower``/``price_upper``). Churn is
    computed between ``champion`` and ``challenger`` when both are present.
    """
    plt = pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    y = validation["sale_price"].to_numpy(dtype=float)
    months = (
        validation["sale_month"].astype(str)
        if "sale_month" in validation
        else pd.to_datetime(validation["sale_date"]).dt.strftime("%Y-%m")
    ).to_numpy()
    locations = validation["location"].astype(str).to_numpy()
    preds = {name: p.reset_index(drop=True) for name, p in predictions.items() if p is not None}
    for name, p in preds.items():
        if len(p) != len(y):
            raise ValueError(f"predictions {name!r} have {len(p)} rows, validation has {len(y)}")

    model_metrics = {name: M.evaluate(y, p) for name, p in preds.items()}
    ratio_studies = {name: ratio_study_summary(y, p["price"], locations) for name, p in preds.items()}
    for name, study in ratio_studies.items():
        # The level and equity figures sit with the accuracy ones: logged, gated on and diffed alike.
        model_metrics[name].update({k: study["overall"][k] for k in RATIO_METRICS})
    by_month = {name: M.error_by(y, p["price"], months, "month") for name, p in preds.items()}
    by_location = {name: M.error_by(y, p["price"], locations, "location") for name, p in preds.items()}
    churn = None
    if challenger in preds and champion in preds:
        churn = M.churn(preds[champion]["price"], preds[challenger]["price"], churn_threshold)

    # predicted vs actual, one panel per model
    fig, axes = plt.subplots(1, len(preds), figsize=(4.2 * len(preds), 4.2), squeeze=False)
    lo, hi = np.percentile(y, [0.5, 99.5])
    for ax, (name, p) in zip(axes[0], preds.items(), strict=True):
        ax.scatter(y, p["price"], s=3, alpha=0.25)
        ax.plot([lo, hi], [lo, hi], color="k", lw=1)
        ax.set(
            xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel="sale price", ylabel="predicted"
        )
        ax.set_title(f"{name}: MdAPE {model_metrics[name]['mdape']:.1%}")
    plot_path = _save(fig, out / "predicted_vs_actual.png")

    # MdAPE by month, all models on one axis
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for name, frame in by_month.items():
        ax.plot(frame["month"], frame["mdape"], marker="o", label=name)
    ax.set(ylabel="MdAPE", title="error by month")
    ax.tick_params(axis="x", rotation=60)
    ax.legend()
    month_plot = _save(fig, out / "error_by_month.png")

    ratio_plot = ratio_study_plot(ratio_studies, out / "ratio_study.png")

    summary = {
        "title": title,
        "rows": len(y),
        "months": [str(min(months)), str(max(months))] if len(months) else [],
        "metrics": model_metrics,
        "churn": churn,
        "churn_threshold": churn_threshold,
        "error_by_month": {k: v.to_dict(orient="records") for k, v in by_month.items()},
        "error_by_location": {k: v.to_dict(orient="records") for k, v in by_location.items()},
        "ratio_study": ratio_studies,
        "iaao_bands": {k: list(v) for k, v in M.IAAO_BANDS.items()},
        "facts": facts or {},
    }
    json_path = out / "validation_summary.json"
    json_path.write_text(json.dumps(_json_safe(summary), indent=2, default=str))

    metric_rows = pd.DataFrame(model_metrics).T.reset_index(names="model")
    body = [f"<p>{len(y)} validation sales, {summary['months'][0]} to {summary['months'][-1]}.</p>"]
    if facts:
        body.append(
            "<h2>Data and run</h2>"
            + _table(pd.DataFrame({"fact": list(facts), "value": list(facts.values())}))
        )
    body.append("<h2>Metrics</h2>" + _table(metric_rows))
    intervals = metric_rows[
        ["model", *[c for c in ("interval_coverage", "interval_median_width") if c in metric_rows]]
    ]
    if intervals.shape[1] > 1:
        body.append(
            "<h2>Prediction intervals</h2><p>Empirical coverage of the split-conformal interval on the "
            "validation window and its median width relative to the price.</p>" + _table(intervals.dropna())
        )
    if churn is not None:
        body.append(
            f"<h2>Valuation churn</h2><p>{churn:.1%} of validation homes change valuation by more than "
            f"{churn_threshold:.0%} between {champion} and {challenger}.</p>"
        )
    body.append(ratio_study_html(ratio_studies, ratio_plot))
    body.append(f"<h2>Predicted vs actual</h2><img src='{png_base64(plot_path)}' alt='predicted vs actual'>")
    body.append(f"<h2>Error by month</h2><img src='{png_base64(month_plot)}' alt='error by month'>")
    for name, frame in by_month.items():
        body.append(f"<h3>{html.escape(name)}</h3>" + _table(frame))
    body.append("<h2>Error by location</h2>")
    for name, frame in by_location.items():
        body.append(f"<h3>{html.escape(name)}</h3>" + _table(frame))
    html_path = out / "validation_report.html"
    html_path.write_text(_page(title, "\n".join(body)))
    return ValidationReport(html_path=html_path, json_path=json_path, plot_path=plot_path, summary=summary)


# ---------------------------------------------------------------------------------------------------------
RATIO_METRICS = ("median_ratio", "cod", "prd", "prb")
_BAND_TEXT = {
    "median_ratio": "0.95-1.05",
    "cod": "at most 15",
    "prd": "0.98-1.03",
    "prb": "within +-0.05",
}


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return _json_safe(frame.to_dict(orient="records"))


def ratio_study_summary(y: np.ndarray, price: Any, locations: np.ndarray) -> dict[str, Any]:
    """IAAO ratio study of one model: overall (with the PRB interval and the band verdicts), by value
    decile and by location."""
    price = np.asarray(price, dtype=float)
    overall = M.ratio_study(y, price)
    deciles = M.value_deciles(y, price)
    return {
        "overall": overall,
        "within_bands": M.within_iaao(overall),
        "by_decile": _records(M.ratio_study_by(y, price, deciles, "decile")),
        "by_location": _records(M.ratio_study_by(y, price, locations, "location")),
    }


def ratio_study_plot(studies: dict[str, dict[str, Any]], path: Path) -> Path:
    """Median ratio and COD by value decile, PRD and PRB per model, each with its IAAO band shaded."""
    plt = pyplot()
    bands = M.IAAO_BANDS
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5))
    (ax_ratio, ax_cod), (ax_prd, ax_prb) = axes
    for ax, key in ((ax_ratio, "median_ratio"), (ax_cod, "cod")):
        lo, hi = bands[key]
        ax.axhspan(lo, hi, color="#2a9d2a", alpha=0.12, label=f"IAAO {_BAND_TEXT[key]}")
        for name, study in studies.items():
            frame = pd.DataFrame(study["by_decile"])
            if len(frame):
                ax.plot(frame["decile"], frame[key], marker="o", label=name)
        ax.set(xlabel="value decile (IAAO proxy; 1 = cheapest)", xticks=range(1, 11))
    ax_ratio.set(ylabel="median sale ratio", title="level by value decile")
    ax_cod.set(ylabel="COD", title="uniformity by value decile", ylim=(0, None))
    names = list(studies)
    for ax, key in ((ax_prd, "prd"), (ax_prb, "prb")):
        lo, hi = bands[key]
        ax.axhspan(lo, hi, color="#2a9d2a", alpha=0.12, label=f"IAAO {_BAND_TEXT[key]}")
        values = [studies[n]["overall"][key] for n in names]
        if key == "prb":
            low = [studies[n]["overall"]["prb_low"] for n in names]
            high = [studies[n]["overall"]["prb_high"] for n in names]
            err = np.array([np.subtract(values, low), np.subtract(high, values)])
            ax.errorbar(range(len(names)), values, yerr=np.nan_to_num(err), fmt="o", capsize=4)
        else:
            ax.plot(range(len(names)), values, "o")
        ax.set_xticks(range(len(names)), names)
        ax.set_xlim(-0.5, len(names) - 0.5)
    ax_prd.set(ylabel="PRD", title="vertical equity: price-related differential")
    ax_prb.set(ylabel="PRB (95% interval)", title="vertical equity: price-related bias")
    for ax in axes.ravel():
        ax.legend(fontsize=7)
    return _save(fig, path)


def ratio_study_html(studies: dict[str, dict[str, Any]], plot: Path) -> str:
    """The report's ratio-study section: one row per model, verdict per band, deciles, the figure."""
    rows = []
    for name, study in studies.items():
        o, ok = study["overall"], study["within_bands"]
        row: dict[str, Any] = {"model": name}
        for key in RATIO_METRICS:
            verdict = "" if key not in ok else (" (in band)" if ok[key] else " (OUT of band)")
            fmt = "{:+.3f}" if key == "prb" else ("{:.2f}" if key == "cod" else "{:.3f}")
            row[key] = fmt.format(o[key]) + verdict if np.isfinite(o[key]) else "n/a"
        row["prb 95%"] = f"{o['prb_low']:+.3f}..{o['prb_high']:+.3f}" if np.isfinite(o["prb"]) else "n/a"
        rows.append(row)
    parts = [
        "<h2>Ratio study (IAAO)</h2><p>Sale ratio = valuation / sale price. IAAO bands for homes: median "
        "ratio 0.95-1.05 (level), COD at most 15 (uniformity), PRD 0.98-1.03 and PRB within +-0.05 "
        "(vertical equity: above 1 / below 0, cheap homes are valued high relative to dear ones). Deciles "
        "are cut on IAAO's value proxy (half valuation, half sale price): either alone would show a "
        "spurious trend.</p>",
        _table(pd.DataFrame(rows)),
        f"<img src='{png_base64(plot)}' alt='ratio study with IAAO bands'>",
    ]
    for name, study in studies.items():
        cols = ["decile", "n", *RATIO_METRICS]
        parts.append(f"<h3>{html.escape(name)}: by value decile</h3>")
        parts.append(_table(pd.DataFrame(study["by_decile"], columns=cols), "{:.3f}"))
    first = "challenger" if "challenger" in studies else next(iter(studies), None)
    if first is not None:
        cols = ["location", "n", *RATIO_METRICS]
        parts.append(f"<h3>{html.escape(first)}: by location</h3>")
        parts.append(_table(pd.DataFrame(studies[first]["by_location"], columns=cols), "{:.3f}"))
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------------------
@dataclass
class ExplanationReport:
    csv_path: Path
    plot_path: Path
    html_path: Path
    method: str
    importances: pd.DataFrame
    fallback_reason: str | None = None


def _permutation_importance(
    model: Any, sample: pd.DataFrame, y: np.ndarray | None, seed: int = 0
) -> pd.DataFrame:
    """Per permuted input: mean |change| of log price (or rise in mean |log error|, given ``y``)."""
    rng = np.random.default_rng(seed)
    base = model.predict_log(sample)
    fields = [c for c in model.input_fields if c in sample.columns]
    rows = []
    for col in fields:
        shuffled = sample.copy()
        shuffled[col] = sample[col].to_numpy()[rng.permutation(len(sample))]
        pred = model.predict_log(shuffled)
        if y is not None:
            score = float(np.mean(np.abs(pred - np.log(y))) - np.mean(np.abs(base - np.log(y))))
        else:
            score = float(np.mean(np.abs(pred - base)))
        rows.append((col, score))
    return pd.DataFrame(rows, columns=["feature", "importance"]).sort_values("importance", ascending=False)


def explanation_report(
    model: Any,
    sample: pd.DataFrame,
    out_dir: str | Path,
    y: np.ndarray | None = None,
    max_rows: int = 2000,
    seed: int = 0,
    force_fallback: bool = False,
) -> ExplanationReport:
    """Global SHAP importances (CSV), a summary plot (PNG) and an HTML page for ``model`` on ``sample``.

    ``sample`` is raw input rows. SHAP values are in log-price units (``HomePriceModel.explain``); the market
    index, which is not a tree feature, is reported alongside as ``market_index`` (its spread across the
    sample). When SHAP fails (or ``force_fallback``), permutation importance is used and the page says so.
    """
    plt = pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if len(sample) > max_rows:
        keep = np.random.default_rng(seed).choice(len(sample), max_rows, replace=False)
        sample = sample.iloc[np.sort(keep)]
        y = None if y is None else np.asarray(y)[np.sort(keep)]
    reason = None
    method = "TreeSHAP"
    try:
        if force_fallback:
            raise RuntimeError("SHAP disabled by request (force_fallback=True)")
        contrib = model.explain(sample)
        method = contrib.attrs.get("method", method)
        values = contrib[model.feature_names]
        market = contrib["market_index"] - contrib["market_index"].mean()
        imp = pd.DataFrame({"feature": list(values.columns), "importance": values.abs().mean().to_numpy()})
        imp = pd.concat(
            [imp, pd.DataFrame({"feature": ["market_index"], "importance": [market.abs().mean()]})]
        )
        imp = imp.sort_values("importance", ascending=False)
        import shap

        feats = model.features(sample)[model.feature_names].copy()
        feats["location"] = feats["location"].cat.codes.astype(float)
        plt.figure()
        shap.summary_plot(values.to_numpy(), feats, show=False, max_display=15)
        fig = plt.gcf()
        fig.set_size_inches(8, 6)
        plot_path = _save(fig, out / "shap_summary.png")
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        method = "permutation importance (fallback)"
        imp = _permutation_importance(model, sample, y, seed)
        fig, ax = plt.subplots(figsize=(7, 5))
        top = imp.head(15).iloc[::-1]
        ax.barh(top["feature"], top["importance"])
        ax.set(xlabel="importance (mean |change| of log price)", title="permutation importance")
        plot_path = _save(fig, out / "shap_summary.png")
    imp = imp.reset_index(drop=True)
    csv_path = out / "feature_importance.csv"
    imp.to_csv(csv_path, index=False)
    body = [f"<p>Method: <b>{html.escape(method)}</b> on {len(sample)} sales. Units: log price.</p>"]
    if reason:
        body.append(
            "<p class='note'>SHAP failed, so these are permutation importances instead: "
            f"{html.escape(reason)}</p>"
        )
    body.append("<h2>Global importance</h2>" + _table(imp))
    body.append(f"<h2>Summary plot</h2><img src='{png_base64(plot_path)}' alt='summary plot'>")
    html_path = out / "explanations.html"
    html_path.write_text(_page("homeprice model explanations", "\n".join(body)))
    return ExplanationReport(csv_path, plot_path, html_path, method, imp, reason)


# ---------------------------------------------------------------------------------------------------------
LOWER_IS_BETTER = {"rmse", "mae", "mape", "mdape", "interval_median_width", "churn", "cod"}
# Metrics whose ideal is a value, not an end of the scale: closer to it is better.
TARGET_VALUES = {"median_ratio": 1.0, "prd": 1.0, "prb": 0.0}


def metric_diff(new: dict[str, float], old: dict[str, float] | None) -> list[dict[str, Any]]:
    """Rows of (metric, new, old, change, better?) for the model card's comparison table."""
    rows = []
    for key, value in new.items():
        if key == "n":
            continue
        prev = (old or {}).get(key)
        change = None if prev is None or value is None else value - prev
        better = None
        if change is not None and change != 0 and key in TARGET_VALUES:
            target = TARGET_VALUES[key]
            if abs(value - target) != abs(prev - target):
                better = abs(value - target) < abs(prev - target)
        elif change is not None and change != 0 and key != "median_log_error":
            better = (change < 0) == (key in LOWER_IS_BETTER)
        rows.append({"metric": key, "new": value, "old": prev, "change": change, "better": better})
    return rows


def dict_diff(new: dict[str, Any], old: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Keys whose values differ between ``new`` and ``old`` (added, removed or changed)."""
    old = old or {}
    return [
        {"key": k, "new": new.get(k), "old": old.get(k)}
        for k in sorted(set(new) | set(old))
        if new.get(k) != old.get(k)
    ]


def model_card(facts: dict[str, Any], out_path: str | Path, template: str = "model_card.html.j2") -> Path:
    """Render the HTML model card from ``facts`` (see the template for the keys it reads).

    Expected keys: ``model_name``, ``version``, ``run_id``, ``trained_through``, ``data_window`` (dict),
    ``row_counts`` (dict), ``metrics`` ({"challenger"/"champion"/"baseline": metrics dict}),
    ``interval`` (level, coverage, width), ``hyperparameters``, ``features`` (list),
    ``champion`` (the serving champion's facts: version, hyperparameters, features, or None), ``images``
    ({caption: png path}), ``importances`` (records), ``intended_use``, ``limitations`` (list). Missing keys
    render as "n/a"; the diff sections compare with ``champion`` and say so when there is none.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    champion = facts.get("champion") or None
    metrics = facts.get("metrics", {})
    new_features = list(facts.get("features", []))
    old_features = list(champion.get("features", [])) if champion else []
    context = {
        **facts,
        "champion": champion,
        "vs_champion": metric_diff(metrics.get("challenger", {}), metrics.get("champion")),
        "vs_baseline": metric_diff(metrics.get("challenger", {}), metrics.get("baseline")),
        "param_changes": dict_diff(facts.get("hyperparameters", {}), champion.get("hyperparameters"))
        if champion
        else [],
        "features_added": [f for f in new_features if champion and f not in old_features],
        "features_removed": [f for f in old_features if f not in new_features],
        "images_inline": {
            k: png_base64(v) for k, v in (facts.get("images") or {}).items() if Path(v).is_file()
        },
        "css": _CSS,
    }
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    env.filters["num"] = _num
    env.filters["metric"] = metric_value
    env.filters["metric_change"] = metric_change
    out_path.write_text(env.get_template(template).render(**context))
    return out_path


def _num(value: Any, fmt: str = "{:.4g}") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float | int | np.floating | np.integer) and not isinstance(value, bool):
        return fmt.format(value) if math.isfinite(float(value)) else "n/a"
    return str(value)


# Metrics in the model's currency (dollars for the bundled data) and metrics that are shares of homes/prices.
MONEY_METRICS = {"rmse", "mae"}
SHARE_METRICS = {"mape", "mdape", "ppe10", "ppe20", "interval_coverage", "interval_median_width", "churn"}


def _money(value: float, signed: bool = False) -> str:
    sign = "-" if value < 0 else ("+" if signed else "")
    return f"{sign}${abs(value):,.0f}"


def metric_value(value: Any, metric: str) -> str:
    """A metric as people read it: RMSE/MAE in dollars ($261,200), shares in percent (8.12%)."""
    if value is None or isinstance(value, bool) or not isinstance(value, float | int | np.number):
        return _num(value)
    if not math.isfinite(float(value)):
        return "n/a"
    if metric in MONEY_METRICS:
        return _money(float(value))
    if metric in SHARE_METRICS:
        return f"{float(value):.2%}"
    return _num(value)


def metric_change(value: Any, metric: str) -> str:
    """A metric's change: dollars (+$5,870), percentage points (-1.20 pts) or a signed number."""
    if value is None or isinstance(value, bool) or not isinstance(value, float | int | np.number):
        return _num(value)
    if not math.isfinite(float(value)):
        return "n/a"
    if metric in MONEY_METRICS:
        return _money(float(value), signed=True)
    if metric in SHARE_METRICS:
        return f"{float(value) * 100:+.2f} pts"
    return _num(value, "{:+.4g}")
