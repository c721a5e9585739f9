"""Turn the Linux bundle into a Debian package: `python packaging/deb.py` (or
`python packaging/build.py --deb`, which builds the bundle first).

The package installs

- the bundle under `/opt/usepod-desktop/` (the program finds its `_internal/` next to itself);
- `/usr/bin/usepod-desktop`, a symbolic link to it, so the command is on `PATH` and the menu
  entry's `Exec=usepod-desktop` works;
- the menu entry `/usr/share/applications/usepod-desktop.desktop`, the icon in every hicolor
  size plus the SVG, and the AppStream metainfo for software centres (all from `resources/`).

It depends on the system libraries the bundle does not carry (libGL/libEGL, libxcb, the Wayland
client libraries) and on those Qt's xcb platform plugin needs (libxcb-cursor0 and the rest of
the list in Qt's "Qt for X11 requirements"), so the "xcb-cursor0 or libxcb-cursor0 is needed"
message cannot appear after installing it.

There are no maintainer scripts: dpkg's file triggers (desktop-file-utils, hicolor-icon-theme)
refresh the menu and icon caches, and nothing may touch a user's files. Removing the package
removes exactly the files above; each user's agent.toml, identity key, ledger, logs, keyring
items and start-at-login entry stay (`usepod-desktop forget` removes the last two, run it
before removing the package).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PACKAGE = "usepod-desktop"
INSTALL_DIR = Path("/opt") / PACKAGE
DESKTOP_FILE = ROOT / "resources" / "linux" / f"{PACKAGE}.desktop"
METAINFO_FILE = ROOT / "resources" / "linux" / "ai.usepod.UsePodDesktop.metainfo.xml"
ICON_SVG = ROOT / "resources" / "icons" / "app.svg"
ICON_SIZES = (16, 22, 24, 32, 48, 64, 128, 256, 512)
MAINTAINER = "Use Pod <support@usepod.ai>"
HOMEPAGE = "https://usepod.ai"

#: Runtime dependencies. The bundle carries most libraries itself; these are the ones it must
#: find on the system (PyInstaller never bundles libGL/libEGL/libxcb) and the ones Qt's xcb
#: platform plugin lists as requirements. tests/packaging/test_deb.py checks that every library
#: a bundled binary links to is either in the bundle or in one of these packages.
DEPENDS = (
    "libc6",  # with the version the bundle needs, see glibc_requirement()
    "libgl1",
    "libegl1",
    "libfontconfig1",
    "libfreetype6",
    "libdbus-1-3",
    "libx11-6",
    "libx11-xcb1",
    "libxcb1",
    "libxkbcommon0",
    "libxkbcommon-x11-0",
    "libxcb-cursor0",
    "libxcb-icccm4",
    "libxcb-image0",
    "libxcb-keysyms1",
    "libxcb-randr0",
    "libxcb-render0",
    "libxcb-render-util0",
    "libxcb-shape0",
    "libxcb-shm0",
    "libxcb-sync1",
    "libxcb-util1",
    "libxcb-xfixes0",
    "libxcb-xinerama0",
    "libxcb-xkb1",
    "libwayland-client0",
    "libwayland-cursor0",
    "libwayland-egl1",
)
#: A Secret Service for the keyring (API keys, host token) and a tray on GNOME.
RECOMMENDS = ("gnome-keyring | kwalletmanager | keepassxc",)
SUGGESTS = ("gnome-shell-extension-appindicator",)

DESCRIPTION = """\
Use Pod provider agent: earn by serving AI inference
 A tray app (and a headless agent) that connects your own inference backends
 (Ollama, LM Studio, llama.cpp, vLLM, or OpenRouter and Venice with your own
 API keys) to the Use Pod marketplace, serves the jobs it is sent and records
 the earnings in a local ledger. It shares agent.toml and the identity key
 with the reference usepod-agent."""


def architecture() -> str:
    out = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def glibc_requirement(bundle: Path) -> str | None:
    """The newest GLIBC_x.y symbol version any bundled binary needs (what dpkg-shlibdeps
    would put in `libc6 (>= ...)`): the build machine's glibc leaks into the bundle."""
    newest: tuple[int, ...] | None = None
    for path in bundle.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        with path.open("rb") as handle:
            if handle.read(4) != b"\x7fELF":
                continue
        out = subprocess.run(
            ["readelf", "--version-info", "-W", str(path)], capture_output=True, text=True
        )
        for found in re.findall(r"Name: GLIBC_(\d+(?:\.\d+)+)", out.stdout):
            version = tuple(int(n) for n in found.split("."))
            if newest is None or version > newest:
                newest = version
    return ".".join(map(str, newest)) if newest else None


def depends(glibc: str | None) -> list[str]:
    return [f"libc6 (>= {glibc})" if d == "libc6" and glibc else d for d in DEPENDS]


def control_text(version: str, arch: str, installed_kib: int, glibc: str | None = None) -> str:
    return (
        f"Package: {PACKAGE}\n"
        f"Version: {version}\n"
        f"Architecture: {arch}\n"
        f"Maintainer: {MAINTAINER}\n"
        f"Installed-Size: {installed_kib}\n"
        f"Depends: {', '.join(depends(glibc))}\n"
        f"Recommends: {', '.join(RECOMMENDS)}\n"
        f"Suggests: {', '.join(SUGGESTS)}\n"
        "Section: net\n"
        "Priority: optional\n"
        f"Homepage: {HOMEPAGE}\n"
        f"Description: {DESCRIPTION}\n"
    )


def copyright_text() -> str:
    return (
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        f"Upstream-Name: {PACKAGE}\n"
        "\n"
        "Files: *\n"
        "Copyright: Use Pod\n"
        "License: MIT\n"
        "Comment: /opt/usepod-desktop/_internal carries Python, Qt (LGPL-3), PySide6 (LGPL-3)\n"
        " and the Python packages listed in the project's pyproject.toml, each under its own\n"
        " licence (their licence files are in the bundle's *.dist-info folders).\n"
    )


def _dir_size(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        if p.is_symlink():
            total += 1
        elif p.is_file():
            total += p.stat().st_size
    return total


def icon_pngs() -> dict[int, bytes]:
    """The app icon rendered in every hicolor size (Qt offscreen, as build.py does)."""
    build = _load("build")
    return build.render_pngs(build.app_svg(), set(ICON_SIZES))


def _load(name: str):  # type: ignore[no-untyped-def]
    """packaging/<name>.py as a module (not `import build`, which could be PyPA's build)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"usepod_packaging_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stage(bundle: Path, root: Path, version: str) -> None:
    """Lay out the package's files under `root` (the future `/`)."""
    if not (bundle / PACKAGE).is_file():
        raise SystemExit(f"deb: no bundle at {bundle} (run packaging/build.py first)")
    opt = root / INSTALL_DIR.relative_to("/")
    shutil.copytree(bundle, opt, symlinks=True)
    # The loose menu file and icon next to the program are for the tarball; the package puts
    # them where the desktop looks.
    for loose in (f"{PACKAGE}.desktop", f"{PACKAGE}.png"):
        (opt / loose).unlink(missing_ok=True)
    usr_bin = root / "usr" / "bin"
    usr_bin.mkdir(parents=True)
    (usr_bin / PACKAGE).symlink_to(INSTALL_DIR / PACKAGE)
    share = root / "usr" / "share"
    apps = share / "applications"
    apps.mkdir(parents=True)
    shutil.copyfile(DESKTOP_FILE, apps / DESKTOP_FILE.name)
    metainfo = share / "metainfo"
    metainfo.mkdir(parents=True)
    shutil.copyfile(METAINFO_FILE, metainfo / METAINFO_FILE.name)
    hicolor = share / "icons" / "hicolor"
    for size, png in icon_pngs().items():
        target = hicolor / f"{size}x{size}" / "apps" / f"{PACKAGE}.png"
        target.parent.mkdir(parents=True)
        target.write_bytes(png)
    scalable = hicolor / "scalable" / "apps"
    scalable.mkdir(parents=True)
    shutil.copyfile(ICON_SVG, scalable / f"{PACKAGE}.svg")
    doc = share / "doc" / PACKAGE
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(copyright_text(), encoding="utf-8")
    # Debian wants 0755 directories and 0644 data files whatever the build user's umask.
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        if path.is_dir():
            path.chmod(0o755)
        elif path.stat().st_mode & 0o111:
            path.chmod(0o755)
        else:
            path.chmod(0o644)
    debian = root / "DEBIAN"
    debian.mkdir()
    # md5sums: what `dpkg --verify` and debsums check the installed files against.
    sums = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and debian not in path.parents:
            digest = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
            sums.append(f"{digest}  {path.relative_to(root).as_posix()}\n")
    (debian / "md5sums").write_text("".join(sums), encoding="utf-8")
    installed_kib = (_dir_size(root) + 1023) // 1024
    (debian / "control").write_text(
        control_text(version, architecture(), installed_kib, glibc_requirement(opt)),
        encoding="utf-8",
    )
    debian.chmod(0o755)
    (debian / "control").chmod(0o644)
    (debian / "md5sums").chmod(0o644)


def build_deb(
    bundle: Path, out_dir: Path, version: str | None = None, *, compress: str = "xz"
) -> Path:
    """Build `<out_dir>/usepod-desktop_<version>_<arch>.deb` from the one-folder bundle.
    `compress` is dpkg-deb's -Z (xz for releases; gzip is much faster for tests)."""
    if shutil.which("dpkg-deb") is None:
        raise SystemExit("deb: dpkg-deb is missing (a Debian or Ubuntu machine builds the .deb)")
    if version is None:
        sys.path.insert(0, str(ROOT))
        from usepod_desktop import __version__ as version
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{PACKAGE}_{version}_{architecture()}.deb"
    with tempfile.TemporaryDirectory(prefix="usepod-deb-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        stage(bundle, root, version)
        level = ["-z1"] if compress == "gzip" else []
        # --root-owner-group: files owned by root in the package without fakeroot.
        subprocess.run(
            [
                "dpkg-deb",
                "--root-owner-group",
                f"-Z{compress}",
                *level,
                "--build",
                str(root),
                str(target),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bundle", type=Path, default=HERE / "dist" / PACKAGE, help="the one-folder bundle"
    )
    parser.add_argument("--out", type=Path, default=HERE / "dist", help="where the .deb goes")
    parser.add_argument(
        "--compress", choices=("xz", "gzip", "zstd", "none"), default="xz", help="dpkg-deb -Z"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    deb = build_deb(args.bundle.resolve(), args.out.resolve(), compress=args.compress)
    print(f"deb: {deb} ({deb.stat().st_size / 2**20:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
