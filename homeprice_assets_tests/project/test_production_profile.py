"""The production profile: one switch puts every store on PostgreSQL, S3 and an MLflow server, or refuses.

Fast tests: the env file, the refusal of a missing or local store (named), and the preflight naming each
unreachable store with its URL, through the ``homeprice`` command too. The slow test runs the whole profile
end to end on loopback: a fresh PostgreSQL database, a moto S3 server and an MLflow tracking server (its
backend on PostgreSQL, artifacts on S3 through the server) started here; land, ingest, train and promote
through the ``homeprice`` CLI; serve with ``bentoml serve`` (no S3 credentials), predict, and read the logged
prediction back from PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pytest
import requests
import sqlalchemy as sa
import yaml

from homeprice_assets import profiles as p
from homeprice_assets.cli import main
from homeprice_assets.config import REPO_ROOT
from homeprice_assets_tests.helpers import DUMMY_AWS, stop_process_group
from homeprice_assets_tests.serving.conftest import free_port

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
VENV_BIN = Path(sys.executable).parent


def production_env(**stores: str) -> dict[str, str]:
    """A complete production environment (every store well-formed); ``stores`` override by variable."""
    return {
        "HOMEPRICE_DAGSTER_PG_URL": f"{PG_SERVER}/test",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
        "HOMEPRICE_LANDING_URL": "s3://homeprice-data/landing",
        "HOMEPRICE_STORAGE_URL": "s3://homeprice-data/assets",
        "HOMEPRICE_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        "HOMEPRICE_PREDICTION_LOG_URL": f"{PG_SERVER}/test",
        "DAGSTER_HOME": str(p.POSTGRES_INSTANCE),
        **stores,
    }


def write_env_file(path: Path, values: dict[str, str]) -> Path:
    path.write_text("# test profile\n" + "".join(f"{k}={v}\n" for k, v in values.items()))
    return path


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No store variable from the test session (conftest points MLflow and Dagster at SQLite); the whole
    environment is put back afterwards, whatever the profile or the CLI set."""
    saved = dict(os.environ)
    for store in p.PIPELINE_STORES:
        monkeypatch.delenv(store.var, raising=False)
    for key in ("DAGSTER_HOME", p.PROFILE_VAR, p.ENV_FILE_VAR, "HOMEPRICE_DAGSTER_STORAGE"):
        monkeypatch.delenv(key, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("HOMEPRICE_HOME", str(home))
    yield home
    os.environ.clear()
    os.environ.update(saved)


# ------------------------------------------------------------------------------------------ fast tests
def test_env_file_format(tmp_path: Path) -> None:
    path = tmp_path / "production.env"
    path.write_text(
        "# comment\n\nexport A=1\nB = 'two words'\nC=\"x#y\"\nD=plain # trailing\nE=postgresql://u:p@h/db\n"
    )
    assert p.read_env_file(path) == {
        "A": "1",
        "B": "two words",
        "C": "x#y",
        "D": "plain",
        "E": "postgresql://u:p@h/db",
    }
    path.write_text("A=1\nnot a setting\n")
    with pytest.raises(p.ProfileError, match=r"production.env\), line 2: expected KEY=VALUE"):
        p.read_env_file(path)


def test_profile_sets_every_store_from_the_env_file(clean_environ: Path, tmp_path: Path) -> None:
    values = production_env()
    del values["DAGSTER_HOME"]  # the profile's default: the PostgreSQL instance in deploy/postgres
    env_file = write_env_file(clean_environ.parent / "production.env", values)
    environ = {"HOMEPRICE_ENV_FILE": str(env_file), "HOMEPRICE_LANDING_URL": "s3://elsewhere/in"}
    applied = p.apply_profile("production", environ=environ)
    assert applied.env_file == env_file
    assert environ["DAGSTER_HOME"] == str(REPO_ROOT / "deploy" / "postgres")
    assert environ["HOMEPRICE_LANDING_URL"] == "s3://elsewhere/in"  # the environment wins over the file
    assert "HOMEPRICE_LANDING_URL" not in applied.from_file
    assert environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    assert environ[p.PROFILE_VAR] == "production"

    # Through apply_env_defaults (what `homeprice` runs): the default env file under the project home.
    clean_environ.mkdir()
    write_env_file(clean_environ / "production.env", values)
    os.environ[p.PROFILE_VAR] = "production"
    from homeprice_assets.config import apply_env_defaults

    set_now = apply_env_defaults()
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"  # not the local SQLite default
    assert os.environ["DAGSTER_HOME"] == str(p.POSTGRES_INSTANCE)
    assert set_now["HOMEPRICE_PREDICTION_LOG_URL"] == values["HOMEPRICE_PREDICTION_LOG_URL"]


def test_the_example_env_file_documents_every_store_and_holds_no_secret() -> None:
    """deploy/profiles/production.env.example: every store variable set (the profile accepts it as is),
    every password a placeholder, and a filled-in copy (*.env) ignored by git."""
    example = REPO_ROOT / "deploy" / "profiles" / "production.env.example"
    values = p.read_env_file(example)
    for store in p.PIPELINE_STORES:
        assert values.get(store.var), f"{store.var} is not documented in {example.name}"
    p.validate({**values, "DAGSTER_HOME": str(p.POSTGRES_INSTANCE)})
    secrets = {k: v for k, v in values.items() if "SECRET" in k or "PASSWORD" in k}
    passwords = [urlsplit(v).password for v in values.values() if "://" in v and urlsplit(v).password]
    assert secrets and all(v == "CHANGE-ME" for v in secrets.values()), secrets
    assert passwords and set(passwords) == {"CHANGE-ME"}, passwords
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "deploy/profiles/production.env"], cwd=REPO_ROOT, check=False
    )
    assert ignored.returncode == 0, "a filled-in deploy/profiles/production.env would not be ignored by git"


def test_local_profile_changes_nothing() -> None:
    environ: dict[str, str] = {}
    assert p.apply_profile(environ=environ).name == "local"
    assert environ == {}
    with pytest.raises(p.ProfileError, match="HOMEPRICE_PROFILE: unknown profile 'staging'"):
        p.apply_profile("staging", environ={})


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db", "MLflow tracking server (MLFLOW_TRACKING_URI=sqlite"),
        (
            "HOMEPRICE_PREDICTION_LOG_URL",
            "sqlite:///p.db",
            "prediction log (HOMEPRICE_PREDICTION_LOG_URL=sqlite",
        ),
        (
            "HOMEPRICE_LANDING_URL",
            "/data/landing",
            "landing zone (HOMEPRICE_LANDING_URL=/data/landing): a local",
        ),
        ("HOMEPRICE_STORAGE_URL", "file:///data/assets", "Parquet asset storage (HOMEPRICE_STORAGE_URL=file"),
        ("HOMEPRICE_DAGSTER_PG_URL", "", "Dagster run storage (HOMEPRICE_DAGSTER_PG_URL): not set"),
        ("HOMEPRICE_LANDING_URL", "s3:///x", "landing zone (HOMEPRICE_LANDING_URL=s3:///x): no bucket"),
        (
            "DAGSTER_HOME",
            str(REPO_ROOT),
            "dagster.yaml stores runs in SQLite files under DAGSTER_HOME, a local",
        ),
        (  # passed, then failed at preflight with "Can't load plugin: sqlalchemy.dialects:postgres"
            "HOMEPRICE_PREDICTION_LOG_URL",
            "postgres://u:pw@db/log",
            "prediction log (HOMEPRICE_PREDICTION_LOG_URL=postgres://u:***@db/log): write postgresql://",
        ),
    ],
)
def test_a_missing_or_local_store_is_refused_by_name(var: str, value: str, message: str) -> None:
    environ = production_env(**{var: value})
    with pytest.raises(p.ProfileError) as err:
        p.apply_profile("production", environ=environ)
    assert message in str(err.value)
    named = [line for line in str(err.value).splitlines()[1:] if not line.startswith("  (no env file")]
    assert len(named) == 1  # only that store is named


def test_a_store_not_set_names_the_env_file_looked_for(clean_environ: Path) -> None:
    """ "not set" alone left people guessing where the file should have been."""
    with pytest.raises(p.ProfileError) as err:
        p.apply_profile("production")
    assert (
        f"(no env file at {clean_environ / 'production.env'}: copy deploy/profiles/production.env.example"
        in (str(err.value))
    )


HELM_INSTANCE = """
run_storage:
  module: dagster_postgres.run_storage
  class: PostgresRunStorage
  config: {postgres_db: {hostname: db, username: dagster, password: {env: DAGSTER_PG_PASSWORD}, db_name: d}}
event_log_storage:
  module: dagster_postgres.event_log
  class: PostgresEventLogStorage
  config: {postgres_db: {hostname: db, username: dagster, password: {env: DAGSTER_PG_PASSWORD}, db_name: d}}
schedule_storage:
  module: dagster_postgres.schedule_storage
  class: PostgresScheduleStorage
  config: {postgres_db: {hostname: db, username: dagster, password: {env: DAGSTER_PG_PASSWORD}, db_name: d}}
"""


def test_an_instance_that_names_its_own_postgres_needs_no_url(tmp_path: Path) -> None:
    """Dagster's Helm chart writes run/event/schedule storages itself: accepted without the URL variable;
    the same layout on SQLite is refused, naming the instance file."""
    (tmp_path / "dagster.yaml").write_text(HELM_INSTANCE)
    environ = production_env(DAGSTER_HOME=str(tmp_path))
    del environ["HOMEPRICE_DAGSTER_PG_URL"]
    p.validate(environ)
    (tmp_path / "dagster.yaml").write_text(
        HELM_INSTANCE.replace("Postgres", "Sqlite").replace("postgres", "sqlite")
    )
    with pytest.raises(
        p.ProfileError, match=rf"Dagster instance \(DAGSTER_HOME={tmp_path}\): .*dagster.yaml"
    ):
        p.validate(environ)


def test_profile_flag_before_or_after_the_command() -> None:
    from homeprice_assets.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["--profile", "production", "dev"]).profile == "production"
    assert parser.parse_args(["dev", "--profile", "production"]).profile == "production"
    assert parser.parse_args(["--profile", "production", "ingest"]).profile == "production"
    assert parser.parse_args(["check"]).profile is None  # then $HOMEPRICE_PROFILE, else local


def test_passwords_are_never_printed() -> None:
    url = "postgresql://homeprice:s3cret@db:5432/homeprice"
    assert p.redact(url) == "postgresql://homeprice:***@db:5432/homeprice"
    with pytest.raises(p.ProfileError) as err:
        p.validate(production_env(HOMEPRICE_PREDICTION_LOG_URL="mysql://u:s3cret@db/x"))
    assert "s3cret" not in str(err.value) and "u:***@db" in str(err.value)


@pytest.fixture
def moto_endpoint(moto_s3: str) -> str:
    """moto's S3 server in-process, with one bucket."""
    boto3.client("s3", endpoint_url=moto_s3).create_bucket(Bucket="homeprice-data")
    return moto_s3


def test_preflight_names_each_unreachable_store_with_its_url(moto_endpoint: str) -> None:
    """Each store down or missing, one at a time: the preflight names exactly that one, with its URL."""
    closed = free_port()  # nothing listens there
    healthy = production_env(
        HOMEPRICE_S3_ENDPOINT_URL=moto_endpoint, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{closed}"
    )
    cases = {
        "Dagster run storage": {"HOMEPRICE_DAGSTER_PG_URL": f"postgresql://postgres@127.0.0.1:{closed}/x"},
        "prediction log": {"HOMEPRICE_PREDICTION_LOG_URL": f"{PG_SERVER}/no_such_db_{uuid.uuid4().hex[:6]}"},
        "landing zone": {"HOMEPRICE_LANDING_URL": "s3://no-such-bucket/landing"},
        "Parquet asset storage": {"HOMEPRICE_STORAGE_URL": "s3://missing-assets/x"},
    }
    reachable = [s for s in p.PIPELINE_STORES if s is not p.REGISTRY]
    assert all(c.ok for c in p.preflight(reachable, environ=healthy))
    for name, broken in cases.items():
        environ = {**healthy, **broken}
        with pytest.raises(p.PreflightError) as err:
            p.preflight(reachable, environ=environ, timeout=3)
        (failed,) = [c for c in err.value.checks if not c.ok]
        (var, url) = next(iter(broken.items()))
        assert (failed.name, failed.var) == (name, var)
        assert f"{name} ({var}={url}" in str(err.value)

    # the S3 endpoint down: both buckets fail, each naming the endpoint; the MLflow server down too
    environ = {**healthy, "HOMEPRICE_S3_ENDPOINT_URL": f"http://127.0.0.1:{closed}"}
    with pytest.raises(p.PreflightError) as err:
        p.preflight(environ=environ, timeout=3)
    failed = {c.name: c for c in err.value.checks if not c.ok}
    assert set(failed) == {"landing zone", "Parquet asset storage", "MLflow tracking server"}
    assert f"at HOMEPRICE_S3_ENDPOINT_URL=http://127.0.0.1:{closed}" in failed["landing zone"].url
    assert f"MLflow tracking server (MLFLOW_TRACKING_URI=http://127.0.0.1:{closed})" in str(err.value)


def test_cli_refuses_before_touching_any_store(
    clean_environ: Path, moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`homeprice land` under the production profile, MLflow down: exit 3 naming it, nothing landed."""
    closed = free_port()
    values = production_env(
        HOMEPRICE_S3_ENDPOINT_URL=moto_endpoint, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{closed}"
    )
    env_file = write_env_file(clean_environ.parent / "prod.env", values)
    before = dict(os.environ)

    def reset_environ() -> None:  # what one `homeprice` process saw at its start
        os.environ.clear()
        os.environ.update(before)
        os.environ[p.ENV_FILE_VAR] = str(env_file)

    reset_environ()
    started = time.perf_counter()
    code = main(["--profile", "production", "land", "--since", "2014-01", "--until", "2014-01"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert f"MLflow tracking server (MLFLOW_TRACKING_URI=http://127.0.0.1:{closed}):" in err
    assert time.perf_counter() - started < 30
    listed = boto3.client("s3", endpoint_url=moto_endpoint).list_objects_v2(Bucket="homeprice-data")
    assert listed["KeyCount"] == 0  # nothing landed

    # `check` names the store that is down once, in its table, and exits 3
    reset_environ()
    assert main(["--profile", "production", "check"]) == 3
    out = capsys.readouterr()
    assert f"MLFLOW_TRACKING_URI=http://127.0.0.1:{closed}  FAILED: " in out.out
    assert out.err == "homeprice: error: 1 of 5 store(s) did not answer\n"

    # a local store in the env file: refused by name (exit 2), the subcommand's --profile works too
    reset_environ()
    write_env_file(env_file, {**values, "HOMEPRICE_PREDICTION_LOG_URL": "sqlite:///predictions.db"})
    assert main(["check", "--profile", "production"]) == 2
    assert "prediction log (HOMEPRICE_PREDICTION_LOG_URL=sqlite:///predictions.db)" in capsys.readouterr().err

    # an explicit env file that does not exist
    reset_environ()
    os.environ[p.ENV_FILE_VAR] = str(clean_environ / "nope.env")
    assert main(["--profile", "production", "check"]) == 2
    assert f"HOMEPRICE_ENV_FILE: no such file {clean_environ / 'nope.env'}" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- end to end (slow)
@dataclass
class Stack:
    """The production stores on loopback, started by the test."""

    database: str
    s3_endpoint: str
    mlflow_url: str
    env_file: Path
    home: Path
    tmp: Path
    startup_s: float = 0.0  # database, moto and the MLflow server (its migrations on PostgreSQL) up

    def pg(self, schema: str | None = None) -> str:
        url = f"{PG_SERVER}/{self.database}"
        return f"{url}?options=-csearch_path%3D{schema}" if schema else url


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer in {timeout} s:\n{log.read_text()[-4000:]}")


def _start(cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _base_env(tmp: Path) -> dict[str, str]:
    """The session's environment without any store, profile or cloud credential in it."""
    drop = {s.var for s in p.PIPELINE_STORES} | {"DAGSTER_HOME", "HOMEPRICE_CONFIG", "HOMEPRICE_HOME"}
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in drop and not k.startswith(("AWS_", "MLFLOW_", "HOMEPRICE_"))
    }
    env["BENTOML_HOME"] = str(tmp / "bentoml")
    return env


SMALL_TRAINING = {
    "training": {
        "window_months": 12,
        "validation_months": 2,
        "calibration_months": 2,
        "early_stopping_months": 2,
        "explain_sample": 200,
        "params": {"num_boost_round": 200, "early_stopping_rounds": 20},
    },
    # One small first model: the absolute gates are opened (this test is about the stores, not accuracy).
    "promotion": {"max_mdape": 0.9, "min_ppe10": 0.0},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("production")
    t0 = time.perf_counter()
    database = f"homeprice_e2e_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {database}"))
        # a throwaway database needs no flush per commit (Dagster commits every event it records)
        conn.execute(sa.text(f"ALTER DATABASE {database} SET synchronous_commit = off"))
    procs: list[subprocess.Popen] = []
    try:
        db = sa.create_engine(f"{PG_SERVER}/{database}")
        with db.begin() as conn:  # Dagster and the prediction log each in a schema; MLflow in public
            conn.execute(sa.text("CREATE SCHEMA dagster"))
            conn.execute(sa.text("CREATE SCHEMA serving"))
        db.dispose()

        s3_port = free_port()
        procs.append(
            _start(
                [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)],
                _base_env(tmp),
                tmp / "moto.log",
                tmp,
            )
        )
        s3_endpoint = f"http://127.0.0.1:{s3_port}"
        _wait_http(f"{s3_endpoint}/moto-api/", procs[-1], tmp / "moto.log")
        s3 = boto3.client("s3", endpoint_url=s3_endpoint, **_aws_kwargs())
        for bucket in ("homeprice-data", "homeprice-models"):
            s3.create_bucket(Bucket=bucket)

        mlflow_port = free_port()
        server_env = {**_base_env(tmp), **DUMMY_AWS, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint}
        procs.append(
            _start(
                [
                    str(VENV_BIN / "mlflow"),
                    "server",
                    "--backend-store-uri",
                    f"{PG_SERVER}/{database}",
                    "--artifacts-destination",
                    "s3://homeprice-models/mlartifacts",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(mlflow_port),
                    "--workers",
                    "1",
                ],
                server_env,
                tmp / "mlflow.log",
                tmp,
            )
        )
        mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        _wait_http(f"{mlflow_url}/health", procs[-1], tmp / "mlflow.log", timeout=180)

        home = tmp / "home"
        home.mkdir()
        config = tmp / "config.yaml"
        config.write_text(yaml.safe_dump(SMALL_TRAINING))
        stack = Stack(database, s3_endpoint, mlflow_url, tmp / "production.env", home, tmp)
        stack.startup_s = time.perf_counter() - t0
        write_env_file(
            stack.env_file,
            {
                "HOMEPRICE_HOME": str(home),
                "HOMEPRICE_CONFIG": str(config),
                "HOMEPRICE_DAGSTER_PG_URL": stack.pg("dagster"),
                "MLFLOW_TRACKING_URI": mlflow_url,
                "HOMEPRICE_LANDING_URL": "s3://homeprice-data/landing",
                "HOMEPRICE_STORAGE_URL": "s3://homeprice-data/assets",
                "HOMEPRICE_S3_ENDPOINT_URL": s3_endpoint,
                "HOMEPRICE_PREDICTION_LOG_URL": stack.pg("serving"),
                **DUMMY_AWS,  # the pipeline's credentials for the data buckets
            },
        )
        yield stack
    finally:
        # The MLflow server waits for idle keep-alive connections (this process's clients) before it exits
        # on SIGTERM: its teardown took 29 s, the default timeout. Its stores are dropped below anyway.
        for proc in reversed(procs):
            stop_process_group(proc, timeout=5)
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        admin.dispose()


def _aws_kwargs() -> dict[str, str]:
    return {
        "aws_access_key_id": DUMMY_AWS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": DUMMY_AWS["AWS_SECRET_ACCESS_KEY"],
        "region_name": DUMMY_AWS["AWS_DEFAULT_REGION"],
    }


def _homeprice(stack: Stack, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``homeprice --profile production ...`` with nothing but the env file naming the stores."""
    env = {**_base_env(stack.tmp), p.ENV_FILE_VAR: str(stack.env_file)}
    done = subprocess.run(
        [str(VENV_BIN / "homeprice"), "--profile", "production", *args],
        cwd=stack.tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, (
        f"homeprice {' '.join(args)} exited {done.returncode}:\n{done.stderr[-6000:]}"
    )
    return done


def _process_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    pids.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
    return pids


RUNS_QUERY = "{ runsOrError(limit: 200) { __typename ... on Runs { results { jobName status } } } }"


def _dev_runs(stack: Stack, timeout: float = 240) -> list[tuple[str, str]]:
    """Start ``homeprice dev --profile production``, list the runs through its GraphQL API, stop it."""
    port = free_port()
    log = stack.tmp / "dev.log"
    env = {**_base_env(stack.tmp), p.ENV_FILE_VAR: str(stack.env_file)}
    cmd = [str(VENV_BIN / "homeprice"), "dev", "--profile", "production", "--port", str(port)]
    proc = _start(cmd, env, log, stack.tmp)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"homeprice dev exited {proc.returncode}:\n{log.read_text()[-4000:]}"
            try:
                answer = requests.post(
                    f"http://127.0.0.1:{port}/graphql", json={"query": RUNS_QUERY}, timeout=10
                ).json()
                runs = answer["data"]["runsOrError"]
                if runs["__typename"] == "Runs":
                    return [(r["jobName"], r["status"]) for r in runs["results"]]
            except (requests.RequestException, ValueError, KeyError, TypeError):
                pass
            time.sleep(1)
        raise AssertionError(f"homeprice dev did not list runs in {timeout} s:\n{log.read_text()[-4000:]}")
    finally:
        stop_process_group(proc, timeout=60)


@pytest.mark.slow
def test_production_profile_end_to_end(stack: Stack, bundled_sales) -> None:
    from homeprice_assets.config import load_config
    from homeprice_assets.features.engineering import feature_table
    from homeprice_assets.ingest.rules import clean_sales
    from homeprice_assets.resources.registry import CHAMPION, Registry
    from homeprice_assets_tests.serving.conftest import Server, home_payload, wait_ready, wait_up

    started = time.perf_counter()
    timings: dict[str, float] = {"stores up (fixture)": stack.startup_s}

    def step(name: str, *args: str) -> subprocess.CompletedProcess:
        t0 = time.perf_counter()
        done = _homeprice(stack, *args)
        timings[name] = time.perf_counter() - t0
        return done

    checked = step("homeprice check", "check")
    assert "all 5 store(s) answered" in checked.stdout, checked.stdout
    for name in ("Dagster run storage", "MLflow tracking server", "landing zone", "prediction log"):
        assert f"{name}" in checked.stdout and "FAILED" not in checked.stdout

    step("land 12 months", "land", "--since", "2014-07", "--until", "2015-06")
    step("ingest 12 months", "ingest")
    trained = step("run --no-land (train..bento)", "run", "--no-land")  # ingest unchanged; train .. bento

    # The model went through the tracking server into the S3 bucket behind it.
    registry = Registry(tracking_uri=stack.mlflow_url)
    champion = registry.version(CHAMPION)
    assert champion is not None, trained.stderr[-4000:]
    experiment = registry.client.get_experiment_by_name(registry.experiment_name)
    assert experiment.artifact_location.startswith("mlflow-artifacts:"), experiment.artifact_location
    s3 = boto3.client("s3", endpoint_url=stack.s3_endpoint, **_aws_kwargs())
    models = [o["Key"] for o in s3.list_objects_v2(Bucket="homeprice-models")["Contents"]]
    assert any(k.startswith("mlartifacts/") and k.endswith("model/MLmodel") for k in models), models

    # The Parquet assets are in the bucket, one file per month; the landed files too.
    data = [o["Key"] for o in s3.list_objects_v2(Bucket="homeprice-data", MaxKeys=1000)["Contents"]]
    months = [f"{y}-{m:02d}" for y in (2014, 2015) for m in range(1, 13)][6:18]
    for month in months:
        assert f"landing/sales_{month}.csv" in data, data
        assert f"assets/clean_sales/{month}.parquet" in data, data
        assert f"assets/sale_features/{month}.parquet" in data, data

    # The Dagster runs are in PostgreSQL (and nothing went to a local store).
    pg = sa.create_engine(stack.pg())
    with pg.connect() as conn:
        runs = conn.execute(sa.text("SELECT pipeline_name, status FROM dagster.runs")).fetchall()
    # one ingest run for the 12 months: the second pass (`run --no-land`) found them unchanged, in PostgreSQL
    assert sum(r == ("ingest_job", "SUCCESS") for r in runs) == 1, runs
    assert ("model_lifecycle_job", "SUCCESS") in runs, runs
    for local in ("mlflow.db", "predictions.db", "landing", "storage", "mlartifacts"):
        assert not (stack.home / local).exists(), local
    assert not (p.POSTGRES_INSTANCE / "storage").exists()

    # The service, with the profile's serving stores and NO S3 credentials or endpoint at all. It starts now
    # and loads while the UI is checked (each takes about 20 s to come up).
    port = free_port()
    serve_env = {
        **_base_env(stack.tmp),
        "HOMEPRICE_PROFILE": "production",
        "HOMEPRICE_HOME": str(stack.home),
        "MLFLOW_TRACKING_URI": stack.mlflow_url,
        "HOMEPRICE_PREDICTION_LOG_URL": stack.pg("serving"),
        "HOMEPRICE_PREDICTION_LOG_FLUSH_SECONDS": "0.2",
    }
    log = stack.tmp / "serve.log"
    proc = _start(
        [
            str(VENV_BIN / "bentoml"),
            "serve",
            "bento.service:HomePrice",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        serve_env,
        log,
        REPO_ROOT,
    )
    server = Server(f"http://127.0.0.1:{port}", proc, log, stack.tmp / "unused.db")
    try:
        # `homeprice dev --profile production`: the Dagster UI (its code location in a subprocess) on the same
        # PostgreSQL instance shows the runs the CLI made.
        t0 = time.perf_counter()
        runs_seen = _dev_runs(stack)
        timings["dev: UI up, runs listed"] = time.perf_counter() - t0
        assert sum(r == ("ingest_job", "SUCCESS") for r in runs_seen) == 1, runs_seen
        assert ("model_lifecycle_job", "SUCCESS") in runs_seen, runs_seen

        t0 = time.perf_counter()
        wait_up(server)
        wait_ready(server, timeout=120)
        timings["serve: ready (then)"] = time.perf_counter() - t0
        for pid in _group_pids(proc.pid):  # the server and its workers: no S3 secret, no S3 endpoint
            env = _process_environ(pid)
            assert not [k for k in env if k.startswith("AWS_") or "S3" in k], (pid, sorted(env))

        features = feature_table(clean_sales(bundled_sales, load_config().data).clean)
        row = features[features["sale_date"].astype(str).str.startswith("2015-06")].iloc[0]
        home = home_payload(row)
        home["parcel_id"] = f"e2e-{uuid.uuid4().hex[:8]}"
        answer = server.post("/predict", {"home": home})
        assert answer.status_code == 200, answer.text
        assert answer.json()["price"] > 0
    finally:
        stop_process_group(proc)

    # The logged prediction, read back from PostgreSQL: made by the champion, as the champion.
    query = sa.text("SELECT model_version, model_role, price FROM serving.predictions WHERE parcel_id = :p")
    logged = []
    deadline = time.monotonic() + 30
    while not logged and time.monotonic() < deadline:
        with pg.connect() as conn:
            logged = conn.execute(query, {"p": home["parcel_id"]}).fetchall()
        time.sleep(0.2)
    pg.dispose()
    assert [(r.model_version, r.model_role) for r in logged] == [(str(champion.version), "champion")]
    assert logged[0].price == pytest.approx(answer.json()["price"])
    timings["total after the stores were up"] = time.perf_counter() - started
    print("\n" + "\n".join(f"{name:<34} {seconds:7.1f} s" for name, seconds in timings.items()))


def test_a_code_location_started_outside_the_cli_refuses_a_local_store(tmp_path: Path) -> None:
    """compose or Helm import definitions.py directly: under the production profile a local store fails the
    load, naming it, before any run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOMEPRICE_", "MLFLOW_"))}
    env.update(
        {
            "HOMEPRICE_PROFILE": "production",
            "HOMEPRICE_ENV_FILE": str(tmp_path / "none.env"),
            "HOMEPRICE_HOME": str(tmp_path / "home"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        }
    )
    (tmp_path / "none.env").write_text("")
    done = subprocess.run(
        [sys.executable, "-c", "import homeprice_assets.definitions"],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert done.returncode != 0
    assert "MLFLOW_TRACKING_URI" in done.stderr and "sqlite" in done.stderr
