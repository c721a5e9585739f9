"""The state icons (gui/icons.py): one per state in both variants, all different, and the
variant picked from the palette."""

from __future__ import annotations

import pytest
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

from usepod_desktop.core.events import AgentState
from usepod_desktop.gui import icons

pytestmark = pytest.mark.gui


def test_icons_exist_for_every_state_in_both_variants_and_differ(qapp: QApplication) -> None:
    images = set()
    for state in AgentState:
        for variant in ("on-light", "on-dark"):
            path = icons.find_icon_file(icons.state_icon_name(state, variant))
            assert path is not None and path.suffix == ".svg"
            icon = icons.state_icon(state, variant)  # type: ignore[arg-type]
            image = icon.pixmap(22, 22).toImage()
            assert not image.isNull()
            images.add(bytes(image.constBits()))
    assert len(images) == 2 * len(AgentState)
    dark = QPalette()
    dark.setColor(QPalette.ColorRole.Window, QColor("#202020"))
    light = QPalette()
    light.setColor(QPalette.ColorRole.Window, QColor("#f0f0f0"))
    assert icons.variant_for(dark) == "on-dark" and icons.variant_for(light) == "on-light"
