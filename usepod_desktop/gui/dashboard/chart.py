"""The earnings chart: bars of estimated earnings per day on a dollar axis (a small QPainter
widget: QtCharts is not part of PySide6-Essentials)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date

from PySide6.QtCore import QEvent, QPointF, QRectF, QSize, Qt
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QFontMetricsF,
    QHelpEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPalette,
    QPen,
)
from PySide6.QtWidgets import QToolTip, QWidget

from usepod_desktop.core.ledger import DayTotals
from usepod_desktop.core.money import NANO_PER_USD, format_amount
from usepod_desktop.gui.dashboard.text import money_text


def nice_step(raw: float) -> int:
    """The smallest 1, 2 or 5 x 10^k (an integer, at least 1) that is >= `raw`."""
    if raw <= 1:
        return 1
    base = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * base:
            return int(m * base)
    return int(10 * base)  # pragma: no cover - the loop always returns


def axis_ticks(max_nusd: int, target: int = 4) -> list[int]:
    """Gridline values (nano-USD) from 0 to a round top at or above `max_nusd`."""
    top = max(max_nusd, 0) or 10_000_000  # nothing earned: an axis to one cent
    step = nice_step(top / target)
    count = -(-top // step)
    return [k * step for k in range(count + 1)]


def tick_text(nusd: int, step: int) -> str:
    """An axis label in dollars with as many decimals as the step needs (`$0.005`, `$2`)."""
    if step >= NANO_PER_USD:
        decimals = 0
    else:
        decimals = max(2, math.ceil(-math.log10(step / NANO_PER_USD) - 1e-9))
    return format_amount(nusd, places=decimals)


class EarningsChart(QWidget):
    """Bars of estimated earnings per day, a dollar axis, a tooltip per bar.

    What it draws is public: :attr:`days`, :attr:`values_nusd`, :attr:`jobs`, :attr:`ticks`,
    and :meth:`bar_rects` (the geometry `paintEvent` uses)."""

    BAR_FILL = 0.72  # share of a day's slot the bar takes

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("earningsChart")
        self.setMouseTracking(True)
        self.setMinimumHeight(150)
        self.days: list[date] = []
        self.values_nusd: list[int] = []
        self.jobs: list[int] = []
        self.ticks: list[int] = axis_ticks(0)
        self.hovered: int | None = None
        self.sandbox = False

    def sizeHint(self) -> QSize:
        return QSize(640, 220)

    def set_days(self, days: Sequence[DayTotals]) -> None:
        self.days = [d.day for d in days]
        self.values_nusd = [max(d.totals.earnings_nusd, 0) for d in days]
        self.jobs = [d.totals.jobs for d in days]
        self.ticks = axis_ticks(max(self.values_nusd, default=0))
        self.hovered = None
        self.update()

    @property
    def axis_max(self) -> int:
        return self.ticks[-1]

    def tick_labels(self) -> list[str]:
        step = self.ticks[1] - self.ticks[0] if len(self.ticks) > 1 else self.ticks[0] or 1
        return [tick_text(v, step) for v in self.ticks]

    def _small_font(self) -> QFont:
        font = QFont(self.font())
        if font.pointSizeF() > 0:
            font.setPointSizeF(max(font.pointSizeF() * 0.9, 7.0))
        return font

    def plot_rect(self) -> QRectF:
        """The area the bars stand in (axis labels left of it, dates under it)."""
        metrics = QFontMetricsF(self._small_font())
        left = max(metrics.horizontalAdvance(t) for t in self.tick_labels()) + 12
        bottom = metrics.height() + 8
        top = metrics.height() / 2 + 4
        width = max(self.width() - left - 10, 1)
        return QRectF(left, top, width, max(self.height() - top - bottom, 1))

    def bar_rects(self) -> list[QRectF]:
        """One rectangle per day, oldest first; height proportional to the day's earnings."""
        plot = self.plot_rect()
        n = len(self.values_nusd)
        if n == 0:
            return []
        slot = plot.width() / n
        width = max(slot * self.BAR_FILL, 1.0)
        rects = []
        for i, value in enumerate(self.values_nusd):
            height = plot.height() * value / self.axis_max
            x = plot.left() + i * slot + (slot - width) / 2
            rects.append(QRectF(x, plot.bottom() - height, width, height))
        return rects

    def bar_at(self, x: float) -> int | None:
        """The day whose slot holds the horizontal position `x`."""
        plot = self.plot_rect()
        n = len(self.values_nusd)
        if n == 0 or not plot.left() <= x < plot.right():
            return None
        return min(int((x - plot.left()) / (plot.width() / n)), n - 1)

    def bar_tooltip(self, index: int) -> str:
        day = self.days[index]
        what = "demo job(s)" if self.sandbox else "job(s)"
        return (
            f"{day:%a %d %b %Y}\n"
            f"{money_text(self.values_nusd[index])} estimated earnings\n"
            f"{self.jobs[index]} {what}"
        )

    # events

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip and isinstance(event, QHelpEvent):
            index = self.bar_at(event.pos().x())
            if index is None:
                QToolTip.hideText()
                event.ignore()
            else:
                QToolTip.showText(event.globalPos(), self.bar_tooltip(index), self)
            return True
        return super().event(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        index = self.bar_at(event.position().x())
        if index != self.hovered:
            self.hovered = index
            self.update()
        super().mouseMoveEvent(event)

    def leaveEvent(self, event: QEvent) -> None:
        if self.hovered is not None:
            self.hovered = None
            self.update()
        super().leaveEvent(event)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        try:
            self._paint(painter)
        finally:
            painter.end()

    def _paint(self, painter: QPainter) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        palette = self.palette()
        text = palette.color(QPalette.ColorRole.WindowText)
        grid = QColor(text)
        grid.setAlpha(45)
        muted = QColor(text)
        muted.setAlpha(150)
        painter.setFont(self._small_font())
        metrics = painter.fontMetrics()
        plot = self.plot_rect()

        # dollar axis and gridlines
        for value, label in zip(self.ticks, self.tick_labels(), strict=True):
            y = plot.bottom() - plot.height() * value / self.axis_max
            painter.setPen(QPen(grid, 1))
            painter.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
            painter.setPen(muted)
            box = QRectF(0, y - metrics.height() / 2, plot.left() - 6, metrics.height())
            align = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
            painter.drawText(box, int(align), label)

        # bars
        bar = palette.color(QPalette.ColorRole.Highlight)
        hover = bar.lighter(130)
        painter.setPen(Qt.PenStyle.NoPen)
        for i, rect in enumerate(self.bar_rects()):
            if rect.height() <= 0:
                continue
            painter.setBrush(QBrush(hover if i == self.hovered else bar))
            painter.drawRect(rect)

        # axis line and day labels: today and every 7th day before it
        painter.setPen(QPen(muted, 1))
        painter.drawLine(QPointF(plot.left(), plot.bottom()), QPointF(plot.right(), plot.bottom()))
        n = len(self.days)
        slot = plot.width() / n if n else 0
        for i, day in enumerate(self.days):
            if (n - 1 - i) % 7:
                continue
            label = "Today" if i == n - 1 else f"{day.day} {day:%b}"
            width = metrics.horizontalAdvance(label) + 6
            centre = plot.left() + (i + 0.5) * slot
            x = min(max(centre - width / 2, plot.left()), self.width() - width)
            box = QRectF(x, plot.bottom() + 3, width, metrics.height())
            painter.drawText(box, int(Qt.AlignmentFlag.AlignCenter), label)

        if not any(self.values_nusd):
            painter.setPen(muted)
            message = "No estimated earnings in the last 30 days"
            painter.drawText(plot, int(Qt.AlignmentFlag.AlignCenter), message)
