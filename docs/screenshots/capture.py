"""Take the README screenshots of the tray menu and every settings tab.

Needs an X server with a system tray, e.g.::

    Xvfb :99 -screen 0 1280x800x24 &
    DISPLAY=:99 trayer --edge top --align right --widthtype request --height 28 &
    DISPLAY=:99 QT_QPA_PLATFORM=xcb python docs/screenshots/capture.py

It runs a real agent against the sandbox coordinator and fake backends (vLLM, Ollama and a
fake OpenRouter with upstream prices), in a throw-away home directory with an in-memory
keyring, and captures the screen with ImageMagick's `import -window root`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOME = Path(tempfile.mkdtemp(prefix="usepod-shots-"))
for name, sub in (
    ("HOME", ""),
    ("USEPOD_CONFIG_DIR", ".config/usepod-agent"),
    ("USEPOD_DATA_DIR", "data"),
    ("USEPOD_LOG_DIR", "log"),
    ("USEPOD_RUNTIME_DIR", "run"),
    ("XDG_CONFIG_HOME", ".config"),
):
    os.environ[name] = str(HOME / sub)
sys.path.insert(0, str(HERE.parents[1]))

import keyring  # noqa: E402
import keyring.backend  # noqa: E402
import qasync  # noqa: E402
from PySide6.QtCore import QPoint, QRect  # noqa: E402
from PySide6.QtWidgets import QApplication, QWidget  # noqa: E402

from usepod_desktop.core.config import (  # noqa: E402
    BackendConfig,
    Config,
    CoordinatorConfig,
    LimitsConfig,
    ModelPrice,
    PricingConfig,
    ServingConfig,
    save_config,
)
from usepod_desktop.core.logsetup import setup_logging  # noqa: E402
from usepod_desktop.gui.controller import AppController, StartOptions  # noqa: E402
from usepod_desktop.sandbox.coordinator import SandboxCoordinator  # noqa: E402
from usepod_desktop.sandbox.fakes import FakeBackend, FakeModel  # noqa: E402


class MemoryKeyring(keyring.backend.KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.store.pop((service, username), None)


def capture(name: str, rect: QRect) -> Path:
    out = HERE / f"{name}.png"
    geometry = f"{rect.width()}x{rect.height()}+{rect.x()}+{rect.y()}"
    subprocess.run(
        ["import", "-window", "root", "-crop", geometry, "+repage", str(out)], check=True
    )
    print("wrote", out)
    return out


def frame(widget: QWidget, pad: int = 0) -> QRect:
    return widget.frameGeometry().adjusted(-pad, -pad, pad, pad)


async def settle(seconds: float = 0.6) -> None:
    await asyncio.sleep(seconds)
    QApplication.processEvents()


async def main() -> None:
    secret = "sk-or-v1-screenshot-0000000000000000"
    keyring.set_keyring(MemoryKeyring())
    coordinator = SandboxCoordinator()
    coordinator.announce_sandbox = False  # shown as the real coordinator: real figures
    await coordinator.start()
    vllm = FakeBackend(
        "vllm",
        ["meta-llama/Llama-3.3-70B-Instruct", "Qwen/Qwen3-8B"],
        tokens_per_second=80,
        output_tokens=40,
    )
    ollama = FakeBackend("ollama", ["llama3.2:latest", "qwen2.5-coder:7b"])
    hosted = FakeBackend(
        "openrouter",
        [
            FakeModel("anthropic/claude-3.5-haiku", 200_000, 8e-7, 4e-6),
            FakeModel("openai/gpt-4o-mini", 128_000, 1.5e-7, 6e-7),
        ],
        api_key=secret,
    )
    for fake in (vllm, ollama, hosted):
        await fake.start()
    os.environ["USEPOD_OPENROUTER_BASE_URL"] = hosted.url
    keyring.get_keyring().set_password("usepod-agent", "OPENROUTER_API_KEY", secret)
    config = Config(
        coordinator=CoordinatorConfig(coordinator.url),
        pricing=PricingConfig(
            500_000,
            750_000,
            {
                "meta-llama/Llama-3.3-70B-Instruct": ModelPrice(600_000, 800_000),
                "openai/gpt-4o-mini": ModelPrice(150_000, 500_000),
            },
        ),
        backends=(
            BackendConfig("vllm", vllm.url),
            BackendConfig("ollama", ollama.url, models=("llama3.2:latest",)),
            BackendConfig("openrouter", api_key_env="OPENROUTER_API_KEY", markup=0.05),
        ),
        limits=LimitsConfig(max_concurrent=16, max_tokens_per_minute=500_000),
        serving=ServingConfig(
            pause_when_running=("steam", "obs64.exe"),
            gpu_temp_pause_c=85,
            gpu_temp_resume_c=75,
            free_gpu_memory_on_pause=True,
        ),
    )
    path = HOME / ".config" / "usepod-agent" / "agent.toml"
    save_config(config, path, allow_insecure=True)

    controller = AppController()
    controller.show_ui()
    await controller.start(StartOptions(allow_insecure=True, grace_s=1))
    await coordinator.wait_for_capabilities(10)
    handles = [
        await coordinator.dispatch(m, {"messages": [{"role": "user", "content": "hi"}]})
        for m in ("Qwen/Qwen3-8B", "llama3.2:latest", "Qwen/Qwen3-8B")
    ]
    await asyncio.gather(*(h.wait(30) for h in handles))
    await settle(1.2)

    # the tray menu, opened under the icon
    tray = controller.tray
    assert tray is not None
    icon_rect = tray.geometry()
    tray.rebuild_menu()
    menu = tray.menu
    size = menu.sizeHint()
    screen = QApplication.primaryScreen().geometry()
    x = min(icon_rect.right() - size.width(), screen.right() - size.width() - 4)
    menu.popup(QPoint(max(0, x), icon_rect.bottom() + 4))
    await settle()
    area = menu.geometry().united(icon_rect).adjusted(-12, -4, 12, 12)
    area = area.intersected(screen)
    capture("tray-menu", area)
    menu.hide()
    await settle(0.2)

    settings = controller.open_settings()
    assert settings is not None
    settings.move(40, 60)
    settings.resize(960, 640)
    for name, shot in (
        ("coordinator", "settings-coordinator"),
        ("backends", "settings-backends"),
        ("pricing", "settings-pricing"),
        ("keys", "settings-api-keys"),
        ("limits", "settings-limits"),
        ("serving", "settings-serving"),
        ("app", "settings-app"),
    ):
        settings.select_tab(name)
        if name == "backends":
            settings.backends_tab.select(1)
        if name == "keys":
            settings.keys_tab.refresh()
        await settle()
        capture(shot, frame(settings))

    # an invalid price: highlighted, nothing written
    settings.select_tab("pricing")
    settings.pricing_tab.default_out.setText("0")
    settings.apply()
    await settle()
    capture("settings-invalid-price", frame(settings))
    settings.revert()
    settings.close()

    # paused by hand for an hour: the reason and the end in the menu's status line
    controller.pause_for(3600)
    await settle(1.0)
    tray.rebuild_menu()
    size = menu.sizeHint()
    x = min(icon_rect.right() - size.width(), screen.right() - size.width() - 4)
    menu.popup(QPoint(max(0, x), icon_rect.bottom() + 4))
    await settle()
    area = menu.geometry().united(icon_rect).adjusted(-12, -4, 12, 12).intersected(screen)
    capture("tray-menu-paused", area)
    menu.hide()
    controller.resume()
    await settle(0.5)

    dialog = controller.open_test_job()
    assert dialog is not None
    dialog.move(80, 80)
    dialog.model.setCurrentIndex(dialog.model.findData("Qwen/Qwen3-8B"))
    task = dialog.send()
    if task is not None:
        await task
    await settle()
    capture("test-job", frame(dialog))
    dialog.close()

    window = controller.show_status_window()
    window.move(60, 80)
    await settle()
    capture("status-window", frame(window))
    window.hide()

    # every backend down: connected, but no model offered (its own icon and menu lines)
    for fake in (vllm, ollama, hosted):
        await fake.stop()
    agent = controller.agent
    assert agent is not None
    await agent.rediscover()
    await settle(1.0)
    tray.rebuild_menu()
    size = menu.sizeHint()
    x = min(icon_rect.right() - size.width(), screen.right() - size.width() - 4)
    menu.popup(QPoint(max(0, x), icon_rect.bottom() + 4))
    await settle()
    area = menu.geometry().united(icon_rect).adjusted(-12, -4, 12, 12).intersected(screen)
    capture("tray-no-models", area)
    menu.hide()

    await controller.shutdown()
    await coordinator.stop()


if __name__ == "__main__":
    setup_logging("warning", log_file=False)
    app = QApplication(sys.argv[:1])
    app.setQuitOnLastWindowClosed(False)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    with loop:
        loop.run_until_complete(main())
