#!/usr/bin/env bash
# Create (or reset) the process work pool segpipe's deployments run in: `segpipe-process` (SEGPIPE_WORK_POOL),
# type process, so each flow run is a subprocess of a worker on this machine. Needs the server (server.sh).
set -euo pipefail
source "$(dirname "$0")/env.sh"
exec prefect work-pool create "$SEGPIPE_WORK_POOL" --type process --overwrite "$@"
