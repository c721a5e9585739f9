"""The Debian package, end to end: build it from the frozen bundle, `dpkg -i` it, run the
installed program as a user would (from PATH, with a temporary HOME), `dpkg -r` it, and check
that the app's files are gone while the user's files stay.

The round trip needs root and dpkg (CI runs ./scripts/test as root on a fresh Debian machine);
elsewhere it is skipped, saying why. It uses the bundle named by $USEPOD_BUNDLE (scripts/test
passes the one packaging/smoke.sh has just built and checked) or builds a fresh one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import io
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from usepod_desktop import __version__

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "usepod_packaging_deb", ROOT / "packaging" / "deb.py"
)
assert _spec is not None and _spec.loader is not None
deb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(deb)  # packaging/deb.py

FIXTURE = ROOT / "tests" / "fixtures" / "agent.example.toml"
#: Serialises round trips of concurrent test sessions on one machine (the package is global).
LOCK_FILE = Path("/tmp/usepod-desktop-deb-test.lock")
#: The C library's own sonames come from libc6.
LIBC_SONAMES = {
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "libresolv.so.2",
    "librt.so.1",
    "libutil.so.1",
}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (scripts/test installs it)")
    return path


# --------------------------------------------------------------------------------------------
# The files the package ships, checked without building anything


def test_desktop_entry_is_valid() -> None:
    validate = _tool("desktop-file-validate")
    out = subprocess.run([validate, str(deb.DESKTOP_FILE)], capture_output=True, text=True)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr
    text = deb.DESKTOP_FILE.read_text(encoding="utf-8")
    # The .deb puts the program on PATH and the icon in hicolor under these names.
    assert "\nExec=usepod-desktop\n" in text
    assert "\nIcon=usepod-desktop\n" in text


def test_metainfo_is_valid_and_names_this_version() -> None:
    appstreamcli = _tool("appstreamcli")
    out = subprocess.run(
        [appstreamcli, "validate", "--no-net", "--no-color", str(deb.METAINFO_FILE)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    problems = [line for line in out.stdout.splitlines() if re.match(r"[EW]:", line)]
    assert not problems, out.stdout
    text = deb.METAINFO_FILE.read_text(encoding="utf-8")
    first_release = re.search(r'<release version="([^"]+)"', text)
    assert first_release is not None and first_release.group(1) == __version__, (
        "add a <release> for the new version to the metainfo"
    )
    assert f'<launchable type="desktop-id">{deb.DESKTOP_FILE.name}</launchable>' in text


# --------------------------------------------------------------------------------------------
# The round trip


def _needs_root_and_dpkg() -> None:
    if shutil.which("dpkg") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("no dpkg: the .deb round trip runs on Debian/Ubuntu")
    if os.geteuid() != 0:
        pytest.skip("not root: the .deb round trip installs a package (CI runs it as root)")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("USEPOD_BUNDLE")
    if given:
        path = Path(given).resolve()
        assert (path / "usepod-desktop").is_file(), f"USEPOD_BUNDLE={given} has no program"
        return path
    _needs_root_and_dpkg()  # do not spend a build on a test that would skip
    work = tmp_path_factory.mktemp("bundle")
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "packaging" / "build.py"),
            "--dist",
            str(work / "dist"),
            "--work",
            str(work / "build"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return work / "dist" / "usepod-desktop"


def _dpkg(*args: str, deadline: float = 300) -> subprocess.CompletedProcess[str]:
    """Run dpkg, waiting while another process (apt-get elsewhere) holds its lock."""
    end = time.monotonic() + deadline
    while True:
        out = subprocess.run(["dpkg", *args], capture_output=True, text=True, timeout=300)
        locked = out.returncode != 0 and "lock" in out.stderr.lower()
        if not locked or time.monotonic() > end:
            return out
        time.sleep(1)


def _status(package: str = deb.PACKAGE) -> str:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True
    )
    return out.stdout.strip() if out.returncode == 0 else "not-installed"


def _installed() -> bool:
    return _status() == "install ok installed"


def _anything_left() -> bool:
    """Installed, or half there after a failed dpkg -i (unpacked, half-configured)."""
    return not _status().endswith("not-installed")


@contextlib.contextmanager
def _exclusive_round_trip() -> Iterator[None]:
    with LOCK_FILE.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _user_env(home: Path) -> dict[str, str]:
    """A user's environment: their own HOME and XDG dirs, no test overrides."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("USEPOD_", "XDG_", "QT_", "PYTHON", "DBUS_")) and k != "DISPLAY"
    }
    # No session bus and no keyring: a keyring daemon that D-Bus starts on demand would ask for
    # a new keyring password in a dialog on the test's X server and block the app. The
    # keyring through the frozen app is checked by packaging/smoke.sh.
    env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    )
    return env


def _files(home: Path) -> dict[str, str]:
    """Every file under home with its SHA-256 (sockets and lock leftovers aside)."""
    out = {}
    for path in sorted(home.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(home))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _needed(elf: Path) -> set[str]:
    out = subprocess.run(["readelf", "-d", str(elf)], capture_output=True, text=True)
    return set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out.stdout))


def _check_depends_cover_the_system_libraries(install_dir: Path) -> None:
    """Every library a bundled binary links to is in the bundle or in a Depends package."""
    if shutil.which("readelf") is None:
        pytest.fail("readelf (binutils) is missing: scripts/test installs it")
    elves = [
        p
        for p in install_dir.rglob("*")
        if p.is_file() and not p.is_symlink() and p.read_bytes()[:4] == b"\x7fELF"
    ]
    bundled = {p.name for p in install_dir.rglob("*.so*")}
    outside = set().union(*(_needed(p) for p in elves)) - bundled - LIBC_SONAMES
    depends = {d.split()[0] for d in deb.DEPENDS}
    uncovered = []
    for soname in sorted(outside):
        owner = subprocess.run(["dpkg", "-S", f"*/{soname}"], capture_output=True, text=True)
        packages = {line.split(":")[0] for line in owner.stdout.splitlines() if ":" in line}
        if not packages & depends:
            uncovered.append(f"{soname} ({', '.join(sorted(packages)) or 'not installed'})")
    assert not uncovered, f"add to DEPENDS in packaging/deb.py: {uncovered}"


@contextlib.contextmanager
def _closed_port() -> Iterator[int]:
    """A loopback port held (bound, not listening) for the block: connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _run_sandbox_job(env: dict[str, str], cwd: Path, config: Path) -> str:
    """`usepod-desktop run --sandbox` from PATH serves a demo job, then SIGTERM -> exit 0."""
    proc = subprocess.Popen(
        ["usepod-desktop", "run", "--sandbox", "--demo-interval", "0.5", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=cwd,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 90
        served = None
        while served is None:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:  # the program exited
                break
            seen.append(line)
            if re.search(r"\[sandbox\] job \S+ -> ok;", line):
                served = line.strip()
        assert served, "no demo job served:\n" + "".join(seen)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, "".join(seen)
        return served
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def _xvfb_with_tray(workdir: Path) -> Iterator[str]:
    """A private X server (a free display picked by Xvfb itself) with trayer, an XEmbed system
    tray, on it. Yields the DISPLAY value."""
    for tool in ("Xvfb", "trayer", "xwininfo", "import"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: scripts/test installs it")
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "xvfb.log").open("w"),
    )
    os.close(write_fd)
    trayer = None
    try:
        with os.fdopen(read_fd) as pipe:
            number = pipe.readline().strip()  # Xvfb writes it once it accepts connections
        assert number.isdigit(), f"Xvfb did not start: {(workdir / 'xvfb.log').read_text()}"
        display = f":{number}"
        trayer = subprocess.Popen(
            ["trayer", "--edge", "top", "--align", "right", "--widthtype", "request"],
            env={**os.environ, "DISPLAY": display},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # the panel first (the tray exists when the app starts, as on a desktop session);
        # the app's late-tray path is tested in tests/gui
        deadline = time.monotonic() + 60
        while '("panel" "trayer")' not in _tree(display):
            assert trayer.poll() is None, "trayer exited"
            assert time.monotonic() < deadline, "trayer's panel did not appear"
            time.sleep(0.1)
        yield display
    finally:
        for proc in (trayer, xvfb):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _tree(display: str) -> str:
    return subprocess.run(
        ["xwininfo", "-root", "-tree"],
        capture_output=True,
        text=True,
        env={**os.environ, "DISPLAY": display},
    ).stdout


def _tray_icon_window(display: str) -> str | None:
    """The id of our window embedded in trayer's panel, or None while there is none."""
    inside_panel = False
    panel_indent = 0
    for line in _tree(display).splitlines():
        indent = len(line) - len(line.lstrip())
        if '("panel" "trayer")' in line:
            inside_panel, panel_indent = True, indent
            continue
        if inside_panel and indent <= panel_indent and line.strip():
            inside_panel = False
        if inside_panel and '("usepod-desktop" "usepod-desktop")' in line:
            return line.split()[0]
    return None


def _distinct_colours(display: str, window: str) -> int:
    png = subprocess.run(
        ["import", "-silent", "-window", window, "png:-"],
        capture_output=True,
        env={**os.environ, "DISPLAY": display},
        timeout=30,
    ).stdout
    out = subprocess.run(
        ["convert", "png:-", "-format", "%k", "info:"], input=png, capture_output=True
    )
    return int(out.stdout.decode().strip() or 0)


def _tray_shows_icon(env: dict[str, str], workdir: Path, config: Path) -> str:
    """The installed tray app (sandbox mode) docks its icon in a real XEmbed tray, draws it,
    and quits with exit code 0 on SIGTERM. Returns what was seen."""
    with _xvfb_with_tray(workdir) as display:
        app_env = {**env, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb"}
        log = workdir / "tray.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                ["usepod-desktop", "--sandbox", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=app_env,
                cwd=workdir,
            )
        try:
            deadline = time.monotonic() + 60
            window = None
            while window is None and time.monotonic() < deadline and proc.poll() is None:
                window = _tray_icon_window(display)
                if window is None:
                    time.sleep(0.2)
            assert window, (
                f"no tray icon docked in trayer (app exit code {proc.poll()}):\n"
                f"{log.read_text()}\nwindows:\n{_tree(display)}"
            )
            colours = 0
            while time.monotonic() < deadline and colours < 3:
                colours = _distinct_colours(display, window)
                if colours < 3:
                    time.sleep(0.2)  # docked, not painted yet
            assert colours >= 3, f"the tray icon is blank ({colours} colour(s))"
            proc.send_signal(signal.SIGTERM)  # quits like the menu's Quit: exit code 0
            assert proc.wait(60) == 0, log.read_text()
            text = log.read_text()
            assert "xcb-cursor0" not in text and "Could not load the Qt platform" not in text
            return f"icon window {window} with {colours} colours"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.deb
@pytest.mark.timeout(900)
def test_deb_installs_runs_and_removes_cleanly(bundle: Path, tmp_path: Path) -> None:
    _needs_root_and_dpkg()
    for tool in ("readelf",):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: scripts/test installs it")
    package = deb.build_deb(bundle, tmp_path / "out", __version__, compress="gzip")
    info = subprocess.run(
        ["dpkg-deb", "-f", str(package), "Package", "Version", "Depends"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"Version: {__version__}" in info and "libxcb-cursor0" in info
    # The bundle carries the build machine's glibc requirement: it is declared.
    assert re.search(r"Depends: libc6 \(>= 2\.\d+\)", info), info
    control = subprocess.run(
        ["dpkg-deb", "--ctrl-tarfile", str(package)], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(control)) as tar:
        members = {Path(m.name).name for m in tar.getmembers() if m.isfile()}
    # No maintainer scripts: nothing runs as root on install or removal (dpkg's file triggers
    # refresh the menu and icon caches), so nothing can touch a user's files.
    assert members == {"control", "md5sums"}, members

    home = tmp_path / "home"
    (home / ".config" / "usepod-agent").mkdir(parents=True)
    shutil.copyfile(FIXTURE, home / ".config" / "usepod-agent" / "agent.toml")
    env = _user_env(home)
    install_dir = deb.INSTALL_DIR

    with _exclusive_round_trip():
        if _anything_left():
            pytest.skip("usepod-desktop is installed on this machine; the test would remove it")
        try:
            out = _dpkg("-i", str(package))
            assert out.returncode == 0, out.stdout + out.stderr
            verify = _dpkg("--verify", deb.PACKAGE)  # every file matches its md5sum
            assert verify.returncode == 0 and not verify.stdout.strip(), verify.stdout
            shipped = _dpkg("-L", deb.PACKAGE).stdout.split("\n")

            # On PATH, the real program under /opt.
            assert shutil.which("usepod-desktop", path=env["PATH"]) == "/usr/bin/usepod-desktop"
            assert Path("/usr/bin/usepod-desktop").resolve() == install_dir / "usepod-desktop"
            version = subprocess.run(
                ["usepod-desktop", "--version"], capture_output=True, text=True, env=env
            )
            assert version.stdout.strip() == f"usepod-desktop {__version__}", version.stderr
            _check_depends_cover_the_system_libraries(install_dir)
            for shared in (
                "/usr/share/applications/usepod-desktop.desktop",
                "/usr/share/icons/hicolor/48x48/apps/usepod-desktop.png",
                "/usr/share/icons/hicolor/scalable/apps/usepod-desktop.svg",
                "/usr/share/metainfo/ai.usepod.UsePodDesktop.metainfo.xml",
            ):
                assert shared in shipped and Path(shared).is_file(), shared

            # A user's day: validate their config, create the identity, serve a job (writes
            # the ledger), the tray app in a real system tray.
            checked = subprocess.run(
                ["usepod-desktop", "validate"], capture_output=True, text=True, env=env, cwd=home
            )
            assert checked.returncode == 0, checked.stderr
            assert checked.stdout.strip() == "ok: parsed 2 backend(s)"
            enrolled = subprocess.run(
                ["usepod-desktop", "enroll"], capture_output=True, text=True, env=env, cwd=home
            )
            assert enrolled.returncode == 0, enrolled.stderr
            with _closed_port() as port:
                # The sandbox serves the config's backends when one answers: point them at a
                # port nobody listens on, so its demo backend serves (not whatever happens to
                # run on localhost:8000 on this machine).
                sandbox_config = tmp_path / "sandbox.toml"
                sandbox_config.write_text(
                    FIXTURE.read_text(encoding="utf-8").replace(
                        "http://localhost:8000", f"http://127.0.0.1:{port}"
                    ),
                    encoding="utf-8",
                )
                served = _run_sandbox_job(env, tmp_path, sandbox_config)
                tray = _tray_shows_icon(env, tmp_path, sandbox_config)
            print(f"deb round trip: {served}; {tray}")

            user_files = _files(home)
            for mine in (
                ".config/usepod-agent/agent.toml",
                ".usepod-agent/identity.key",
                ".local/share/usepod-desktop/ledger.sqlite3",
            ):
                assert mine in user_files, f"{mine} not created: {sorted(user_files)}"

            out = _dpkg("-r", deb.PACKAGE)
            assert out.returncode == 0, out.stdout + out.stderr
            assert not _anything_left()  # no conffiles: nothing stays in dpkg's database
        finally:
            if _anything_left():
                _dpkg("--purge", deb.PACKAGE)

    # The app's files are gone (directories shared with other packages may stay)...
    left = [p for p in shipped if p and (os.path.isfile(p) or os.path.islink(p))]
    assert not left, f"left behind by dpkg -r: {left[:10]}"
    assert not install_dir.exists()
    # ...the user's are all there, byte for byte.
    assert _files(home) == user_files


def test_scripts_test_installs_every_dependency_of_the_package() -> None:
    """CI installs the .deb with dpkg -i, which does not fetch dependencies: scripts/test must
    install each one (libc6 and libxcb1 come with any of the others)."""
    text = (ROOT / "scripts" / "test").read_text(encoding="utf-8")
    listed = re.search(r"DEB_PACKAGES=\((.*?)\)[ \t]*(?:#[^\n]*)?\n", text, re.S)
    assert listed is not None
    names = {
        word for line in listed.group(1).splitlines() for word in line.split("#", 1)[0].split()
    }
    missing = {d.split()[0] for d in deb.DEPENDS} - names - {"libc6", "libxcb1"}
    assert not missing, f"add to DEB_PACKAGES in scripts/test: {sorted(missing)}"
