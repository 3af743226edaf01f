#!/usr/bin/env bash
# Start segpipe's long-lived Prefect server (API and UI) on 127.0.0.1:4200, its database (SQLite) in its own
# PREFECT_HOME: ${SEGPIPE_PREFECT_HOME:-${SEGPIPE_HOME:-~/.local/share/segpipe}/prefect-server}, apart from the
# ~/.prefect that Prefect's ephemeral mode (the default profile, segpipe-local) uses. Runs in the foreground.
# Clients reach it with PREFECT_PROFILE=segpipe-server (infra/prefect/profiles.toml) or PREFECT_API_URL.
# Host and port: PREFECT_SERVER_HOST, PREFECT_SERVER_PORT (then set PREFECT_API_URL for clients to match).
set -euo pipefail
source "$(dirname "$0")/env.sh"
data="${SEGPIPE_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/segpipe}"
export PREFECT_HOME="${SEGPIPE_PREFECT_HOME:-$data/prefect-server}"
mkdir -p "$PREFECT_HOME"
echo "segpipe: Prefect server on $PREFECT_API_URL, state in $PREFECT_HOME" >&2
exec prefect server start --host "$PREFECT_SERVER_HOST" --port "$PREFECT_SERVER_PORT" "$@"
