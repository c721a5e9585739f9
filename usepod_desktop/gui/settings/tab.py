"""What every settings tab shares: the :class:`SettingsTab` protocol and the :class:`FieldMap`
that takes a core problem's field path (`backends[1].url`, `limits.max_concurrent`) to the
widget the tab built for it.

A tab registers its widgets by path while it builds them (rows built later register when they
are built), so a new config field needs one `register` call next to its widget, never a branch
in the window. The rules themselves are the core's (`core/config.py` `problems`, see
docs/architecture.md, "Config rules"); a tab only reads its widgets' text into agent.toml values
and reports what cannot be read, with the same kind of path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QWidget

from usepod_desktop.core.config import Config, ConfigProblem
from usepod_desktop.core.events import AgentState
from usepod_desktop.gui.widgets import mark_invalid, set_error

if TYPE_CHECKING:
    from usepod_desktop.core.agent import Agent
    from usepod_desktop.core.view import AgentView

#: Saved messages start with this (an edit takes the line away: it is no longer true).
SAVED_PREFIX = "Saved to "


@dataclass(frozen=True, slots=True)
class Loaded:
    """What a tab loads from: the config (the agent's, or a draft of an agent.toml that does
    not validate), the agent's snapshot once it has discovered, and the agent itself (None
    while there is none)."""

    config: Config
    view: AgentView | None
    agent: Agent | None
    allow_insecure: bool
    config_path: Path | None
    sandbox: bool
    state: AgentState
    reason: str


class SettingsTab(Protocol):
    """One tab of the settings window."""

    #: The tab's key (`TAB_NAMES` in window.py); its problems select it.
    name: str
    #: Its title in the window.
    title: str

    def load(self, loaded: Loaded) -> None:
        """Show `loaded` (the window has cleared every mark before)."""

    def collect(self, draft: dict[str, Any]) -> list[ConfigProblem]:
        """Write this tab's part of agent.toml into `draft` (a dict as agent.toml's content);
        return what could not be read from the widgets (text that is no value), each with
        the field path it would have had. The core's rules are checked by the window."""


@dataclass(frozen=True, slots=True)
class _Field:
    tab: str
    widget: QWidget | None
    label: QLabel | None
    #: Put before the message in a label shared by several fields (`alpha input`).
    name: str
    #: Called with the full path when a problem is shown (e.g. select the backend's row).
    reveal: Callable[[str], None] | None
    #: The problem's text in this place, when the path's own words do not say enough (which
    #: backend entry `backends[1]` is).
    describe: Callable[[ConfigProblem], str] | None


_SEGMENT = re.compile(r'\.?(?:"[^"]*"|[^.\["]+)|\[\d+\]')


def _prefixes(path: str) -> list[str]:
    """`backends[1].url` -> `backends[1].url`, `backends[1]`, `backends` (longest first)."""
    ends = [m.end() for m in _SEGMENT.finditer(path)]
    return [path[:end] for end in reversed(ends)] or [path]


class FieldMap:
    """Field path -> where the tab shows it. A problem goes to the longest registered prefix
    of its path (`backends[1].url` -> `backends` when only the table is registered)."""

    def __init__(self) -> None:
        self._fields: dict[str, _Field] = {}
        #: What each widget / label shows now (several problems can share one), by id.
        self._said: dict[int, tuple[QWidget, list[str]]] = {}

    def register(
        self,
        path: str,
        tab: str,
        widget: QWidget | None,
        label: QLabel | None = None,
        *,
        name: str = "",
        reveal: Callable[[str], None] | None = None,
        describe: Callable[[ConfigProblem], str] | None = None,
    ) -> None:
        self._fields[path] = _Field(tab, widget, label, name, reveal, describe)

    def forget(self, prefix: str) -> None:
        """Drop the registrations under `prefix` (rows that are built again)."""
        for path in [p for p in self._fields if p.startswith(prefix)]:
            del self._fields[path]

    def find(self, path: str) -> tuple[str, QWidget | None] | None:
        """(tab, widget) that shows `path`, or None when no tab owns it."""
        entry = self._lookup(path)
        return None if entry is None else (entry.tab, entry.widget)

    def _lookup(self, path: str) -> _Field | None:
        for prefix in _prefixes(path):
            entry = self._fields.get(prefix)
            if entry is not None:
                return entry
        return None

    def clear(self) -> None:
        """Every mark off."""
        self._said.clear()
        for entry in self._fields.values():
            if entry.widget is not None:
                mark_invalid(entry.widget, None)
            if entry.label is not None:
                set_error(entry.label, None)

    def show(self, problem: ConfigProblem) -> str | None:
        """Mark the widget of `problem`'s path with its message, and say it in the label under
        it (after what that label already says); returns the tab (None: no tab owns it)."""
        entry = self._lookup(problem.path)
        if entry is None:
            return None
        if entry.describe is not None:
            text = entry.describe(problem)
        else:
            text = f"{entry.name}: {problem.detail}" if entry.name else problem.detail
        shown_at = entry.widget if entry.widget is not None else entry.label
        first = shown_at is None or id(shown_at) not in self._said
        if entry.widget is not None:
            mark_invalid(entry.widget, self._add(entry.widget, text))
        if entry.label is not None:
            set_error(entry.label, self._add(entry.label, text))
        if entry.reveal is not None and first:  # the first problem there is the one shown
            entry.reveal(problem.path)
        return entry.tab

    def _add(self, widget: QWidget, text: str) -> str:
        _, said = self._said.setdefault(id(widget), (widget, []))
        if text not in said:
            said.append(text)
        return "\n".join(said)

    def order(self, tabs: tuple[str, ...]) -> Callable[[ConfigProblem], int]:
        """Sort key: problems in the order of the tabs that show them."""

        def key(problem: ConfigProblem) -> int:
            found = self.find(problem.path)
            return tabs.index(found[0]) if found is not None else len(tabs)

        return key


def covered(path: str, by: list[str]) -> bool:
    """Whether `path` is one of `by`, lies inside one of them or contains one (a value a tab
    could not read: the core would only call it missing)."""
    return any(path == p or path in _prefixes(p) or p in _prefixes(path) for p in by)


def note(text: str, parent: QWidget | None = None) -> QLabel:
    """A grey explanatory paragraph."""
    label = QLabel(text, parent)
    label.setWordWrap(True)
    label.setStyleSheet("QLabel { color: palette(placeholder-text); }")
    return label


def selectable(label: QLabel) -> QLabel:
    """A selectable plain-text label (connection state, provider id: remote text)."""
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def mark(widget: QWidget, label: QLabel | None, message: str | None) -> None:
    """Highlight `widget` with `message` (None: clear), and say it in `label`."""
    mark_invalid(widget, message)
    if label is not None:
        set_error(label, message)
