"""The window registry (gui/windows.py): one window per kind, raised rather than built again,
forgotten when deleted, all closed on quit (the pairing wizard included)."""

from __future__ import annotations

import pytest
import qasync
import shiboken6
from PySide6.QtCore import QEvent
from PySide6.QtWidgets import QApplication, QWidget

from tests.gui.conftest import Rig
from tests.pairing_support import probe_ports
from usepod_desktop.gui.windows import WindowRegistry

pytestmark = pytest.mark.gui


def _delete_now(qapp: QApplication, widget: QWidget) -> None:
    widget.deleteLater()
    qapp.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def test_registry_opens_one_window_per_kind_and_a_deleted_one_anew(
    qloop: qasync.QEventLoop, qapp: QApplication
) -> None:
    registry = WindowRegistry()
    built: list[QWidget] = []
    again: list[QWidget] = []
    prepared: list[QWidget] = []

    def build() -> QWidget:
        built.append(QWidget())
        return built[-1]

    def open_it() -> QWidget:
        return registry.open("dash", build, again=again.append, prepare=prepared.append)

    first = open_it()
    assert first.isVisible() and built == [first] and again == [] and prepared == [first]
    first.showMinimized()
    assert open_it() is first  # raised, not built again
    assert not first.isMinimized() and built == [first] and again == [first]
    assert prepared == [first, first]
    other = registry.open("log", QWidget)
    assert registry.kinds() == ["dash", "log"] and registry.get("log") is other

    _delete_now(qapp, first)
    assert registry.get("dash") is None and registry.kinds() == ["log"]
    fresh = open_it()
    assert fresh is not first and built == [first, fresh] and registry.get("dash") is fresh

    registry.forget(fresh)  # closing for good: the next open builds another
    assert registry.get("dash") is None
    assert open_it() is built[-1] is not fresh
    registry.close_all()
    assert not other.isVisible() and not built[-1].isVisible()
    assert registry.get("log") is other  # closed (hidden), kept: reopening shows it again


def test_the_app_opens_one_of_each_window_and_quit_closes_them_all(rig: Rig) -> None:
    from usepod_desktop.gui.pairing import PairingWizard, open_pairing_wizard

    controller = rig.controller
    dashboard = controller.open_dashboard()
    assert controller.open_dashboard() is dashboard
    log_view = controller.open_log_view()
    assert controller.open_log_view() is log_view
    doctor = controller.open_doctor()
    assert controller.open_doctor() is doctor

    def wizard() -> PairingWizard:
        return open_pairing_wizard(
            controller, rig.coordinator.http_url, probe_ports=probe_ports(), open_url=lambda _: True
        )

    first = wizard()
    assert wizard() is first and first.isVisible()
    first.reject()  # cancelled: the wizard deletes itself, the next one is fresh
    assert controller.windows.get("pairing") is None
    rig.until(lambda: not shiboken6.isValid(first), what="the cancelled wizard deleted")
    second = wizard()
    assert second is not first and controller.windows.get("pairing") is second
    flow = second.flow
    assert flow is not None
    cancelled: list[bool] = []
    real_cancel = flow.cancel
    flow.cancel = lambda: (cancelled.append(True), real_cancel())[1]  # type: ignore[method-assign]
    assert set(controller.windows.kinds()) == {"dashboard", "log_view", "doctor", "pairing"}

    rig.run(controller.shutdown(), 20)

    assert not any(w.isVisible() for w in (dashboard, log_view, doctor))
    assert cancelled == [True]  # the wizard was closed too: its flow stops
    assert controller.windows.get("pairing") is None
