"""Profiles: one switch that puts every store in its place, and a preflight that proves each one answers.

``local`` (the default) keeps every store under the project home (SQLite, folders): nothing to run beside the
venv. ``production`` (``HOMEPRICE_PROFILE=production`` or ``homeprice --profile production``) reads an env
file (``HOMEPRICE_ENV_FILE``, default ``$HOMEPRICE_HOME/production.env``; see
``deploy/profiles/production.env.example``) and then requires, all at once:

- Dagster runs, events and schedules on PostgreSQL (``DAGSTER_HOME`` = ``deploy/postgres``,
  ``HOMEPRICE_DAGSTER_PG_URL``);
- an MLflow tracking server (``MLFLOW_TRACKING_URI=http(s)://...``) that stores models on S3 itself
  (``mlflow server --artifacts-destination s3://...``), so no client needs S3 credentials for models;
- the landing zone and the Parquet asset storage on S3 (``HOMEPRICE_LANDING_URL``, ``HOMEPRICE_STORAGE_URL``,
  ``HOMEPRICE_S3_ENDPOINT_URL`` for an S3-compatible server);
- the prediction log on PostgreSQL (``HOMEPRICE_PREDICTION_LOG_URL``).

A store that is missing or local is refused by name before anything runs; ``preflight`` then connects to
each one (PostgreSQL ``SELECT 1``, S3 ``head_bucket``, MLflow ``/health`` and one registry call) so an
unreachable store fails at start, with its name and URL, never halfway through a run. Values already in the
environment win over the env file (a container or a secret manager can inject them); secrets live only there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse, urlsplit, urlunsplit

from homeprice_assets.config import REPO_ROOT, homeprice_home

PROFILE_VAR = "HOMEPRICE_PROFILE"
ENV_FILE_VAR = "HOMEPRICE_ENV_FILE"
PROFILES = ("local", "production")
POSTGRES_INSTANCE = REPO_ROOT / "deploy" / "postgres"  # dagster.yaml: runs, events, schedules on PostgreSQL


class ProfileError(ValueError):
    """The profile cannot be used as configured; the message names every store at fault."""


@dataclass(frozen=True)
class Store:
    """One production store: what it is, the variable that places it, and how it must look."""

    name: str
    var: str
    schemes: tuple[str, ...]
    expected: str  # what a good value looks like, for the error message
    required: bool = True


DAGSTER = Store("Dagster run storage", "HOMEPRICE_DAGSTER_PG_URL", ("postgresql",), "postgresql://...")
REGISTRY = Store("MLflow tracking server", "MLFLOW_TRACKING_URI", ("http", "https"), "http(s)://host:port")
LANDING = Store("landing zone", "HOMEPRICE_LANDING_URL", ("s3",), "s3://bucket/prefix")
STORAGE = Store("Parquet asset storage", "HOMEPRICE_STORAGE_URL", ("s3",), "s3://bucket/prefix")
S3_ENDPOINT = Store(
    "S3 endpoint", "HOMEPRICE_S3_ENDPOINT_URL", ("http", "https"), "http(s)://host:port", required=False
)
PREDICTION_LOG = Store("prediction log", "HOMEPRICE_PREDICTION_LOG_URL", ("postgresql",), "postgresql://...")

# Every store the pipeline (CLI, Dagster code location) touches; the service needs only the last two.
PIPELINE_STORES: tuple[Store, ...] = (DAGSTER, REGISTRY, LANDING, STORAGE, S3_ENDPOINT, PREDICTION_LOG)
SERVING_STORES: tuple[Store, ...] = (REGISTRY, PREDICTION_LOG)


# ------------------------------------------------------------------------------------------------ env file
_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


def read_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments, blank lines, an optional ``export``, quotes stripped; no
    interpolation). A line that is none of these is a ``ProfileError`` naming the file and line."""
    out: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        found = _LINE.match(line)
        if not found:
            raise ProfileError(f"{ENV_FILE_VAR} ({path}), line {number}: expected KEY=VALUE, got {line!r}")
        key, value = found.group(1), found.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:  # a trailing comment after an unquoted value
            value = value.split(" #", 1)[0].rstrip()
        out[key] = value
    return out


def env_file_path(environ: Mapping[str, str] | None = None) -> tuple[Path, bool]:
    """The env file and whether it was named explicitly (an explicit file must exist)."""
    environ = os.environ if environ is None else environ
    named = environ.get(ENV_FILE_VAR)
    if named:
        return Path(named).expanduser(), True
    home = Path(environ.get("HOMEPRICE_HOME") or homeprice_home())
    return home / "production.env", False


# ------------------------------------------------------------------------------------------- validation
def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to print and log)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _scheme(url: str) -> str:
    scheme = urlparse(url).scheme.lower()
    return "postgresql" if scheme.startswith("postgresql+") else scheme


def _problem(store: Store, value: str | None) -> str | None:
    if not value:
        return f"{store.name} ({store.var}): not set (expected {store.expected})" if store.required else None
    if urlparse(value).scheme.lower() == "postgres":  # Heroku's spelling: SQLAlchemy has no such dialect
        return f"{store.name} ({store.var}={redact(value)}): write postgresql://, not postgres://"
    if _scheme(value) not in store.schemes:
        local = _scheme(value) in ("", "file", "sqlite")
        why = "a local store" if local else f"scheme {urlparse(value).scheme!r}"
        return (
            f"{store.name} ({store.var}={redact(value)}): {why} is not allowed in the production profile "
            f"(expected {store.expected})"
        )
    if _scheme(value) == "s3" and not urlparse(value).netloc:
        return f"{store.name} ({store.var}={redact(value)}): no bucket (expected {store.expected})"
    return None


_SPLIT_STORAGES = ("run_storage", "event_log_storage", "schedule_storage")


def _dagster_instance(environ: Mapping[str, str]) -> tuple[str | None, bool]:
    """(problem, whether the instance reads ``HOMEPRICE_DAGSTER_PG_URL``) for ``$DAGSTER_HOME/dagster.yaml``.

    Accepted: ``storage: postgres:`` (deploy/postgres, compose) or run, event log and schedule storages that
    are each a PostgreSQL class (the layout of Dagster's Helm chart). Anything else keeps runs in local files.
    """
    import yaml

    home = environ.get("DAGSTER_HOME")
    if not home:
        return f"Dagster instance (DAGSTER_HOME): not set (expected {POSTGRES_INSTANCE})", True
    path = Path(home) / "dagster.yaml"
    if not path.is_file():
        return (
            f"Dagster instance (DAGSTER_HOME={home}): no dagster.yaml there, so runs would go to SQLite "
            f"files, a local store not allowed in the production profile (expected {POSTGRES_INSTANCE})"
        ), True
    try:
        text = path.read_text()
        instance = yaml.safe_load(text) or {}
    except (OSError, yaml.YAMLError) as exc:
        return f"Dagster instance (DAGSTER_HOME={home}): cannot read {path}: {exc}", True
    reads_url = DAGSTER.var in text
    storage = instance.get("storage") or {}
    split = [instance.get(k) or {} for k in _SPLIT_STORAGES]
    if "postgres" in storage or all("Postgres" in str(s.get("class", "")) for s in split):
        return None, reads_url
    custom = storage["custom"].get("class") if isinstance(storage.get("custom"), dict) else None
    kind = (
        "SQLite files under DAGSTER_HOME"
        if not storage or custom == "LocalSqliteStorage"  # (the repository's own dagster.yaml)
        else f"storage: {', '.join(storage)}" + (f" ({custom})" if custom else "")
    )
    return (
        f"Dagster instance (DAGSTER_HOME={home}): {path} stores runs in {kind}, a local store not "
        f"allowed in the production profile (expected storage: postgres, as in {POSTGRES_INSTANCE})"
    ), reads_url


def validate(environ: Mapping[str, str], stores: Iterable[Store] = PIPELINE_STORES) -> None:
    """Every store set and none local, else one ``ProfileError`` listing each store at fault."""
    stores = tuple(stores)
    instance_problem, reads_url = _dagster_instance(environ) if DAGSTER in stores else (None, False)
    if DAGSTER in stores and not reads_url and not environ.get(DAGSTER.var):
        stores = tuple(s for s in stores if s is not DAGSTER)  # the instance names its own database
    problems = [p for s in stores if (p := _problem(s, environ.get(s.var)))]
    if instance_problem:
        problems.append(instance_problem)
    if problems:
        raise ProfileError(
            "the production profile is not complete:\n" + "\n".join(f"  {p}" for p in problems)
        )


# ----------------------------------------------------------------------------------------------- apply
@dataclass(frozen=True)
class AppliedProfile:
    name: str
    env_file: Path | None  # the file read, None when there was none
    from_file: tuple[str, ...]  # variables the env file set (environment values win)


def resolve_name(name: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    chosen = (name or environ.get(PROFILE_VAR) or "local").strip().lower()
    if chosen not in PROFILES:
        expected = ", ".join(PROFILES)
        raise ProfileError(f"{PROFILE_VAR}: unknown profile {chosen!r} (expected one of {expected})")
    return chosen


def apply_profile(
    name: str | None = None,
    stores: Iterable[Store] = PIPELINE_STORES,
    environ: os._Environ[str] | dict[str, str] | None = None,
) -> AppliedProfile:
    """Put the profile's variables into ``environ`` (``os.environ``) and validate the production stores.

    ``local`` changes nothing. ``production`` reads the env file (variables already set win), points
    ``DAGSTER_HOME`` at the PostgreSQL instance unless set, and raises ``ProfileError`` naming every store
    that is missing or local. It never connects to anything: that is ``preflight``.
    """
    environ = os.environ if environ is None else environ
    chosen = resolve_name(name, environ)
    if chosen == "local":
        return AppliedProfile("local", None, ())
    environ[PROFILE_VAR] = chosen
    path, explicit = env_file_path(environ)
    values: dict[str, str] = {}
    if path.is_file():
        values = read_env_file(path)
    elif explicit:
        raise ProfileError(f"{ENV_FILE_VAR}: no such file {path}")
    from_file = tuple(k for k, v in values.items() if not environ.get(k) and v != "")
    for key in from_file:
        environ[key] = values[key]
    stores = tuple(stores)
    if DAGSTER in stores and not environ.get("DAGSTER_HOME"):
        environ["DAGSTER_HOME"] = str(POSTGRES_INSTANCE)
    try:
        validate(environ, stores)
    except ProfileError as exc:
        if path.is_file() or ": not set" not in str(exc):
            raise
        # say where the file was looked for: "not set" alone left people guessing
        raise ProfileError(
            f"{exc}\n  (no env file at {path}: copy deploy/profiles/production.env.example there, "
            f"or set {ENV_FILE_VAR})"
        ) from None
    return AppliedProfile(chosen, path if path.is_file() else None, from_file)


# -------------------------------------------------------------------------------------------- preflight
@dataclass(frozen=True)
class Check:
    """The outcome of reaching one store."""

    name: str
    var: str
    url: str  # redacted
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def line(self) -> str:
        state = "ok" if self.ok else f"FAILED: {self.error}"
        return f"{self.name:<24} {self.var}={self.url}  {state}"


class PreflightError(RuntimeError):
    """At least one store did not answer; the message names each one with its URL and the reason."""

    def __init__(self, checks: list[Check]) -> None:
        self.checks = checks
        failed = [c for c in checks if not c.ok]
        super().__init__(
            f"{len(failed)} store(s) unreachable:\n"
            + "\n".join(f"  {c.name} ({c.var}={c.url}): {c.error}" for c in failed)
        )


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def check_postgres(url: str, timeout: float) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url, connect_args={"connect_timeout": max(1, int(timeout))})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    finally:
        engine.dispose()


def check_s3(url: str, timeout: float, endpoint_url: str | None) -> None:
    import boto3
    from botocore.config import Config

    bucket = urlparse(url).netloc
    client = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        config=Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1}),
    )
    client.head_bucket(Bucket=bucket)


def check_mlflow(url: str, timeout: float) -> None:
    """``/health`` answers OK, and one registry call proves the server reaches its backend store."""
    import requests

    base = url.rstrip("/")
    health = requests.get(f"{base}/health", timeout=timeout)
    if health.status_code != 200:
        raise RuntimeError(f"/health answered HTTP {health.status_code}")
    search = requests.get(
        f"{base}/api/2.0/mlflow/registered-models/search", params={"max_results": 1}, timeout=timeout
    )
    if search.status_code != 200:
        raise RuntimeError(f"registry call answered HTTP {search.status_code}: {search.text[:200]}")


def _probe(store: Store, url: str, environ: Mapping[str, str], timeout: float) -> Callable[[], None]:
    if store.schemes == ("postgresql",):
        return lambda: check_postgres(url, timeout)
    if store.schemes == ("s3",):
        return lambda: check_s3(url, timeout, environ.get(S3_ENDPOINT.var) or None)
    return lambda: check_mlflow(url, timeout)


def preflight(
    stores: Iterable[Store] = PIPELINE_STORES,
    environ: Mapping[str, str] | None = None,
    timeout: float = 5.0,
    raise_on_error: bool = True,
) -> list[Check]:
    """Reach every configured store at once (in parallel, ``timeout`` seconds each).

    Raises ``PreflightError`` naming each unreachable store and its URL (unless ``raise_on_error`` is False).
    """
    environ = os.environ if environ is None else environ
    todo = [
        (s, environ[s.var]) for s in stores if s is not S3_ENDPOINT and environ.get(s.var)
    ]  # the endpoint is reached through the buckets

    def run(item: tuple[Store, str]) -> Check:
        store, url = item
        shown = redact(url)
        if store.schemes == ("s3",) and environ.get(S3_ENDPOINT.var):
            shown += f" (at {S3_ENDPOINT.var}={redact(environ[S3_ENDPOINT.var])})"
        try:
            _probe(store, url, environ, timeout)()
        except Exception as exc:  # any failure to reach a store is reported, whatever raised it
            return Check(store.name, store.var, shown, _short(exc))
        return Check(store.name, store.var, shown)

    with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
        checks = list(pool.map(run, todo))
    if raise_on_error and not all(c.ok for c in checks):
        raise PreflightError(checks)
    return checks
