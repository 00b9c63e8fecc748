#!/usr/bin/env bash
# Download the wheels of benchmarks/gpu_wheels.txt into .whl/ (ignored by git) for a GPU machine
# without internet (CPython 3.12, x86-64 Linux); there they install with
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:.
# The one-line check on that machine is in benchmarks/gpu_check.py's docstring.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
grep -v '^#' benchmarks/gpu_wheels.txt | grep . | while read -r wheel; do
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$wheel"
done
du -sh .whl
