-- One PostgreSQL server, one database per store (run once, on the first start of an empty volume).
CREATE DATABASE dagster;     -- Dagster runs, events, schedules (deploy/postgres/dagster.yaml)
CREATE DATABASE mlflow;      -- MLflow tracking and registry backend
CREATE DATABASE homeprice;   -- the prediction log (and ground truth)
