"""The rollout evaluation as one self-contained HTML page: the decision, the figures, the evidence path."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from homeprice_assets.rollout.evaluation import Comparison, Health
from homeprice_assets.training.reports import pyplot

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _png(fig: Figure) -> str:
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def evidence_plot(comparison: Comparison) -> Figure:
    """Cumulative evidence (log Lambda_n) against the always-valid boundary log(1/alpha)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    n = len(comparison.path)
    if n:
        ax.plot(range(1, n + 1), comparison.path, label="evidence log Lambda_n")
        if comparison.crossed_at:
            ax.axvline(
                comparison.crossed_at, color="grey", ls=":", label=f"crossed at {comparison.crossed_at}"
            )
    ax.axhline(comparison.boundary, color="red", ls="--", label="boundary log(1/alpha)")
    ax.set_xlabel("pairs (in sale order)")
    ax.set_ylabel("log evidence")
    ax.set_title(f"v{comparison.candidate} ({comparison.mode}) vs champion v{comparison.champion}")
    ax.legend(loc="upper left", fontsize=8)
    return fig


def accuracy_plot(rows: pd.DataFrame) -> Figure:
    """Predicted vs sale price per model version and role (log-log)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for (version, role), group in rows.groupby(["model_version", "model_role"]):
        ax.scatter(group["sale_price"], group["price"], s=6, alpha=0.4, label=f"v{version} {role}")
    if len(rows):
        lo, hi = rows["sale_price"].min(), rows["sale_price"].max()
        ax.plot([lo, hi], [lo, hi], color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sale price")
    ax.set_ylabel("valuation before the sale")
    ax.legend(fontsize=8)
    return fig


def write_accuracy_plot(rows: pd.DataFrame, path: Path) -> Path:
    plt = pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = accuracy_plot(rows)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def write_report(
    path: Path, comparison: Comparison | None, health: Health, by_model: pd.DataFrame, facts: dict
) -> Path:
    """The HTML report (plots embedded) and a JSON of the same figures beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [
        "<!doctype html><meta charset='utf-8'><title>homeprice rollout evaluation</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}td,th{padding:2px 8px}</style>",
        "<h1>Rollout evaluation</h1>",
        f"<p>{html.escape(json.dumps(facts, default=str))}</p>",
    ]
    if comparison is not None:
        parts += [
            f"<h2>Decision: {comparison.decision}</h2><p>{html.escape(comparison.reason)}</p>",
            f"<p>95% bootstrap interval of MdAPE(candidate) - MdAPE(champion): "
            f"[{comparison.ci_low:+.2%}, {comparison.ci_high:+.2%}]</p>",
            f"<img alt='evidence' src='data:image/png;base64,{_png(evidence_plot(comparison))}'>",
        ]
    else:
        parts.append("<h2>No rollout running</h2>")
    verdict = "BROKEN" if health.broken else ("healthy" if health.judged else "not judged (too few sales)")
    parts += [
        f"<h2>Live champion v{html.escape(health.champion)}: {verdict}</h2>",
        "<ul>" + "".join(f"<li>{html.escape(b)}</li>" for b in health.breaches) + "</ul>",
        "<h2>Live accuracy by model and role</h2>",
        by_model.to_html(index=False, float_format=lambda x: f"{x:.4f}"),
    ]
    path.write_text("\n".join(parts))
    figures = {
        "facts": facts,
        "comparison": comparison.figures() if comparison else None,
        "health": health.figures(),
        "by_model": by_model.to_dict(orient="records"),
    }
    path.with_suffix(".json").write_text(json.dumps(figures, default=str, indent=1))
    return path
