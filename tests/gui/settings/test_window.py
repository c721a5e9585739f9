"""gui/settings/window.py: Apply checks the whole draft with the core and writes nothing while a
problem is left, shows every problem on its field, repairs an agent.toml that does not load, and
never overwrites a file another program changed."""

from __future__ import annotations

import contextlib

import pytest
import qasync
import tomlkit

from tests.gui.conftest import Rig, spin
from tests.gui.settings.helpers import (
    file_of,
    open_window,
)
from usepod_desktop.core import config as cfg
from usepod_desktop.core.config import (
    BackendConfig,
    LimitsConfig,
)
from usepod_desktop.core.errors import ConfigError
from usepod_desktop.core.events import AgentState
from usepod_desktop.gui.settings import SettingsWindow
from usepod_desktop.gui.widgets import is_marked
from usepod_desktop.sandbox.fakes import FakeBackend

pytestmark = pytest.mark.gui


@pytest.mark.parametrize(
    "field, text",
    [
        ("default_in", ""),
        ("default_in", "abc"),
        ("default_in", "0"),
        ("default_out", "-1"),
        ("default_out", "nan"),
        ("default_out", "inf"),
        ("default_in", "0.0000001"),
        ("override", "-2"),
        ("override_half", "1.00"),
        ("tpm", "lots"),
        ("url", "https://api.usepod.ai/provider/connect"),
    ],
)
def test_an_invalid_field_blocks_apply_and_leaves_the_file_byte_identical(
    rig: Rig, field: str, text: str
) -> None:
    window = open_window(rig)
    before = rig.config_path.read_bytes()
    config_before = rig.agent.config
    # a valid change elsewhere must not be written either
    window.limits_tab.max_concurrent.setValue(3)
    pricing = window.pricing_tab
    if field == "default_in":
        widget = pricing.default_in
        widget.setText(text)
    elif field == "default_out":
        widget = pricing.default_out
        widget.setText(text)
    elif field == "override":
        pricing.set_price("alpha", text, "1.00")
        widget = pricing.row_edits["alpha"][0]
    elif field == "override_half":
        pricing.set_price("alpha", text, "")
        widget = pricing.row_edits["alpha"][1]
    elif field == "tpm":
        widget = window.limits_tab.tpm
        widget.setText(text)
    else:
        widget = window.coordinator_tab.url
        widget.setText(text)

    assert window.apply() is False
    assert is_marked(widget), f"{field} not highlighted"
    assert widget.toolTip()  # the message is on the field
    assert window.message.text().startswith("Nothing was saved")
    spin(rig.loop, 0.2)
    assert rig.config_path.read_bytes() == before
    assert rig.agent.config is config_before

    # fixing it clears the highlight and saves
    if field in ("default_in", "default_out"):
        widget.setText("0.55")
    elif field.startswith("override"):
        pricing.set_price("alpha", "1.00", "1.00")
    elif field == "tpm":
        widget.setText("120_000")
    else:
        widget.setText(rig.coordinator.url)
    assert window.apply(), window.message.text()
    rig.until(lambda: not window.saving)
    if field.startswith("override"):  # the saved config rebuilt the table's cells
        widget = pricing.row_edits["alpha"][0 if field == "override" else 1]
        assert widget.text() == "1.00"
    assert not is_marked(widget)
    assert rig.config_path.read_bytes() != before
    assert file_of(rig)["limits"]["max_concurrent"] == 3


def test_a_core_config_error_is_shown_inline(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    window = open_window(rig)
    before = rig.config_path.read_bytes()

    async def refuse(config: object, *, allow_insecure: bool | None = None) -> None:
        raise ConfigError(
            "limits.max_concurrent: must be within [1, 256], got 300", field="limits.max_concurrent"
        )

    monkeypatch.setattr(rig.agent, "save_config", refuse)
    window.limits_tab.max_concurrent.setValue(7)
    assert window.apply()
    rig.until(lambda: not window.saving)
    assert "must be within [1, 256]" in window.message.text()
    assert window.tabs.currentWidget() is window.limits_tab
    assert is_marked(window.limits_tab.max_concurrent)
    assert window.limits_tab.max_concurrent_error.text().endswith("got 300")
    assert rig.config_path.read_bytes() == before


def test_every_problem_of_a_draft_is_shown_at_once_and_nothing_is_written(rig: Rig) -> None:
    window = open_window(rig)
    before = rig.config_path.read_bytes()
    config_before = rig.agent.config
    window.coordinator_tab.url.setText("ftp://coord.example/x")
    # entries as a hand-written agent.toml could hold them: the core's rules catch them
    window.backends_tab.entries += [
        BackendConfig("openrouter", api_key_env="OPENROUTER_API_KEY", markup=50.0),
        BackendConfig("venice", api_key_env="NOT A NAME"),
    ]
    window.backends_tab.rebuild()
    window.pricing_tab.default_in.setText("abc")  # cannot be read: the tab says so
    window.pricing_tab.set_price("alpha", "1.00", "")
    window.limits_tab.tpm.setText("2_000_000_000_000")  # read fine; above the core's bound
    window.serving_tab.temp_pause.setValue(80)
    window.serving_tab.temp_resume.setValue(90)

    assert window.apply() is False
    marked = {
        "coordinator": window.coordinator_tab.url,
        "backends": window.backends_tab.table,
        "default input": window.pricing_tab.default_in,
        "alpha output": window.pricing_tab.row_edits["alpha"][1],
        "tokens per minute": window.limits_tab.tpm,
        "resume temperature": window.serving_tab.temp_resume,
    }
    assert [name for name, widget in marked.items() if not is_marked(widget)] == []
    assert not is_marked(window.pricing_tab.row_edits["alpha"][0])
    text = window.message.text()
    assert text.startswith("Nothing was saved. Fix the highlighted fields (7):")
    for path in (
        "coordinator.url",
        "backends[1].markup",
        "backends[2].api_key_env",
        "pricing.default_input_per_1m",
        "pricing.models.alpha.output_per_1m",
        "limits.max_tokens_per_minute",
        "serving.gpu_temp_resume_c",
    ):
        assert f"• {path}: " in text, path
    errors = window.backends_tab.errors.text().splitlines()  # each names its entry
    assert errors[0].startswith("openrouter (OPENROUTER_API_KEY): markup: must be at most 10")
    assert errors[1].startswith("venice (NOT A NAME): api_key_env: letters, digits and _")
    assert len(errors) == 2
    assert window.backends_tab.selected_index() == 1  # the first entry with a problem
    assert window.tabs.currentWidget() is window.coordinator_tab  # the first problem's tab
    assert rig.config_path.read_bytes() == before
    assert rig.agent.config is config_before


def test_a_save_the_core_refuses_shows_all_its_problems_and_leaves_the_file_byte_identical(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The save's own check (`save_config` -> `problems`): a config that changed between the
    window's check and the write (here: on its way to the agent) is refused whole."""
    window = open_window(rig)
    before = rig.config_path.read_bytes()
    real_save = rig.agent.save_config

    async def corrupted(config: cfg.Config, *, allow_insecure: bool | None = None) -> None:
        bad = config.replace(
            limits=LimitsConfig(max_concurrent=500, max_tokens_per_minute=10**13),
            backends=(*config.backends, BackendConfig("ollama", url="nope")),
        )
        await real_save(bad, allow_insecure=allow_insecure)

    monkeypatch.setattr(rig.agent, "save_config", corrupted)
    window.limits_tab.max_concurrent.setValue(7)
    assert window.apply()
    rig.until(lambda: not window.saving, what="the save to be refused")
    assert rig.config_path.read_bytes() == before
    assert "Not saved. Fix the highlighted fields (3):" in window.message.text()
    assert is_marked(window.limits_tab.max_concurrent) and is_marked(window.limits_tab.tpm)
    assert is_marked(window.backends_tab.table)
    assert window.apply_button.isEnabled()
    monkeypatch.setattr(rig.agent, "save_config", real_save)
    assert window.apply()  # the draft itself was fine: it saves now
    rig.until(lambda: not window.saving, what="the save")
    assert "Saved to" in window.message.text(), window.message.text()
    assert cfg.load_config(rig.config_path, allow_insecure=True).limits.max_concurrent == 7


def test_a_file_that_cannot_be_written_is_a_message_not_a_stuck_window(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    window = open_window(rig)

    async def disk_full(config: object, *, allow_insecure: bool | None = None) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rig.agent, "save_config", disk_full)
    window.limits_tab.max_concurrent.setValue(5)
    assert window.apply()
    rig.until(lambda: not window.saving, what="save to fail")
    assert "Settings not saved: cannot write" in window.message.text()
    assert "No space left on device" in window.message.text()
    assert window.apply_button.isEnabled()


def test_apply_over_an_external_edit_is_refused_and_revert_reloads_the_file(rig: Rig) -> None:
    window = rig.controller.open_settings()
    assert isinstance(window, SettingsWindow)
    edited = rig.config_path.read_text() + "\n[limits]\nmax_concurrent = 4  # edited by hand\n"
    rig.config_path.write_text(edited)

    window.limits_tab.max_concurrent.setValue(7)
    assert window.apply()
    rig.until(lambda: not window.saving, what="save to be refused")
    text = window.message.text()
    assert "changed on disk since it was loaded; nothing was saved" in text
    assert "Revert" in text
    assert rig.config_path.read_text() == edited  # the hand edit survives

    window.revert()
    rig.until(lambda: "Reloaded" in window.message.text(), what="reload from disk")
    assert window.limits_tab.max_concurrent.value() == 4
    assert rig.agent.config.limits.max_concurrent == 4

    window.limits_tab.max_concurrent.setValue(6)
    assert window.apply()
    rig.until(lambda: not window.saving, what="save")
    assert "Saved to" in window.message.text(), window.message.text()
    saved = tomlkit.parse(rig.config_path.read_text()).unwrap()
    assert saved["limits"]["max_concurrent"] == 6
    assert "# edited by hand" in rig.config_path.read_text()


def test_settings_fix_an_invalid_agent_toml_and_the_agent_starts(
    qloop: qasync.QEventLoop,
) -> None:
    """Issue 19 item 5: with an agent.toml that does not validate, Settings opens on what
    could be read, shows the load error and marks the field; the file stays byte-identical
    until a valid Apply, which keeps its comments, and the agent then starts and serves."""
    from tests.gui.conftest import run, until, write_config
    from usepod_desktop.core.config import BackendConfig
    from usepod_desktop.gui.controller import AppController, StartOptions
    from usepod_desktop.sandbox.coordinator import SandboxCoordinator

    coord = SandboxCoordinator(ws_heartbeat=None)
    fake = FakeBackend("vllm", ["m"])
    run(qloop, coord.start())
    run(qloop, fake.start())
    controller = AppController(open_url=lambda _u: True)
    try:
        path = write_config(coord.url, (BackendConfig("vllm", fake.url),))
        bad = path.read_text() + "\n# keep me\n[limits]\nmax_concurrent = 999\n"
        path.write_text(bad)
        controller.show_ui(tray_available=True)
        run(qloop, controller.start(StartOptions(allow_insecure=True)))
        assert controller.agent is None and controller.state == AgentState.ERROR
        tray = controller.tray
        assert tray is not None
        tray.menu.aboutToShow.emit()
        assert tray.action("action_settings").isEnabled()  # disabled on the old code

        window = controller.open_settings()
        assert isinstance(window, SettingsWindow)
        assert window.load_error.isVisible()
        assert "limits.max_concurrent" in window.load_error.text()
        assert "999" in window.load_error.text()
        assert str(path) in window.load_error.text()
        assert window.tabs.currentWidget() is window.limits_tab
        assert is_marked(window.limits_tab.max_concurrent)
        assert "999" in window.limits_tab.max_concurrent_error.text()
        # every valid field was kept
        assert window.coordinator_tab.url.text() == coord.url
        assert [e.url for e in window.backends_tab.entries] == [fake.url]

        # an invalid draft is refused, nothing written
        window.coordinator_tab.url.setText("ftp://nowhere")
        assert not window.apply()
        assert path.read_text() == bad
        window.coordinator_tab.url.setText(coord.url)

        window.limits_tab.max_concurrent.setValue(3)
        assert window.apply(), window.message.text()
        until(qloop, lambda: not window.saving, what="the save")
        assert "Saved to" in window.message.text(), window.message.text()
        text = path.read_text()
        assert "# keep me" in text and "max_concurrent = 3" in text
        until(qloop, lambda: controller.agent is not None, what="the agent to start")
        until(qloop, lambda: controller.state == AgentState.SERVING, what="serving")
        agent = controller.agent
        assert agent is not None and agent.config.limits.max_concurrent == 3
        until(qloop, lambda: not window.load_error.isVisible(), what="the window to follow")
        assert not is_marked(window.limits_tab.max_concurrent)

        request = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        handle = run(qloop, coord.dispatch("m", request))
        run(qloop, handle.wait(15))
        assert handle.ok, handle
    finally:
        with contextlib.suppress(Exception):
            run(qloop, controller.shutdown(), 20)
        run(qloop, fake.stop())
        run(qloop, coord.stop())


def test_settings_stay_unavailable_for_an_agent_toml_that_is_not_toml(
    qloop: qasync.QEventLoop,
) -> None:
    from tests.gui.conftest import run
    from usepod_desktop.core import paths
    from usepod_desktop.gui.controller import AppController, StartOptions

    path = paths.default_config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[coordinator\nurl = \n")
    controller = AppController(open_url=lambda _u: True)
    try:
        controller.show_ui(tray_available=True)
        run(qloop, controller.start(StartOptions()))
        assert controller.config_problem_path == path
        tray = controller.tray
        assert tray is not None
        tray.menu.aboutToShow.emit()
        settings = tray.action("action_settings")
        assert not settings.isEnabled()
        assert "TOML" in settings.toolTip()
        assert controller.open_settings() is None
    finally:
        with contextlib.suppress(Exception):
            run(qloop, controller.shutdown(), 20)


def test_a_draft_of_an_invalid_agent_toml_shows_every_problem_at_once(
    qloop: qasync.QEventLoop,
) -> None:
    """Repair mode: each problem of the file on its tab's widget, all at once; a `[[backends]]`
    problem names the entry by its index in the file (it may have been left out of the draft)."""
    from tests.gui.conftest import run, write_config
    from usepod_desktop.gui.controller import AppController, StartOptions

    controller = AppController(open_url=lambda _u: True)
    try:
        path = write_config("ws://127.0.0.1:9/provider/connect", ())
        bad = path.read_text() + (
            '\n[[backends]]\nkind = "ollama"\nurl = "ftp://x"\n'
            '\n[[backends]]\nkind = "openrouter"\napi_key_env = "OPENROUTER_API_KEY"\nmarkup = 50\n'
            "\n[limits]\nmax_concurrent = 999\nmax_tokens_per_minute = 0\n"
            "\n[serving]\ngpu_temp_pause_c = 80\ngpu_temp_resume_c = 90\n"
        )
        path.write_text(bad)
        controller.show_ui(tray_available=True)
        run(qloop, controller.start(StartOptions(allow_insecure=True)))
        assert controller.agent is None
        window = controller.open_settings()
        assert isinstance(window, SettingsWindow)
        for field in (
            "backends[0].url",
            "backends[1].markup",
            "limits.max_concurrent",
            "limits.max_tokens_per_minute",
            "serving.gpu_temp_resume_c",
        ):
            assert field in window.load_error.text(), field
        assert is_marked(window.backends_tab.table)
        errors = window.backends_tab.errors.text().splitlines()
        assert errors[0].startswith("backends[0].url: ") and "backends[1].markup: " in errors[1]
        assert is_marked(window.limits_tab.max_concurrent) and is_marked(window.limits_tab.tpm)
        assert is_marked(window.serving_tab.temp_resume)
        assert window.tabs.currentWidget() is window.backends_tab  # the first problem's tab
        assert path.read_text() == bad
    finally:
        with contextlib.suppress(Exception):
            run(qloop, controller.shutdown(), 20)
