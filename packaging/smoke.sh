#!/usr/bin/env bash
# Build the Linux bundle and run the frozen program as a user would.
#
#   packaging/smoke.sh              build (python packaging/build.py), then check
#   packaging/smoke.sh --no-build   check an existing packaging/dist/usepod-desktop
#
# The Python used for the build is $PYTHON, else .venv/bin/python, else python3; it needs the app
# and PyInstaller (pip install -e ".[packaging]"). Every check runs with HOME and the XDG dirs in
# a temporary directory. The last line is "smoke: N passed, N failed"; the exit code is non-zero
# when a check failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)

build=1
[ "${1:-}" = "--no-build" ] && build=0

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3
fi

if [ "$build" = 1 ]; then
  start=$EPOCHREALTIME
  "$PY" packaging/build.py || { echo "smoke: build failed"; echo "smoke: 0 passed, 1 failed"; exit 1; }
  echo "smoke: build took $(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }') s"
fi

BUNDLE="$ROOT/packaging/dist/usepod-desktop"
EXE="$BUNDLE/usepod-desktop"
FIXTURE="$ROOT/tests/fixtures/agent.example.toml"
[ -x "$EXE" ] || { echo "smoke: no bundle at $EXE"; echo "smoke: 0 passed, 1 failed"; exit 1; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export HOME="$TMP/home" XDG_CONFIG_HOME="$TMP/home/.config" XDG_DATA_HOME="$TMP/home/.local/share"
export XDG_STATE_HOME="$TMP/home/.local/state" QT_QPA_PLATFORM=offscreen
unset USEPOD_CONFIG_DIR USEPOD_DATA_DIR USEPOD_LOG_DIR PYTHON_KEYRING_BACKEND APPIMAGE
mkdir -p "$HOME"
cd "$TMP" || exit 1  # nothing may come from the source tree

passed=0 failed=0
ok() { echo "  ok    $1"; passed=$((passed + 1)); }
bad() { echo "  FAIL  $1"; [ -n "${2:-}" ] && sed 's/^/        /' <<<"$2"; failed=$((failed + 1)); }

# Seconds taken by a command (best of 3), its output left in $OUT / $RC.
timed() {
  local times="" t0
  for _ in 1 2 3; do
    t0=$EPOCHREALTIME; OUT=$("$@" 2>&1); RC=$?
    times="$times $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')"
  done
  TIME=$(awk '{ m = $1; for (i = 2; i <= NF; i++) if ($i < m) m = $i; printf "%.2f", m }' <<<"$times")
}

echo "smoke: $EXE ($(du -sh "$BUNDLE" | cut -f1) on disk)"

# Bundle size (issue 17: 203 MiB before the slimming in usepod-desktop.spec / build.py): the
# apparent size of every file, as build.py prints it, against the target.
MAX_MIB=${USEPOD_MAX_BUNDLE_MIB:-120}
size_mib=$(find "$BUNDLE" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.1f", s / 1048576 }')
if awk -v s="$size_mib" -v m="$MAX_MIB" 'BEGIN { exit !(s <= m) }'; then ok "bundle size $size_mib MiB <= $MAX_MIB MiB"
else bad "bundle size $size_mib MiB > $MAX_MIB MiB (see the size notes in packaging/usepod-desktop.spec)"; fi

VERSION=$("$PY" -c 'import sys; sys.path.insert(0, "'"$ROOT"'"); import usepod_desktop; print(usepod_desktop.__version__)')
timed "$EXE" --version
if [ "$RC" = 0 ] && [ "$OUT" = "usepod-desktop $VERSION" ]; then ok "--version ($TIME s)"; else bad "--version" "$OUT"; fi

timed "$EXE" validate --config "$FIXTURE"
if [ "$RC" = 0 ] && [ "$OUT" = "ok: parsed 2 backend(s)" ]; then ok "validate the reference example ($TIME s)"
else bad "validate" "$OUT"; fi

# Every subcommand module the source has must be importable in the bundle (they are imported by
# name, so a missing hidden import shows up as a missing line in --help).
OUT=$("$EXE" --help 2>&1); missing=""
for f in "$ROOT"/usepod_desktop/commands/*.py; do
  name=$(basename "$f" .py)
  case $name in __init__|common|gui) continue ;; control) name="pause resume status" ;; esac
  for sub in $name; do grep -qE "^    $sub( |$)" <<<"$OUT" || missing="$missing $sub"; done
done
if [ -z "$missing" ]; then ok "--help lists every subcommand"; else bad "subcommands missing from --help:$missing" "$OUT"; fi

OUT=$("$EXE" enroll --config "$FIXTURE" 2>&1); RC=$?
if [ "$RC" = 0 ] && grep -qE '^public_key: .{44}$' <<<"$OUT" && [ -f "$HOME/.usepod-agent/identity.key" ]; then
  ok "enroll creates the identity in \$HOME"
else bad "enroll" "$OUT"; fi

OUT=$("$EXE" autostart on 2>&1); RC=$?
ENTRY="$XDG_CONFIG_HOME/autostart/usepod-desktop.desktop"
if [ "$RC" = 0 ] && grep -qx "Exec=$EXE" "$ENTRY" && "$EXE" autostart off >/dev/null && [ ! -e "$ENTRY" ]; then
  ok "autostart on/off points at the frozen executable"
else bad "autostart" "$OUT"; fi

"$EXE" autostart on >/dev/null 2>&1
OUT=$(env -u DBUS_SESSION_BUS_ADDRESS "$EXE" forget 2>&1); RC=$?
if [ "$RC" = 0 ] && [ ! -e "$ENTRY" ] && grep -q "identity: kept" <<<"$OUT"; then
  ok "forget removes start at login, keeps the identity"
else bad "forget" "$OUT"; fi

# service install refuses a missing agent.toml (systemd would restart-loop): put one where the
# reference agent looks.
mkdir -p "$XDG_CONFIG_HOME/usepod-agent" && cp "$FIXTURE" "$XDG_CONFIG_HOME/usepod-agent/agent.toml"
OUT=$("$EXE" service install 2>&1); RC=$?
UNIT="$XDG_CONFIG_HOME/systemd/user/usepod-desktop.service"
if [ "$RC" = 0 ] && grep -qx "ExecStart=$EXE run" "$UNIT" && grep -q "journalctl --user -u usepod-desktop" <<<"$OUT"; then
  ok "service install writes a unit running the frozen executable"
else bad "service install" "$OUT"; fi
"$EXE" service uninstall >/dev/null 2>&1
rm -f "$XDG_CONFIG_HOME/usepod-agent/agent.toml"

# What the tray needs from the bundle.
need=(PySide6/Qt/plugins/platforms/libqxcb.so PySide6/Qt/plugins/platforms/libqwayland.so
  PySide6/Qt/plugins/platforms/libqoffscreen.so PySide6/Qt/plugins/iconengines/libqsvgicon.so
  PySide6/Qt/plugins/imageformats/libqsvg.so PySide6/QtSvg.abi3.so certifi/cacert.pem)
while IFS= read -r f; do need+=("resources/$f"); done < <(cd "$ROOT/resources" && find . -type f -printf '%P\n')
absent=""
for f in "${need[@]}"; do [ -e "$BUNDLE/_internal/$f" ] || absent="$absent $f"; done
ls "$BUNDLE/_internal"/keyring-*.dist-info/entry_points.txt >/dev/null 2>&1 || absent="$absent keyring-metadata"
# Python modules inside the executable's archive (needs PyInstaller in $PY to list them).
if MODS=$("$PY" -m PyInstaller.utils.cliutils.archive_viewer -b -r "$EXE" 2>/dev/null); then
  mods=(secretstorage jeepney keyring.backends.SecretService keyring.backends.kwallet
    keyring.backends.chainer keyring.backends.fail keyring.backends.macOS keyring.backends.Windows
    certifi)
  for f in "$ROOT"/usepod_desktop/commands/*.py; do
    name=$(basename "$f" .py)
    [ "$name" = __init__ ] || mods+=("usepod_desktop.commands.$name")
  done
  for m in "${mods[@]}"; do grep -qx " $m" <<<"$MODS" || absent="$absent $m"; done
else
  echo "  skip  listing the bundled Python modules (PyInstaller is not in $PY)"
fi
if [ -z "$absent" ]; then ok "Qt plugins, CA bundle, icons, keyring backends + metadata, secretstorage, jeepney bundled"; else bad "missing from the bundle:$absent"; fi

if [ -f "$BUNDLE/usepod-desktop.desktop" ] && [ -f "$BUNDLE/usepod-desktop.png" ]; then
  ok ".desktop file and icon next to the executable"
else bad ".desktop file or icon missing"; fi

# The frozen keyring against a real Secret Service (secretstorage + jeepney bundled), when the
# machine has one to start (scripts/test installs dbus and gnome-keyring).
if command -v dbus-run-session >/dev/null && command -v gnome-keyring-daemon >/dev/null; then
  OUT=$(dbus-run-session -- bash -c '
    mkdir -p "$HOME/kr" &&
    echo pw | XDG_DATA_HOME="$HOME/kr" gnome-keyring-daemon --unlock --components=secrets --daemonize >/dev/null &&
    sleep 1 &&
    echo sk-smoke-0123456789abcdef | "$1" keys set OPENROUTER_API_KEY &&
    "$1" keys status OPENROUTER_API_KEY &&
    "$1" keys delete OPENROUTER_API_KEY &&
    echo sk-smoke-0123456789abcdef | "$1" keys set VENICE_API_KEY &&
    "$1" forget &&
    "$1" keys status VENICE_API_KEY' _ "$EXE" 2>&1)
  if grep -q "OPENROUTER_API_KEY: keyring set" <<<"$OUT" && grep -q "keyring: removed VENICE_API_KEY" <<<"$OUT" &&
    grep -q "VENICE_API_KEY: keyring not set" <<<"$OUT"; then
    ok "keyring through the Secret Service (keys set/status/delete, forget removes them)"
  else bad "keyring through the Secret Service" "$OUT"; fi
else
  echo "  skip  keyring through the Secret Service (no dbus-run-session / gnome-keyring-daemon)"
fi

# Without any keyring: one clear line, no traceback.
OUT=$(env -u DBUS_SESSION_BUS_ADDRESS "$EXE" keys status OPENROUTER_API_KEY 2>&1); RC=$?
if [ "$RC" = 0 ] && ! grep -q Traceback <<<"$OUT" && grep -q "keyring" <<<"$OUT"; then
  ok "no keyring: a clear message"
else bad "no keyring" "$OUT"; fi

# The headless agent serving one job from the sandbox coordinator, then SIGTERM -> exit 0
# (packaging/smoke_run.py; needs the sandbox coordinator and the `run` command in the tree).
if [ -f "$ROOT/usepod_desktop/sandbox/coordinator.py" ] && [ -f "$ROOT/usepod_desktop/commands/run.py" ]; then
  OUT=$("$PY" "$ROOT/packaging/smoke_run.py" "$EXE" 2>&1); RC=$?
  if [ "$RC" = 0 ]; then ok "run: one job served, SIGTERM, exit 0 ($(tail -1 <<<"$OUT"))"
  else bad "run: one job from the sandbox coordinator" "$OUT"; fi
else
  echo "  skip  run: one job from the sandbox coordinator (usepod_desktop/sandbox/coordinator.py not in the tree yet)"
fi

echo "smoke: $passed passed, $failed failed"
[ "$failed" = 0 ]
