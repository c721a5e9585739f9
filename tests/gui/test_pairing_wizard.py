"""The pairing wizard driven through its three pages against the sandbox coordinator (real HTTP
on 127.0.0.1), and the app hook: first launch without agent.toml -> paired -> serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import qasync
from PySide6.QtCore import QUrl
from PySide6.QtGui import QGuiApplication

from tests.conftest import MemoryKeyring
from tests.gui.conftest import run, spin, until
from tests.pairing_support import expected_config, probe_ports
from usepod_desktop.core import identity as identity_mod
from usepod_desktop.core import paths
from usepod_desktop.core.backoff import Backoff
from usepod_desktop.core.config import load_config
from usepod_desktop.core.events import AgentState
from usepod_desktop.gui.pairing import (
    PAGE_BACKENDS,
    PAGE_CODE,
    PAGE_DONE,
    PairingWizard,
    open_pairing_wizard,
)
from usepod_desktop.sandbox.coordinator import SandboxCoordinator
from usepod_desktop.sandbox.fakes import FakeBackend
from usepod_desktop.sandbox.pairing import ApprovedModel, PairingDesk, enable_pairing

pytestmark = pytest.mark.gui

FLOW = {"poll_interval": 0.05, "backoff": Backoff(initial=0.05, maximum=0.2)}
TOKEN_KEY = ("usepod-agent", "usepod-host-token")


class Sandbox:
    def __init__(self, loop: qasync.QEventLoop) -> None:
        self.loop = loop
        self.coord = SandboxCoordinator(ws_heartbeat=None)
        self.coord.announce_sandbox = False  # playing the real coordinator
        self.desk: PairingDesk = enable_pairing(self.coord)
        self.vllm = FakeBackend("vllm", ["model-a", "model-b"])
        run(loop, self.coord.start())
        run(loop, self.vllm.start())
        self.ports = probe_ports(vllm=self.vllm.port)

    def request(self, after: int = 0) -> Any:
        return run(self.loop, self.desk.wait_for_request(10, after=after, polled=True))

    def stop(self) -> None:
        run(self.loop, self.vllm.stop())
        run(self.loop, self.coord.stop())


@pytest.fixture
def sandbox(qloop: qasync.QEventLoop) -> Iterator[Sandbox]:
    box = Sandbox(qloop)
    yield box
    box.stop()


def make_wizard(box: Sandbox, config_path: Path, opened: list[QUrl]) -> PairingWizard:
    def record(url: QUrl) -> bool:
        opened.append(url)
        return True

    wizard = PairingWizard(
        box.coord.http_url,
        config_path,
        probe_ports=box.ports,
        flow_options=FLOW,
        open_url=record,
    )
    wizard.show()
    return wizard


def test_wizard_detects_shows_the_code_renews_it_and_pairs(
    qloop: qasync.QEventLoop, sandbox: Sandbox, memory_keyring: MemoryKeyring
) -> None:
    config_path = paths.default_config_path()
    opened: list[QUrl] = []
    wizard = make_wizard(sandbox, config_path, opened)
    paired: list[Any] = []
    wizard.paired.connect(paired.append)

    # page 1: what was found, and how to start what was not
    assert wizard.page == PAGE_BACKENDS
    until(qloop, wizard.next_button.isEnabled, what="the probe")
    found = wizard.backend_labels["vllm"].text()
    assert "✓ vLLM" in found and "2 model(s): model-a, model-b" in found
    assert f"http://localhost:{sandbox.vllm.port}" in found
    missing = wizard.backend_labels["ollama"].text()
    assert f"not running on port {sandbox.ports['ollama']}" in missing
    assert "ollama pull" in missing
    assert "llama-server" in wizard.backend_labels["llamacpp"].text()
    assert "Developer tab" in wizard.backend_labels["lmstudio"].text()
    assert wizard.none_found.isHidden()

    # page 2: the code, big, with Copy / Open and a countdown
    wizard.next_button.click()
    assert wizard.page == PAGE_CODE
    first = sandbox.request()
    until(qloop, lambda: wizard.code_label.text() == first.pair_code, what="the code shown")
    assert wizard.code_label.font().pointSize() >= 30
    assert wizard.busy.isVisible() and wizard.busy.maximum() == 0  # busy, indeterminate
    assert "expires in 10:00" in wizard.countdown_label.text() or (
        "expires in 9:5" in wizard.countdown_label.text()
    )
    wizard.copy_button.click()
    assert QGuiApplication.clipboard().text() == first.pair_code
    wizard.open_button.click()
    assert opened == [QUrl(f"{sandbox.coord.http_url}/host/pair")]
    assert not config_path.exists()

    # expiry offers a new code, which works
    sandbox.desk.expire(first.pair_code)
    until(qloop, wizard.new_code_button.isVisible, what="the expiry")
    assert "expired" in wizard.code_status.text()
    assert not wizard.busy.isVisible() and not wizard.copy_button.isEnabled()
    wizard.new_code_button.click()
    second = sandbox.request(after=1)
    assert second.pair_code != first.pair_code
    until(qloop, lambda: wizard.code_label.text() == second.pair_code, what="the new code")
    assert not wizard.new_code_button.isVisible()
    sandbox.desk.approve(
        second.pair_code, [ApprovedModel("model-a", 300_000, 450_000, max_concurrent=5)]
    )

    # page 3: who we are now, what was activated at which price
    until(qloop, lambda: wizard.page == PAGE_DONE, what="the success page")
    assert f"Paired as provider {second.provider_id}" in wizard.done_title.text()
    table = wizard.models_table
    assert table.rowCount() == 1
    assert [table.item(0, c).text() for c in range(3)] == ["model-a", "$0.30", "$0.45"]
    assert str(config_path) in wizard.saved_label.text()
    assert wizard.serve_button.isVisible() and not wizard.cancel_button.isVisible()
    assert paired == []  # not before "Start serving"
    assert load_config(config_path, allow_insecure=True) == expected_config(
        sandbox.coord.port,
        paths.default_identity_path(),
        [("vllm", sandbox.vllm.port or 0)],
        {"model-a": (300_000, 450_000)},
        5,
    )
    assert memory_keyring.store[TOKEN_KEY] == second.host_token

    wizard.serve_button.click()
    assert paired == [wizard.result] and paired[0].provider_id == second.provider_id
    assert not wizard.isVisible()


@pytest.mark.parametrize("page", [PAGE_BACKENDS, PAGE_CODE], ids=["backends", "code"])
def test_cancel_on_any_page_writes_nothing(
    qloop: qasync.QEventLoop, sandbox: Sandbox, memory_keyring: MemoryKeyring, page: int
) -> None:
    config_path = paths.default_config_path()
    wizard = make_wizard(sandbox, config_path, [])
    paired: list[Any] = []
    wizard.paired.connect(paired.append)
    until(qloop, wizard.next_button.isEnabled, what="the probe")
    request = None
    if page == PAGE_CODE:
        wizard.next_button.click()
        request = sandbox.request()
        until(qloop, lambda: wizard.code_label.text() == request.pair_code, what="the code")
    wizard.cancel_button.click()
    spin(qloop, 0.1)  # let the cancelled task unwind while the loop runs, as in the app
    assert not wizard.isVisible()
    assert wizard.flow is not None and wizard.flow.cancelled
    if request is not None:
        polls = request.polls
        sandbox.desk.approve(request.pair_code, ["model-a"])  # too late: nobody polls
        spin(qloop, 0.3)
        assert request.polls == polls
    assert not config_path.exists()
    assert not paths.default_identity_path().exists()
    assert TOKEN_KEY not in memory_keyring.store
    assert paired == []


def test_the_wizard_can_pair_with_another_coordinator(
    qloop: qasync.QEventLoop, sandbox: Sandbox, memory_keyring: MemoryKeyring
) -> None:
    """Issue 19 item 13: a sandbox or staging coordinator, not only production; a sandbox is
    approved in its terminal (it has no web page)."""
    sandbox.coord.announce_sandbox = True
    real = paths.default_config_path()
    real.parent.mkdir(parents=True)
    real.write_text('[coordinator]\nurl = "wss://api.usepod.ai/provider/connect"\n')
    wizard = PairingWizard(
        "https://api.usepod.ai",
        paths.default_config_path(),
        probe_ports=sandbox.ports,
        flow_options=FLOW,
        open_url=lambda _u: True,
    )
    wizard.show()
    edit = wizard.coordinator_edit
    assert edit.text() == "https://api.usepod.ai"
    until(qloop, wizard.next_button.isEnabled, what="the probe")
    edit.setText("ftp://nowhere")
    wizard.next_button.click()
    assert wizard.page == PAGE_BACKENDS and "coordinator URL" in wizard.page1_error.text()
    edit.setText(sandbox.coord.http_url)
    wizard.next_button.click()
    assert wizard.page == PAGE_CODE and wizard.flow is not None
    assert wizard.flow.base == sandbox.coord.http_url
    request = sandbox.request()
    until(qloop, lambda: wizard.code_label.text() == request.pair_code, what="the code")
    assert f"approve {request.pair_code}" in wizard.page_link.text()
    assert "/host/pair" not in wizard.page_link.text()
    assert not wizard.open_button.isEnabled()
    assert wizard.flow.config_path == real.with_name("sandbox.toml")  # the real one stays
    assert "your agent.toml stays" in wizard.page_link.text()
    wizard.cancel_button.click()
    spin(qloop, 0.1)


def test_unreachable_coordinator_is_shown_and_errors_offer_a_retry(
    qloop: qasync.QEventLoop, sandbox: Sandbox, memory_keyring: MemoryKeyring
) -> None:
    config_path = paths.default_config_path()
    sandbox.desk.outage = 503
    wizard = make_wizard(sandbox, config_path, [])
    until(qloop, wizard.next_button.isEnabled, what="the probe")
    wizard.next_button.click()
    until(qloop, lambda: "Cannot reach" in wizard.code_status.text(), what="the outage")
    assert "HTTP 503" in wizard.code_status.text()
    sandbox.desk.outage = 400  # not transient: a one-line error and a retry button
    until(qloop, wizard.new_code_button.isVisible, what="the error")
    assert "HTTP 400 Bad Request" in wizard.code_status.text()
    assert wizard.new_code_button.text() == "Try again"
    sandbox.desk.outage = None
    wizard.new_code_button.click()
    request = sandbox.request()
    until(qloop, lambda: wizard.code_label.text() == request.pair_code, what="the code")
    wizard.reject()
    spin(qloop, 0.1)  # let the cancelled task unwind while the loop runs, as in the app
    assert not config_path.exists()


def test_first_launch_without_agent_toml_pairs_and_starts_serving(
    qloop: qasync.QEventLoop, sandbox: Sandbox, memory_keyring: MemoryKeyring
) -> None:
    from usepod_desktop.gui.controller import AppController, StartOptions

    controller = AppController(open_url=lambda _u: True)
    controller.show_ui(tray_available=True)
    run(qloop, controller.start(StartOptions(allow_insecure=True, grace_s=1.0)))
    assert controller.agent is None and controller.state == AgentState.NEEDS_PAIRING
    try:
        wizard = open_pairing_wizard(
            controller,
            sandbox.coord.http_url,
            probe_ports=sandbox.ports,
            flow_options=FLOW,
            open_url=lambda _u: True,
        )
        assert open_pairing_wizard(controller) is wizard  # one at a time
        assert wizard.config_path == paths.default_config_path()
        until(qloop, wizard.next_button.isEnabled, what="the probe")
        wizard.next_button.click()
        request = sandbox.request()
        sandbox.desk.approve(request.pair_code, [("model-b", 250_000, 500_000)])
        until(qloop, lambda: wizard.page == PAGE_DONE, what="the success page")
        wizard.serve_button.click()

        until(qloop, lambda: controller.state == AgentState.SERVING, timeout=15, what="serving")
        session = run(qloop, sandbox.coord.wait_for_provider(10))
        assert session.provider_id == request.provider_id
        caps = run(qloop, sandbox.coord.wait_for_capabilities(10))
        assert {m["model_id"]: m["input_per_1m"] for m in caps.models} == {
            "model-a": 500_000,
            "model-b": 250_000,
        }
        agent = controller.agent
        assert agent is not None and agent.config_path == paths.default_config_path()
        assert identity_mod.load(paths.default_identity_path()).provider_id == session.provider_id
        assert any(title == "Paired" for title, _m, _l in controller.notifications)
        assert controller.windows.get("pairing") is None  # closed: the next call opens anew
    finally:
        run(qloop, controller.shutdown(), 20)


def test_pairing_over_an_invalid_agent_toml_serves_once_and_clears_the_problem(
    qloop: qasync.QEventLoop, sandbox: Sandbox, memory_keyring: MemoryKeyring
) -> None:
    from usepod_desktop.gui.controller import AppController, StartOptions

    path = paths.default_config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[coordinator]\nurl = 42\n")  # invalid: the app shows it and watches it
    controller = AppController(open_url=lambda _u: True)
    controller.show_ui(tray_available=True)
    run(qloop, controller.start(StartOptions(allow_insecure=True, grace_s=1.0)))
    assert controller.agent is None and controller.config_problem_path == path
    try:
        wizard = open_pairing_wizard(
            controller,
            sandbox.coord.http_url,
            probe_ports=sandbox.ports,
            flow_options=FLOW,
            open_url=lambda _u: True,
        )
        until(qloop, wizard.next_button.isEnabled, what="the probe")
        wizard.next_button.click()
        request = sandbox.request()
        sandbox.desk.approve(request.pair_code, ["model-a"])
        until(qloop, lambda: wizard.page == PAGE_DONE, what="the success page")
        wizard.serve_button.click()
        until(qloop, lambda: controller.state == AgentState.SERVING, timeout=15, what="serving")
        assert controller.config_problem_path is None  # the pairing's file replaced it
        agent = controller.agent
        # the file watcher of the invalid file is gone: no second start follows
        assert not controller._reload_timer.isActive() and controller.host.agent is agent
        assert len(sandbox.coord.sessions) == 1
    finally:
        run(qloop, controller.shutdown(), 20)
