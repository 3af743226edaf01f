#!/usr/bin/env bash
# Download, here, the wheels segpipe's core needs on the GPU machine (Python 3.12, manylinux x86_64), which has
# torch, torchvision, numpy, tifffile, fsspec and pyarrow but not zarr, dask or distributed, and no network.
# Versions follow constraints.txt (the tested set). scipy: segpipe.models imports it (the baseline backend). Usage: bench/gpu/fetch_wheels.sh [DEST] (default bench/gpu/wheels).
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=${1:-bench/gpu/wheels}
LIMIT_MIB=60
PIP=${PIP:-python -m pip}
# what the GPU machine already has (and their own dependencies): never shipped, so its builds stay in charge
EXCLUDE='^(numpy|fsspec|torch|torchvision|tifffile|pyarrow|nvidia_.*|triton|sympy|mpmath|networkx|filelock|pillow|setuptools)-'

rm -rf "$DEST"
mkdir -p "$DEST"
$PIP download --quiet --disable-pip-version-check \
    --python-version 3.12 --implementation cp --abi cp312 --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    --constraint constraints.txt --dest "$DEST" \
    zarr numcodecs dask distributed pyyaml scipy
for wheel in "$DEST"/*.whl; do
    if [[ "$(basename "$wheel")" =~ $EXCLUDE ]]; then
        rm -f "$wheel"
    fi
done
ls -1 "$DEST"
BYTES=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
MIB=$(( (BYTES + 1048575) / 1048576 ))
echo "wheels: $(ls "$DEST"/*.whl | wc -l) files, ${BYTES} bytes (${MIB} MiB) in $DEST"
if (( MIB > LIMIT_MIB )); then
    echo "error: ${MIB} MiB exceeds the ${LIMIT_MIB} MiB budget" >&2
    exit 1
fi
