r"""Tray icons: one static icon per agent state, in a variant for light and for dark panels.

The SVG files live in `resources/icons/` (`tray-<state>-on-light.svg`, `...-on-dark.svg`).
The variant follows the panel the icon sits on (:func:`tray_variant`), not the app's palette:

- Windows: the taskbar's own theme, `SystemUsesLightTheme` under
  `HKCU\Software\Microsoft\Windows\CurrentVersion\Themes\Personalize` (Windows 10's default
  is a dark taskbar with light apps; without the value, before 1903, the taskbar is dark);
- macOS: a template image (`mask`): black with the state's symbol cut out, marked with
  `QIcon.setIsMask` so the menu bar tints it for its light or dark appearance itself;
- Linux: the colour scheme Qt reports (`QStyleHints.colorScheme`), else the palette's window
  colour.

When a file cannot be found (a broken install) a plain coloured disc is painted instead, so the
tray is never blank.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from PySide6.QtCore import Qt
from PySide6.QtGui import (
    QColor,
    QGuiApplication,
    QIcon,
    QImage,
    QPainter,
    QPalette,
    QPixmap,
)

from usepod_desktop.core.events import AgentState

Variant = Literal["on-light", "on-dark", "mask"]

PERSONALIZE_KEY = r"Software\Microsoft\Windows\CurrentVersion\Themes\Personalize"

#: Fallback colours (also the legend's colours): state -> (on-light, on-dark).
STATE_COLOURS: dict[AgentState, tuple[str, str]] = {
    AgentState.SERVING: ("#1a9447", "#3fd177"),
    AgentState.PAUSED: ("#d38300", "#ffb81f"),
    AgentState.NO_MODELS: ("#c25e00", "#ff9a3c"),
    AgentState.CONNECTING: ("#1f6fd1", "#5ea6ff"),
    AgentState.OFFLINE: ("#6b6b6b", "#b4b4b4"),
    AgentState.ERROR: ("#d12c26", "#ff5b52"),
    AgentState.NEEDS_PAIRING: ("#7744d4", "#ad8cff"),
}

_cache: dict[tuple[str, str], QIcon] = {}


def icon_dirs() -> list[Path]:
    """Where the icon files may be: source checkout, installed package, PyInstaller bundle."""
    here = Path(__file__).resolve()
    dirs = [here.parents[2] / "resources" / "icons", here.parents[1] / "resources" / "icons"]
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        dirs.insert(0, Path(bundle) / "resources" / "icons")
    return dirs


def find_icon_file(name: str) -> Path | None:
    for directory in icon_dirs():
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def variant_for(palette: QPalette | None = None) -> Variant:
    """Dark window colour -> icons drawn for dark panels."""
    if palette is None:
        palette = QGuiApplication.palette()
    return "on-dark" if palette.color(QPalette.ColorRole.Window).lightness() < 128 else "on-light"


def windows_taskbar_is_light() -> bool | None:
    """`SystemUsesLightTheme` (taskbar, Start, tray) from the registry; None when absent."""
    try:
        import winreg  # type: ignore[import-not-found,unused-ignore]

        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, PERSONALIZE_KEY) as key:  # type: ignore[attr-defined,unused-ignore]
            value, _kind = winreg.QueryValueEx(key, "SystemUsesLightTheme")  # type: ignore[attr-defined,unused-ignore]
    except (ImportError, OSError):
        return None
    return bool(value)


def tray_variant(
    platform: str | None = None,
    *,
    taskbar_is_light: Callable[[], bool | None] = windows_taskbar_is_light,
    palette: QPalette | None = None,
) -> Variant:
    """The icon variant for the panel the tray icon sits on (see the module docstring)."""
    kind = platform or sys.platform
    if kind == "darwin":
        return "mask"
    if kind == "win32":
        return "on-light" if taskbar_is_light() else "on-dark"
    if palette is None:
        scheme = QGuiApplication.styleHints().colorScheme()
        if scheme == Qt.ColorScheme.Dark:
            return "on-dark"
        if scheme == Qt.ColorScheme.Light:
            return "on-light"
    return variant_for(palette)


def state_icon_name(state: AgentState, variant: Variant) -> str:
    return f"tray-{state.value}-{variant}.svg"


def state_icon(state: AgentState, variant: Variant | None = None) -> QIcon:
    variant = variant or variant_for()
    key = (state.value, variant)
    icon = _cache.get(key)
    if icon is None and variant == "mask":
        icon = template_icon(state_icon(state, "on-light"))
        _cache[key] = icon
    if icon is None:
        path = find_icon_file(state_icon_name(state, variant))
        icon = QIcon(str(path)) if path is not None else QIcon()
        if icon.isNull() or (not icon.availableSizes() and icon.pixmap(22, 22).isNull()):
            icon = _painted(STATE_COLOURS[state][0 if variant == "on-light" else 1])
        _cache[key] = icon
    return icon


def template_icon(source: QIcon, sizes: tuple[int, ...] = (22, 44)) -> QIcon:
    """A macOS template image from a light-panel icon: every pixel black, its alpha the
    source's alpha fading out for bright (white) pixels, so the disc stays and the white symbol
    becomes a hole; marked as a mask so the menu bar tints it."""
    icon = QIcon()
    for size in sizes:
        image = source.pixmap(size, size).toImage().convertToFormat(QImage.Format.Format_ARGB32)
        for y in range(image.height()):
            for x in range(image.width()):
                colour = image.pixelColor(x, y)
                brightest = min(colour.red(), colour.green(), colour.blue())
                keep = 1.0 - max(0.0, (brightest - 128) / 127)
                image.setPixelColor(x, y, QColor(0, 0, 0, round(colour.alpha() * keep)))
        icon.addPixmap(QPixmap.fromImage(image))
    icon.setIsMask(True)
    return icon


def app_icon() -> QIcon:
    path = find_icon_file("app.svg")
    icon = QIcon(str(path)) if path is not None else QIcon()
    return icon if not icon.isNull() else state_icon(AgentState.SERVING)


def _painted(colour: str) -> QIcon:
    pixmap = QPixmap(44, 44)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setBrush(QColor(colour))
    painter.setPen(Qt.PenStyle.NoPen)
    painter.drawEllipse(3, 3, 38, 38)
    painter.end()
    return QIcon(pixmap)
