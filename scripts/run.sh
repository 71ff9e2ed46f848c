#!/usr/bin/env bash
# Set up (if needed) and run Siaga 112 on loopback: Asterisk + the ARI app, SQLite database.
# Stop with Ctrl-C; Asterisk is stopped with the app.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
./scripts/setup.sh
export SIAGA112_SITE="${SIAGA112_SITE:-jepara}"
S=.venv/bin/siaga112
$S db upgrade
$S prompts build
$S asterisk start
trap '$S asterisk stop' EXIT
$S serve
