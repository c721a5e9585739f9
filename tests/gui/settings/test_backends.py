"""gui/settings/backends.py and backend_dialogs.py against the real agent: add / edit / allow-list /
remove reach the file and the coordinator; Detect and Test."""

from __future__ import annotations

import pytest

from tests.gui.conftest import Rig
from tests.gui.settings.helpers import apply_and_wait_caps, file_of, ids, open_window
from usepod_desktop.gui.widgets import is_marked
from usepod_desktop.sandbox.fakes import FakeBackend

pytestmark = pytest.mark.gui


def test_add_edit_allow_list_price_and_remove_reach_the_file_and_the_coordinator(
    rig: Rig,
) -> None:
    window = open_window(rig)
    tab = window.backends_tab
    ollama = rig.add_fake(FakeBackend("ollama", ["gamma:latest"]))

    # add: an Ollama backend through the dialog
    dialog = tab.add()
    dialog.kind.setCurrentIndex(dialog.kind.findData("ollama"))
    dialog.url.setText(ollama.url)
    dialog.accept()
    assert tab.dialog is None and len(tab.entries) == 2
    assert "not applied yet" in tab.table.item(1, 1).text()
    models = apply_and_wait_caps(rig, window)
    assert ids(models) == ["alpha", "beta", "gamma:latest"]
    assert [b["kind"] for b in file_of(rig)["backends"]] == ["vllm", "ollama"]
    rig.until(lambda: tab.table.item(1, 1).text() == "up", what="live status of the new backend")

    # allow-list: only alpha from the vLLM backend
    tab.set_allowed(0, ["alpha"])
    assert tab.entries[0].models == ("alpha",)
    models = apply_and_wait_caps(rig, window)
    assert ids(models) == ["alpha", "gamma:latest"]
    assert file_of(rig)["backends"][0]["models"] == ["alpha"]

    # none ticked = no allow-list key at all (= every model), never `models = []`
    tab.set_allowed(0, None)
    assert tab.entries[0].models is None
    models = apply_and_wait_caps(rig, window)
    assert ids(models) == ["alpha", "beta", "gamma:latest"]
    assert "models" not in file_of(rig)["backends"][0]

    # a per-model price and a new default, typed in dollars, stored in micro-USD
    window.pricing_tab.set_price("alpha", "1.25", "2.5")
    window.pricing_tab.default_in.setText("0.40")
    models = apply_and_wait_caps(rig, window)
    by_id = {m["model_id"]: m for m in models}
    assert (by_id["alpha"]["input_per_1m"], by_id["alpha"]["output_per_1m"]) == (
        1_250_000,
        2_500_000,
    )
    assert (by_id["beta"]["input_per_1m"], by_id["beta"]["output_per_1m"]) == (400_000, 750_000)
    pricing = file_of(rig)["pricing"]
    assert pricing["default_input_per_1m"] == 400_000
    assert pricing["models"]["alpha"] == {"input_per_1m": 1_250_000, "output_per_1m": 2_500_000}

    # edit: point the Ollama entry at another server
    other = rig.add_fake(FakeBackend("ollama", ["delta:latest"]))
    tab.select(1)
    dialog = tab.edit()
    assert dialog is not None and dialog.url.text() == ollama.url
    dialog.url.setText(other.url)
    dialog.accept()
    models = apply_and_wait_caps(rig, window)
    assert ids(models) == ["alpha", "beta", "delta:latest"]
    assert file_of(rig)["backends"][1]["url"] == other.url

    # remove it again
    tab.select(1)
    tab.remove()
    models = apply_and_wait_caps(rig, window)
    assert ids(models) == ["alpha", "beta"]
    assert len(file_of(rig)["backends"]) == 1


def test_detect_offers_local_servers(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    from usepod_desktop.core import discovery

    local = rig.add_fake(FakeBackend("ollama", ["llama3.2:latest"]))
    monkeypatch.setattr(discovery, "PROBE_PORTS", {"ollama": local.port})
    monkeypatch.setattr(discovery, "PROBE_HOST", "127.0.0.1")
    window = open_window(rig)
    tab = window.backends_tab
    tab.detect()
    rig.until(lambda: tab.dialog is not None, what="detect dialog")
    dialog = tab.dialog
    assert dialog.list.count() == 1 and "llama3.2:latest" in dialog.list.item(0).text()
    dialog.accept()
    assert tab.entries[-1].kind == "ollama"
    models = apply_and_wait_caps(rig, window)
    assert "llama3.2:latest" in ids(models)


def test_test_button_reports_health_latency_and_models(rig: Rig) -> None:
    window = open_window(rig)
    tab = window.backends_tab
    tab.select(0)
    tab.test()
    rig.until(lambda: tab.table.item(0, 1).text() == "test ok", what="test result")
    assert tab.table.item(0, 2).text().endswith(" ms")
    assert "2 model(s): alpha, beta" in tab.result.text()
    rig.run(rig.fake.set_fail_mode("refuse"))
    tab.test()
    rig.until(lambda: tab.table.item(0, 1).text().startswith("test failed"), what="failure")


def test_the_backend_dialog_checks_an_entry_by_the_cores_rules(rig: Rig) -> None:
    """The dialog has no rules of its own: the markup bound and the key-name syntax are the
    core's (`check_backend`), every field's problem at once, and it stays open until fixed."""
    window = open_window(rig)
    tab = window.backends_tab
    dialog = tab.add()
    dialog.kind.setCurrentIndex(dialog.kind.findData("openrouter"))
    dialog.key_env.setText("1 BAD NAME")
    dialog.markup.setText("1500 %")
    dialog.accept()
    assert tab.dialog is dialog and len(tab.entries) == 1  # still open, nothing added
    assert is_marked(dialog.key_env) and is_marked(dialog.markup)
    assert "letters, digits and _" in dialog.key_env_error.text()
    assert "at most 10 (1000%)" in dialog.markup_error.text()
    assert "1500%" in dialog.markup_error.text()
    dialog.markup.setText("abc")  # not a number: read by the dialog itself
    dialog.accept()
    assert dialog.markup_error.text() == "a percentage, e.g. 5"
    dialog.key_env.setText("MY_OPENROUTER_KEY")
    dialog.markup.setText("1000")  # the bound itself is fine
    dialog.accept()
    assert tab.dialog is None and len(tab.entries) == 2
    added = tab.entries[1]
    assert (added.kind, added.api_key_env, added.markup) == (
        "openrouter",
        "MY_OPENROUTER_KEY",
        10.0,
    )
    key_row = window.keys_tab.rows["MY_OPENROUTER_KEY"]  # the API keys tab follows the draft
    rig.until(lambda: key_row.status.text() == "not set", what="the new key's status")
    # a local kind: the URL is required, and must be http(s)
    dialog = tab.add()
    dialog.kind.setCurrentIndex(dialog.kind.findData("ollama"))
    dialog.url.setText("ftp://127.0.0.1:11434")
    dialog.accept()
    assert tab.dialog is dialog and "not a valid http(s) URL" in dialog.url_error.text()
    dialog.url.setText("")
    dialog.accept()
    assert "required for kind 'ollama'" in dialog.url_error.text()
    dialog.reject()
