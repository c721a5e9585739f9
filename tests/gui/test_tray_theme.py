"""The tray icon's variant follows the panel it sits on (Windows taskbar theme, macOS template
image, Linux colour scheme / palette) and is re-picked when the theme changes, not only at the
next state change."""

from __future__ import annotations

import pytest
import qasync
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

from tests.gui.conftest import until
from usepod_desktop.core.events import AgentState
from usepod_desktop.gui import icons
from usepod_desktop.gui.controller import AppController

pytestmark = pytest.mark.gui


def _palette(window: str) -> QPalette:
    palette = QPalette()
    palette.setColor(QPalette.ColorRole.Window, QColor(window))
    return palette


def test_windows_follows_the_taskbar_not_the_app_palette(qapp: QApplication) -> None:
    light_apps = _palette("#f0f0f0")
    # Windows 10's default: light apps, dark taskbar
    assert icons.variant_for(light_apps) == "on-light"
    assert icons.tray_variant("win32", taskbar_is_light=lambda: False) == "on-dark"
    assert icons.tray_variant("win32", taskbar_is_light=lambda: True) == "on-light"
    assert icons.tray_variant("win32", taskbar_is_light=lambda: None) == "on-dark"  # pre-1903


def test_linux_follows_the_palette(qapp: QApplication) -> None:
    assert icons.tray_variant("linux", palette=_palette("#202020")) == "on-dark"
    assert icons.tray_variant("linux", palette=_palette("#f0f0f0")) == "on-light"


def test_macos_gets_a_template_image_with_the_symbol_cut_out(qapp: QApplication) -> None:
    assert icons.tray_variant("darwin") == "mask"
    for state in AgentState:
        icon = icons.state_icon(state, "mask")
        assert icon.isMask()
        image = icon.pixmap(22, 22).toImage()
        colours = {
            (c.red(), c.green(), c.blue())
            for c in (image.pixelColor(x, y) for x in range(22) for y in range(22))
            if c.alpha() > 0
        }
        assert colours == {(0, 0, 0)}, state  # monochrome: the menu bar tints it
    serving = icons.state_icon(AgentState.SERVING, "mask").pixmap(22, 22).toImage()
    assert serving.pixelColor(11, 11).alpha() < 40  # the white play symbol is a hole
    assert serving.pixelColor(4, 11).alpha() > 200  # the disc around it is solid
    paused = icons.state_icon(AgentState.PAUSED, "mask").pixmap(22, 22).toImage()
    assert serving != paused  # the states still differ by their symbol


def test_a_palette_change_re_tints_the_tray_without_a_state_change(
    qloop: qasync.QEventLoop, qapp: QApplication
) -> None:
    original = QGuiApplication.palette()
    controller = AppController(open_url=lambda _u: True)
    controller.show_ui(tray_available=True)
    tray = controller.tray
    assert tray is not None
    try:
        qapp.setPalette(_palette("#f4f4f4"))
        until(qloop, lambda: tray.icon_key[1] == "on-light", what="the light variant")
        state = tray.icon_key[0]
        qapp.setPalette(_palette("#1e1e1e"))  # the user switched to a dark theme
        until(qloop, lambda: tray.icon_key == (state, "on-dark"), what="the dark variant")
        assert tray.icon().cacheKey() == icons.state_icon(state, "on-dark").cacheKey()
    finally:
        qapp.setPalette(original)
        tray.dispose()
