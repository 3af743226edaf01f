#!/usr/bin/env bash
# Start a Prefect server on localhost:4200 (UI and API), state in ${PREFECT_HOME:-~/.prefect}.
# Use it with: PREFECT_PROFILES_PATH=infra/prefect/profiles.toml PREFECT_PROFILE=segpipe-server segpipe run ...
set -euo pipefail
exec prefect server start --host "${PREFECT_SERVER_HOST:-127.0.0.1}" --port "${PREFECT_SERVER_PORT:-4200}"
