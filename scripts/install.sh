# Sourced by demo.sh and test.sh: create ./.venv if needed and install segpipe (plus the extras in $INSTALL_EXTRAS).
VENV="${SEGPIPE_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
extras="${INSTALL_EXTRAS:+[$INSTALL_EXTRAS]}"
python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".${extras}"
