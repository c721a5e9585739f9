#!/usr/bin/env bash
# Make the macOS disk image: packaging/macos/make_dmg.sh "packaging/dist/Use Pod Desktop.app" out/usepod-desktop-VERSION-macos-arm64.dmg
#
# The image holds the app and a link to /Applications, so installing is one drag (the app must
# run from /Applications: started from the mounted image or from Downloads, macOS translocates
# it and the app asks to be moved). Compressed UDZO, HFS+ (readable on every macOS 11+).
# Sign and notarise the .app before (packaging/macos/sign.sh app) and the .dmg after
# (packaging/macos/sign.sh dmg).
set -euo pipefail
app=${1:?usage: make_dmg.sh APP DMG}
dmg=${2:?usage: make_dmg.sh APP DMG}
[ -d "$app/Contents/MacOS" ] || { echo "make_dmg: $app is not an app bundle" >&2; exit 1; }
command -v hdiutil >/dev/null || { echo "make_dmg: hdiutil is macOS-only" >&2; exit 1; }

staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
# ditto keeps the bundle's symlinks, extended attributes and signatures intact (cp -R may not).
ditto "$app" "$staging/$(basename "$app")"
ln -s /Applications "$staging/Applications"
mkdir -p "$(dirname "$dmg")"
rm -f "$dmg"
hdiutil create -volname "Use Pod Desktop" -srcfolder "$staging" -fs HFS+ -format UDZO \
  -imagekey zlib-level=9 -ov "$dmg"
hdiutil verify "$dmg"
echo "make_dmg: $dmg ($(du -h "$dmg" | cut -f1))"
