#!/usr/bin/env bash
# Set up (if needed) and run every check: ruff, mypy, and the whole test suite
# (unit, integration with a real Asterisk and SIPp, end-to-end with a real browser).
# Set SIAGA112_TEST_POSTGRES_URL to run every database test on PostgreSQL too.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
./scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/pytest -p no:cacheprovider -n "${SIAGA112_TEST_WORKERS:-2}" "$@"
