#!/usr/bin/env bash
# Set up (if needed) and run Siaga 112 on loopback: Asterisk, the screening AGI server and the
# ARI app, SQLite database, supervised (`siaga112 supervise`, the same shape as the systemd
# units in systemd/): an app crash never stops Asterisk, and the app is back within seconds.
# Stop with Ctrl-C (or SIGTERM): the app, the AGI server and then Asterisk stop.
# Ports and state come from the usual variables (SIAGA112_SIP_PORT, SIAGA112_HTTP_PORT,
# SIAGA112_WEB_PORT, SIAGA112_FASTAGI_PORT, SIAGA112_VAR, ...); SIAGA112_SKIP_SETUP=1 skips
# setup.sh when it has just run (the tests).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ "${SIAGA112_SKIP_SETUP:-0}" != "1" ]; then ./scripts/setup.sh; fi
export SIAGA112_SITE="${SIAGA112_SITE:-jepara}"
S=.venv/bin/siaga112
$S db upgrade
$S prompts build
exec $S supervise
