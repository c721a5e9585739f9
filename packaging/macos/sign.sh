#!/usr/bin/env bash
# Code-sign and notarise for Gatekeeper (the macOS signing hook; packaging/README.md):
#
#   packaging/macos/sign.sh app "packaging/dist/Use Pod Desktop.app"
#   packaging/macos/sign.sh dmg out/usepod-desktop-VERSION-macos-arm64.dmg
#
# Environment:
#   MACOS_SIGN_IDENTITY     "Developer ID Application: NAME (TEAMID)"
#   MACOS_CERT_P12_BASE64   optional: the certificate + key (.p12, base64), imported into a
#   MACOS_CERT_PASSWORD     temporary keychain (CI); without it the login keychain is used
#   APPLE_ID, APPLE_TEAM_ID, APPLE_APP_PASSWORD   notarytool credentials (an app-specific
#                           password); without them the file is signed but not notarised
#
# app: signs every Mach-O inside the bundle first (PyInstaller's .so/.dylib files, then the
# executables), then the bundle, with the hardened runtime, a secure time stamp and
# packaging/macos/entitlements.plist; verifies with codesign --verify --strict; notarises a zip
# of it and staples the ticket to the .app. dmg: signs, notarises and staples the image.
set -euo pipefail
kind=${1:?usage: sign.sh app|dmg PATH}
target=${2:?usage: sign.sh app|dmg PATH}
here=$(cd "$(dirname "$0")" && pwd)
identity=${MACOS_SIGN_IDENTITY:?set MACOS_SIGN_IDENTITY}

if [ -n "${MACOS_CERT_P12_BASE64:-}" ]; then
  keychain="$RUNNER_TEMP/usepod-signing.keychain-db"
  keychain_password=$(uuidgen)
  security create-keychain -p "$keychain_password" "$keychain"
  security set-keychain-settings -lut 3600 "$keychain"
  security unlock-keychain -p "$keychain_password" "$keychain"
  p12=$(mktemp)
  trap 'rm -f "$p12"; security delete-keychain "$keychain" 2>/dev/null || true' EXIT
  echo "$MACOS_CERT_P12_BASE64" | base64 --decode > "$p12"
  security import "$p12" -k "$keychain" -P "${MACOS_CERT_PASSWORD:-}" -T /usr/bin/codesign
  security set-key-partition-list -S apple-tool:,apple: -s -k "$keychain_password" "$keychain" >/dev/null
  # Put ours first in the search list, keeping the others (one path per line, quoted).
  existing=()
  while IFS= read -r line; do existing+=("$(tr -d '" ' <<<"$line")"); done < <(security list-keychains -d user)
  security list-keychains -d user -s "$keychain" "${existing[@]}"
fi

sign() {
  codesign --force --timestamp --options runtime --entitlements "$here/entitlements.plist" \
    --sign "$identity" "$@"
}

notarise() {
  if [ -z "${APPLE_ID:-}" ] || [ -z "${APPLE_TEAM_ID:-}" ] || [ -z "${APPLE_APP_PASSWORD:-}" ]; then
    echo "sign: no APPLE_ID / APPLE_TEAM_ID / APPLE_APP_PASSWORD: signed, not notarised"
    return 0
  fi
  xcrun notarytool submit "$1" --apple-id "$APPLE_ID" --team-id "$APPLE_TEAM_ID" \
    --password "$APPLE_APP_PASSWORD" --wait --timeout 30m
}

case $kind in
  app)
    # Inside out: every Mach-O that is not the bundle's main executable, then the bundle.
    find "$target/Contents" -type f \( -name "*.so" -o -name "*.dylib" -o -perm -u+x \) -print0 |
      while IFS= read -r -d '' file; do
        if file -b "$file" | grep -q "Mach-O"; then sign "$file"; fi
      done
    sign "$target"
    codesign --verify --deep --strict --verbose=2 "$target"
    zip=$(mktemp -d)/app.zip
    ditto -c -k --keepParent "$target" "$zip"
    notarise "$zip"
    if [ -n "${APPLE_ID:-}" ]; then xcrun stapler staple "$target"; spctl -a -vv "$target"; fi
    ;;
  dmg)
    codesign --force --timestamp --sign "$identity" "$target"
    notarise "$target"
    if [ -n "${APPLE_ID:-}" ]; then xcrun stapler staple "$target"; fi
    ;;
  *) echo "usage: sign.sh app|dmg PATH" >&2; exit 2 ;;
esac
echo "sign: $kind $target done"
