"""`usepod-desktop discover`: run as a user would (a real subprocess) against fake backends."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from usepod_desktop import cli as cli_module
from usepod_desktop.core import discovery
from usepod_desktop.core.config import load_config
from usepod_desktop.core.discovery import BackendPool, discover
from usepod_desktop.core.secrets import SecretStore
from usepod_desktop.sandbox.fakes import FailMode, FakeBackend, FakeModel

KEY = "sk-or-v1-cli-test-key-000000"
MakeFake = Callable[..., Awaitable[FakeBackend]]


async def run_cli(*args: str) -> tuple[int, str, str]:
    """The CLI in a subprocess, awaited without blocking the loop the fakes run on."""
    env = os.environ.copy()
    env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.null.Keyring"  # never the real keyring
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "usepod_desktop",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def write_config(path: Path, backends: str, extra: str = "") -> Path:
    path.write_text(
        '[coordinator]\nurl = "ws://127.0.0.1:1/provider/connect"\n\n'
        + backends
        + "\n[pricing]\ndefault_input_per_1m = 500_000\ndefault_output_per_1m = 750_000\n"
        + extra
        + "\n[limits]\nmax_concurrent = 3\nmax_tokens_per_minute = 90_000\n",
        encoding="utf-8",
    )
    return path


async def test_json_is_exactly_the_capabilities_frame(
    make_fake: MakeFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vllm = await make_fake("vllm", [FakeModel("Qwen/Qwen3-8B", 32768), FakeModel("shared")])
    ollama = await make_fake("ollama", [FakeModel("llama3.2:latest", 131072), FakeModel("shared")])
    router = await make_fake(
        "openrouter", [FakeModel("vendor/m", 64000, 0.000001, 0.000002)], api_key=KEY
    )
    dead = await make_fake("llamacpp", fail_mode=FailMode.REFUSE)
    monkeypatch.setenv("USEPOD_OPENROUTER_BASE_URL", router.url)
    monkeypatch.setenv("OPENROUTER_API_KEY", KEY)
    path = write_config(
        tmp_path / "agent.toml",
        f'[[backends]]\nkind = "ollama"\nurl = "{ollama.url}"\n\n'
        f'[[backends]]\nkind = "vllm"\nurl = "{vllm.url}"\n\n'
        f'[[backends]]\nkind = "llamacpp"\nurl = "{dead.url}"\n\n'
        '[[backends]]\nkind = "openrouter"\napi_key_env = "OPENROUTER_API_KEY"\nmarkup = 0.1\n',
    )
    code, out, err = await run_cli("discover", "--json", "--config", str(path), "--allow-insecure")
    assert code == 0, err

    config = load_config(path, allow_insecure=True)
    pool = BackendPool(SecretStore())
    try:
        expected = (await discover(config, pool)).capabilities_frame(config)
    finally:
        await pool.aclose()
    assert out == expected + "\n"  # one JSON document, nothing else on stdout
    frame = json.loads(out)
    assert [(m["model_id"], m["backend"]) for m in frame["models"]] == [
        ("Qwen/Qwen3-8B", "vllm"),
        ("llama3.2:latest", "ollama"),
        ("shared", "vllm"),
        ("vendor/m", "openrouter"),
    ]
    assert frame["models"][3]["input_per_1m"] == 1_375_000  # 1_000_000 / 0.8 * 1.1
    assert frame["limits"] == {"max_concurrent_total": 3, "max_tokens_per_minute": 90_000}


async def test_table_shows_the_truth(
    make_fake: MakeFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vllm = await make_fake("vllm", [FakeModel("Qwen/Qwen3-8B", 32768)])
    dead = await make_fake("ollama", fail_mode=FailMode.REFUSE)
    loading = await make_fake("llamacpp", fail_mode=FailMode.LOADING)
    router = await make_fake(
        "openrouter",
        [FakeModel("vendor/cheap", 64000, 0.000003, 0.000015), FakeModel("vendor/unpriced")],
        api_key=KEY,
    )
    monkeypatch.setenv("USEPOD_OPENROUTER_BASE_URL", router.url)
    monkeypatch.setenv("OPENROUTER_API_KEY", KEY)
    monkeypatch.delenv("VENICE_API_KEY", raising=False)
    path = write_config(
        tmp_path / "agent.toml",
        f'[[backends]]\nkind = "vllm"\nurl = "{vllm.url}"\n\n'
        f'[[backends]]\nkind = "ollama"\nurl = "{dead.url}"\n\n'
        f'[[backends]]\nkind = "llamacpp"\nurl = "{loading.url}"\n\n'
        '[[backends]]\nkind = "openrouter"\napi_key_env = "OPENROUTER_API_KEY"\n\n'
        '[[backends]]\nkind = "venice"\napi_key_env = "VENICE_API_KEY"\n',
        extra="[pricing.models]\n"
        '"vendor/cheap" = { input_per_1m = 1_000_000, output_per_1m = 2_000_000 }\n',
    )
    code, out, err = await run_cli("discover", "--config", str(path), "--allow-insecure")
    assert code == 0, err
    lines = out.splitlines()

    def row(start: str) -> str:
        (line,) = [ln for ln in lines if ln.strip().startswith(start)]
        return line

    vllm_row = row(f"vllm @ {vllm.url}")
    assert " ok " in vllm_row and " ms " in vllm_row and "1 found, 1 advertised" in vllm_row
    assert "unreachable" in row(f"ollama @ {dead.url}") and "connection refused" in out
    assert "loading" in row(f"llamacpp @ {loading.url}") and "loading model (503)" in out
    assert "no_key" in row("venice (VENICE_API_KEY)")
    assert "2 found, 1 advertised" in row("openrouter (OPENROUTER_API_KEY)")
    # Warnings: the missing key (where it looked), below cost, unknown upstream price.
    assert "$VENICE_API_KEY" in out and "OS keyring" in out
    assert "vendor/cheap: below cost" in out
    assert "vendor/unpriced: upstream price unknown" in out
    # Advertised models with $/1M prices.
    qwen = row("Qwen/Qwen3-8B")
    assert "vllm" in qwen and "$0.50" in qwen and "$0.75" in qwen and "32768" in qwen
    cheap = row("vendor/cheap")
    assert "$1.00" in cheap and "$2.00" in cheap and "BELOW COST" in cheap
    assert "upstream $3.00 / $15.00" in cheap
    assert "Advertised models (2)" in out


async def test_no_healthy_backend_still_exits_zero(make_fake: MakeFake, tmp_path: Path) -> None:
    dead = await make_fake("vllm", fail_mode=FailMode.REFUSE)
    path = write_config(
        tmp_path / "agent.toml", f'[[backends]]\nkind = "vllm"\nurl = "{dead.url}"\n'
    )
    code, out, err = await run_cli("discover", "--json", "--config", str(path), "--allow-insecure")
    assert code == 0, err
    assert json.loads(out)["models"] == []
    code, out, _ = await run_cli("discover", "--config", str(path), "--allow-insecure")
    assert code == 0 and "Advertised models: none" in out


async def test_invalid_config_is_one_line_and_non_zero(tmp_path: Path) -> None:
    path = write_config(tmp_path / "agent.toml", '[[backends]]\nkind = "vllm"\n')
    code, out, err = await run_cli("discover", "--json", "--config", str(path), "--allow-insecure")
    assert code != 0 and out == ""
    (line,) = err.strip().splitlines()
    assert "backends[0].url" in line
    # ws:// without --allow-insecure is refused the same way.
    ok = write_config(tmp_path / "ok.toml", "")
    code, out, err = await run_cli("discover", "--config", str(ok))
    assert code != 0 and "wss" in err and len(err.strip().splitlines()) == 1


async def test_probe_lists_local_servers(
    make_fake: MakeFake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    vllm = await make_fake("vllm", ["Qwen/Qwen3-8B"])
    ollama = await make_fake("ollama", ["llama3.2:latest"])
    lms = await make_fake("lmstudio", ["x"], fail_mode=FailMode.ERROR_STATUS)
    closed = await make_fake("llamacpp", fail_mode=FailMode.REFUSE)
    monkeypatch.setattr(
        discovery,
        "PROBE_PORTS",
        {"vllm": vllm.port, "llamacpp": closed.port, "lmstudio": lms.port, "ollama": ollama.port},
    )
    # run() uses asyncio.run, so call it from a worker thread while the fakes serve here.
    code = await asyncio.to_thread(cli_module.main, ["discover", "--probe"])
    assert code == 0
    out = capsys.readouterr().out
    assert f"http://localhost:{vllm.port}" in out and "Qwen/Qwen3-8B" in out
    assert f"http://localhost:{ollama.port}" in out and "llama3.2:latest" in out
    assert "lmstudio" not in out and "llamacpp" not in out
    code = await asyncio.to_thread(cli_module.main, ["discover", "--probe", "--json"])
    found = json.loads(capsys.readouterr().out)
    assert [p["kind"] for p in found] == ["vllm", "ollama"]
