"""The deployment files (deploy/) against the schemas and tools that can run here, and against the code.

Nothing here starts a container or a cluster (none exists on this machine or in CI). What is checked: the
Compose file against the Compose specification's schema, the Kubernetes manifests against Kubernetes' own
schemas (strict), the Helm values against the Dagster chart's values schema (a subset kept beside this file),
every command against the real CLI's argument parser, and every variable, image, port and secret against what
the code reads and what the other files define.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path
from urllib.parse import urlparse

import click
import jsonschema
import kubernetes_validate
import pytest
import yaml

from homeprice_assets.config import REPO_ROOT
from homeprice_assets.resources.s3 import parse_store_url
from homeprice_assets_tests.deploy import deployfiles as d

HERE = Path(__file__).resolve().parent
CHART_SCHEMA = HERE / "dagster_chart_values.schema.json"

# Variables with our prefixes that our code does not read but the named library does (checked in its source).
LIBRARY_VARIABLES = {
    "AWS_ACCESS_KEY_ID": "botocore",
    "AWS_SECRET_ACCESS_KEY": "botocore",
    "AWS_DEFAULT_REGION": "botocore",
    "MLFLOW_S3_ENDPOINT_URL": "mlflow",  # the MLflow server's S3 client (artifacts)
    "MLFLOW_BACKEND_STORE_URI": "mlflow",  # `mlflow server --backend-store-uri` default
    "DAGSTER_DISABLE_TELEMETRY": "dagster",
}
# The code location needs these to put every store in its production place.
CODE_LOCATION_NEEDS = (
    "MLFLOW_TRACKING_URI",
    "HOMEPRICE_MLFLOW_ARTIFACTS",
    "HOMEPRICE_LANDING_URL",
    "HOMEPRICE_STORAGE_URL",
    "HOMEPRICE_S3_ENDPOINT_URL",
    "HOMEPRICE_PREDICTION_LOG_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)
SERVICE_NEEDS = ("MLFLOW_TRACKING_URI", "HOMEPRICE_PREDICTION_LOG_URL", "HOMEPRICE_SERVING_MODE")
DAGSTER_SERVICES = ("code-location", "webserver", "daemon", "preflight")


def _constraint(package: str) -> str:
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == package:
            return version.strip()
    raise AssertionError(f"{package} is not pinned in constraints.txt")


def _check_our_variables(where: str, names: set[str]) -> None:
    """Each variable a deployment file sets with one of our prefixes is read by our code or by its library."""
    code = d.variables_read_by_code()
    for name in sorted(n for n in names if n.startswith(d.OUR_PREFIXES)):
        if name in code:
            continue
        library = LIBRARY_VARIABLES.get(name)
        assert library, f"{where} sets {name}, which no code reads (renamed? misspelled?)"
        assert name in d.library_source(library), f"{where} sets {name}, but {library} does not read it"


def _parse_cli(argv: list[str]) -> None:
    """Parse ``argv`` with the real console script's click parser (options, types, choices); run nothing."""
    scripts = {e.name: e for e in entry_points(group="console_scripts")}
    assert argv[0] in scripts, f"{argv[0]} is not a console script installed with the project"
    command = scripts[argv[0]].load()
    if not isinstance(
        command, click.Command
    ):  # dagster, dagster-daemon, dagster-webserver: main() runs `cli`
        command = sys.modules[command.__module__].cli
    args = list(argv[1:])
    while isinstance(command, click.Group) and args and args[0] in command.commands:
        command = command.commands[args.pop(0)]
    assert not isinstance(command, click.Group) or not args, f"{argv}: unknown subcommand"
    command.make_context(argv[0], args)


# ------------------------------------------------------------------------------------------------ parse


def test_every_deployment_file_parses() -> None:
    files = [p for p in d.DEPLOY.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml", ".json")]
    assert len(files) >= 12, files
    for path in files:
        if path.suffix == ".json":
            json.loads(path.read_text())
        else:
            assert d.load_yaml_documents(path), f"{path} is empty"


# ------------------------------------------------------------------------------------------------ compose


def _validate_compose(path: Path) -> subprocess.CompletedProcess:
    tool = Path(sys.executable).with_name("check-jsonschema")
    return subprocess.run(
        [str(tool), "--builtin-schema", "vendor.compose-spec", str(path)], capture_output=True, text=True
    )


def test_compose_file_follows_the_compose_specification(tmp_path: Path) -> None:
    ok = _validate_compose(d.COMPOSE)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # The validator validates: a misspelled key is refused.
    broken = d.compose()
    broken["services"]["bento"]["enviroment"] = {"X": "1"}
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken))
    refused = _validate_compose(tmp_path / "compose.yaml")
    assert refused.returncode != 0 and "enviroment" in refused.stdout + refused.stderr


def test_compose_has_every_component() -> None:
    services = d.compose()["services"]
    assert {"postgres", "minio", "mlflow", "code-location", "webserver", "daemon", "bento"} <= set(services)
    bentofile = yaml.safe_load((REPO_ROOT / "bento" / "bentofile.yaml").read_text())
    assert services["bento"]["image"].split(":")[0] == bentofile["name"], (
        "the Bento's image is named after it"
    )
    for name in DAGSTER_SERVICES:
        assert services[name]["image"] == services["code-location"]["image"]


def test_compose_variables_are_the_ones_the_code_reads() -> None:
    for name in d.compose()["services"]:
        _check_our_variables(f"compose service {name}", set(d.compose_env(name)))
    instance = d.instance_variables()
    assert "HOMEPRICE_DAGSTER_PG_URL" in instance
    for name in DAGSTER_SERVICES:
        env = d.compose_env(name)
        missing = [v for v in (*instance, "DAGSTER_HOME") if v not in env]
        assert not missing, f"compose {name} lacks the Dagster instance's {missing}"
        assert urlparse(env["HOMEPRICE_DAGSTER_PG_URL"]).scheme == "postgresql"
    code = d.compose_env("code-location")
    assert not [v for v in CODE_LOCATION_NEEDS if v not in code], "code location lacks store settings"
    bento = d.compose_env("bento")
    assert not [v for v in SERVICE_NEEDS if v not in bento]


def test_compose_stores_are_in_their_production_places() -> None:
    for env in (d.compose_env("code-location"), d.code_location_env_k8s()):
        assert parse_store_url(env["HOMEPRICE_LANDING_URL"], "HOMEPRICE_LANDING_URL") is not None  # s3://
        assert parse_store_url(env["HOMEPRICE_STORAGE_URL"], "HOMEPRICE_STORAGE_URL") is not None
        # Models go through the MLflow server (proxied artifacts): clients hold no S3 settings for MLflow.
        assert env["HOMEPRICE_MLFLOW_ARTIFACTS"].startswith("mlflow-artifacts:/")
        assert "MLFLOW_S3_ENDPOINT_URL" not in env
        assert urlparse(env["MLFLOW_TRACKING_URI"]).scheme == "http"
        assert urlparse(env["HOMEPRICE_PREDICTION_LOG_URL"]).scheme == "postgresql"
    for env in (d.compose_env("bento"), d.container_env("homeprice-bento")):
        assert urlparse(env["HOMEPRICE_PREDICTION_LOG_URL"]).scheme == "postgresql"
        assert env["HOMEPRICE_SERVING_MODE"] in ("follow", "pinned")
        assert "AWS_SECRET_ACCESS_KEY" not in env, "the service loads models through the MLflow server"


def test_deployments_pass_the_production_profile() -> None:
    """The profile's own validation (homeprice_assets.profiles) accepts what each component is given."""
    from homeprice_assets import profiles

    # In the image, DAGSTER_HOME holds a copy of deploy/postgres/dagster.yaml (see dagster.Dockerfile).
    instance = {"DAGSTER_HOME": str(d.INSTANCE.parent)}
    for service in ("preflight", "code-location"):
        env = d.compose_env(service)
        assert env["HOMEPRICE_PROFILE"] == "production"
        profiles.validate({**env, **instance}, profiles.PIPELINE_STORES)
    for env in (d.compose_env("bento"), d.container_env("homeprice-bento")):
        assert env["HOMEPRICE_PROFILE"] == "production"
        profiles.validate(env, profiles.SERVING_STORES)
    # On Kubernetes the chart writes the instance (its PostgreSQL); the rest comes from the ConfigMap/Secret.
    k8s = d.code_location_env_k8s()
    profiles.validate(k8s, [s for s in profiles.PIPELINE_STORES if s is not profiles.DAGSTER])
    # The validation validates: a local store is refused by name.
    with pytest.raises(profiles.ProfileError, match="HOMEPRICE_STORAGE_URL"):
        profiles.validate({**k8s, "HOMEPRICE_STORAGE_URL": "/tmp/x"}, [profiles.STORAGE])


def test_compose_checks_every_store_before_the_code_location_starts() -> None:
    from homeprice_assets.cli import build_parser, cmd_check

    services = d.compose()["services"]
    argv = d.compose_command("preflight")
    assert argv[0] == "homeprice"
    args = build_parser().parse_args(argv[1:])
    assert args.func is cmd_check and args.profile == "production"
    assert (
        services["code-location"]["depends_on"]["preflight"]["condition"] == "service_completed_successfully"
    )
    waits_for = services["preflight"]["depends_on"]
    assert {"postgres", "minio-init", "mlflow"} <= set(waits_for)
    assert services["preflight"]["image"] == services["code-location"]["image"]


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_mlflow_server_serves_artifacts_from_s3_to_the_hosts_clients_use() -> None:
    services = d.compose()["services"]
    server = d.compose_command("mlflow")
    _parse_cli(server)
    assert _option(server, "--artifacts-destination").startswith("s3://")
    assert urlparse(_option(server, "--backend-store-uri")).scheme == "postgresql"
    assert "--no-serve-artifacts" not in server
    allowed = _option(server, "--allowed-hosts").split(",")
    for client in ("code-location", "bento"):
        uri = urlparse(d.compose_env(client)["MLFLOW_TRACKING_URI"])
        assert uri.hostname == "mlflow" and uri.port == int(_option(server, "--port"))
        assert uri.netloc in allowed, f"MLflow would refuse Host {uri.netloc} (--allowed-hosts {allowed})"
    mlflow_env = d.compose_env("mlflow")
    assert mlflow_env["MLFLOW_S3_ENDPOINT_URL"] == d.compose_env("code-location")["HOMEPRICE_S3_ENDPOINT_URL"]
    dockerfile = (d.DEPLOY / "docker" / "mlflow.Dockerfile").read_text()
    for package in ("mlflow", "psycopg2-binary", "boto3"):
        assert f'"{package}=={_constraint(package)}"' in dockerfile, f"{package} pinned as in constraints.txt"
    assert services["mlflow"]["image"] == f"homeprice-mlflow:{_constraint('mlflow')}"


def test_dagster_commands_parse_and_find_the_code_location() -> None:
    code = d.compose_command("code-location")
    _parse_cli(code)
    workspace = d.load_yaml(d.COMPOSE_WORKSPACE)["load_from"]
    (grpc,) = [entry["grpc_server"] for entry in workspace]
    assert grpc["host"] == "code-location" and grpc["port"] == int(_option(code, "-p"))
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert _option(code, "-m") == pyproject["tool"]["dagster"]["module_name"]
    assert (
        grpc["location_name"]
        == _option(code, "--location-name")
        == pyproject["tool"]["dagster"]["code_location_name"]
    )
    for name in ("webserver", "daemon"):
        argv = d.compose_command(name)
        # The workspace path is the one inside the image (/opt/dagster/app = the repository root).
        assert _option(argv, "-w") == "/opt/dagster/app/deploy/compose/workspace.yaml"
        _parse_cli([*argv[: argv.index("-w")], "-w", str(d.COMPOSE_WORKSPACE)])


def test_dockerfile_copies_every_package_and_runs_the_code_location() -> None:
    dockerfile = (d.DEPLOY / "docker" / "dagster.Dockerfile").read_text()
    copied = {
        src for line in dockerfile.splitlines() if line.startswith("COPY ") for src in line.split()[1:-1]
    }
    for src in copied:
        assert (REPO_ROOT / src).exists(), f"dagster.Dockerfile copies {src}, which does not exist"
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in copied, f"the image lacks the package {pattern}"
    assert "pip install -c constraints.txt -e ." in dockerfile
    assert f'"dagster-k8s=={_constraint("dagster-postgres")}"' in dockerfile, (
        "dagster-k8s as the other libraries"
    )
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    assert cmd == d.compose_command("code-location")
    assert "COPY deploy/postgres/dagster.yaml /opt/dagster/home/dagster.yaml" in dockerfile
    assert "DAGSTER_HOME=/opt/dagster/home" in dockerfile


def test_compose_secrets_come_from_the_env_file() -> None:
    text = d.COMPOSE.read_text()
    used = {m.group(1) for m in d.INTERPOLATION.finditer(text)}
    example = d.env_example()
    assert used == set(example), f"compose uses {sorted(used)}, env.example defines {sorted(example)}"
    for key, value in example.items():
        assert value in ("", "latest") or value.startswith("change-me"), (
            f"env.example: {key} is a real value?"
        )
    # The secrets are required (the `:?` form): compose refuses to start without them.
    for secret in ("POSTGRES_PASSWORD", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "GRAFANA_ADMIN_PASSWORD"):
        assert f"${{{secret}:?" in text
    assert ".env" in (d.DEPLOY / "compose" / ".gitignore").read_text().split()


def test_postgres_has_a_database_per_store() -> None:
    sql = (d.DEPLOY / "compose" / "postgres-init.sql").read_text()
    databases = set(re.findall(r"CREATE DATABASE (\w+);", sql))
    urls = [
        d.compose_env("code-location")["HOMEPRICE_DAGSTER_PG_URL"],
        d.compose_env("code-location")["HOMEPRICE_PREDICTION_LOG_URL"],
        _option(d.compose_command("mlflow"), "--backend-store-uri"),
    ]
    named = {urlparse(u).path.strip("/") for u in urls}
    assert named == databases and len(named) == 3


# --------------------------------------------------------------------------------------------- kubernetes


def test_kubernetes_manifests_validate_against_kubernetes_schemas() -> None:
    version = kubernetes_validate.utils.latest_version()
    objects = d.k8s_objects()
    assert {o["kind"] for o in objects} == {"ConfigMap", "Secret", "Deployment", "Service"}
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
    broken = copy.deepcopy(d.k8s_object("Deployment", "homeprice-bento"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_kubernetes_services_select_their_pods_and_ports() -> None:
    for name in ("homeprice-mlflow", "homeprice-bento"):
        deployment, service = d.k8s_object("Deployment", name), d.k8s_object("Service", name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        port_names = {p["name"] for p in d.container(name)["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    bento_port = d.container("homeprice-bento")["ports"][0]["containerPort"]
    import bentoml

    config = (
        Path(bentoml.__file__).parent / "_internal" / "configuration" / "v2" / "default_configuration.yaml"
    )
    default = yaml.safe_load(config.read_text())
    assert bento_port == default["services"]["http"]["port"], "the Bento serves on BentoML's default port"
    annotations = d.k8s_object("Deployment", "homeprice-bento")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(bento_port)
    probes = d.container("homeprice-bento")
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/livez"


def test_kubernetes_variables_and_secrets() -> None:
    for name in ("homeprice-env",):
        _check_our_variables(f"ConfigMap {name}", set(d.k8s_data("ConfigMap", name)))
    _check_our_variables("Secret homeprice-secrets", set(d.k8s_data("Secret", "homeprice-secrets")))
    for name in ("homeprice-mlflow", "homeprice-bento"):
        _check_our_variables(f"Deployment {name}", set(d.container_env(name)))  # also resolves every ref
    code = d.code_location_env_k8s()
    assert not [v for v in CODE_LOCATION_NEEDS if v not in code]
    assert not [v for v in SERVICE_NEEDS if v not in d.container_env("homeprice-bento")]
    for kind, name in (("Secret", "homeprice-secrets"), ("Secret", "homeprice-mlflow-db")):
        for key, value in d.k8s_data(kind, name).items():
            assert value == "" or "change-me" in value, f"{name}.{key} looks like a real secret"
    # MLflow: the tracking URI the clients use names the server's Service, port and an allowed host.
    server = [str(a) for a in d.container("homeprice-mlflow")["command"]]
    _parse_cli(server)
    uri = urlparse(d.k8s_data("ConfigMap", "homeprice-env")["MLFLOW_TRACKING_URI"])
    service = d.k8s_object("Service", "homeprice-mlflow")
    assert uri.hostname == service["metadata"]["name"]
    assert uri.port == service["spec"]["ports"][0]["port"] == int(_option(server, "--port"))
    assert uri.netloc in _option(server, "--allowed-hosts").split(",")
    assert _option(server, "--artifacts-destination").startswith("s3://")
    env = d.container_env("homeprice-mlflow")
    assert urlparse(env["MLFLOW_BACKEND_STORE_URI"]).scheme == "postgresql"
    assert d.compose()["services"]["mlflow"]["image"] == d.container("homeprice-mlflow")["image"]
    assert d.container("homeprice-bento")["image"].split(":")[0] == "homeprice"


def test_helm_values_validate_against_the_dagster_chart_schema() -> None:
    schema = json.loads(CHART_SCHEMA.read_text())
    values = d.load_yaml(d.HELM_VALUES)
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(values)]
    assert not errors, errors
    for path, bad in (
        (("runLauncher", "config", "k8sRunLauncher"), {"envSecret": []}),  # misspelled key
        (("runLauncher",), {"type": "K8SRunLauncher"}),  # not one of the chart's launchers
        (("dagster-user-deployments",), {"deployments": [{"name": "x", "port": 4000}]}),  # no image
    ):
        broken = copy.deepcopy(values)
        node = broken
        for key in path:
            node = node[key]
        node.update(bad)
        assert list(validator.iter_errors(broken)), f"the schema accepted {path}: {bad}"


def test_helm_values_run_homeprice_with_k8s_run_launcher() -> None:
    values = d.load_yaml(d.HELM_VALUES)
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    compose_image = d.compose()["services"]["code-location"]["image"]
    assert f"{deployment['image']['repository']}:{deployment['image']['tag']}" == compose_image
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    args = deployment["dagsterApiGrpcArgs"]
    assert args[args.index("-m") + 1] == pyproject["tool"]["dagster"]["module_name"]
    _parse_cli(["dagster", "api", "grpc", *args, "-p", str(deployment["port"])])
    # The chart's instance uses the secret named here (key postgresql-password) and an external database.
    secret = d.k8s_data("Secret", values["global"]["postgresqlSecretName"])
    assert "postgresql-password" in secret
    assert values["postgresql"]["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    for key, kind in (("envConfigMaps", "ConfigMap"), ("envSecrets", "Secret")):
        for ref in [*deployment[key], *launcher[key]]:
            d.k8s_object(kind, ref["name"])  # defined in deploy/kubernetes
    # The run queue matches the production instance file (deploy/postgres/dagster.yaml).
    instance = d.load_yaml(d.INSTANCE)["run_coordinator"]["config"]
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queued["maxConcurrentRuns"] == instance["max_concurrent_runs"]
    assert queued.get("tagConcurrencyLimits", []) == instance.get("tag_concurrency_limits", [])


def test_a_renamed_variable_is_caught(tmp_path: Path) -> None:
    """The variable list comes from the code: a name the code stopped reading is refused."""
    with pytest.raises(AssertionError, match="HOMEPRICE_LANDING_URI"):
        _check_our_variables("example", {"HOMEPRICE_LANDING_URI"})
    with pytest.raises(AssertionError, match="MLFLOW_S3_ENDPOINT"):
        _check_our_variables("example", {"MLFLOW_S3_ENDPOINT"})
    _check_our_variables("example", {"HOMEPRICE_LANDING_URL", "MLFLOW_S3_ENDPOINT_URL", "POSTGRES_PASSWORD"})


def test_cli_parser_refuses_a_wrong_option() -> None:
    with pytest.raises(click.UsageError):
        _parse_cli(["mlflow", "server", "--artifact-destination", "s3://x"])
    with pytest.raises(click.UsageError):
        _parse_cli(shlex.split("dagster code-server start --prot 4000"))
