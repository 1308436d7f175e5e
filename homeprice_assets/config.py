"""Project configuration: one YAML file (``HOMEPRICE_CONFIG``) over packaged defaults.

Everything a user changes to run homeprice on their own data lives here (column names, landing URL, bounds,
training window, promotion gates, alert channels), so that nobody edits code to adopt the project. Secrets are
never read from this file: resources take them from environment variables (``EnvVar``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from homeprice_assets.monitoring.settings import AlertSettings, MonitoringSettings
from homeprice_assets.rollout.settings import RolloutSettings
from homeprice_assets.training.settings import PromotionSettings, TrainingSettings

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG_PATH = PACKAGE_DIR / "default_config.yaml"
BUNDLED_DATA = PACKAGE_DIR / "data" / "seattle_sales.csv.gz"

# Canonical column names used everywhere after ingestion. ``columns`` in the config maps them to source names.
REQUIRED_COLUMNS: tuple[str, ...] = (
    "sale_price",
    "sale_date",
    "living_sf",
    "location",
)
# Coordinates are optional: data without them ingests (and a model without them trains).
COORDINATE_COLUMNS: tuple[str, ...] = ("latitude", "longitude")
OPTIONAL_COLUMNS: tuple[str, ...] = (
    *COORDINATE_COLUMNS,
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


class ReadOptions(_Strict):
    """How landed text files are parsed. ``None`` means: sniff it where that is safe, else the default."""

    delimiter: str | None = Field(
        None, min_length=1, max_length=1, description="Field separator; None: sniffed among , ; tab |"
    )
    encoding: str | None = Field(
        None, description="Text encoding (e.g. latin-1); None: UTF-8 (a BOM is honoured when present)"
    )
    decimal: Literal[".", ","] = Field(
        ".", description="Decimal mark of numeric values (with ',' a '.' is a thousands separator)"
    )
    date_format: str | None = Field(None, description="strftime format of sale dates; None: ISO 8601")

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, v: str | None) -> str | None:
        if v is not None:
            import codecs

            try:
                codecs.lookup(v)
            except LookupError as exc:
                raise ValueError(f"unknown encoding {v!r}") from exc
        return v


class SourceReadOptions(_Strict):
    """Reading options for the landed files whose path matches ``glob`` (fnmatch; first match wins)."""

    glob: str = Field(description="Pattern on the path inside the landing zone, e.g. 'agency_b/*.csv'")
    delimiter: str | None = Field(None, min_length=1, max_length=1)
    encoding: str | None = None
    decimal: Literal[".", ","] | None = None
    date_format: str | None = None

    _check_encoding = field_validator("encoding")(ReadOptions._known_encoding.__func__)


class DataConfig(_Strict):
    """Where sales come from and what their columns are called."""

    # Canonical name -> source column name. Canonical names not listed keep their own name.
    columns: dict[str, str] = Field(default_factory=dict)
    date_format: str | None = None  # None: ISO 8601 / pandas inference
    read: ReadOptions = Field(default_factory=ReadOptions, description="How landed files are parsed")
    sources: list[SourceReadOptions] = Field(
        default_factory=list, description="Per-source reading options, by glob on the landed path"
    )
    require_month_in_path: bool = Field(
        False,
        description="Refuse landed files without a YYYY-MM in their path (else: split them by sale date)",
    )
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
                f"unknown canonical column(s) {unknown}; expected some of {list(CANONICAL_COLUMNS)}"
            )
        return v

    def source_name(self, canonical: str, present: Iterable[str] | None = None) -> str:
        """The source column of ``canonical``: its mapping, or, when the mapping is the packaged one (the
        bundled data's names, which stay under a user's partial ``data.columns``) and the source's columns
        (``present``) lack it but have the canonical name itself, that: a user's own ``parcel_id`` or
        ``waterfront`` column must not be shadowed by the bundled data's names. A mapping the user wrote
        is kept as written (a missing column then fails, naming it)."""
        mapped = self.columns.get(canonical, canonical)
        if present is not None and mapped != canonical and _packaged_columns().get(canonical) == mapped:
            names = present if isinstance(present, (set, frozenset, dict)) else set(present)
            if mapped not in names and canonical in names:
                return canonical
        return mapped

    def read_options(self, key: str) -> ReadOptions:
        """Options for landed file ``key``: the first matching ``sources`` entry over ``read``."""
        from fnmatch import fnmatch

        base = self.read.model_dump()
        base["date_format"] = base["date_format"] or self.date_format
        for source in self.sources:
            if fnmatch(key, source.glob):
                base.update(source.model_dump(exclude={"glob"}, exclude_none=True))
                break
        return ReadOptions.model_validate(base)


class ServingSettings(_Strict):
    """What the prediction service and its web page show (limits on requests come from the model itself)."""

    currency_symbol: str = Field("$", max_length=8, description="prefix of prices on the web page")
    area_unit: str = Field("sq ft", max_length=16, description="unit label of areas on the web page")


class ProjectConfig(_Strict):
    """The whole project configuration: one typed section per domain, every key validated at load."""

    data: DataConfig = Field(default_factory=DataConfig)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    promotion: PromotionSettings = Field(default_factory=PromotionSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)


@lru_cache(maxsize=1)
def _packaged_columns() -> dict[str, str]:
    """``data.columns`` of the packaged defaults (read once, when first needed)."""
    return dict(((_read_yaml(DEFAULT_CONFIG_PATH).get("data") or {}).get("columns")) or {})


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"invalid homeprice configuration ({path}): not YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"invalid homeprice configuration ({path}): expected a mapping of sections")
    return data


def _describe(exc: ValidationError) -> str:
    """One line per problem, each naming the dotted key (``promotion.max_mdpe: Extra inputs ...``). Our own
    validators' messages say what is wrong themselves: no "Value error," and no echo of the whole value."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "value_error":
            lines.append(f"  {key}: {err['msg'].removeprefix('Value error, ')}")
        else:
            shown = err["type"] != "extra_forbidden" and "input" in err
            lines.append(f"  {key}: {err['msg']}" + (f" (got {err['input']!r})" if shown else ""))
    return "\n".join(lines)


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None
) -> ProjectConfig:
    """Packaged defaults, overlaid by ``path`` (or ``$HOMEPRICE_CONFIG``) and then by ``overrides``.

    Every section is validated here (types, ranges, unknown keys): a bad key fails at once with a
    ``ValueError`` naming the key and the file, never halfway through a run.
    """
    raw = _read_yaml(DEFAULT_CONFIG_PATH)
    path = path or os.environ.get("HOMEPRICE_CONFIG") or None
    if path:
        user_path = Path(path)
        if not user_path.is_file():
            raise ValueError(f"HOMEPRICE_CONFIG: no such file {user_path}")
        raw = _deep_merge(raw, _read_yaml(user_path))
    if overrides:
        raw = _deep_merge(raw, overrides)
    try:
        return ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        source = f"{path}" if path else str(DEFAULT_CONFIG_PATH)
        if overrides:
            source += " + overrides"
        raise ValueError(f"invalid homeprice configuration ({source}):\n{_describe(exc)}") from None


@lru_cache(maxsize=1)
def project_config() -> ProjectConfig:
    """Deprecated inside assets and sensors: take the ``settings`` resource (``ProjectConfigResource``)."""
    return load_config()


def homeprice_home() -> Path:
    """The project home: every local store (Dagster, MLflow, landing zone, reports) lives below it."""
    return Path(os.environ.get("HOMEPRICE_HOME", ".homeprice")).resolve()


REPO_ROOT = PACKAGE_DIR.parent


def mlflow_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, or a SQLite store under the project home (nothing to run beside the venv)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{homeprice_home() / 'mlflow.db'}"


def apply_env_defaults(profile: str | None = None) -> dict[str, str]:
    """Point every store at the project home unless the environment (or the profile) already says otherwise.

    ``profile`` (default ``$HOMEPRICE_PROFILE``, else ``local``): ``production`` first reads its env file and
    refuses a missing or local store, naming it (``homeprice_assets.profiles``); the local defaults below
    then fill only what is still unset (scratch folders, BentoML home). Used by the ``homeprice`` command
    (and so by ``make run`` / ``make dev``); returns what it set.
    """
    from homeprice_assets.profiles import apply_profile

    applied = apply_profile(profile)
    home = homeprice_home()
    defaults = {
        "HOMEPRICE_HOME": str(home),
        "HOMEPRICE_DAGSTER_STORAGE": str(home / "dagster"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "BENTOML_HOME": str(home / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "DO_NOT_TRACK": "1",
        "GIT_PYTHON_REFRESH": "quiet",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # the command shows its own progress
    }
    if (REPO_ROOT / "dagster.yaml").is_file():
        defaults["DAGSTER_HOME"] = str(REPO_ROOT)
    else:  # installed without the repository: a bare instance under the project home
        defaults["DAGSTER_HOME"] = str(home / "dagster")
    set_now = {k: v for k, v in defaults.items() if not os.environ.get(k)}
    os.environ.update(set_now)
    set_now.update({k: os.environ[k] for k in applied.from_file})
    Path(os.environ["HOMEPRICE_DAGSTER_STORAGE"]).mkdir(parents=True, exist_ok=True)
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    _sqlite_wal(os.environ["MLFLOW_TRACKING_URI"])
    return set_now


def _sqlite_wal(uri: str) -> None:
    """Put a local MLflow SQLite store in WAL mode (it keeps the mode in the file).

    MLflow's default rollback journal flushes the disk three to four times per commit, and a lifecycle run
    commits about 350 times (parameters, metrics, tags, registry); in WAL mode a commit flushes once.
    A store another process holds open keeps its mode until the next command.
    """
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=1)) as db:
            db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error:
        pass
