#!/usr/bin/env bash
# Start a worker for the segpipe-process pool (SEGPIPE_WORK_POOL): it polls the server and runs each flow run as
# a subprocess in this checkout (the deployment's pull step changes into it). Runs in the foreground; extra
# arguments go to `prefect worker start` (e.g. --limit 1, or --run-once to take what is due and exit).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$SEGPIPE_REPO"
exec prefect worker start --pool "$SEGPIPE_WORK_POOL" --type process "$@"
