"""Smoke helper: the frozen `usepod-desktop run` serves one job, then stops on SIGTERM.

    python packaging/smoke_run.py packaging/dist/usepod-desktop/usepod-desktop

Starts the sandbox coordinator and a fake vLLM backend on 127.0.0.1 in this (unfrozen) process,
writes an agent.toml pointing at them (`ws://`, so the agent gets `--allow-insecure`), runs the
frozen executable with HOME and the XDG dirs in a temporary directory, dispatches one job,
checks that it ends with `job_done` and carries the fake's answer, sends SIGTERM (Windows:
Ctrl-Break to its own console process group) and expects exit code 0. Prints one summary line;
exits non-zero (with the agent's output) on any failure. packaging/smoke_frozen.py calls
:func:`smoke` on every OS.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from usepod_desktop.core import protocol  # noqa: E402
from usepod_desktop.sandbox.coordinator import SandboxCoordinator  # noqa: E402
from usepod_desktop.sandbox.fakes import FakeBackend  # noqa: E402

MODEL = "smoke-model"
CHAT = {"messages": [{"role": "user", "content": "hello from the smoke test"}], "max_tokens": 6}


def agent_toml(coordinator_url: str, backend_url: str, home: Path) -> str:
    return f"""\
[coordinator]
url = "{coordinator_url}"

[identity]
key_path = "{(home / ".usepod-agent" / "identity.key").as_posix()}"

[[backends]]
kind = "vllm"
url  = "{backend_url}"

[pricing]
default_input_per_1m  = 500_000
default_output_per_1m = 750_000
"""


IS_WINDOWS = sys.platform == "win32"


def _stop(proc: asyncio.subprocess.Process) -> None:
    """Ask the agent to stop as a service manager / the console would."""
    if IS_WINDOWS:
        proc.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined,unused-ignore]
    else:
        proc.send_signal(signal.SIGTERM)


async def smoke(exe: str) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="usepod-smoke-run-"))
    home = tmp / "home"
    home.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "USERPROFILE": str(home),
        "APPDATA": str(home / "AppData" / "Roaming"),
        "LOCALAPPDATA": str(home / "AppData" / "Local"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "USEPOD_CONFIG_DIR": str(home / ".config" / "usepod-agent"),
        "USEPOD_DATA_DIR": str(home / "data"),
        "USEPOD_LOG_DIR": str(home / "log"),
        "QT_QPA_PLATFORM": "offscreen",
    }
    async with (
        SandboxCoordinator(ws_heartbeat=None) as coord,
        FakeBackend("vllm", [MODEL], output_tokens=6) as fake,
    ):
        config = tmp / "agent.toml"
        config.write_text(agent_toml(coord.url, fake.url, home), encoding="utf-8")
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            exe,
            "run",
            "--allow-insecure",
            "--config",
            str(config),
            "--log-level",
            "info",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            env=env,
            cwd=tmp,
            # Windows: its own process group, so Ctrl-Break reaches the agent and not us.
            **({"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if IS_WINDOWS else {}),
        )
        output = bytearray()

        async def drain() -> None:
            assert proc.stdout is not None
            while chunk := await proc.stdout.read(65536):
                output.extend(chunk)

        reader = asyncio.create_task(drain())
        try:
            await coord.wait_for_provider(30)
            await coord.wait_for_capabilities(30)
            connected = time.monotonic() - started
            handle = await coord.dispatch(MODEL, CHAT)
            terminal = await handle.wait(30)
            if not isinstance(terminal, protocol.JobDone):
                raise AssertionError(f"the job ended with {terminal!r}, not job_done")
            if not handle.text:
                raise AssertionError("job_done but no content was streamed")
            if not fake.requests or fake.requests[-1].json.get("model") != MODEL:
                raise AssertionError("the fake backend did not see the job")
            _stop(proc)
            code = await asyncio.wait_for(proc.wait(), 30)
            if code != 0:
                raise AssertionError(f"exit code {code} after the stop signal, expected 0")
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await reader
            sys.stderr.write(output.decode("utf-8", "replace"))
            raise
        await reader
    return (
        f"connected in {connected:.2f} s, job_done after {len(handle.data)} bytes streamed, "
        f"exit 0 after {'Ctrl-Break' if IS_WINDOWS else 'SIGTERM'}"
    )


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        print(asyncio.run(smoke(os.path.abspath(sys.argv[1]))))
    except (AssertionError, TimeoutError) as exc:
        print(f"smoke_run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
