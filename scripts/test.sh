#!/usr/bin/env bash
# Set up (if needed) and run every check: ruff, mypy, and the whole test suite
# (unit, integration with a real Asterisk and SIPp, end-to-end with a real browser).
# Set SIAGA112_TEST_POSTGRES_URL to run every database test on PostgreSQL too.
# SIAGA112_ASTERISK picks the Asterisk the tests start: 22 (default, the private root setup
# builds) or 16 (Debian 11's package); SIAGA112_ASTERISK_BIN runs them on your own 20/22.
# Arguments go to pytest (e.g. `./scripts/test.sh tests/integration tests/e2e`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
./scripts/setup.sh
echo "test: Asterisk for this run: $(.venv/bin/python -m ari_app.pbx.installation)"
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/pytest -p no:cacheprovider -n "${SIAGA112_TEST_WORKERS:-2}" --durations=15 -rfE "$@"
