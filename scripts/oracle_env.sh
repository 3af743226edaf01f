#!/usr/bin/env bash
# Make .venv-oracle: bioimageio.core in its own environment (its pins clash with segpipe's), pinned by
# infra/oracle/requirements.txt, for the test that compares segpipe's predictions with bioimageio.core's.
# Rebuilt only when the requirements change.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-oracle
stamp="$venv/requirements.sha256"
want=$(sha256sum infra/oracle/requirements.txt | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
rm -rf "$venv"
python3.11 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r infra/oracle/requirements.txt 2>&1 \
  | { grep -v "^WARNING: Location" || true; } >&2
echo "$want" > "$stamp"
