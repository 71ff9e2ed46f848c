#!/usr/bin/env bash
# Siaga 112 setup: installs only what is missing. Idempotent; quick when all is there.
#   - Asterisk, chosen by SIAGA112_ASTERISK (README, "Which Asterisk"):
#       22 (default): Debian unstable's asterisk + asterisk-modules, at the version pinned in
#          scripts/asterisk-22.pin, in a private root (/opt/siaga112/asterisk-<version>) built
#          by mmdebstrap from this machine's Debian mirror. No system package, library or
#          service changes: the root is only a directory; our Asterisk runs from it through the
#          root's own loader (see ari_app/pbx/installation.py for why not a chroot).
#       16: Debian 11's asterisk package (on Debian 12 from the Debian 11 archive, low apt pin).
#       SIAGA112_ASTERISK_BIN (or _ROOT) set: the admin's own Asterisk 20/22 (or private root);
#          nothing is installed for it.
#   - sip-tester (SIPp), espeak-ng, sox, chromium (console tests); and SIPp 3.8 built with TLS
#     (scripts/sipp-tls.pin) in a private root like Asterisk 22's, for the `-t l1` tests
#   - a venv (.venv) with the Python dependencies
# It says what it will install before it does. It never stops, disables or reconfigures an
# Asterisk (or any other service) it did not start: ours runs privately under var/, with its own
# config and the site's ports.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/asterisk-22.pin
. scripts/asterisk-22.pin
# shellcheck source=scripts/sipp-tls.pin
. scripts/sipp-tls.pin

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
CHOICE="${SIAGA112_ASTERISK:-22}"

mirror() {
  # The mirror this machine already uses for its main Debian archive (a .../debian URI, not
  # the security archive nor a third-party repository).
  local uri
  uri="$( { grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
            grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}'; } \
          | grep -E '/debian/?$' | head -n1)"
  [ -n "$uri" ] || { echo "setup: cannot find the Debian mirror in /etc/apt" >&2; exit 1; }
  echo "$uri"
}

root_asterisk() {  # run the private root's asterisk through the root's own loader
  local r="$1"; shift
  "$r/lib64/ld-linux-x86-64.so.2" --library-path "$r/lib/x86_64-linux-gnu:$r/usr/lib/x86_64-linux-gnu" \
    "$r/usr/sbin/asterisk" "$@"
}

root_ready() {  # the root exists, is complete (stamp written last) and at the pinned version
  [ -e "$ASTERISK_22_ROOT/.siaga112-root" ] && [ "$(cat "$ASTERISK_22_ROOT/.siaga112-root")" = "$ASTERISK_22_PACKAGE" ]
}

sipp_root_ready() {  # the TLS-capable SIPp's root, complete and at its pinned version
  [ -e "$SIPP_TLS_ROOT/.siaga112-root" ] && [ "$(cat "$SIPP_TLS_ROOT/.siaga112-root")" = "$SIPP_TLS_PACKAGE" ]
}

need_pkgs=()
build_root=no
if ! sipp_root_ready; then
  command -v mmdebstrap >/dev/null 2>&1 || need_pkgs+=(mmdebstrap)
fi
case "$CHOICE" in
  22)
    if [ -n "${SIAGA112_ASTERISK_BIN:-}" ] || [ -n "${SIAGA112_ASTERISK_ROOT:-}" ]; then
      :  # the admin's own Asterisk, or a root of their own
    elif ! root_ready; then
      build_root=yes
      command -v mmdebstrap >/dev/null 2>&1 || need_pkgs+=(mmdebstrap)
    fi ;;
  16)
    if [ -z "${SIAGA112_ASTERISK_BIN:-}" ]; then
      [ -x /usr/sbin/asterisk ] || need_pkgs+=(asterisk)
      [ -e /usr/lib/x86_64-linux-gnu/asterisk/modules/res_ari.so ] || [ -e /usr/lib/asterisk/modules/res_ari.so ] \
        || need_pkgs+=(asterisk-modules)
    fi ;;
  *) echo "setup: SIAGA112_ASTERISK=$CHOICE: expected 22 (default) or 16; for your own Asterisk set SIAGA112_ASTERISK_BIN" >&2
     exit 2 ;;
esac
command -v sipp >/dev/null 2>&1 || need_pkgs+=(sip-tester)
command -v espeak-ng >/dev/null 2>&1 || need_pkgs+=(espeak-ng)
command -v sox >/dev/null 2>&1 || need_pkgs+=(sox)
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
command -v baresip >/dev/null 2>&1 || need_pkgs+=(baresip-core)   # real softphone: TLS + SRTP tests
command -v kamailio >/dev/null 2>&1 || need_pkgs+=(kamailio)         # the SIP edge for several nodes (tests/integration/test_edge_kamailio.py)

# Say what will happen before it happens.
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup: will install Debian packages: ${need_pkgs[*]}"
  if [[ " ${need_pkgs[*]} " == *" asterisk"* ]]; then
    echo "setup:   (Asterisk 16 from Debian 11. If the package starts its own system service, setup"
    echo "setup:    leaves it alone; ours runs separately with its own config and the site's ports.)"
  fi
fi
if [ "$build_root" = yes ]; then
  echo "setup: will build a private root with asterisk=$ASTERISK_22_PACKAGE (Debian unstable)"
  echo "setup:   in $ASTERISK_22_ROOT (about 340 MB, under a minute); nothing outside it changes"
fi

add_bullseye() {
  # Debian 12 ships no asterisk: take it from Debian 11 with a low pin so nothing else moves.
  local list=/etc/apt/sources.list.d/siaga112-bullseye.sources
  [ -e "$list" ] && return 0
  local uri
  uri="$(mirror)"
  echo "setup: adding the Debian 11 archive ($list) with apt pin priority 100"
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
  . /etc/os-release
  if [ "${VERSION_CODENAME:-}" != "bullseye" ] && [[ " ${need_pkgs[*]} " == *" asterisk"* ]]; then
    add_bullseye
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi

if [ "$build_root" = yes ]; then
  parent="$(dirname "$ASTERISK_22_ROOT")"
  $SUDO mkdir -p "$parent"
  # Several checkouts may run setup at once: one builds, the others wait and find it built.
  exec 9>"$parent/.setup.lock"
  flock 9
fi
if [ "$build_root" = yes ] && ! root_ready; then
  tmp="$ASTERISK_22_ROOT.partial.$$"
  $SUDO rm -rf "$tmp"
  trap '$SUDO rm -rf "$tmp"' EXIT
  # The mirror's unstable Release file may be past its Valid-Until date: accept it (the archive
  # signature is still checked). The exact versions are pinned, so an expired index cannot move
  # us to other packages; a version the mirror no longer has is a clear apt error here.
  # In a mount namespace of its own: mmdebstrap >= 1.5 (Debian 13) runs `mount --make-rprivate /`
  # in root mode, which would otherwise turn the host's / from shared to private until reboot.
  $SUDO unshare --mount mmdebstrap --quiet --variant=apt --aptopt='Acquire::Check-Valid-Until "false"' \
    --include="asterisk=$ASTERISK_22_PACKAGE,asterisk-modules=$ASTERISK_22_PACKAGE" \
    sid "$tmp" "$(mirror)"
  v="$(root_asterisk "$tmp" -V)"
  echo "setup: built $v"
  echo "$ASTERISK_22_PACKAGE" | $SUDO tee "$tmp/.siaga112-root" >/dev/null
  $SUDO rm -rf "$ASTERISK_22_ROOT"  # an incomplete or older root of the same version (no stamp)
  $SUDO mv "$tmp" "$ASTERISK_22_ROOT"
  trap - EXIT
fi

# SIPp with TLS for the TLS signalling tests (`sipp -t l1`; Debian 12's says "To use a TLS
# transport you must compile SIPp with OpenSSL"). Built like the Asterisk 22 root: pinned, from
# unstable, a directory only, run through its own loader; Debian's own sipp stays the default.
if ! sipp_root_ready; then
  sipp_parent="$(dirname "$SIPP_TLS_ROOT")"
  $SUDO mkdir -p "$sipp_parent"
  exec 8>"$sipp_parent/.setup-sipp.lock"
  flock 8
  if ! sipp_root_ready; then
    stmp="$SIPP_TLS_ROOT.partial.$$"
    $SUDO rm -rf "$stmp"
    trap '$SUDO rm -rf "$stmp"' EXIT
    $SUDO unshare --mount mmdebstrap --quiet --variant=apt --aptopt='Acquire::Check-Valid-Until "false"' \
      --include="sip-tester=$SIPP_TLS_PACKAGE" sid "$stmp" "$(mirror)"
    # `sipp -v` exits 99 after printing its version and build flags: read the text only.
    { "$stmp/lib64/ld-linux-x86-64.so.2" \
      --library-path "$stmp/lib/x86_64-linux-gnu:$stmp/usr/lib/x86_64-linux-gnu" \
      "$stmp/usr/bin/sipp" -v 2>&1 || true; } | grep -q -- '-TLS' \
      || { echo "setup: the SIPp in $stmp has no TLS" >&2; exit 1; }
    echo "setup: built SIPp $SIPP_TLS_PACKAGE with TLS in $SIPP_TLS_ROOT"
    echo "$SIPP_TLS_PACKAGE" | $SUDO tee "$stmp/.siaga112-root" >/dev/null
    $SUDO rm -rf "$SIPP_TLS_ROOT"
    $SUDO mv "$stmp" "$SIPP_TLS_ROOT"
    trap - EXIT
  fi
  exec 8>&-
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
echo "setup: ready ($(.venv/bin/python -m ari_app.pbx.installation))"
