"""gui/settings/coordinator.py: identity, connection state, the public key."""

from __future__ import annotations

import pytest
from PySide6.QtGui import QGuiApplication

from tests.gui.conftest import Rig
from tests.gui.settings.helpers import open_window

pytestmark = pytest.mark.gui


def test_coordinator_tab_shows_identity_state_and_copies_the_public_key(rig: Rig) -> None:
    window = open_window(rig)
    tab = window.coordinator_tab
    assert tab.url.text() == rig.coordinator.url
    assert tab.provider_id.text() == rig.agent.provider_id
    assert tab.public_key.text() == rig.agent.public_key_b64
    assert tab.connection.text().startswith("Serving")
    tab.copy_key.click()
    assert QGuiApplication.clipboard().text() == rig.agent.public_key_b64
    rig.run(rig.agent.pause())
    assert tab.connection.text().startswith("Paused")
