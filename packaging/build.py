"""Build the one-folder usepod-desktop bundle for this OS: `python packaging/build.py`.

Run it with the Python that has the app and PyInstaller installed (`pip install -e ".[packaging]"`).

1. Render the app icon from SVG (`resources/icons/app.svg`, else `resources/app-icon.svg`) with
   Qt offscreen: PNGs, a multi-size .ico (PNG-compressed entries, Windows Vista and later) and,
   on macOS, an .icns through `iconutil`.
2. On Windows write the version resource.
3. Run PyInstaller on `packaging/usepod-desktop.spec`.
4. On Linux add `usepod-desktop.desktop` and `usepod-desktop.png` to the folder, and slim Qt's
   ICU data (see :func:`slim_icu_data`).
5. With `--deb` (Linux), turn the folder into a Debian package (packaging/deb.py).
6. macOS: with MACOS_SIGN_IDENTITY set, sign (and with APPLE_ID/APPLE_TEAM_ID/
   APPLE_APP_PASSWORD notarise) the .app through packaging/macos/sign.sh; with `--dmg`, make
   the disk image (packaging/macos/make_dmg.sh), signed the same way. Windows: with
   WINDOWS_CERT_PFX_BASE64 set, sign both executables through packaging/windows/sign.ps1.
   The installer itself comes from Inno Setup (packaging/windows/usepod-desktop.iss).

Output goes to packaging/dist/ (work files to packaging/build/); both are git-ignored.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APP = "usepod-desktop"
DISPLAY_NAME = "Use Pod Desktop"
ICO_SIZES = (16, 20, 24, 32, 40, 48, 64, 128, 256)
#: iconutil's iconset: file name -> pixel size.
ICONSET = {
    "icon_16x16.png": 16,
    "icon_16x16@2x.png": 32,
    "icon_32x32.png": 32,
    "icon_32x32@2x.png": 64,
    "icon_128x128.png": 128,
    "icon_128x128@2x.png": 256,
    "icon_256x256.png": 256,
    "icon_256x256@2x.png": 512,
    "icon_512x512.png": 512,
    "icon_512x512@2x.png": 1024,
}


def app_svg() -> Path:
    for candidate in (
        ROOT / "resources" / "icons" / "app.svg",
        ROOT / "resources" / "app-icon.svg",
    ):
        if candidate.is_file():
            return candidate
    raise SystemExit("build: no app icon SVG (resources/icons/app.svg or resources/app-icon.svg)")


def render_pngs(svg: Path, sizes: set[int]) -> dict[int, bytes]:
    """Render the SVG at each size into PNG bytes, offscreen (no display needed)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    _app = QGuiApplication.instance() or QGuiApplication([sys.argv[0]])
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"build: cannot render {svg}")
    out: dict[int, bytes] = {}
    for size in sorted(sizes):
        image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        renderer.render(painter)
        painter.end()
        data = QByteArray()
        buf = QBuffer(data)
        buf.open(QIODevice.OpenModeFlag.WriteOnly)
        if not image.save(buf, "PNG"):
            raise SystemExit(f"build: cannot encode a {size}px PNG")
        buf.close()
        out[size] = bytes(data.data())
    del _app
    return out


def ico_bytes(pngs: dict[int, bytes]) -> bytes:
    """A multi-size .ico whose entries are PNG images."""
    sizes = sorted(pngs)
    header = struct.pack("<HHH", 0, 1, len(sizes))
    offset = len(header) + 16 * len(sizes)
    entries, blobs = b"", b""
    for size in sizes:
        data = pngs[size]
        dim = 0 if size >= 256 else size
        entries += struct.pack("<BBBBHHII", dim, dim, 0, 0, 1, 32, len(data), offset)
        blobs += data
        offset += len(data)
    return header + entries + blobs


def make_icons(out: Path, *, icns: bool) -> dict[str, Path]:
    svg = app_svg()
    out.mkdir(parents=True, exist_ok=True)
    sizes = set(ICO_SIZES) | ({*ICONSET.values()} if icns else set())
    pngs = render_pngs(svg, sizes)
    made = {"svg": svg}
    png = out / f"{APP}.png"
    png.write_bytes(pngs[256])
    made["png"] = png
    ico = out / f"{APP}.ico"
    ico.write_bytes(ico_bytes({s: pngs[s] for s in ICO_SIZES}))
    made["ico"] = ico
    if icns:
        iconset = out / f"{APP}.iconset"
        shutil.rmtree(iconset, ignore_errors=True)
        iconset.mkdir()
        for name, size in ICONSET.items():
            (iconset / name).write_bytes(pngs[size])
        target = out / f"{APP}.icns"
        subprocess.run(["iconutil", "-c", "icns", str(iconset), "-o", str(target)], check=True)
        made["icns"] = target
    return made


def windows_version_text(version: str) -> str:
    """PyInstaller's version-resource file (a VSVersionInfo expression)."""
    nums = [int(p) for p in version.split(".")[:4] if p.isdigit()]
    four = tuple([*nums, 0, 0, 0, 0][:4])
    strings = {
        "CompanyName": "Use Pod",
        "FileDescription": DISPLAY_NAME,
        "FileVersion": version,
        "InternalName": APP,
        "OriginalFilename": f"{APP}.exe",
        "ProductName": DISPLAY_NAME,
        "ProductVersion": version,
        "LegalCopyright": "MIT License",
    }
    table = ",\n          ".join(f"StringStruct({k!r}, {v!r})" for k, v in strings.items())
    return f"""# UTF-8
VSVersionInfo(
  ffi=FixedFileInfo(
    filevers={four},
    prodvers={four},
    mask=0x3F,
    flags=0x0,
    OS=0x40004,
    fileType=0x1,
    subtype=0x0,
    date=(0, 0),
  ),
  kids=[
    StringFileInfo([
      StringTable(
        '040904B0',
        [
          {table}
        ])
    ]),
    VarFileInfo([VarStruct('Translation', [1033, 1200])])
  ]
)
"""


def linux_desktop_entry() -> str:
    """The menu entry shipped in the Linux folder and the .deb (resources/linux/)."""
    return (ROOT / "resources" / "linux" / f"{APP}.desktop").read_text(encoding="utf-8")


#: ICU data the app cannot reach through Qt, dropped from the bundle's libicudata (19 of 29 MB).
#: Qt 6 uses ICU for collation (QCollator), locale-aware case mapping, time zone names and
#: legacy text codecs; those items are kept (the multi-byte CJK codec tables excepted, which
#: only QStringConverter on a non-Unicode CJK document would load). Qt has its own CLDR tables
#: for QLocale and its own text-boundary and IDNA code, so ICU's localized names of languages,
#: regions, currencies and units, break-iterator dictionaries, transliteration, number
#: spell-out and Unicode character names are never read.
ICU_DROP_DIRS = ("brkitr", "curr", "lang", "rbnf", "region", "translit", "unit")
ICU_DROP_FILES = ("unames.icu",)
ICU_MAX_CODEC = 64 * 1024


def icu_keep(name: str, size: int) -> bool:
    """Whether an item of ICU's common data (`icudt73l/coll/root.res`) stays in the bundle."""
    parts = name.split("/")
    if len(parts) > 2 and parts[1] in ICU_DROP_DIRS:
        return False
    if parts[-1] in ICU_DROP_FILES:
        return False
    return not (parts[-1].endswith(".cnv") and size > ICU_MAX_CODEC)


def _align16(n: int) -> int:
    return (n + 15) & ~15


def filter_icu_common_data(blob: bytes, keep) -> tuple[bytes, int]:  # type: ignore[no-untyped-def]
    """Rewrite an ICU common data package ("CmnD", offset table of contents) with the items
    `keep(name, size)` accepts. Returns the new package and the number of items kept."""
    header_size = struct.unpack_from("<H", blob, 0)[0]
    if blob[2:4] != b"\xda\x27" or blob[12:16] != b"CmnD":
        raise ValueError("not an ICU common data package")
    count = struct.unpack_from("<I", blob, header_size)[0]
    toc = [struct.unpack_from("<II", blob, header_size + 4 + 8 * i) for i in range(count)]
    items: list[tuple[bytes, bytes]] = []
    for i, (name_off, data_off) in enumerate(toc):
        end = toc[i + 1][1] if i + 1 < count else len(blob) - header_size
        start = header_size + name_off
        name = blob[start : blob.index(b"\0", start)]
        data = blob[header_size + data_off : header_size + end]
        if keep(name.decode("ascii"), len(data)):
            items.append((name, data))
    names_start = 4 + 8 * len(items)
    name_offsets, names = [], b""
    for name, _ in items:
        name_offsets.append(names_start + len(names))
        names += name + b"\0"
    offset = _align16(names_start + len(names))
    data_offsets, body = [], b""
    for _, data in items:
        data_offsets.append(offset + len(body))
        body += data + b"\0" * (_align16(len(data)) - len(data))
    out = bytearray(blob[:header_size])
    out += struct.pack("<I", len(items))
    for n_off, d_off in zip(name_offsets, data_offsets, strict=True):
        out += struct.pack("<II", n_off, d_off)
    out += names
    out += b"\0" * (header_size + offset - len(out))
    out += body
    return bytes(out), len(items)


def _elf_symbol(path: Path, symbol_re: str) -> tuple[str, int, int]:
    """(name, file offset, size) of a data symbol, through binutils' readelf."""
    syms = subprocess.run(["readelf", "-Ws", str(path)], capture_output=True, text=True, check=True)
    for line in syms.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 8 and re.fullmatch(symbol_re, fields[7]) and fields[6].isdigit():
            value, size, index = int(fields[1], 16), int(fields[2], 0), int(fields[6])
            break
    else:
        raise ValueError(f"no symbol {symbol_re} in {path}")
    sections = subprocess.run(
        ["readelf", "-SW", str(path)], capture_output=True, text=True, check=True
    )
    for line in sections.stdout.splitlines():
        m = re.match(r"\s*\[\s*(\d+)\]\s+\S+\s+\S+\s+([0-9a-f]+)\s+([0-9a-f]+)", line)
        if m and int(m.group(1)) == index:
            return fields[7], value - int(m.group(2), 16) + int(m.group(3), 16), size
    raise ValueError(f"no section {index} in {path}")


def slim_icu_data(folder: Path) -> str:
    """Replace the bundle's libicudata.so.NN (ICU's data, 31 MB, linked by QtCore) by one with
    only the items :func:`icu_keep` accepts: same soname, same exported symbol. Needs a C
    compiler (`cc`) and readelf; without them the full library stays and this says so."""
    found = sorted(folder.rglob("libicudata.so.*"))
    libs = [p for p in found if p.is_file() and not p.is_symlink()]
    if not libs:
        return "no libicudata in the bundle"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or shutil.which("readelf") is None:
        return "kept the full ICU data (install a C compiler and binutils to slim it)"
    lib = libs[0]
    symbol, offset, size = _elf_symbol(lib, r"icudt\d+_dat")
    blob = lib.read_bytes()[offset : offset + size]
    slim, kept = filter_icu_common_data(blob, icu_keep)
    with tempfile.TemporaryDirectory() as tmp:
        dat = Path(tmp) / "icudata.dat"
        dat.write_bytes(slim)
        asm = Path(tmp) / "icudata.S"
        asm.write_text(
            f'''.section .rodata
.globl {symbol}
.type {symbol}, @object
.balign 16
{symbol}:
.incbin "{dat}"
.size {symbol}, . - {symbol}
.section .note.GNU-stack,"",@progbits
''',
            encoding="utf-8",
        )
        out = Path(tmp) / lib.name
        subprocess.run(
            [cc, "-shared", "-nostdlib", f"-Wl,-soname,{lib.name}", "-o", str(out), str(asm)],
            check=True,
        )
        shutil.copyfile(out, lib)
    return (
        f"ICU data {size / 2**20:.1f} -> {len(slim) / 2**20:.1f} MiB "
        f"({kept} items kept; ICU_DROP_DIRS in packaging/build.py)"
    )


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=HERE / "dist", help="output folder")
    parser.add_argument("--work", type=Path, default=HERE / "build", help="work folder")
    parser.add_argument(
        "--no-clean", action="store_true", help="reuse PyInstaller's cache (faster rebuilds)"
    )
    parser.add_argument(
        "--deb", action="store_true", help="Linux: also build the .deb (packaging/deb.py)"
    )
    parser.add_argument(
        "--dmg", action="store_true", help="macOS: also build the .dmg (packaging/macos/)"
    )
    args = parser.parse_args(argv)

    try:
        import PyInstaller.__main__ as pyinstaller
    except ImportError:
        print('build: PyInstaller is missing: pip install -e ".[packaging]"', file=sys.stderr)
        return 2
    from usepod_desktop import __version__

    started = time.monotonic()
    env_before = dict(os.environ)
    work: Path = args.work.resolve()
    dist: Path = args.dist.resolve()
    icons = make_icons(work / "icons", icns=sys.platform == "darwin")
    print(f"build: icons from {icons['svg'].relative_to(ROOT)} -> {work / 'icons'}")
    os.environ.clear()
    os.environ.update(env_before)  # the Qt offscreen switch was for the icons only
    os.environ["USEPOD_ICON_DIR"] = str(work / "icons")
    if sys.platform == "win32":
        version_file = work / "file_version_info.txt"
        version_file.write_text(windows_version_text(__version__), encoding="utf-8")
        os.environ["USEPOD_VERSION_FILE"] = str(version_file)

    options = [
        str(HERE / f"{APP}.spec"),
        "--noconfirm",
        "--distpath",
        str(dist),
        "--workpath",
        str(work / "pyinstaller"),
        "--log-level",
        "WARN",
    ]
    if not args.no_clean:
        options.append("--clean")
    if args.deb and not sys.platform.startswith("linux"):
        parser.error("--deb builds a Debian package: run it on Linux")
    if args.dmg and sys.platform != "darwin":
        parser.error("--dmg builds a macOS disk image: run it on macOS")
    pyinstaller.run(options)

    folder = dist / APP
    if sys.platform.startswith("linux"):
        (folder / f"{APP}.desktop").write_text(linux_desktop_entry(), encoding="utf-8")
        shutil.copy2(icons["png"], folder / f"{APP}.png")
        print(f"build: {slim_icu_data(folder)}")
    product = dist / f"{DISPLAY_NAME}.app" if sys.platform == "darwin" else folder
    exe = "usepod-desktop.exe" if sys.platform == "win32" else APP
    elapsed = time.monotonic() - started
    size = folder_size(product)
    print(f"build: {product} ({size / 2**20:.0f} MiB) in {elapsed:.0f} s")
    if sys.platform != "darwin":
        print(f"build: run it: {folder / exe} --version")
    if args.deb:
        import importlib.util

        spec = importlib.util.spec_from_file_location("usepod_packaging_deb", HERE / "deb.py")
        assert spec is not None and spec.loader is not None
        deb = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(deb)
        package = deb.build_deb(folder, dist, __version__)
        print(f"build: {package} ({package.stat().st_size / 2**20:.0f} MiB)")
    signing_hooks(product, dist, __version__, dmg=args.dmg)
    return 0


def signing_hooks(product: Path, dist: Path, version: str, *, dmg: bool) -> None:
    """The documented signing hooks (packaging/README.md, "Signing"): each runs only when its
    certificate is in the environment, so an unsigned build needs nothing."""
    if sys.platform == "darwin":
        sign = os.environ.get("MACOS_SIGN_IDENTITY")
        if sign:
            subprocess.run([str(HERE / "macos" / "sign.sh"), "app", str(product)], check=True)
        if dmg:
            machine = platform.machine() or "unknown"
            image = dist / f"{APP}-{version}-macos-{machine}.dmg"
            subprocess.run(
                [str(HERE / "macos" / "make_dmg.sh"), str(product), str(image)], check=True
            )
            if sign:
                subprocess.run([str(HERE / "macos" / "sign.sh"), "dmg", str(image)], check=True)
    elif sys.platform == "win32" and os.environ.get("WINDOWS_CERT_PFX_BASE64"):
        exes = [str(product / f"{APP}.exe"), str(product / f"{APP}-cli.exe")]
        script = str(HERE / "windows" / "sign.ps1")
        subprocess.run(
            ["powershell", "-NoProfile", "-ExecutionPolicy", "Bypass", "-File", script, *exes],
            check=True,
        )


if __name__ == "__main__":
    sys.exit(main())
