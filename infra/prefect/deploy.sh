#!/usr/bin/env bash
# Register the deployments in prefect.yaml (the repository root) with the server: all of them by default, or
# what the arguments say, e.g.  deploy.sh -n segment-nightly --param input=s3://bucket/in/ --param out=s3://bucket/out
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$SEGPIPE_REPO"
if [ "$#" -eq 0 ]; then set -- --all; fi
exec prefect deploy "$@"
