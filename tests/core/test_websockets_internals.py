"""The websockets internals core/link.py relies on are still there, with the same shape.

`_BatchingConnection` overrides `Connection.send_data` and reads `protocol.data_to_send()`,
`protocol.state`, `self.transport` and `self.loop`; `_install_pooled_masks` replaces the
`secrets` module global that `websockets.frames` masks client frames with. None of that is
public API, so pyproject.toml pins websockets below the next major version and this test
says exactly what broke if a new version changes it.
"""

from __future__ import annotations

import asyncio
import inspect
import tomllib
from pathlib import Path

import websockets
import websockets.frames
from packaging.requirements import Requirement
from packaging.version import Version
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import ServerConnection, serve
from websockets.client import ClientProtocol
from websockets.protocol import State

from usepod_desktop.core import link

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_bounds_websockets_and_the_installed_version_is_inside() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    reqs = [Requirement(r) for r in project["project"]["dependencies"]]
    (ws,) = [r for r in reqs if r.name == "websockets"]
    assert any(spec.operator == "<" for spec in ws.specifier), "websockets needs an upper bound"
    assert Version(websockets.__version__) in ws.specifier


def test_the_connection_routes_every_write_through_send_data() -> None:
    assert issubclass(link._BatchingConnection, ClientConnection)
    assert list(inspect.signature(Connection.send_data).parameters) == ["self"]
    source = inspect.getsource(Connection)
    assert "self.send_data()" in source  # writes go through the method we override
    assert "self.protocol.data_to_send()" in inspect.getsource(Connection.send_data)
    assert "self.transport.write(" in inspect.getsource(Connection.send_data)
    assert list(inspect.signature(ClientProtocol.data_to_send).parameters) == ["self"]
    assert State.OPEN.name == "OPEN"


def test_frame_masks_come_from_the_module_global_link_replaces() -> None:
    assert "secrets.token_bytes(4)" in inspect.getsource(websockets.frames.Frame.serialize)
    assert isinstance(websockets.frames.secrets, link._PooledRandom)


async def test_a_batching_client_talks_and_masks_with_the_pool() -> None:
    pool = websockets.frames.secrets
    assert isinstance(pool, link._PooledRandom)

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with connect(
            f"ws://127.0.0.1:{port}", create_connection=link._BatchingConnection
        ) as ws:
            assert isinstance(ws, link._BatchingConnection)
            assert ws.loop is asyncio.get_running_loop()
            assert ws.transport is not None
            before = (pool._pool, pool._pos)
            await ws.send("ping")
            async with asyncio.timeout(10):
                assert await ws.recv() == "ping"
            assert (pool._pool, pool._pos) != before  # the mask came from the pool
