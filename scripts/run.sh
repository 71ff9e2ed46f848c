#!/usr/bin/env bash
# Set up (if needed) and run Siaga 112 on loopback: Asterisk, the screening AGI server and the
# ARI app, SQLite database. Stop with Ctrl-C; Asterisk and the AGI server stop with the app.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
./scripts/setup.sh
export SIAGA112_SITE="${SIAGA112_SITE:-jepara}"
S=.venv/bin/siaga112
$S db upgrade
$S prompts build
$S asterisk start
# Screening by FastAGI (one forked process per call, nothing forked by Asterisk). If it is not
# running, the dialplan runs the screening script as a process of its own instead.
$S agi serve &
AGI_PID=$!
trap 'kill $AGI_PID 2>/dev/null || true; $S asterisk stop' EXIT
$S serve
