#!/usr/bin/env bash
# Install segpipe into ./.venv (pinned by constraints.txt) and run the demo. Extra arguments go to `segpipe demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
export DASK_CONFIG="$PWD/infra/dask" PREFECT_PROFILES_PATH="$PWD/infra/prefect/profiles.toml"
INSTALL_EXTRAS="" source scripts/install.sh
exec segpipe demo "$@"
