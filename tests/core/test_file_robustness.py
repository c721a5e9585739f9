"""agent.toml and the identity file survive interruption and are never rewritten needlessly.

agent.toml: a save is interrupted at each step of the atomic write in turn (creating the temp
file, opening it, writing half of it, flushing, fsync, chmod, the rename, the directory fsync),
by an I/O error and by an interrupt (KeyboardInterrupt, as at Ctrl-C); and a real process is
SIGKILLed at three points of a save. Before the rename the old file is left byte-identical and
loadable; from the rename on the new file is complete; no temp file is ever left behind except
by SIGKILL, and such a leftover neither breaks loading nor the next save.

Identity file: a full agent session against the sandbox coordinator (handshake, provider id
assigned, jobs, reconnects, a new provider id, stop). The file written by the reference agent
(nanosecond timestamp, a key we do not know) keeps every byte except its provider_id line, and
the secret line never changes; a reconnect with the same provider id does not touch the file.
"""

from __future__ import annotations

import base64
import errno
import os
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from usepod_desktop.core import config as cfg
from usepod_desktop.core import fs, protocol
from usepod_desktop.core import identity as identity_mod
from usepod_desktop.core.agent import Agent
from usepod_desktop.core.backoff import Backoff
from usepod_desktop.core.config import (
    BackendConfig,
    Config,
    CoordinatorConfig,
    LimitsConfig,
    PricingConfig,
    load_config,
    render_config,
    save_config,
)
from usepod_desktop.sandbox.coordinator import SandboxCoordinator
from usepod_desktop.sandbox.fakes import FakeBackend

# ------------------------------------------------------------------------------ agent.toml


class Interrupted(KeyboardInterrupt):
    """An interrupt delivered in the middle of a save (as Ctrl-C would)."""


@dataclass
class Fault:
    stage: str
    error: type[BaseException]
    fired: int = 0

    def raise_now(self) -> None:
        self.fired += 1
        if self.error is OSError:
            raise OSError(errno.EIO, f"injected I/O error at {self.stage}")
        raise self.error(f"interrupted at {self.stage}")


class _FileProxy:
    """The temp file, with a fault at `write` (after writing half the text) or `flush`."""

    def __init__(self, fh: Any, fault: Fault) -> None:
        self._fh = fh
        self._fault = fault

    def write(self, text: str) -> int:
        if self._fault.stage == "write":
            self._fh.write(text[: len(text) // 2])
            self._fh.flush()
            self._fault.raise_now()
        return int(self._fh.write(text))

    def flush(self) -> None:
        if self._fault.stage == "flush":
            self._fault.raise_now()
        self._fh.flush()

    def fileno(self) -> int:
        return int(self._fh.fileno())

    def __enter__(self) -> _FileProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


#: The steps of fs.atomic_write_text (config saves use it), in order. Up to "replace" the old
#: file must survive; after it the new file is in place and complete.
STAGES = (
    "mkstemp",
    "fdopen",
    "write",
    "flush",
    "fsync",
    "chmod",
    "replace",
    "dir_open",
    "dir_fsync",
)
BEFORE_RENAME = STAGES[: STAGES.index("replace") + 1]


def inject(monkeypatch: pytest.MonkeyPatch, fault: Fault) -> None:
    real_mkstemp, real_fdopen, real_fsync = tempfile.mkstemp, os.fdopen, os.fsync
    real_chmod, real_replace, real_open = os.chmod, os.replace, os.open
    fsyncs = {"n": 0}

    def mkstemp(*args: Any, **kwargs: Any) -> Any:
        if fault.stage == "mkstemp":
            fault.raise_now()
        return real_mkstemp(*args, **kwargs)

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        if fault.stage == "fdopen":
            os.close(fd)
            fault.raise_now()
        return _FileProxy(real_fdopen(fd, *args, **kwargs), fault)

    def fsync(fd: int) -> None:
        fsyncs["n"] += 1  # the first is the temp file, the second the directory
        if (fault.stage == "fsync" and fsyncs["n"] == 1) or (
            fault.stage == "dir_fsync" and fsyncs["n"] == 2
        ):
            fault.raise_now()
        real_fsync(fd)

    def chmod(path: Any, mode: int, **kwargs: Any) -> None:
        if fault.stage == "chmod":
            fault.raise_now()
        real_chmod(path, mode, **kwargs)

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        if fault.stage == "replace":
            fault.raise_now()
        real_replace(src, dst, **kwargs)

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if fault.stage == "dir_open" and os.path.isdir(path):
            fault.raise_now()
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(fs.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(fs.os, "fdopen", fdopen)
    monkeypatch.setattr(fs.os, "fsync", fsync)
    monkeypatch.setattr(fs.os, "chmod", chmod)
    monkeypatch.setattr(fs.os, "replace", replace)
    monkeypatch.setattr(fs.os, "open", open_)


def changed(config: Config) -> Config:
    return config.replace(
        limits=LimitsConfig(3, 1_000),
        backends=(*config.backends, BackendConfig(kind="ollama", url="http://localhost:11434")),
    )


@pytest.mark.parametrize("error", [OSError, Interrupted], ids=["io_error", "interrupt"])
@pytest.mark.parametrize("stage", STAGES)
def test_config_save_interrupted_at_each_step(
    stage: str,
    error: type[BaseException],
    reference_toml: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    directory = tmp_path / "cfg"
    directory.mkdir()
    path = directory / "agent.toml"
    path.write_text(reference_toml, encoding="utf-8")
    path.chmod(0o600)
    before = path.read_bytes()
    old = load_config(path)
    new = changed(old)
    new_text = render_config(new, reference_toml)

    fault = Fault(stage, error)
    with monkeypatch.context() as patch:
        inject(patch, fault)
        try:
            save_config(new, path)
        except (OSError, Interrupted) as exc:
            raised: BaseException | None = exc
        else:
            raised = None
    assert fault.fired == 1, f"the {stage} step was never reached: the injection is stale"

    if stage in BEFORE_RENAME:
        assert raised is not None
        assert path.read_bytes() == before  # byte-identical
        assert load_config(path) == old
    else:  # the rename happened: the new file is complete; a failed directory fsync is moot
        assert path.read_text(encoding="utf-8") == new_text
        assert load_config(path) == new
        if error is OSError:
            assert raised is None  # the save itself succeeded
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in directory.iterdir()) == ["agent.toml"]  # no temp file left


# Runs in a child process that is SIGKILLed at `point` in the middle of a save.
_KILLED_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from usepod_desktop.core import config as cfg
    path, point = Path(sys.argv[1]), sys.argv[2]
    old = cfg.load_config(path)
    new = old.replace(limits=cfg.LimitsConfig(5, None))
    real_fsync, real_replace = os.fsync, os.replace
    def die():
        os.kill(os.getpid(), signal.SIGKILL)
    def fsync(fd):
        if point == "before_fsync":
            die()
        real_fsync(fd)
    def replace(src, dst):
        if point == "before_replace":
            die()
        real_replace(src, dst)
        if point == "after_replace":
            die()
    os.fsync, os.replace = fsync, replace
    cfg.save_config(new, path)
    """
)


@pytest.mark.parametrize("point", ["before_fsync", "before_replace", "after_replace"])
def test_config_save_killed_by_sigkill(point: str, reference_toml: str, tmp_path: Path) -> None:
    directory = tmp_path / "cfg"
    directory.mkdir()
    path = directory / "agent.toml"
    path.write_text(reference_toml, encoding="utf-8")
    before = path.read_bytes()
    old = load_config(path)
    result = subprocess.run(
        [sys.executable, "-c", _KILLED_SAVE, str(path), point],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    leftovers = [p for p in directory.iterdir() if p.name != "agent.toml"]
    if point == "after_replace":
        assert load_config(path) == old.replace(limits=LimitsConfig(5, None))
        assert leftovers == []
    else:
        assert path.read_bytes() == before and load_config(path) == old
        # a killed process cannot clean up: its temp file stays, hidden and harmless
        assert [p.name.startswith(".agent.toml.") and p.suffix == ".tmp" for p in leftovers] == [
            True
        ]
    # the next save works and finds the right file
    save_config(old.replace(limits=LimitsConfig(7, None)), path)
    assert load_config(path).limits == LimitsConfig(7, None)
    assert cfg.find_config(path) == path


# ------------------------------------------------------------------------------ identity file

SEED = bytes(range(32))


def reference_identity_text() -> str:
    """An identity file as the reference (Rust) agent writes it: chrono's nanosecond RFC 3339
    timestamp, and a key this version does not know (docs/files.md: ignored on read)."""
    ident = identity_mod.from_seed(SEED, Path("unused"))
    return (
        "-----BEGIN USEPOD AGENT KEY-----\n"
        "version: 1\n"
        "created: 2026-05-02T10:11:12.123456789+00:00\n"
        f"secret: {base64.b64encode(SEED).decode()}\n"
        f"public: {ident.public_key_b64}\n"
        "generator: usepod-agent 0.3.2\n"
        "-----END USEPOD AGENT KEY-----\n"
    )


def without_provider_id(data: bytes) -> bytes:
    return b"".join(
        line for line in data.splitlines(keepends=True) if not line.startswith(b"provider_id:")
    )


def secret_line(data: bytes) -> bytes:
    (line,) = [x for x in data.splitlines() if x.startswith(b"secret:")]
    return line


@dataclass
class FileState:
    data: bytes
    inode: int
    mtime_ns: int
    mode: int


def state(path: Path) -> FileState:
    st = path.stat()
    return FileState(path.read_bytes(), st.st_ino, st.st_mtime_ns, stat.S_IMODE(st.st_mode))


@pytest.mark.parametrize("origin", ["reference", "ours"])
async def test_identity_file_only_ever_gains_its_provider_id(origin: str, tmp_path: Path) -> None:
    key_path = tmp_path / "keys" / "identity.key"
    key_path.parent.mkdir()
    if origin == "reference":
        key_path.write_text(reference_identity_text(), encoding="utf-8")
        key_path.chmod(0o600)
    else:
        identity_mod.create(key_path)
    original = state(key_path)
    pubkey = identity_mod.load(key_path).public_key_b64

    async with (
        SandboxCoordinator(ws_heartbeat=None) as coordinator,
        FakeBackend("vllm", ["m"], output_tokens=3) as fake,
    ):
        coordinator.announce_sandbox = False  # the real coordinator's provider id is kept
        config = Config(
            coordinator=CoordinatorConfig(coordinator.url),
            pricing=PricingConfig(500_000, 750_000),
            backends=(BackendConfig(kind="vllm", url=fake.url),),
            identity_key_path=str(key_path),
        )
        agent = Agent(config, allow_insecure=True, backoff=Backoff(initial=0.05, maximum=0.2))
        await agent.start()
        try:
            session = await coordinator.wait_for_provider(10)
            await coordinator.wait_for_capabilities(10, provider=session)
            first_id = session.provider_id
            assert first_id is not None
            gained = state(key_path)
            # exactly one line more: the provider id, before the footer; nothing else moved
            assert without_provider_id(gained.data) == original.data
            assert f"provider_id: {first_id}\n-----END".encode() in gained.data
            assert secret_line(gained.data) == secret_line(original.data)
            assert gained.mode == 0o600

            for _ in range(3):  # jobs and reconnects as the same provider: the file is untouched
                handle = await coordinator.dispatch("m", {"messages": [], "max_tokens": 3})
                assert isinstance(await handle.wait(10), protocol.JobDone)
                await coordinator.kick()
                session = await coordinator.wait_for_provider(10, after=session.serial)
                assert session.provider_id == first_id and not session.sent_enrollment_code
                await coordinator.wait_for_capabilities(10, provider=session)
            assert state(key_path) == gained  # same bytes, same inode, same mtime: not rewritten

            # the coordinator assigns a new id: only that line changes
            coordinator.provider_ids[pubkey] = "prov_reassigned"
            await coordinator.kick()
            session = await coordinator.wait_for_provider(10, after=session.serial)
            assert session.provider_id == "prov_reassigned"
            await coordinator.wait_for_capabilities(10, provider=session)
            reassigned = state(key_path)
            assert without_provider_id(reassigned.data) == original.data
            assert b"provider_id: prov_reassigned\n" in reassigned.data
            assert reassigned.data.count(b"provider_id:") == 1
            assert secret_line(reassigned.data) == secret_line(original.data)
            assert reassigned.mode == 0o600
        finally:
            await agent.stop(grace=0.5)
    assert state(key_path) == reassigned  # stopping does not write it either
    reloaded = identity_mod.load(key_path)
    assert reloaded.public_key_b64 == pubkey and reloaded.provider_id == "prov_reassigned"
