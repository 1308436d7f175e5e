# The MLflow tracking server: backend store on PostgreSQL, artifacts on S3 (MinIO) served through the server.
# Build:  docker build -f deploy/docker/mlflow.Dockerfile -t homeprice-mlflow:3.17.2 deploy/docker
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
# The same pins as the project (constraints.txt): clients and server speak the same MLflow.
RUN pip install "mlflow==3.17.2" "psycopg2-binary==2.9.13" "boto3==1.44.5"

EXPOSE 5000
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
