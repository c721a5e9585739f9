"""agent.toml: the reference example loads, every validation rule, comment-keeping atomic saves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from usepod_desktop.core import config as cfg
from usepod_desktop.core.config import (
    BackendConfig,
    ConfigError,
    LimitsConfig,
    ModelPrice,
    load_config,
    parse_config,
    render_config,
    save_config,
)

MINIMAL = """
[coordinator]
url = "wss://coord.example/provider/connect"

[pricing]
default_input_per_1m = 500_000
default_output_per_1m = 750_000
"""


def with_backends(*entries: str) -> str:
    return MINIMAL + "".join(f"\n[[backends]]\n{e}\n" for e in entries)


def test_reference_example_parses_as_is(reference_toml: str) -> None:
    c = parse_config(reference_toml)
    assert c.coordinator.url == "wss://api.usepod.ai/provider/connect"
    assert c.coordinator.enrollment_code == "POD-ENROLL-7K9X4LM2"
    assert [b.kind for b in c.backends] == ["vllm", "openrouter"]
    assert c.backends[0].url == "http://localhost:8000"
    assert c.backends[1].api_key_env == "OPENROUTER_API_KEY"
    assert c.backends[1].markup == pytest.approx(0.05)
    assert c.pricing.default_input_per_1m == 500_000
    assert c.pricing.models["mistralai/Mistral-Large"] == ModelPrice(800_000, 1_200_000)
    assert c.limits == LimitsConfig(8, 200_000)
    assert c.observability.prometheus_addr == "127.0.0.1:9090"
    assert c.operator is not None and c.operator.display_name == "BlueBoxRig-01"


def test_identity_path_expands_tilde_against_home(reference_toml: str, isolated_home: Path) -> None:
    c = parse_config(reference_toml)
    assert c.key_path == isolated_home / ".usepod-agent" / "identity.key"


def test_defaults_when_optional_tables_absent() -> None:
    c = parse_config(MINIMAL)
    assert c.backends == ()
    assert c.limits.max_concurrent == 8
    assert c.limits.max_tokens_per_minute is None
    assert c.pricing.for_model("x") == ModelPrice(500_000, 750_000)


@pytest.mark.parametrize(
    ("text", "field", "needle"),
    [
        (
            MINIMAL.replace("wss://coord.example/provider/connect", "not a url"),
            "coordinator.url",
            "not a valid URL",
        ),
        (MINIMAL.replace("wss://", "ws://"), "coordinator.url", "wss://"),
        (MINIMAL.replace("wss://", "https://"), "coordinator.url", "'https'"),
        (
            MINIMAL.replace("[coordinator]\nurl", "[coordinator]\nnope"),
            "coordinator.url",
            "missing",
        ),
        (with_backends('kind = "vllm"'), "backends[0].url", "required"),
        (with_backends('kind = "vllm"\nurl = "localhost:8000"'), "backends[0].url", "not a valid"),
        (with_backends('kind = "openrouter"'), "backends[0].api_key_env", "required"),
        (with_backends('kind = "tgi"\nurl = "http://x"'), "backends[0].kind", "unknown kind"),
        (
            with_backends('kind = "vllm"\nurl = "http://a:1"\ncolour = "red"'),
            "backends[0].colour",
            "unknown key",
        ),
        (
            with_backends('kind = "vllm"\nurl = "http://a:1"', 'kind = "vllm"\nurl = "http://a:1"'),
            "backends[1]",
            "duplicate",
        ),
        (
            with_backends(
                'kind = "venice"\napi_key_env = "K"', 'kind = "venice"\napi_key_env = "K"'
            ),
            "backends[1]",
            "duplicate",
        ),
        (
            MINIMAL.replace("default_input_per_1m = 500_000", "default_input_per_1m = 0"),
            "pricing.default_input_per_1m",
            "> 0",
        ),
        (
            MINIMAL.replace("default_output_per_1m = 750_000", "default_output_per_1m = -1"),
            "pricing.default_output_per_1m",
            "> 0",
        ),
        (MINIMAL + "\n[limits]\nmax_concurrent = 0\n", "limits.max_concurrent", "[1, 256]"),
        (MINIMAL + "\n[limits]\nmax_concurrent = 257\n", "limits.max_concurrent", "[1, 256]"),
        (MINIMAL.replace("[pricing]", "[nothing]"), "pricing", "missing"),
        (MINIMAL.replace("500_000", '"cheap"'), "pricing.default_input_per_1m", "integer"),
    ],
)
def test_each_validation_rule_names_its_field(text: str, field: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    message = str(info.value)
    assert info.value.field == field
    assert message.startswith(field.split(".")[0])
    assert needle in message
    assert "\n" not in message


def test_ws_allowed_with_insecure_flag() -> None:
    c = parse_config(MINIMAL.replace("wss://", "ws://"), allow_insecure=True)
    assert c.coordinator.url.startswith("ws://")


def test_duplicate_kinds_with_different_urls_are_fine() -> None:
    c = parse_config(
        with_backends('kind = "vllm"\nurl = "http://a:1"', 'kind = "vllm"\nurl = "http://b:1"')
    )
    assert len(c.backends) == 2


def test_unknown_top_level_tables_are_ignored() -> None:
    assert parse_config(MINIMAL + "\n[future]\nx = 1\n").backends == ()


def test_empty_models_list_means_advertise_nothing() -> None:
    c = parse_config(with_backends('kind = "vllm"\nurl = "http://a:1"\nmodels = []'))
    assert c.backends[0].models == ()
    c = parse_config(with_backends('kind = "vllm"\nurl = "http://a:1"'))
    assert c.backends[0].models is None


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"no agent\.toml found: run `usepod-desktop setup` .*, or place one at",
    ):
        load_config()
    (tmp_path / "agent.toml").write_text(MINIMAL)
    assert load_config().coordinator.url.startswith("wss://coord.example")
    cfg_dir = Path(os.environ["USEPOD_CONFIG_DIR"])
    cfg_dir.mkdir(parents=True)
    (cfg_dir / "agent.toml").write_text(MINIMAL.replace("coord.example", "from-config-dir"))
    assert "from-config-dir" in load_config().coordinator.url
    other = tmp_path / "other.toml"
    other.write_text(MINIMAL.replace("coord.example", "explicit"))
    assert "explicit" in load_config(other).coordinator.url


def test_round_trip_keeps_comments_and_layout(reference_toml: str, tmp_path: Path) -> None:
    text = "# my rig, hands off\n" + reference_toml.replace(
        "[limits]", "# tuned for 2x3090\n[limits]"
    )
    path = tmp_path / "agent.toml"
    path.write_text(text)
    c = load_config(path)
    save_config(c, path)
    assert path.read_text() == text  # unchanged config = byte-identical file
    changed = c.replace(
        limits=LimitsConfig(16, 200_000),
        backends=(*c.backends, BackendConfig("ollama", "http://localhost:11434", models=("a",))),
    )
    save_config(changed, path)
    out = path.read_text()
    assert "# my rig, hands off" in out and "# tuned for 2x3090" in out
    assert "default_input_per_1m  = 500_000" in out  # untouched values keep their formatting
    assert "max_concurrent        = 16" in out
    assert load_config(path) == changed


def test_save_removes_backend_and_prices(reference_toml: str, tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(reference_toml)
    c = load_config(path)
    pricing = cfg.PricingConfig(400_000, 800_000, {"new/model": ModelPrice(1, 2)})
    save_config(c.replace(backends=c.backends[:1], pricing=pricing), path)
    again = load_config(path)
    assert [b.kind for b in again.backends] == ["vllm"]
    assert dict(again.pricing.models) == {"new/model": ModelPrice(1, 2)}
    assert "OPENROUTER_API_KEY" not in path.read_text()


def test_new_file_from_scratch_is_readable(tmp_path: Path) -> None:
    c = parse_config(with_backends('kind = "vllm"\nurl = "http://a:1"\nmodels = ["m"]'))
    path = tmp_path / "sub" / "agent.toml"
    save_config(c, path)
    assert load_config(path) == c
    assert "keyring" in path.read_text()  # the header says where keys live


def test_failed_save_leaves_old_file_byte_identical(
    reference_toml: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "agent.toml"
    path.write_text(reference_toml)
    before = path.read_bytes()
    c = load_config(path).replace(limits=LimitsConfig(3, None))

    def boom(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", boom)
    with pytest.raises(OSError):
        save_config(c, path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["agent.toml"]  # no temp file left behind


def test_invalid_config_is_never_written(reference_toml: str, tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(reference_toml)
    before = path.read_bytes()
    bad = load_config(path).replace(limits=LimitsConfig(0, None))
    with pytest.raises(ConfigError, match=r"limits.max_concurrent"):
        save_config(bad, path)
    assert path.read_bytes() == before


def test_render_never_contains_env_values(
    reference_toml: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-supersecretvalue")
    out = render_config(parse_config(reference_toml))
    assert "supersecretvalue" not in out


def test_model_aliases_table_parses_validates_and_round_trips(
    tmp_path: Path, reference_toml: str
) -> None:
    """Issue 19 item 14: a top-level table of its own (not keys inside [[backends]])."""
    text = reference_toml + '\n[model_aliases]\n"/srv/models/smol.gguf" = "smol-135m"\n'
    config = parse_config(text)
    assert dict(config.model_aliases) == {"/srv/models/smol.gguf": "smol-135m"}
    assert parse_config(reference_toml).model_aliases == {}
    path = tmp_path / "agent.toml"
    path.write_text(text)
    save_config(config.replace(limits=LimitsConfig(max_concurrent=4)), path)
    again = load_config(path)
    assert dict(again.model_aliases) == {"/srv/models/smol.gguf": "smol-135m"}
    assert again.limits.max_concurrent == 4
    save_config(again.replace(model_aliases={}), path)
    assert "model_aliases" not in path.read_text()
    for bad, field in (
        ('"a" = 3', 'model_aliases."a"'),
        ('"a" = ""', 'model_aliases."a"'),
        ('"a" = "x"\n"b" = "x"', 'model_aliases."b"'),
    ):
        with pytest.raises(ConfigError) as caught:
            parse_config(reference_toml + f"\n[model_aliases]\n{bad}\n")
        assert caught.value.field in (field, field.replace('"', "")), caught.value


# ---- the lenient loader behind Settings for an invalid agent.toml (issue 19 item 5)


def test_a_draft_keeps_every_valid_field_and_names_each_invalid_one() -> None:
    text = (
        with_backends(
            'kind = "vllm"',  # no url: the entry is left out
            'kind = "ollama"\nurl = "http://127.0.0.1:11434"',
            'kind = "vllm"\nurl = "http://127.0.0.1:8000"\nmarkup = 1.1',  # markup: local
        )
        + '\n[pricing.models."org/m"]\ninput_per_1m = 1\n'  # no output price
        + "\n[limits]\nmax_concurrent = 999\nmax_tokens_per_minute = 5000\n"
        + '\n[serving]\nwhen = "never"\nidle_minutes = 7\n'
    )
    with pytest.raises(ConfigError):
        parse_config(text)
    draft = cfg.parse_config_draft(text)
    c = draft.config
    assert c.coordinator.url == "wss://coord.example/provider/connect"
    assert (c.pricing.default_input_per_1m, c.pricing.default_output_per_1m) == (500_000, 750_000)
    assert c.pricing.models == {}
    assert [(b.kind, b.url) for b in c.backends] == [
        ("ollama", "http://127.0.0.1:11434"),
        ("vllm", "http://127.0.0.1:8000"),
    ]
    assert c.limits == LimitsConfig(
        max_concurrent=cfg.DEFAULT_MAX_CONCURRENT, max_tokens_per_minute=5000
    )
    assert (c.serving.when, c.serving.idle_minutes) == ("always", 7.0)
    fields = [p.field for p in draft.problems]
    assert "backends[0].url" in fields
    assert 'pricing.models."org/m".output_per_1m' in fields
    assert "limits.max_concurrent" in fields
    assert "serving.when" in fields
    assert all(p.message.startswith(p.field.split("[")[0].split(".")[0]) for p in draft.problems)
    assert any("999" in p.message for p in draft.problems)


def test_a_draft_of_a_valid_file_is_the_config_without_problems() -> None:
    text = with_backends('kind = "vllm"\nurl = "http://127.0.0.1:8000"')
    draft = cfg.parse_config_draft(text)
    assert draft.problems == ()
    assert draft.config == parse_config(text)


def test_invalid_required_values_are_left_empty_so_no_save_passes_them_on(tmp_path: Path) -> None:
    text = '[coordinator]\nurl = "ftp://x"\n[pricing]\ndefault_input_per_1m = -5\n'
    draft = cfg.parse_config_draft(text)
    assert draft.config.coordinator.url == "ftp://x"  # as written, to be corrected
    assert cfg.parse_config_draft(text.replace('"ftp://x"', "7")).config.coordinator.url == ""
    assert draft.config.pricing.default_input_per_1m == 0
    assert draft.config.pricing.default_output_per_1m == 0
    assert {p.field for p in draft.problems} == {
        "coordinator.url",
        "pricing.default_input_per_1m",
        "pricing.default_output_per_1m",
    }
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        save_config(cfg.load_config_draft(path).config, path)
    assert path.read_text() == text
    assert cfg.parse_config_draft("").config.coordinator.url == ""  # no tables at all
    assert cfg.parse_config_draft('coordinator = "x"').config.coordinator.url == ""


def test_a_fixed_draft_saves_from_the_files_own_text(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    text = MINIMAL + "\n# my note\n[limits]\nmax_concurrent = 999 # too many\n"
    path.write_text(text)
    draft = cfg.load_config_draft(path)
    assert [p.field for p in draft.problems] == ["limits.max_concurrent"]
    fixed = draft.config.replace(limits=LimitsConfig(max_concurrent=4))
    save_config(fixed, path)
    saved = path.read_text()
    assert "# my note" in saved and "max_concurrent = 4" in saved
    assert load_config(path).limits.max_concurrent == 4


@pytest.mark.parametrize(
    ("data", "why"),
    [(b"[coordinator\nurl = 1\n", "not valid TOML"), ("x = 1".encode("utf-16"), "UTF-16")],
)
def test_no_draft_of_a_file_that_is_not_toml_or_not_utf8(
    tmp_path: Path, data: bytes, why: str
) -> None:
    path = tmp_path / "agent.toml"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=why):
        cfg.load_config_draft(path)
