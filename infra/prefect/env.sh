# Sourced by the scripts here: one place for where segpipe's long-lived Prefect server keeps its state and how
# clients find it. Every value can be set before calling a script.
SEGPIPE_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export SEGPIPE_REPO
# Profiles as scripts/test.sh and demo.sh use them; the server, worker and deploy scripts use segpipe-server.
export PREFECT_PROFILES_PATH="${PREFECT_PROFILES_PATH:-$SEGPIPE_REPO/infra/prefect/profiles.toml}"
export PREFECT_PROFILE="${PREFECT_PROFILE:-segpipe-server}"
export PREFECT_SERVER_HOST="${PREFECT_SERVER_HOST:-127.0.0.1}" PREFECT_SERVER_PORT="${PREFECT_SERVER_PORT:-4200}"
export PREFECT_API_URL="${PREFECT_API_URL:-http://$PREFECT_SERVER_HOST:$PREFECT_SERVER_PORT/api}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export DASK_CONFIG="${DASK_CONFIG:-$SEGPIPE_REPO/infra/dask}"
export SEGPIPE_WORK_POOL="${SEGPIPE_WORK_POOL:-segpipe-process}"
# The repository's virtualenv (scripts/install.sh) when `prefect` is not on PATH already.
if ! command -v prefect >/dev/null 2>&1 && [ -x "$SEGPIPE_REPO/.venv/bin/prefect" ]; then
  export PATH="$SEGPIPE_REPO/.venv/bin:$PATH"
fi
