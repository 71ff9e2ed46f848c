#!/usr/bin/env bash
# Long fuzz run (nightly): the CI fuzz targets (tests/unit/test_fuzz_inputs.py) at 20x their
# budget, i.e. 200,000+ cases, on a fresh random seed each run (not derandomised).
# SIAGA112_FUZZ_SCALE=N scales further; SIAGA112_FUZZ_RANDOM=0 replays the CI (fixed) search.
# A failure prints the failing input and a @reproduce_failure blob to replay it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export SIAGA112_FUZZ_SCALE="${SIAGA112_FUZZ_SCALE:-20}"
export SIAGA112_FUZZ_RANDOM="${SIAGA112_FUZZ_RANDOM:-1}"
echo "fuzz: scale ${SIAGA112_FUZZ_SCALE} ($((SIAGA112_FUZZ_SCALE * 10000)) cases), random=${SIAGA112_FUZZ_RANDOM}"
exec .venv/bin/pytest -p no:cacheprovider -q --durations=0 tests/unit/test_fuzz_inputs.py "$@"
