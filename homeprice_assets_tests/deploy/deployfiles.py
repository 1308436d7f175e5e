"""Read the deployment files under deploy/ and what the code reads, for the tests beside this file.

The deployment files cannot run here (no container engine, no cluster): the tests check them against the real
schemas and tools that can run (the Compose spec, Kubernetes' schemas, the Dagster chart's values schema,
the CLIs' own argument parsers) and against the code: every variable, image, port and secret they name.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from homeprice_assets.config import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
COMPOSE_ENV_EXAMPLE = DEPLOY / "compose" / "env.example"
COMPOSE_WORKSPACE = DEPLOY / "compose" / "workspace.yaml"
INSTANCE = DEPLOY / "postgres" / "dagster.yaml"
K8S = DEPLOY / "kubernetes"
HELM_VALUES = K8S / "dagster-values.yaml"
K8S_MANIFESTS = [
    K8S / "homeprice-env.yaml",
    K8S / "secrets.example.yaml",
    K8S / "mlflow.yaml",
    K8S / "bento.yaml",
]
PROMETHEUS = DEPLOY / "observability" / "prometheus.yml"
DASHBOARD = DEPLOY / "observability" / "grafana" / "dashboards" / "homeprice.json"
GRAFANA_DATASOURCES = (
    DEPLOY / "observability" / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
)
SERVICE = REPO_ROOT / "bento" / "service.py"

# Prefixes of the variables our code or our stack reads: a deployment file naming one must name a real one.
OUR_PREFIXES = ("HOMEPRICE_", "MLFLOW_", "DAGSTER_", "BENTOML_", "AWS_")
_LITERAL = re.compile(r"""["']((?:HOMEPRICE|MLFLOW|DAGSTER|BENTOML|AWS)_[A-Z0-9_]+)["']""")


def load_yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def load_yaml(path: Path) -> Any:
    (doc,) = load_yaml_documents(path)
    return doc


@cache
def variables_read_by_code() -> frozenset[str]:
    """Every variable name our code spells out (``os.environ.get("X")``, ``EnvVar("X")``, ``X_ENV = "X"``)
    and the ``env:`` names of the Dagster instance file: from the code, so a renamed variable fails tests."""
    sources = [*(REPO_ROOT / "homeprice_assets").rglob("*.py"), *(REPO_ROOT / "bento").glob("*.py")]
    names = {m for path in sources for m in _LITERAL.findall(path.read_text())}
    names |= set(instance_variables())
    return frozenset(names)


def instance_variables() -> list[str]:
    """The variables deploy/postgres/dagster.yaml takes its settings from (``{env: NAME}``)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if set(node) == {"env"} and isinstance(node["env"], str):
                found.append(node["env"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(load_yaml(INSTANCE))
    return sorted(set(found))


@cache
def library_source(package: str) -> str:
    """All of an installed package's Python source, to check that a variable we set is one it reads."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"{package} is not installed"
    root = Path(next(iter(spec.submodule_search_locations)))
    return "\n".join(p.read_text(errors="replace") for p in root.rglob("*.py"))


def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: object) -> str:
    """A compose value with ``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}`` filled from env.example."""
    example = env_example()

    def fill(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        value = example.get(name, "")
        if not value and op.endswith("-"):
            return arg
        assert value or not op.endswith("?"), f"compose requires {name}: {arg}"
        return value

    return INTERPOLATION.sub(fill, str(value))


def compose_env(service: str) -> dict[str, str]:
    """A compose service's variables, interpolated as compose would with env.example as the .env file."""
    env = compose()["services"][service].get("environment") or {}
    assert isinstance(env, dict), f"compose service {service}: write environment as a mapping"
    return {k: "" if v is None else interpolate(v) for k, v in env.items()}


def compose_command(service: str) -> list[str]:
    return [interpolate(a) for a in compose()["services"][service]["command"]]


def env_example() -> dict[str, str]:
    out = {}
    for line in COMPOSE_ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in K8S_MANIFESTS for doc in load_yaml_documents(path)]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name} in {[p.name for p in K8S_MANIFESTS]}"
    return matches[0]


def k8s_data(kind: str, name: str) -> dict[str, str]:
    """A ConfigMap's ``data`` or a Secret's ``stringData``."""
    obj = k8s_object(kind, name)
    return dict(obj.get("data") or obj.get("stringData") or {})


def container(deployment: str) -> dict[str, Any]:
    (c,) = k8s_object("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return c


def container_env(deployment: str) -> dict[str, str]:
    """A container's variables, ``valueFrom`` references resolved against the example ConfigMap/Secrets."""
    out = {}
    for item in container(deployment).get("env", []):
        ref = item.get("valueFrom")
        if ref is None:
            out[item["name"]] = str(item["value"])
            continue
        (kind_key, selector), *_ = ref.items()
        kind = {"configMapKeyRef": "ConfigMap", "secretKeyRef": "Secret"}[kind_key]
        data = k8s_data(kind, selector["name"])
        assert selector["key"] in data, (
            f"{deployment}: {kind} {selector['name']} has no key {selector['key']}"
        )
        out[item["name"]] = data[selector["key"]]
    return out


def code_location_env_k8s() -> dict[str, str]:
    """What the user code deployment (and each run pod) sees: its envConfigMaps and envSecrets."""
    (deployment,) = load_yaml(HELM_VALUES)["dagster-user-deployments"]["deployments"]
    out: dict[str, str] = dict(deployment.get("env") or {})
    for ref in deployment.get("envConfigMaps", []):
        out.update(k8s_data("ConfigMap", ref["name"]))
    for ref in deployment.get("envSecrets", []):
        out.update(k8s_data("Secret", ref["name"]))
    return out


def service_metric_names() -> set[str]:
    """The metrics bento/service.py declares (``bentoml.metrics.X(name="...")``)."""
    return set(re.findall(r"""name\s*=\s*["']((?:homeprice)_[a-z0-9_]+)["']""", SERVICE.read_text()))


def bentoml_metric_names() -> set[str]:
    """BentoML's own HTTP metrics (namespace ``bentoml_service``), checked in its source."""
    names = {"request_total", "request_duration_seconds", "request_in_progress"}
    source = library_source("bentoml")
    missing = [n for n in names if f'name="{n}"' not in source]
    assert not missing, f"BentoML no longer defines the metrics {missing}"
    return {f"bentoml_service_{n}" for n in names}


def promql_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression: our metrics and BentoML's carry a prefix no label or function
    has; label matchers are dropped first and histogram suffixes folded into the histogram's name."""
    text = re.sub(r"\{[^}]*\}", " ", expr)
    words = re.findall(r"\b(?:homeprice|bentoml)_[a-zA-Z0-9_]*", text)
    return {re.sub(r"_(bucket|sum|count)$", "", w) for w in words}


def dashboard_exprs() -> list[str]:
    import json

    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
