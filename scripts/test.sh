#!/usr/bin/env bash
# Install segpipe with its dev extras into ./.venv (pinned by constraints.txt) and, as root, chromium; lint,
# type-check, run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export DASK_CONFIG="$PWD/infra/dask" PREFECT_PROFILES_PATH="$PWD/infra/prefect/profiles.toml"
INSTALL_EXTRAS="dev" source scripts/install.sh
# bioimageio.core in its own venv (.venv-oracle): the oracle segpipe's bioimage.io predictions are tested against.
bash scripts/oracle_env.sh
# The report page's test opens it in a real headless browser: Debian's chromium, installed when missing and root.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
  && [ "${SEGPIPE_SYSTEM_PACKAGES:-1}" = 1 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
    || echo "scripts/test.sh: chromium could not be installed; the report page test will be skipped" >&2
fi
ruff check segpipe flows tests scripts bench
mypy segpipe flows
exec pytest -p no:cacheprovider "$@"
