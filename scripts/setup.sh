#!/usr/bin/env bash
# Siaga 112 setup: installs only what is missing. Idempotent; quick when all is there.
#   - Asterisk (Debian package; on Debian 12 from the Debian 11 archive with a low apt pin)
#   - sip-tester (SIPp), espeak-ng, sox, chromium (console tests)
#   - a venv (.venv) with the Python dependencies
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need_pkgs=()
command -v asterisk >/dev/null 2>&1 || need_pkgs+=(asterisk asterisk-modules)
[ -e /usr/lib/x86_64-linux-gnu/asterisk/modules/res_ari.so ] || [ -e /usr/lib/asterisk/modules/res_ari.so ] \
  || need_pkgs+=(asterisk-modules)
command -v sipp >/dev/null 2>&1 || need_pkgs+=(sip-tester)
command -v espeak-ng >/dev/null 2>&1 || need_pkgs+=(espeak-ng)
command -v sox >/dev/null 2>&1 || need_pkgs+=(sox)
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
command -v baresip >/dev/null 2>&1 || need_pkgs+=(baresip-core)   # real softphone: TLS + SRTP tests
command -v kamailio >/dev/null 2>&1 || need_pkgs+=(kamailio)         # the SIP edge for several nodes (tests/integration/test_edge_kamailio.py)

add_bullseye() {
  # Debian 12 ships no asterisk: take it from Debian 11 with a low pin so nothing else moves.
  local list=/etc/apt/sources.list.d/siaga112-bullseye.sources
  [ -e "$list" ] && return 0
  local uri
  # Reuse the mirror this machine already uses for its main archive.
  uri="$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1 | awk '{print $2}')"
  if [ -z "$uri" ]; then
    uri="$(grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | grep -v security | head -n1 | awk '{print $2}')"
  fi
  [ -n "$uri" ] || { echo "setup: cannot find the Debian mirror in /etc/apt" >&2; exit 1; }
  $SUDO tee "$list" >/dev/null <<SRC
Types: deb
URIs: $uri
Suites: bullseye
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  $SUDO tee /etc/apt/preferences.d/siaga112-bullseye >/dev/null <<PIN
Package: *
Pin: release n=bullseye
Pin-Priority: 100
PIN
}

if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup: installing ${need_pkgs[*]}"
  . /etc/os-release
  if [ "${VERSION_CODENAME:-}" = "bookworm" ] && [[ " ${need_pkgs[*]} " == *" asterisk"* ]]; then
    add_bullseye
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
  # The package starts a system Asterisk; ours runs privately under var/. Stop the system one.
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now asterisk >/dev/null 2>&1 || true; fi
  $SUDO service asterisk stop >/dev/null 2>&1 || true
  pkill -x asterisk >/dev/null 2>&1 || true
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.siaga112-installed
if [ ! -e "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements.lock -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.lock
  .venv/bin/pip install -q --no-deps -e .
  touch "$stamp"
fi
./scripts/vendor.sh   # Leaflet from npm into the console's static dir (issue 19)
.venv/bin/siaga112 security status || echo "setup: fix the line marked MISSING above before agencies rely on their links"
echo "setup: ready"
