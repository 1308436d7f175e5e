"""Project configuration: one YAML file (``HOMEPRICE_CONFIG``) over packaged defaults.

Everything a user changes to run homeprice on their own data lives here (column names, landing URL, bounds,
training window, promotion gates, alert channels), so that nobody edits code to adopt the project. Secrets are
never read from this file: resources take them from environment variables (``EnvVar``).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG_PATH = PACKAGE_DIR / "default_config.yaml"
BUNDLED_DATA = PACKAGE_DIR / "data" / "seattle_sales.csv.gz"

# Canonical column names used everywhere after ingestion. ``columns`` in the config maps them to source names.
REQUIRED_COLUMNS: tuple[str, ...] = (
    "sale_price",
    "sale_date",
    "living_sf",
    "location",
    "latitude",
    "longitude",
)
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "sale_id",
    "parcel_id",
    "use_type",
    "lot_sf",
    "waterfront",
    "bldg_grade",
    "beds",
    "baths",
    "age",
    "eff_age",
)
CANONICAL_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Bounds(_Strict):
    """Plausible value ranges; rows outside them are quarantined, not dropped."""

    min_price: float = 1_000.0
    max_price: float = 1e9
    min_living_sf: float = 1.0
    max_living_sf: float = 100_000.0
    min_latitude: float = -90.0
    max_latitude: float = 90.0
    min_longitude: float = -180.0
    max_longitude: float = 180.0
    min_date: str = "1900-01-01"


class DataConfig(_Strict):
    """Where sales come from and what their columns are called."""

    # Canonical name -> source column name. Canonical names not listed keep their own name.
    columns: dict[str, str] = Field(default_factory=dict)
    date_format: str | None = None  # None: ISO 8601 / pandas inference
    bounds: Bounds = Field(default_factory=Bounds)
    # Checks: the largest share of nulls tolerated in an optional column before its check fails.
    max_null_rate: float = 0.5
    # Blocking: a month whose share of quarantined rows exceeds this is held back from the model.
    max_quarantine_rate: float = 0.05
    # Row-count check: a month with fewer rows than this share of the median of recent months fails.
    min_row_ratio: float = 0.2
    row_count_lookback: int = 6
    # Freshness: landed months may run at most this many months ahead of the newest processed month.
    max_lag_months: int = 1

    @field_validator("columns")
    @classmethod
    def _known_canonical_names(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - set(CANONICAL_COLUMNS))
        if unknown:
            raise ValueError(
                f"data.columns: unknown canonical column(s) {unknown}; "
                f"expected some of {list(CANONICAL_COLUMNS)}"
            )
        return v

    def source_name(self, canonical: str) -> str:
        return self.columns.get(canonical, canonical)


class ProjectConfig(_Strict):
    """The whole project configuration. Sections other than ``data`` belong to their domains."""

    data: DataConfig = Field(default_factory=DataConfig)
    training: dict[str, Any] = Field(default_factory=dict)
    promotion: dict[str, Any] = Field(default_factory=dict)
    monitoring: dict[str, Any] = Field(default_factory=dict)
    alerts: dict[str, Any] = Field(default_factory=dict)
    serving: dict[str, Any] = Field(default_factory=dict)


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | os.PathLike[str] | None = None) -> ProjectConfig:
    """Packaged defaults, overlaid by ``path`` (or ``$HOMEPRICE_CONFIG``) when given.

    Raises ``ValueError`` naming the file and the offending field when the YAML does not validate.
    """
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text()) or {}
    path = path or os.environ.get("HOMEPRICE_CONFIG")
    if path:
        user_path = Path(path)
        if not user_path.is_file():
            raise ValueError(f"HOMEPRICE_CONFIG: no such file {user_path}")
        raw = _deep_merge(raw, yaml.safe_load(user_path.read_text()) or {})
    try:
        return ProjectConfig.model_validate(raw)
    except Exception as exc:  # pydantic's message names the field; say which file it came from
        raise ValueError(f"invalid homeprice configuration ({path or DEFAULT_CONFIG_PATH}):\n{exc}") from exc


@lru_cache(maxsize=1)
def project_config() -> ProjectConfig:
    """The configuration the code location was loaded with (cached: read once per process)."""
    return load_config()


def homeprice_home() -> Path:
    """The project home: every local store (Dagster, MLflow, landing zone, reports) lives below it."""
    return Path(os.environ.get("HOMEPRICE_HOME", ".homeprice")).resolve()


REPO_ROOT = PACKAGE_DIR.parent


def mlflow_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, or a SQLite store under the project home (nothing to run beside the venv)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{homeprice_home() / 'mlflow.db'}"


def apply_env_defaults() -> dict[str, str]:
    """Point every store at the project home unless the environment already says otherwise.

    Used by the ``homeprice`` command (and so by ``make run`` / ``make dev``); returns what it set.
    """
    home = homeprice_home()
    defaults = {
        "HOMEPRICE_HOME": str(home),
        "HOMEPRICE_DAGSTER_STORAGE": str(home / "dagster"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "BENTOML_HOME": str(home / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "DO_NOT_TRACK": "1",
        "GIT_PYTHON_REFRESH": "quiet",
    }
    if (REPO_ROOT / "dagster.yaml").is_file():
        defaults["DAGSTER_HOME"] = str(REPO_ROOT)
    else:  # installed without the repository: a bare instance under the project home
        defaults["DAGSTER_HOME"] = str(home / "dagster")
    set_now = {k: v for k, v in defaults.items() if not os.environ.get(k)}
    os.environ.update(set_now)
    Path(os.environ["HOMEPRICE_DAGSTER_STORAGE"]).mkdir(parents=True, exist_ok=True)
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    return set_now
