"""The support bundle: every promised member is there, and no known secret is in any of them."""

from __future__ import annotations

import asyncio
import json
import zipfile
from pathlib import Path

import keyring
import pytest

from tests.doctor.test_checks import Rig, feeds, rig  # noqa: F401 - fixtures
from usepod_desktop.cli import main
from usepod_desktop.core import paths
from usepod_desktop.core.backends.openrouter import BASE_URL_ENV as OPENROUTER_BASE_URL_ENV
from usepod_desktop.core.config import BackendConfig, CoordinatorConfig
from usepod_desktop.core.doctor.bundle import redact_toml
from usepod_desktop.core.logsetup import LOG_FILE_NAME
from usepod_desktop.core.pairing import HOST_TOKEN_KEY
from usepod_desktop.core.secrets import SERVICE
from usepod_desktop.sandbox.fakes import FakeBackend, FakeModel

OPENROUTER_KEY = "sk-or-v1-" + "a1b2c3d4" * 8
VENICE_KEY = "venice-" + "Zq9" * 10
HOST_TOKEN = "pht_" + "HostTokenValue123" * 2
URL_USER, URL_PASS = "opsuser", "UrlPassw0rd!x"
ENROLL = "ENRL-7F3K-99QX"


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


async def test_bundle_holds_the_promised_members_and_no_secret(
    rig: Rig,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    openrouter = FakeBackend(
        "openrouter",
        [FakeModel("qwen/qwen3-8b", prompt_price=3e-7, completion_price=6e-7)],
        api_key=OPENROUTER_KEY,
    )
    await openrouter.start()
    monkeypatch.setenv(OPENROUTER_BASE_URL_ENV, openrouter.url)
    keyring.set_password(SERVICE, "OPENROUTER_API_KEY", OPENROUTER_KEY)
    keyring.set_password(SERVICE, "VENICE_API_KEY", VENICE_KEY)
    keyring.set_password(SERVICE, HOST_TOKEN_KEY, HOST_TOKEN)
    identity_secret = next(
        line.split(":", 1)[1].strip()
        for line in rig.key_path.read_text().splitlines()
        if line.startswith("secret:")
    )
    proxied = rig.fake.url.replace("http://", f"http://{URL_USER}:{URL_PASS}@")
    rig.write(
        rig.base_config(
            backends=(
                BackendConfig("vllm", proxied),
                BackendConfig("openrouter", api_key_env="OPENROUTER_API_KEY"),
            ),
            coordinator=CoordinatorConfig(
                rig.coord.url + "?token=QueryTok3nValue", enrollment_code=ENROLL
            ),
        )
    )
    # a log that leaked everything (older builds, third-party libraries): the bundle must not
    log_dir = paths.log_dir()
    log_dir.mkdir(parents=True, exist_ok=True)
    leaked = [
        f"key {OPENROUTER_KEY}",
        f"venice {VENICE_KEY}",
        f"token={HOST_TOKEN}",
        f"secret: {identity_secret}",
        f"GET {proxied}/v1/models",
        f"enrollment {ENROLL}",
    ]
    (log_dir / LOG_FILE_NAME).write_text(
        "\n".join(f"2026-01-01 INFO x: line {i} {text}" for i, text in enumerate(leaked)) + "\n"
    )
    target = tmp_path / "out" / "support.zip"
    code = await asyncio.to_thread(
        main,
        ["doctor", "--config", str(rig.config_path), "--allow-insecure", "--bundle", str(target)],
    )
    printed = capsys.readouterr()
    for secret in (URL_PASS, "QueryTok3nValue", OPENROUTER_KEY):
        assert secret not in printed.out + printed.err
    await openrouter.stop()
    assert openrouter.requests, "the BYOK backend was asked on loopback"
    assert code == 0
    files = members(target)
    names = {n.removeprefix("usepod-support/") for n in files}
    assert names == {
        "doctor.txt",
        "doctor.json",
        "versions.txt",
        "discover.json",
        "agent.toml",
        "log.txt",
        "ledger.json",
    }
    secrets = [
        OPENROUTER_KEY,
        VENICE_KEY,
        HOST_TOKEN,
        identity_secret,
        URL_PASS,
        f"{URL_USER}:",
        "QueryTok3nValue",
        ENROLL,
    ]
    for name, data in files.items():
        for secret in secrets:
            assert secret.encode() not in data, f"{secret[:6]}... found in {name}"
    text = {n.removeprefix("usepod-support/"): d.decode() for n, d in files.items()}
    assert "line 5" in text["log.txt"] and "[REDACTED]" in text["log.txt"]
    assert "api_key_env" in text["agent.toml"] and "OPENROUTER_API_KEY" in text["agent.toml"]
    assert f"http://127.0.0.1:{rig.fake.port}" in text["agent.toml"]
    assert "usepod-desktop" in text["versions.txt"] and "os " in text["versions.txt"]
    assert json.loads(text["doctor.json"])["checks"]
    assert json.loads(text["discover.json"])["type"] == "capabilities"
    ledger = json.loads(text["ledger.json"])
    assert ledger["rows"] == 0 and "today" in ledger["periods"]


def test_redact_toml_keeps_layout_and_removes_secrets() -> None:
    text = (
        "[coordinator]\n"
        'url = "wss://u:p4ssw0rd@api.example/provider/connect"\n'
        'enrollment_code = "ABCD-1234"\n'
        "[[backends]]\n"
        'kind = "openrouter"\n'
        'api_key_env = "OPENROUTER_API_KEY"\n'
    )
    out = redact_toml(text)
    assert "p4ssw0rd" not in out and "ABCD-1234" not in out
    assert 'url = "wss://api.example/provider/connect"' in out
    assert 'api_key_env = "OPENROUTER_API_KEY"' in out
    broken = redact_toml('token = "abcdefgh"\nurl = "http://a:b@h/x"\n[[[')
    assert "abcdefgh" not in broken and "a:b@" not in broken


async def test_unwritable_bundle_is_one_line(
    rig: Rig,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    args = ["doctor", "--config", str(rig.config_path), "--allow-insecure"]
    code = await asyncio.to_thread(main, [*args, "--bundle", str(blocker / "x.zip")])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write the support bundle") and "Traceback" not in err
