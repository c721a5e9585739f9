"""Small shared widget helpers: invalid-field marking, inline messages, plain-text labels and
tooltips for remote text."""

from __future__ import annotations

import html
from typing import Literal

from PySide6 import QtGui
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QWidget

#: The application's name in window titles and notifications.
APP_TITLE = "Use Pod"

ERROR_COLOUR = "#d12c26"
OK_COLOUR = "#1a9447"
WARN_COLOUR = "#b86e00"

#: Added to every window that validates fields.
INVALID_STYLE = (
    'QLineEdit[invalid="true"], QSpinBox[invalid="true"], QTableWidget[invalid="true"], '
    'QListWidget[invalid="true"], QComboBox[invalid="true"] '
    f"{{ border: 2px solid {ERROR_COLOUR}; border-radius: 3px; }}"
)

Tone = Literal["info", "ok", "error", "warning"]


def mark_invalid(widget: QWidget, message: str | None) -> None:
    """Highlight `widget` (and show `message` as its tooltip) or clear the highlight."""
    invalid = message is not None
    if bool(widget.property("invalid")) == invalid and (not invalid or widget.toolTip() == message):
        return
    widget.setProperty("invalid", invalid)
    widget.setToolTip(message or "")
    style = widget.style()
    style.unpolish(widget)
    style.polish(widget)
    widget.update()


def plain(label: QLabel) -> QLabel:
    """`label` set to show its text as plain text, never as HTML.

    A QLabel guesses (Qt.AutoText) and renders anything that looks like markup, which from
    the coordinator, a backend or the pairing server could load local images or fake links.
    Every label that can show remote text goes through this."""
    label.setTextFormat(Qt.TextFormat.PlainText)
    return label


def plain_tooltip(text: str) -> str:
    """Tooltip text that Qt shows as written: tooltips guess rich text like labels do, so
    text that looks like markup is escaped and wrapped in <qt> (shown literally)."""
    if not QtGui.Qt.mightBeRichText(text):
        return text
    return "<qt>" + html.escape(text).replace("\n", "<br>") + "</qt>"


def is_marked(widget: QWidget) -> bool:
    return bool(widget.property("invalid"))


def error_label(parent: QWidget | None = None) -> QLabel:
    """A red one-line message under a field, hidden while empty."""
    label = plain(QLabel(parent))
    label.setWordWrap(True)
    label.setStyleSheet(f"QLabel {{ color: {ERROR_COLOUR}; }}")
    label.hide()
    return label


def set_error(label: QLabel, message: str | None) -> None:
    label.setText(message or "")
    label.setVisible(bool(message))


def set_tone(label: QLabel, text: str, tone: Tone = "info") -> None:
    """An inline banner: plain for info, coloured for ok / warning / error (plain text)."""
    plain(label)
    colour = {"info": "", "ok": OK_COLOUR, "error": ERROR_COLOUR, "warning": WARN_COLOUR}[tone]
    label.setStyleSheet(f"QLabel {{ color: {colour}; }}" if colour else "")
    label.setText(text)
    label.setVisible(bool(text))


def elide(text: str, limit: int) -> str:
    """`text` cut to `limit` characters with an ellipsis at the end (for menu and tooltip lines
    whose full text goes in a tooltip)."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def elide_middle(text: str, limit: int) -> str:
    """`text` cut in the middle to `limit` characters (paths and model ids: both ends matter)."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    tail = limit - 1 - head
    return text[:head] + "…" + text[-tail:]
