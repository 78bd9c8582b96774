#!/usr/bin/env bash
# A lean MLflow tracking server over a database backend and an artifact store.
#   bash infra/mlflow/server.sh [BACKEND_URI] [ARTIFACT_ROOT] [PORT] [HOST]
# Defaults: the demo's sqlite store and its artifacts beside it (runs/demo/mlartifacts: where training and
# evaluation put the artifacts of a sqlite store, infra/tracking.py), 127.0.0.1:5000.
# Then open http://127.0.0.1:PORT/#/experiments/<id>?workflowType=machine_learning (the runs table).
# For a team: BACKEND_URI=postgresql://user:pw@db:5432/mlflow ARTIFACT_ROOT=s3://bucket/mlflow (see docs/mlflow.md).
set -euo pipefail
BACKEND="${1:-sqlite:///$(pwd)/runs/demo/mlflow.db}"
ARTIFACTS="${2:-$(pwd)/runs/demo/mlartifacts}"
PORT="${3:-5000}"
HOST="${4:-127.0.0.1}"
# One gunicorn worker and no job-execution workers: ~0.5 GB instead of ~3 GB for the default server.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
exec mlflow server --host "$HOST" --port "$PORT" --workers 1 \
  --backend-store-uri "$BACKEND" --default-artifact-root "$ARTIFACTS" --serve-artifacts
