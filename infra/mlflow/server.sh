#!/usr/bin/env bash
# Start an MLflow tracking server on localhost:5000 over the same kind of sqlite store the demo uses.
#   bash infra/mlflow/server.sh [STORE_DIR]        (default ./mlflow-server)
# then: segpipe run ... --tracking-uri http://127.0.0.1:5000   (or export MLFLOW_TRACKING_URI)
# Binds to 127.0.0.1 unless MLFLOW_HOST says otherwise; artifacts are proxied through the server.
# MLFLOW_PORT (5000) and MLFLOW_WORKERS (2) are the other settings. The team's server: docker-compose.yaml here.
set -euo pipefail
store="${1:-mlflow-server}"
mkdir -p "$store/artifacts"
exec mlflow server \
  --host "${MLFLOW_HOST:-127.0.0.1}" --port "${MLFLOW_PORT:-5000}" --workers "${MLFLOW_WORKERS:-2}" \
  --backend-store-uri "sqlite:///$(cd "$store" && pwd)/mlflow.db" \
  --artifacts-destination "$(cd "$store" && pwd)/artifacts"
