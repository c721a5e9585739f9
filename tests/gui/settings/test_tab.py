"""gui/settings/tab.py: a core problem's field path reaches the widget its tab registered."""

from __future__ import annotations

import pytest

from tests.gui.conftest import Rig
from tests.gui.settings.helpers import open_window
from usepod_desktop.core.config import (
    BackendConfig,
    ConfigProblem,
)
from usepod_desktop.gui.settings import SettingsWindow
from usepod_desktop.gui.settings.tab import FieldMap
from usepod_desktop.gui.widgets import is_marked

pytestmark = pytest.mark.gui


# (path, tab, the widget it must mark, the label that must say it)
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
    window = open_window(rig)
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
