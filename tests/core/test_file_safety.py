"""Files (issue 12, item 15): a symlinked agent.toml is written through, the config, the ledger
and the logs are created owner-only, and a save on top of a file another program changed since
it was loaded is refused instead of overwriting that change. The other program is this test,
writing the file behind the agent's back."""

from __future__ import annotations

import logging
import logging.handlers
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.core.test_ledger import outcome
from usepod_desktop.core import config as config_mod
from usepod_desktop.core.config import (
    ConfigChangedError,
    LimitsConfig,
    load_config,
    save_config,
)
from usepod_desktop.core.ledger import Ledger
from usepod_desktop.core.logsetup import setup_logging

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes and symlinks")

TEXT = """# my agent, my comments
[coordinator]
url = "wss://coordinator.example/provider/connect"

[pricing]
default_input_per_1m = 500_000
default_output_per_1m = 750_000
"""


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)  # what most desktops use: new files 0644, dirs 0755
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_symlinked_agent_toml_is_written_through_and_stays_a_link(tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "agent.toml"
    real.parent.mkdir()
    real.write_text(TEXT)
    link = tmp_path / "config" / "agent.toml"
    link.parent.mkdir()
    link.symlink_to(real)
    config = load_config(link)
    save_config(config.replace(limits=LimitsConfig(max_concurrent=3)), link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert "max_concurrent = 3" in real.read_text()
    assert real.read_text().startswith("# my agent, my comments")
    assert load_config(link).limits.max_concurrent == 3
    assert [p.name for p in link.parent.iterdir()] == ["agent.toml"]  # no temp file left


def test_new_config_is_0600_in_a_new_0700_directory(tmp_path: Path) -> None:
    source = tmp_path / "source.toml"
    source.write_text(TEXT)
    config = load_config(source)
    target = tmp_path / "new" / "deeper" / "agent.toml"
    save_config(config, target)
    assert mode(target) == 0o600
    assert mode(target.parent) == 0o700 and mode(target.parent.parent) == 0o700


def test_an_existing_config_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(TEXT)
    path.chmod(0o640)
    save_config(load_config(path).replace(limits=LimitsConfig(max_concurrent=2)), path)
    assert mode(path) == 0o640


def test_ledger_and_its_directory_are_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "data" / "usepod" / "ledger.sqlite3"
    with Ledger(db) as ledger:
        assert ledger.record(outcome("a"))
        assert ledger.count() == 1
        side_files = [p for p in db.parent.iterdir() if p.name.startswith("ledger.sqlite3-")]
        assert side_files  # WAL mode: -wal and -shm exist while open
        for path in [db, *side_files]:
            assert mode(path) == 0o600, path
    assert mode(db.parent) == 0o700 and mode(db.parent.parent) == 0o700


def test_a_world_readable_ledger_is_narrowed_to_0600(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    with Ledger(db) as ledger:
        ledger.record(outcome("a"))
    db.chmod(0o644)
    with Ledger(db) as ledger:
        assert ledger.count() == 1
    assert mode(db) == 0o600


def test_log_files_are_owner_only_after_rotation_too(tmp_path: Path) -> None:
    directory = tmp_path / "state" / "log"
    path = setup_logging("info", directory=directory)
    try:
        assert path is not None
        rotating = logging.handlers.RotatingFileHandler
        handler = next(h for h in logging.getLogger().handlers if isinstance(h, rotating))
        logging.getLogger("test").info("a line")
        handler.doRollover()
        logging.getLogger("test").info("after rotation")
        files = sorted(directory.iterdir())
        assert len(files) == 2
        assert all(mode(f) == 0o600 for f in files), [(f.name, oct(mode(f))) for f in files]
        assert mode(directory) == 0o700 and mode(directory.parent) == 0o700
    finally:
        setup_logging("info", log_file=False)


def test_a_save_on_top_of_a_file_changed_on_disk_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(TEXT)
    config = load_config(path)
    # another program (an editor, the reference agent's tooling) edits it meanwhile
    edited = TEXT + "\n[limits]\nmax_concurrent = 4  # set by hand\n"
    path.write_text(edited)
    with pytest.raises(ConfigChangedError) as info:
        save_config(config.replace(limits=LimitsConfig(max_concurrent=7)), path)
    assert "changed on disk since it was loaded; nothing was saved" in info.value.message
    assert path.read_text() == edited  # the other program's change survives
    # reloading takes the file as it is now; then a save goes through and keeps the edit
    fresh = load_config(path)
    assert fresh.limits.max_concurrent == 4
    save_config(fresh.replace(limits=LimitsConfig(max_concurrent=7)), path)
    assert "max_concurrent = 7  # set by hand" in path.read_text()


def test_own_saves_do_not_count_as_a_change(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(TEXT)
    config = load_config(path)
    for n in (2, 3, 4):
        config = config.replace(limits=LimitsConfig(max_concurrent=n))
        save_config(config, path)
    assert load_config(path).limits.max_concurrent == 4


def test_a_deleted_file_after_load_is_a_change_too(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(TEXT)
    config = load_config(path)
    path.unlink()
    with pytest.raises(ConfigChangedError):
        save_config(config, path)
    assert not path.exists()
    assert str(path.resolve()) in config_mod._LOADED
