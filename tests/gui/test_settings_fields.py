"""gui/settings/tab.py and the window's problem display: a core problem's field path reaches the
widget its tab registered, every problem of a draft is shown at once, and a refused save
leaves agent.toml byte-identical."""

from __future__ import annotations

import pytest

from tests.gui.conftest import Rig
from usepod_desktop.core import config as cfg
from usepod_desktop.core.config import BackendConfig, ConfigProblem, LimitsConfig
from usepod_desktop.gui.settings import SettingsWindow
from usepod_desktop.gui.settings.tab import FieldMap
from usepod_desktop.gui.widgets import is_marked

pytestmark = pytest.mark.gui


def _settings(rig: Rig) -> SettingsWindow:
    window = rig.controller.open_settings()
    assert isinstance(window, SettingsWindow)
    # let the tray's first read of today's figures end on a running loop (this module's
    # checks are synchronous; a read left pending would end in the rig's teardown)
    figures = rig.controller.figures
    rig.until(lambda: figures.today_task is None or figures.today_task.done(), what="ledger")
    return window


# (path, tab, the widget it must mark, the label that must say it (or None))
CASES = [
    ("coordinator.url", "coordinator", "coordinator_tab.url", "coordinator_tab.url_error"),
    ("backends[1].url", "backends", "backends_tab.table", "backends_tab.errors"),
    ("backends[0]", "backends", "backends_tab.table", "backends_tab.errors"),
    (
        "pricing.default_input_per_1m",
        "pricing",
        "pricing_tab.default_in",
        "pricing_tab.default_in_error",
    ),
    (
        "pricing.default_output_per_1m",
        "pricing",
        "pricing_tab.default_out",
        "pricing_tab.default_out_error",
    ),
    ("pricing.models.alpha.output_per_1m", "pricing", "row:alpha:1", "pricing_tab.problems"),
    ("model_aliases.alpha", "pricing", "pricing_tab.alias_edit", "pricing_tab.problems"),
    (
        "limits.max_concurrent",
        "limits",
        "limits_tab.max_concurrent",
        "limits_tab.max_concurrent_error",
    ),
    ("limits.max_tokens_per_minute", "limits", "limits_tab.tpm", "limits_tab.tpm_error"),
    ("serving.schedule[0].start", "serving", "serving_tab.schedule", "serving_tab.schedule_error"),
    (
        "serving.pause_when_running",
        "serving",
        "serving_tab.processes",
        "serving_tab.processes_error",
    ),
    ("serving.gpu_temp_resume_c", "serving", "serving_tab.temp_resume", "serving_tab.temp_error"),
    ("serving.idle_minutes", "serving", "serving_tab.idle_minutes", "serving_tab.message"),
]


def _resolve(window: SettingsWindow, name: str) -> object:
    if name.startswith("row:"):
        _, model_id, side = name.split(":")
        return window.pricing_tab.row_edits[model_id][int(side)]
    obj: object = window
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize(("path", "tab", "widget_name", "label_name"), CASES)
def test_a_problem_path_marks_the_widget_its_tab_registered(
    rig: Rig, path: str, tab: str, widget_name: str, label_name: str
) -> None:
    window = _settings(rig)
    window.backends_tab.entries.append(BackendConfig("vllm", url="http://127.0.0.1:9"))
    window.backends_tab.rebuild()
    window.pricing_tab.set_price("alpha", "1.00", "2.00")
    window.select_tab("app")
    widget = _resolve(window, widget_name)
    label = _resolve(window, label_name)
    window.show_problems([ConfigProblem(path, f"{path}: the test's message")])
    assert window.tabs.currentWidget() is getattr(window, f"{tab}_tab")
    assert is_marked(widget), f"{path} did not mark {widget_name}"  # type: ignore[arg-type]
    assert "the test's message" in widget.toolTip()  # type: ignore[attr-defined]
    assert "the test's message" in label.text()  # type: ignore[attr-defined]
    assert not label.text().startswith(path)  # type: ignore[attr-defined]
    if path.startswith("backends[1]"):  # the entry itself is selected
        assert window.backends_tab.selected_index() == 1
    # nothing else is marked, and the next round clears it
    others = {_resolve(window, c[2]) for c in CASES} - {widget}
    assert not [w for w in others if is_marked(w)]  # type: ignore[arg-type]
    window.show_problems([])
    assert not is_marked(widget)  # type: ignore[arg-type]


def test_a_field_map_takes_the_longest_registered_prefix() -> None:
    fields = FieldMap()
    fields.register("pricing", "pricing", None)
    fields.register('pricing.models."a/b".input_per_1m', "pricing", None)
    fields.register("backends", "backends", None)
    assert fields.find('pricing.models."a/b".input_per_1m') == ("pricing", None)
    assert fields.find('pricing.models."a.b".input_per_1m') == ("pricing", None)
    assert fields.find("backends[3].markup") == ("backends", None)
    assert fields.find("backendsX") is None
    assert fields.find("observability.log_level") is None
    fields.forget("pricing.models.")
    assert fields.find('pricing.models."a/b".input_per_1m') == ("pricing", None)


def test_every_problem_of_a_draft_is_shown_at_once_and_nothing_is_written(rig: Rig) -> None:
    window = _settings(rig)
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
    errors = window.backends_tab.errors.text().splitlines()
    assert len(errors) == 2 and "at most 10" in errors[0] and "letters, digits" in errors[1]
    assert window.backends_tab.selected_index() == 1  # the first entry with a problem
    assert window.tabs.currentWidget() is window.coordinator_tab  # the first problem's tab
    assert rig.config_path.read_bytes() == before
    assert rig.agent.config is config_before


def test_a_save_the_core_refuses_shows_all_its_problems_and_leaves_the_file_byte_identical(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The save's own check (`save_config` -> `problems`): a config that changed between the
    window's check and the write (here: on its way to the agent) is refused whole."""
    window = _settings(rig)
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
