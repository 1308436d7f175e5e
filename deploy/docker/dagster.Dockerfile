# The homeprice code location, also used for the Dagster webserver and daemon in deploy/compose.
# Build from the repository root:  docker build -f deploy/docker/dagster.Dockerfile -t homeprice-dagster:0.1.0 .
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 DAGSTER_HOME=/opt/dagster/home \
    HOMEPRICE_DAGSTER_STORAGE=/opt/dagster/local HOMEPRICE_HOME=/opt/homeprice \
    BENTOML_DO_NOT_TRACK=true DAGSTER_DISABLE_TELEMETRY=1
WORKDIR /opt/dagster/app

# libgomp1: LightGBM's OpenMP runtime.
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml constraints.txt README.md workspace.yaml dagster.yaml ./
COPY homeprice_assets ./homeprice_assets
COPY homeprice_model ./homeprice_model
COPY bento ./bento
COPY deploy ./deploy
# Editable: the `bento` asset builds bento/bentofile.yaml from the repository root (REPO_ROOT).
# dagster-k8s: the K8sRunLauncher starts each run in a pod of this image (deploy/kubernetes).
RUN pip install -c constraints.txt -e . "dagster-k8s==0.29.27"

# The production instance: runs, events and schedules in PostgreSQL ($HOMEPRICE_DAGSTER_PG_URL).
COPY deploy/postgres/dagster.yaml /opt/dagster/home/dagster.yaml

EXPOSE 4000 3000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "homeprice_assets.definitions", "--location-name", "homeprice"]
