#!/usr/bin/env bash
# Install segpipe with its dev extras into ./.venv (pinned by constraints.txt), lint, type-check, run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export DASK_CONFIG="$PWD/infra/dask" PREFECT_PROFILES_PATH="$PWD/infra/prefect/profiles.toml"
INSTALL_EXTRAS="dev" source scripts/install.sh
ruff check segpipe flows tests scripts bench
mypy segpipe flows
exec pytest -p no:cacheprovider "$@"
