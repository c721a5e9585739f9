"""Take the README screenshot of the Diagnose window (`doctor.png`).

Runs a real agent against the sandbox coordinator, a fake vLLM and a fake Ollama (serving a
local tag), with a fake market price list on loopback, in a throw-away home directory with an
in-memory keyring, and saves the window with `QWidget.grab()`::

    Xvfb :99 -screen 0 1280x800x24 &
    DISPLAY=:99 QT_QPA_PLATFORM=xcb python docs/screenshots/capture_doctor.py
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # capture.py: the throw-away home and the in-memory keyring

import keyring  # noqa: E402
import keyring.backend  # noqa: E402
import qasync  # noqa: E402
from capture import HOME, MemoryKeyring  # noqa: E402 (sets HOME before the app is imported)
from PySide6.QtWidgets import QApplication  # noqa: E402

from usepod_desktop.core.config import (  # noqa: E402
    BackendConfig,
    Config,
    CoordinatorConfig,
    LimitsConfig,
    PricingConfig,
    save_config,
)
from usepod_desktop.gui.controller import AppController, StartOptions  # noqa: E402
from usepod_desktop.sandbox.coordinator import SandboxCoordinator  # noqa: E402
from usepod_desktop.sandbox.fakes import FakeBackend  # noqa: E402

MARKET = {
    "data": [
        {
            "id": "qwen/qwen3-8b",
            "hugging_face_id": "Qwen/Qwen3-8B",
            "pricing": {"prompt": "0.000000035", "completion": "0.000000138"},
        },
        {
            "id": "meta-llama/llama-3.3-70b-instruct",
            "hugging_face_id": "meta-llama/Llama-3.3-70B-Instruct",
            "pricing": {"prompt": "0.0000001", "completion": "0.00000032"},
        },
    ]
}


def serve(routes: dict[str, bytes]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = routes.get(self.path, b"{}")
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


async def main() -> None:
    keyring.set_keyring(MemoryKeyring())
    feeds = serve(
        {
            "/models": json.dumps(MARKET).encode(),
            "/pypi": json.dumps({"info": {"version": "0.2.0"}}).encode(),
        }
    )
    port = feeds.server_address[1]
    os.environ["USEPOD_MARKET_PRICES_URL"] = f"http://127.0.0.1:{port}/models"
    os.environ["USEPOD_UPDATE_FEED_URL"] = f"http://127.0.0.1:{port}/pypi"
    coordinator = SandboxCoordinator()
    await coordinator.start()
    vllm = FakeBackend("vllm", ["meta-llama/Llama-3.3-70B-Instruct", "Qwen/Qwen3-8B"])
    ollama = FakeBackend("ollama", ["llama3.1:8b"])
    for fake in (vllm, ollama):
        await fake.start()
    config = Config(
        coordinator=CoordinatorConfig(coordinator.url),
        pricing=PricingConfig(50_000, 100_000),
        backends=(
            BackendConfig(
                "vllm",
                vllm.url,
                models=("meta-llama/Llama-3.3-70B-Instruct", "Qwen/Qwen3-8B", "qwen3-8b-instruct"),
            ),
            BackendConfig("ollama", ollama.url),
        ),
        limits=LimitsConfig(max_concurrent=8),
    )
    save_config(config, HOME / ".config" / "usepod-agent" / "agent.toml", allow_insecure=True)
    controller = AppController()
    await controller.start(StartOptions(allow_insecure=True, grace_s=1))
    await coordinator.wait_for_capabilities(10)
    window = controller.open_doctor()
    window.resize(1040, 720)
    assert window._task is not None
    await asyncio.wait([window._task])
    await asyncio.sleep(0.5)
    QApplication.processEvents()
    out = HERE / "doctor.png"
    window.grab().save(str(out))
    print("wrote", out)
    assert controller.agent is not None
    await controller.agent.stop(0.1)
    for fake in (vllm, ollama):
        await fake.stop()
    await coordinator.stop()
    feeds.shutdown()


if __name__ == "__main__":
    app = QApplication(sys.argv)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    with loop:
        loop.run_until_complete(main())
