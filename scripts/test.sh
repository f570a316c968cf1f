#!/usr/bin/env bash
# The test command of the README: set up .venv on a fresh machine, install, run the whole suite.
#
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -m "not slow" tests/functional   # any pytest arguments pass through
#
# torch is installed first, pinned to the CPU build, because a bare `torch` requirement on a
# machine without torch would pull several GB of CUDA packages. Set MASKWISE_TORCH to install
# another torch spec (e.g. "torch" on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install --quiet --disable-pip-version-check "${MASKWISE_TORCH:-torch==2.13.0}"
python -m pip install --quiet --disable-pip-version-check -e ".[test,hf,plot,lightning,experiments]"
python -m pytest "$@"
