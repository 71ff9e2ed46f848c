#!/usr/bin/env bash
# Vendors the console's browser library (Leaflet, for the call card's map) from npm into
# ari_app/web/static/vendor/, at setup time: the browser never fetches a script from anywhere
# but the app itself. The files are not committed; the version and the npm tarball's
# integrity are pinned here. Quick (nothing fetched) when the pinned version is already there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/ari_app/web/static/vendor/leaflet"
VERSION="1.9.4"
INTEGRITY="sha512-nxS1ynzJOmOlHp+iL3FyWqK89GtNL8U8rvlMOsQdTTssxZwCXh8N2NB3GDQOL+YR3XnWyZAxwQixURb+FA74PA=="

if [ -e "$DEST/VERSION" ] && [ "$(cat "$DEST/VERSION")" = "$VERSION" ] && [ -e "$DEST/leaflet.js" ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get install -y -q npm >/dev/null
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack "leaflet@$VERSION" --silent >/dev/null)
tarball="$tmp/leaflet-$VERSION.tgz"
got="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [ "$got" != "$INTEGRITY" ]; then
  echo "vendor: leaflet-$VERSION.tgz: expected integrity $INTEGRITY, found $got" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$tmp"
rm -rf "$DEST.new"
mkdir -p "$DEST.new/images"
cp "$tmp/package/dist/leaflet.js" "$tmp/package/dist/leaflet.css" "$tmp/package/LICENSE" "$DEST.new/"
cp "$tmp/package/dist/images/"*.png "$DEST.new/images/"
echo "$VERSION" > "$DEST.new/VERSION"
rm -rf "$DEST"
mv "$DEST.new" "$DEST"
echo "vendor: leaflet $VERSION in ${DEST#"$ROOT"/}"
