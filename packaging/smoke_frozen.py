"""The frozen app's smoke test on any OS (the release workflow runs it on Linux, Windows and
macOS): `python packaging/smoke_frozen.py PRODUCT [--max-mib N]`.

PRODUCT is what packaging/build.py made: the folder `packaging/dist/usepod-desktop` (Linux,
Windows) or `packaging/dist/Use Pod Desktop.app` (macOS). With HOME (and USERPROFILE / APPDATA /
the XDG dirs) in a temporary directory it checks:

- `--version` prints this source tree's version; `validate` accepts the reference example;
- start at login on, status, off (the entry points at the frozen program);
- `forget` removes start at login again;
- the headless agent serves one job from the sandbox coordinator and stops gracefully on
  SIGTERM / Ctrl-Break with exit code 0 (packaging/smoke_run.py);
- the size of the product, printed; with `--max-mib`, a check against it.

One line per check; the last line is `smoke: N passed, N failed`; exit code 1 when a check
failed. On Windows the console twin `usepod-desktop-cli.exe` runs the commands (the windowed
`usepod-desktop.exe` has no stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIXTURE = ROOT / "tests" / "fixtures" / "agent.example.toml"


def product_size(path: Path) -> int:
    """Bytes on disk (apparent size of every regular file, links not followed)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def console_program(product: Path) -> Path:
    if sys.platform == "win32":
        return product / "usepod-desktop-cli.exe"
    if sys.platform == "darwin":
        return product / "Contents" / "MacOS" / "usepod-desktop"
    return product / "usepod-desktop"


def user_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("USEPOD_", "XDG_"))}
    env.update(
        HOME=str(home),
        USERPROFILE=str(home),
        APPDATA=str(home / "AppData" / "Roaming"),
        LOCALAPPDATA=str(home / "AppData" / "Local"),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        QT_QPA_PLATFORM="offscreen",
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",  # the runner's keyring stays out
    )
    return env


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, ok: bool, what: str, detail: str = "") -> None:
        if ok:
            self.passed += 1
            print(f"  ok    {what}", flush=True)
        else:
            self.failed += 1
            print(f"  FAIL  {what}", flush=True)
            for line in detail.strip().splitlines()[-30:]:
                print(f"        {line}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("product", type=Path, help="the bundle folder or the .app")
    parser.add_argument("--max-mib", type=float, default=None, help="fail above this size")
    args = parser.parse_args(argv)
    product: Path = args.product.resolve()
    exe = console_program(product)
    if not exe.is_file():
        print(f"smoke: no program at {exe}")
        print("smoke: 0 passed, 1 failed")
        return 1
    sys.path[:0] = [str(HERE), str(ROOT)]
    from usepod_desktop import __version__

    checks = Checks()
    tmp = Path(tempfile.mkdtemp(prefix="usepod-smoke-"))
    home = tmp / "home"
    home.mkdir()
    env = user_env(home)

    def run(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(exe), *command],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )

    size = product_size(product)
    mib = size / 2**20
    print(f"smoke: {product} ({mib:.1f} MiB on disk)", flush=True)
    if args.max_mib is not None:
        checks.check(mib <= args.max_mib, f"bundle size {mib:.1f} MiB <= {args.max_mib:g} MiB")

    out = run("--version")
    checks.check(
        out.returncode == 0 and out.stdout.strip() == f"usepod-desktop {__version__}",
        "--version",
        out.stdout + out.stderr,
    )
    out = run("validate", "--config", str(FIXTURE))
    checks.check(
        out.returncode == 0 and out.stdout.strip() == "ok: parsed 2 backend(s)",
        "validate the reference example",
        out.stdout + out.stderr,
    )
    on = run("autostart", "on")
    status = run("autostart", "status")
    checks.check(
        on.returncode == 0
        and status.stdout.startswith("start at login: on")
        and str(product) in on.stdout,
        "start at login on points at the frozen program",
        on.stdout + on.stderr + status.stdout + status.stderr,
    )
    off = run("autostart", "off")
    status = run("autostart", "status")
    checks.check(
        off.returncode == 0 and status.stdout.startswith("start at login: off"),
        "start at login off",
        off.stdout + off.stderr + status.stdout,
    )
    run("autostart", "on")
    forget = run("forget")
    status = run("autostart", "status")
    checks.check(
        forget.returncode == 0 and status.stdout.startswith("start at login: off"),
        "forget removes start at login",
        forget.stdout + forget.stderr + status.stdout,
    )

    from smoke_run import smoke  # packaging/smoke_run.py, next to this file

    try:
        summary = asyncio.run(smoke(str(exe)))
    except (AssertionError, TimeoutError, OSError) as exc:
        checks.check(False, "run: one sandbox job, graceful stop", f"{type(exc).__name__}: {exc}")
    else:
        checks.check(True, f"run: one sandbox job, graceful stop ({summary})")

    print(f"smoke: {checks.passed} passed, {checks.failed} failed", flush=True)
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
