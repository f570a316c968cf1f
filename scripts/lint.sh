#!/usr/bin/env bash
# Lint and type checks, as CI runs them: ruff (rules and formatting) over the code, mypy over the
# package. Uses the .venv that scripts/test.sh sets up (created here if missing); the tool
# versions are pinned so that a new release cannot turn CI red on unchanged code.
#
#   bash scripts/lint.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "${MASKWISE_TORCH:-torch==2.13.0}"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test,hf,plot,lightning,experiments]"
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install --quiet --disable-pip-version-check "ruff==0.17.6" "mypy==2.4.1"
ruff check src tests benchmarks scripts
ruff format --check src tests benchmarks scripts
mypy src
echo "lint: ruff and mypy passed"
