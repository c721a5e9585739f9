"""The dashboard's tables (per model, last jobs): their columns, read-only cells that sort by
value, and filling them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from usepod_desktop.gui.widgets import plain_tooltip

MODEL_COLUMNS: tuple[str, ...] = (
    "Model",
    "Jobs",
    "Success",
    "Tokens in",
    "Tokens out",
    "Est. earnings",
    "Median first byte",
    "Est. upstream cost",
    "Est. net margin",
)
RECENT_COLUMNS: tuple[str, ...] = (
    "Ended",
    "Model",
    "Outcome",
    "Tokens in",
    "Tokens out",
    "First byte",
    "Duration",
    "Est. earnings",
)


class Cell(QTableWidgetItem):
    """A read-only cell that sorts by `key` (numbers as numbers, missing values first)."""

    def __init__(
        self,
        text: str,
        key: Any = None,
        *,
        numeric: bool = False,
        tooltip: str = "",
        colour: str | None = None,
    ) -> None:
        super().__init__(text)
        self.key: Any = text if key is None and not numeric else key
        self.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
        if numeric:
            self.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if tooltip:
            self.setToolTip(plain_tooltip(tooltip))
        if colour is not None:
            self.setForeground(QBrush(QColor(colour)))

    def __lt__(self, other: QTableWidgetItem) -> bool:
        if isinstance(other, Cell):
            mine = (self.key is not None, self.key)
            theirs = (other.key is not None, other.key)
            try:
                return bool(mine < theirs)
            except TypeError:
                pass
        return super().__lt__(other)


def make_table(
    columns: Sequence[str], name: str, parent: QWidget, *, sort_column: int, stretch_column: int
) -> QTableWidget:
    """A read-only, sortable table, sorted by `sort_column` (descending) until the user
    clicks another header."""
    table = QTableWidget(0, len(columns), parent)
    table.setObjectName(name)
    table.setHorizontalHeaderLabels(list(columns))
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setAlternatingRowColors(True)
    table.verticalHeader().setVisible(False)
    table.setWordWrap(False)
    table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setSectionResizeMode(stretch_column, QHeaderView.ResizeMode.Stretch)
    header.setSortIndicator(sort_column, Qt.SortOrder.DescendingOrder)
    return table


def fill_table(table: QTableWidget, rows: Sequence[Sequence[Cell]]) -> None:
    table.setSortingEnabled(False)
    table.setRowCount(len(rows))
    for r, cells in enumerate(rows):
        for c, cell in enumerate(cells):
            table.setItem(r, c, cell)
    table.setSortingEnabled(True)
