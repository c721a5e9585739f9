"""agent.toml: typed model, loading with the reference's rules, comment-preserving atomic save.

The file is shared with the reference Rust agent (docs/files.md, "agent.toml"), so we read
exactly its schema and never write keys it would reject. Every validation failure raises
:class:`ConfigError` with one line that names the field.

The rules live here once (docs/architecture.md, "Config rules"): :func:`config_from_dict`
applies them and raises on the first problem; :func:`problems` returns every problem of a draft
with its field path (`backends[1].url`), for `validate`, :func:`save_config` and the settings
window alike; :func:`check_backend` does the same for one `[[backends]]` entry (the Add/Edit
backend dialog).
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tomlkit
import tomlkit.exceptions
from tomlkit.items import AoT

from usepod_desktop.core import paths
from usepod_desktop.core.errors import ConfigError
from usepod_desktop.core.fs import atomic_write_text
from usepod_desktop.core.kinds import ALL_KINDS as KINDS
from usepod_desktop.core.kinds import LOCAL_KINDS, REMOTE_KINDS
from usepod_desktop.core.money import MAX_MICRO, ModelPrice, format_rate
from usepod_desktop.core.text import redact_url

BACKEND_KEYS = frozenset({"kind", "url", "api_key_env", "markup", "models"})
MAX_CONCURRENT_RANGE = (1, 256)
#: Highest price accepted, micro-USD per 1M tokens: the money module's ceiling ($100,000 per
#: million tokens); above it a value is a typo or an attack on the ledger's arithmetic.
MAX_PRICE_PER_1M = MAX_MICRO
DEFAULT_MAX_CONCURRENT = 8
#: Highest markup on a remote backend's upstream price: 10 = 1000 %. Above it a value is a typo
#: (a percentage written as a fraction's hundredfold, `markup = 5` meant as 5 %) or worse.
MAX_MARKUP = 10.0
#: Highest `limits.max_tokens_per_minute`: a trillion tokens a minute is no real limit, a typo.
MAX_TOKENS_PER_MINUTE = 10**12
#: What `api_key_env` may hold: an environment variable name (the key's name in the keyring and
#: the variable read when the keyring has none).
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    display_name: str | None = None
    wallet: str | None = None
    contact_email: str | None = None


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    url: str
    enrollment_code: str | None = None


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """One `[[backends]]` entry. `models=None` means no allow-list; `()` advertises nothing."""

    kind: str
    url: str | None = None
    api_key_env: str | None = None
    markup: float | None = None
    models: tuple[str, ...] | None = None

    @property
    def is_remote(self) -> bool:
        return self.kind in REMOTE_KINDS

    @property
    def identity(self) -> tuple[str, str | None]:
        """What makes two entries duplicates: (kind, url) or (kind, api_key_env)."""
        return (self.kind, self.api_key_env if self.is_remote else self.url)

    @property
    def label(self) -> str:
        """Short human name: `vllm @ http://localhost:8000`, `openrouter (OPENROUTER_API_KEY)`.
        A `user:password@` in the URL is shown as `***@` (labels reach /metrics and logs)."""
        if self.is_remote:
            return f"{self.kind} ({self.api_key_env})"
        return f"{self.kind} @ {redact_url(self.url or '')}"


@dataclass(frozen=True, slots=True)
class PricingConfig:
    default_input_per_1m: int
    default_output_per_1m: int
    models: Mapping[str, ModelPrice] = field(default_factory=dict)

    def for_model(self, model_id: str) -> ModelPrice:
        """The reference rule: the per-model entry, else the defaults."""
        explicit = self.models.get(model_id)
        if explicit is not None:
            return explicit
        return ModelPrice(self.default_input_per_1m, self.default_output_per_1m)


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    max_tokens_per_minute: int | None = None


@dataclass(frozen=True, slots=True)
class ObservabilityConfig:
    prometheus_addr: str | None = None
    log_level: str | None = None


WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SERVING_KEYS = frozenset(
    {
        "when",
        "idle_minutes",
        "pause_when_running",
        "on_battery",
        "gpu_temp_pause_c",
        "gpu_temp_resume_c",
        "free_gpu_memory_on_pause",
        "min_switch_s",
        "schedule",
    }
)
SCHEDULE_KEYS = frozenset({"days", "start", "end"})
MAX_PROCESS_NAMES = 200


@dataclass(frozen=True, slots=True)
class ScheduleWindow:
    """One `[[serving.schedule]]` window: local wall-clock `start`..`end` ("HH:MM"); `end` before
    `start` crosses midnight. `days` are the days the window starts on."""

    start: str
    end: str
    days: tuple[str, ...] = WEEKDAYS


@dataclass(frozen=True, slots=True)
class ServingConfig:
    """The `[serving]` table: when this computer serves (our extension; the reference agent
    ignores unknown top-level tables). See docs in README "Serving rules"."""

    when: str = "always"  # "always" | "idle"
    idle_minutes: float = 10.0
    pause_when_running: tuple[str, ...] = ()
    on_battery: str = "pause"  # "pause" | "serve"
    gpu_temp_pause_c: float = 0.0  # 0 = off
    gpu_temp_resume_c: float = 0.0  # 0 = 5 degrees below the pause threshold
    free_gpu_memory_on_pause: bool = False
    min_switch_s: float = 60.0
    schedule: tuple[ScheduleWindow, ...] = ()

    @property
    def effective_resume_c(self) -> float:
        if self.gpu_temp_pause_c <= 0:
            return 0.0
        return self.gpu_temp_resume_c or self.gpu_temp_pause_c - 5.0


@dataclass(frozen=True, slots=True)
class Config:
    coordinator: CoordinatorConfig
    pricing: PricingConfig
    backends: tuple[BackendConfig, ...] = ()
    operator: OperatorConfig | None = None
    identity_key_path: str | None = None  # as written in the file; None = the default
    limits: LimitsConfig = LimitsConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    serving: ServingConfig = ServingConfig()
    #: `[model_aliases]`: a backend's own model id -> the id to advertise (e.g. a llama.cpp
    #: model listed under its file path). A top-level table of its own: the reference agent
    #: ignores unknown top-level tables but rejects unknown keys inside `[[backends]]`.
    model_aliases: Mapping[str, str] = field(default_factory=dict)

    @property
    def key_path(self) -> Path:
        """The identity file location with `~` expanded."""
        if self.identity_key_path:
            return paths.expand_user(self.identity_key_path)
        return paths.default_identity_path()

    def replace(self, **changes: Any) -> Config:
        return replace(self, **changes)


# ---------------------------------------------------------------------------------------------
# Loading


def find_config(explicit: str | Path | None = None) -> Path:
    """The reference's lookup order: --config, `<config dir>/agent.toml`, `./agent.toml`."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"config file not found: {path} (`usepod-desktop setup` pairs this computer "
                "and writes agent.toml)",
                field="--config",
            )
        return path
    candidate = paths.default_config_path()
    if candidate.is_file():
        return candidate
    local = Path.cwd() / paths.CONFIG_FILE_NAME
    if local.is_file():
        return local
    raise ConfigError(
        f"no agent.toml found: run `usepod-desktop setup` to pair this computer and write "
        f"one, pass --config, or place one at {candidate}",
        field="--config",
    )


def load_config(path: str | Path | None = None, *, allow_insecure: bool = False) -> Config:
    """Find, read and validate agent.toml."""
    found = find_config(path)
    remember_loaded(found)  # before reading: a change in between makes a later save refuse
    return parse_config(read_config_text(found), allow_insecure=allow_insecure)


_UTF8_BOM = b"\xef\xbb\xbf"
_SAVE_AS_UTF8 = "save it as UTF-8 (in Notepad: File > Save as > Encoding: UTF-8)"


def read_config_text(path: Path) -> str:
    """agent.toml as text: UTF-8, with or without a byte-order mark (Notepad writes one).

    Anything else (UTF-16, what Notepad's "Unicode" saves; Latin-1; binary) is one ConfigError
    line naming the encoding problem, never a UnicodeDecodeError traceback."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return decode_config_bytes(data, path)


def decode_config_bytes(data: bytes, path: Path) -> str:
    """The text of agent.toml's bytes (see :func:`read_config_text`)."""
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(data) > 1 and b"\x00" in data[:64]):
        raise ConfigError(
            f"{path} is saved as UTF-16, not UTF-8: {_SAVE_AS_UTF8}", field="encoding"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}): "
            f"{_SAVE_AS_UTF8}",
            field="encoding",
        ) from None


def parse_toml(text: str) -> dict[str, Any]:
    """agent.toml text as plain dicts and lists; ConfigError when it is not TOML."""
    try:
        return dict(tomlkit.parse(text).unwrap())
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(f"agent.toml is not valid TOML: {exc}") from None


def parse_config(text: str, *, allow_insecure: bool = False) -> Config:
    """Parse and validate agent.toml text (docs/files.md, "agent.toml"; the reference's order)."""
    return config_from_dict(parse_toml(text), allow_insecure=allow_insecure)


def config_from_dict(raw: Mapping[str, Any], *, allow_insecure: bool = False) -> Config:
    coord = _table(raw, "coordinator", required=True)
    url = _str(coord, "url", "coordinator.url", required=True)
    assert url is not None
    validate_coordinator_url(url, allow_insecure=allow_insecure)
    coordinator = CoordinatorConfig(
        url=url, enrollment_code=_str(coord, "enrollment_code", "coordinator.enrollment_code")
    )

    operator = None
    if "operator" in raw:
        op = _table(raw, "operator")
        operator = OperatorConfig(
            display_name=_str(op, "display_name", "operator.display_name"),
            wallet=_str(op, "wallet", "operator.wallet"),
            contact_email=_str(op, "contact_email", "operator.contact_email"),
        )

    identity_key_path = None
    if "identity" in raw:
        identity_key_path = _str(_table(raw, "identity"), "key_path", "identity.key_path")

    backends_raw = raw.get("backends", [])
    if not isinstance(backends_raw, list):
        raise ConfigError("backends: expected an array of tables [[backends]]", field="backends")
    entries = [
        (i, _backend(entry, i))
        for i, entry in enumerate(backends_raw)
        if not isinstance(entry, _SetAside)
    ]
    backends = tuple(backend for _, backend in entries)
    seen: dict[tuple[str, str | None], int] = {}
    for i, backend in entries:
        other = seen.get(backend.identity)
        if other is not None:
            what = "api_key_env" if backend.is_remote else "url"
            raise ConfigError(
                f"backends[{i}]: duplicate of backends[{other}] (same kind and {what})",
                field=f"backends[{i}]",
            )
        seen[backend.identity] = i

    pricing = _pricing(_table(raw, "pricing", required=True))

    limits = LimitsConfig()
    if "limits" in raw:
        lim = _table(raw, "limits")
        max_concurrent = _int(lim, "max_concurrent", "limits.max_concurrent")
        tpm = _int(lim, "max_tokens_per_minute", "limits.max_tokens_per_minute")
        if max_concurrent is None:
            max_concurrent = DEFAULT_MAX_CONCURRENT
        lo, hi = MAX_CONCURRENT_RANGE
        if not lo <= max_concurrent <= hi:
            raise ConfigError(
                f"limits.max_concurrent: must be within [{lo}, {hi}], got {max_concurrent}",
                field="limits.max_concurrent",
            )
        if tpm is not None and tpm <= 0:
            raise ConfigError(
                f"limits.max_tokens_per_minute: must be > 0, got {tpm}",
                field="limits.max_tokens_per_minute",
            )
        if tpm is not None and tpm > MAX_TOKENS_PER_MINUTE:
            raise ConfigError(
                f"limits.max_tokens_per_minute: must be at most {MAX_TOKENS_PER_MINUTE:_} "
                "(a trillion); check the number",
                field="limits.max_tokens_per_minute",
            )
        limits = LimitsConfig(max_concurrent=max_concurrent, max_tokens_per_minute=tpm)

    observability = ObservabilityConfig()
    if "observability" in raw:
        obs = _table(raw, "observability")
        observability = ObservabilityConfig(
            prometheus_addr=_str(obs, "prometheus_addr", "observability.prometheus_addr"),
            log_level=_str(obs, "log_level", "observability.log_level"),
        )

    return Config(
        coordinator=coordinator,
        pricing=pricing,
        backends=backends,
        operator=operator,
        identity_key_path=identity_key_path,
        limits=limits,
        observability=observability,
        serving=_serving(raw),
        model_aliases=_model_aliases(raw),
    )


@dataclass(frozen=True, slots=True)
class ConfigDraft:
    """A best-effort reading of an agent.toml that does not validate (to fix it in the GUI).

    `config` keeps every valid field; an invalid optional one falls back to its default (an
    invalid entry of a list or table is left out), an invalid required one is left as written
    (a coordinator URL that is text) or empty (URL "", default prices 0): invalid still, so
    no save passes it on unnoticed (:func:`save_config` validates before it writes).
    `problems` holds one ConfigError per field, each with its field path."""

    config: Config
    problems: tuple[ConfigError, ...]


#: Stand-ins for invalid required values while the rest is read; never part of a draft.
_STAND_IN_URL = "wss://stand-in.invalid/"
_MAX_REPAIRS = 200


def load_config_draft(path: Path, *, allow_insecure: bool = False) -> ConfigDraft:
    """:func:`parse_config_draft` of the file at `path`, remembered as the base of a later
    :func:`save_config` (a change in between makes that save refuse). A file that cannot be
    read, is not UTF-8 or is not TOML at all raises ConfigError: there is nothing to draft."""
    remember_loaded(path)
    return parse_config_draft(read_config_text(path), allow_insecure=allow_insecure)


def parse_config_draft(text: str, *, allow_insecure: bool = False) -> ConfigDraft:
    """Read agent.toml text leniently (see :class:`ConfigDraft`). Raises ConfigError only when
    the text is not TOML or a problem names no field that could be set aside."""
    raw = parse_toml(text)
    coordinator_raw = raw.get("coordinator")
    written_url = coordinator_raw.get("url") if isinstance(coordinator_raw, dict) else None
    config, found, blank = _repair(raw, allow_insecure=allow_insecure)
    if config is None:
        raise found[-1]
    coordinator, pricing = config.coordinator, config.pricing
    if "coordinator.url" in blank:  # as written (to correct it), when it is text
        shown = written_url if isinstance(written_url, str) else ""
        coordinator = replace(coordinator, url=shown)
    if "pricing.default_input_per_1m" in blank:
        pricing = replace(pricing, default_input_per_1m=0)
    if "pricing.default_output_per_1m" in blank:
        pricing = replace(pricing, default_output_per_1m=0)
    return ConfigDraft(config.replace(coordinator=coordinator, pricing=pricing), tuple(found))


def _repair(raw: Any, *, allow_insecure: bool) -> tuple[Config | None, list[ConfigError], set[str]]:
    """Apply the rules to `raw` (changed in place) until it validates: each problem is
    recorded (once per field path) and its value set aside, so the next rule can speak.
    Returns the config of what is left (None when a problem could not be set aside: then the
    last problem is that one), the problems in the order found, and the required fields that
    were replaced by a stand-in."""
    found: list[ConfigError] = []
    tried: set[tuple[str | None, str]] = set()
    blank: set[str] = set()  # required fields read as their stand-in, shown empty
    for _ in range(_MAX_REPAIRS):
        try:
            return config_from_dict(raw, allow_insecure=allow_insecure), found, blank
        except ConfigError as exc:
            if (exc.field, exc.message) in tried:  # setting it aside did not help
                return None, [*found, exc], blank
            tried.add((exc.field, exc.message))
            if all(p.field != exc.field for p in found):
                found.append(exc)
            path = _field_path(exc.field or "")
            if not path or not _set_aside(raw, path, blank):
                if found[-1] is not exc:
                    found.append(exc)
                return None, found, blank
    return None, found, blank


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One invalid field of a draft: its path (`backends[1].url`,
    `pricing.models."org/m".input_per_1m`, `serving.schedule[0].start`) and the one-line
    message, which starts with that path (as :class:`ConfigError` messages do)."""

    path: str
    message: str

    @property
    def detail(self) -> str:
        """The message without its leading `path: ` (to show under the field itself)."""
        return self.message.removeprefix(f"{self.path}: ")

    @classmethod
    def of(cls, error: ConfigError) -> ConfigProblem:
        return cls(error.field or "", error.message)


class ConfigProblemsError(ConfigError):
    """A draft with one or more problems: the message is the first one (one line naming its
    field, plus "and N more"); :attr:`problems` holds all of them."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(first.message + more, field=first.path or None)
        self.problems: tuple[ConfigProblem, ...] = tuple(problems)


def problems(
    draft: Config | Mapping[str, Any], *, allow_insecure: bool = False
) -> list[ConfigProblem]:
    """Every problem of `draft` (a Config, or agent.toml's content as a dict: what the settings
    window collects), each with its field path; [] when it is valid. The rules are those of
    :func:`config_from_dict`, which raises the first of these."""
    raw = config_to_dict(draft) if isinstance(draft, Config) else copy.deepcopy(dict(draft))
    _, found, _ = _repair(raw, allow_insecure=allow_insecure)
    by_path = {error.field or "": ConfigProblem.of(error) for error in reversed(found)}
    return [by_path[path] for path in dict.fromkeys(error.field or "" for error in found)]


#: Valid values put in place of an invalid required key, so the entry's other keys are checked.
_BACKEND_STAND_INS = {"url": "http://stand-in.invalid", "api_key_env": "STAND_IN"}


def check_backend(entry: Mapping[str, Any], index: int = 0) -> list[ConfigProblem]:
    """Every problem of one `[[backends]]` entry (a dict of its keys), with paths
    `backends[<index>].<key>`: what the Add/Edit backend dialog checks before it closes."""
    raw: dict[str, Any] = {"backends": [None] * index + [copy.deepcopy(dict(entry))]}
    found: list[ConfigProblem] = []
    for _ in range(len(BACKEND_KEYS) + 2):
        try:
            _backend(raw["backends"][index], index)
            return found
        except ConfigError as exc:
            if all(p.path != exc.field for p in found):
                found.append(ConfigProblem.of(exc))
            path = _field_path(exc.field or "")
            entry_now = raw["backends"][index]
            stand_in = _BACKEND_STAND_INS.get(path[-1]) if len(path) == 3 else None
            if stand_in is not None and entry_now.get(path[-1]) != stand_in:
                entry_now[path[-1]] = stand_in  # required: a valid stand-in, to check the rest
                continue
            if len(path) < 3 or not _set_aside(raw, path, set()):
                return found
            if isinstance(raw["backends"][index], _SetAside):  # a required key was missing
                return found
    return found


def config_to_dict(config: Config) -> dict[str, Any]:
    """`config` as agent.toml's content (plain dicts and lists), as :func:`render_config`
    writes it: `config_from_dict(config_to_dict(c)) == c` for every valid `c`."""
    return dict(tomlkit.parse(render_config(config)).unwrap())


class _SetAside:
    """An entry of `[[backends]]` or `[[serving.schedule]]` set aside by :func:`_repair`: left
    out of the config, its place kept so that later entries keep their index."""


_REQUIRED: dict[tuple[str | int, ...], Any] = {
    ("coordinator", "url"): _STAND_IN_URL,
    ("pricing", "default_input_per_1m"): 1,
    ("pricing", "default_output_per_1m"): 1,
}


def _field_path(field: str) -> list[str | int]:
    """`backends[0].url`, `pricing.models."a/b".input_per_1m` -> its keys and indexes."""
    path: list[str | int] = []
    pos = 0
    token = re.compile(r'\.?(?:"([^"]*)"|([^.\["]+))|\[(\d+)\]')
    while pos < len(field):
        match = token.match(field, pos)
        if match is None or match.end() == pos:
            return []
        quoted, bare, index = match.groups()
        path.append(int(index) if index is not None else (quoted if quoted is not None else bare))
        pos = match.end()
    return path if path and isinstance(path[0], str) and not path[0].startswith("-") else []


def _set_aside(raw: Any, path: list[str | int], blank: set[str]) -> bool:
    """Remove the invalid value at `path` from `raw` (its default applies then); a missing
    one takes its container with it. Required values get a stand-in. False: not possible."""
    if len(path) == 1 and path[0] in ("coordinator", "pricing"):
        raw[path[0]] = {k[1]: v for k, v in _REQUIRED.items() if k[0] == path[0]}
        blank.update(f"{path[0]}.{k[1]}" for k in _REQUIRED if k[0] == path[0])
        return True
    stand_in = _REQUIRED.get(tuple(path))
    if stand_in is not None:
        if not isinstance(raw.get(path[0]), dict):
            return False
        raw[path[0]][path[1]] = stand_in
        blank.add(f"{path[0]}.{path[1]}")
        return True
    node = raw
    for depth, key in enumerate(path):
        present = (
            isinstance(node, dict) and key in node
            if isinstance(key, str)
            else isinstance(node, list) and 0 <= key < len(node)
        )
        if not present:
            return depth > 0 and _set_aside(raw, path[:depth], blank)
        if depth == len(path) - 1:
            if isinstance(key, int):  # keep the later entries' indexes (and so their paths)
                node[key] = _SetAside()
            else:
                del node[key]
            return True
        node = node[key]
    return False


MAX_MODEL_ID_CHARS = 256


def _model_aliases(raw: Mapping[str, Any]) -> dict[str, str]:
    if "model_aliases" not in raw:
        return {}
    table = _table(raw, "model_aliases")
    aliases: dict[str, str] = {}
    owner: dict[str, str] = {}
    for backend_id, advertised in table.items():
        where = f"model_aliases.{quote_key(str(backend_id))}"
        if not isinstance(advertised, str) or not advertised.strip():
            raise ConfigError(
                f"{where}: expected the model id to advertise (a string)", field=where
            )
        advertised = advertised.strip()
        if len(advertised) > MAX_MODEL_ID_CHARS or any(ord(c) < 32 for c in advertised):
            raise ConfigError(
                f"{where}: not a usable model id (at most {MAX_MODEL_ID_CHARS} printable "
                "characters)",
                field=where,
            )
        if advertised in owner:
            raise ConfigError(
                f"{where}: {advertised!r} is already the alias of {owner[advertised]!r}",
                field=where,
            )
        owner[advertised] = str(backend_id)
        aliases[str(backend_id)] = advertised
    return aliases


def validate_coordinator_url(url: str, *, allow_insecure: bool) -> None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        raise ConfigError(f"coordinator.url: not a valid URL: {url!r}", field="coordinator.url")
    if parts.scheme == "wss":
        return
    if parts.scheme == "ws":
        if allow_insecure:
            return
        raise ConfigError(
            "coordinator.url: ws:// is unencrypted; use wss:// or pass --allow-insecure",
            field="coordinator.url",
        )
    raise ConfigError(
        f"coordinator.url: scheme {parts.scheme!r} is not supported; use wss://",
        field="coordinator.url",
    )


def validate_backend_url(url: str, field_name: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{field_name}: not a valid http(s) URL: {url!r}", field=field_name)


def _known_keys_only(table: Mapping[str, Any], keys: frozenset[str], where: str) -> None:
    """Refuse the first unknown key of `table` (sorted), naming its field."""
    unknown = sorted(set(table) - keys)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}", field=f"{where}.{unknown[0]}")


def _backend(entry: Any, i: int) -> BackendConfig:
    where = f"backends[{i}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a table", field=where)
    _known_keys_only(entry, BACKEND_KEYS, where)
    kind = _str(entry, "kind", f"{where}.kind", required=True)
    if kind not in KINDS:
        raise ConfigError(
            f"{where}.kind: unknown kind {kind!r} (expected one of {', '.join(KINDS)})",
            field=f"{where}.kind",
        )
    url = _str(entry, "url", f"{where}.url")
    api_key_env = _str(entry, "api_key_env", f"{where}.api_key_env")
    if kind in LOCAL_KINDS:
        if not url:
            raise ConfigError(f"{where}.url: required for kind {kind!r}", field=f"{where}.url")
        validate_backend_url(url, f"{where}.url")
    else:
        if not api_key_env:
            raise ConfigError(
                f"{where}.api_key_env: required for kind {kind!r}", field=f"{where}.api_key_env"
            )
        if not ENV_NAME.fullmatch(api_key_env):
            raise ConfigError(
                f"{where}.api_key_env: letters, digits and _ only, not starting with a digit "
                f"(an environment variable name), got {api_key_env[:80]!r}",
                field=f"{where}.api_key_env",
            )
        if url:
            validate_backend_url(url, f"{where}.url")
    markup = entry.get("markup")
    if markup is not None:
        if isinstance(markup, bool) or not isinstance(markup, int | float):
            raise ConfigError(f"{where}.markup: expected a number", field=f"{where}.markup")
        markup = float(markup)
        if not math.isfinite(markup) or markup < 0:
            raise ConfigError(
                f"{where}.markup: must be a finite number >= 0", field=f"{where}.markup"
            )
        if markup > MAX_MARKUP:
            raise ConfigError(
                f"{where}.markup: must be at most {MAX_MARKUP:g} ({MAX_MARKUP:.0%}), got "
                f"{markup:g} ({markup:.0%}); 0.05 is 5%",
                field=f"{where}.markup",
            )
    models = entry.get("models")
    if models is not None:
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise ConfigError(
                f"{where}.models: expected an array of model id strings", field=f"{where}.models"
            )
        models = tuple(models)
    return BackendConfig(kind=kind, url=url, api_key_env=api_key_env, markup=markup, models=models)


def _pricing(table: Mapping[str, Any]) -> PricingConfig:
    d_in = _int(table, "default_input_per_1m", "pricing.default_input_per_1m", required=True)
    d_out = _int(table, "default_output_per_1m", "pricing.default_output_per_1m", required=True)
    assert d_in is not None and d_out is not None
    for name, value in (("default_input_per_1m", d_in), ("default_output_per_1m", d_out)):
        if value <= 0:
            raise ConfigError(f"pricing.{name}: must be > 0, got {value}", field=f"pricing.{name}")
        _check_price_ceiling(value, f"pricing.{name}")
    models: dict[str, ModelPrice] = {}
    raw_models = table.get("models", {})
    if not isinstance(raw_models, Mapping):
        raise ConfigError("pricing.models: expected a table", field="pricing.models")
    for model_id, entry in raw_models.items():
        where = f"pricing.models.{quote_key(model_id)}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: expected a table", field=where)
        p_in = _int(entry, "input_per_1m", f"{where}.input_per_1m", required=True)
        p_out = _int(entry, "output_per_1m", f"{where}.output_per_1m", required=True)
        assert p_in is not None and p_out is not None
        for name, value in (("input_per_1m", p_in), ("output_per_1m", p_out)):
            if value < 0:
                raise ConfigError(f"{where}.{name}: must be >= 0", field=f"{where}.{name}")
            _check_price_ceiling(value, f"{where}.{name}")
        models[model_id] = ModelPrice(p_in, p_out)
    return PricingConfig(d_in, d_out, models)


def _check_price_ceiling(value: int, name: str) -> None:
    if value > MAX_PRICE_PER_1M:
        shown = str(value) if value < 10**20 else f"a {value.bit_length()}-bit number"
        raise ConfigError(
            f"{name}: must be at most {MAX_PRICE_PER_1M} micro-USD per 1M tokens "
            f"({format_rate(MAX_PRICE_PER_1M)} per million), got {shown}",
            field=name,
        )


def _serving(raw: Mapping[str, Any]) -> ServingConfig:
    """Validate `[serving]` (absent: the defaults, i.e. serve always, pause on battery)."""
    if "serving" not in raw:
        return ServingConfig()
    table = _table(raw, "serving")
    _known_keys_only(table, SERVING_KEYS, "serving")
    d = ServingConfig()
    when = _choice(table, "when", "serving.when", ("always", "idle"), d.when)
    idle = _number(table, "idle_minutes", "serving.idle_minutes", d.idle_minutes, 0.0, 1440.0)
    if idle <= 0:
        raise ConfigError("serving.idle_minutes: must be > 0", field="serving.idle_minutes")
    names = table.get("pause_when_running", [])
    if (
        not isinstance(names, list)
        or not all(isinstance(n, str) and n.strip() for n in names)
        or len(names) > MAX_PROCESS_NAMES
    ):
        raise ConfigError(
            f"serving.pause_when_running: expected an array of at most {MAX_PROCESS_NAMES} "
            "non-empty process names",
            field="serving.pause_when_running",
        )
    on_battery = _choice(table, "on_battery", "serving.on_battery", ("pause", "serve"), "pause")
    t_pause = _number(table, "gpu_temp_pause_c", "serving.gpu_temp_pause_c", 0.0, 0.0, 150.0)
    t_resume = _number(table, "gpu_temp_resume_c", "serving.gpu_temp_resume_c", 0.0, 0.0, 150.0)
    if t_pause > 0 and t_resume >= t_pause:
        raise ConfigError(
            "serving.gpu_temp_resume_c: must be below gpu_temp_pause_c "
            f"({t_resume:g} >= {t_pause:g})",
            field="serving.gpu_temp_resume_c",
        )
    free = table.get("free_gpu_memory_on_pause", False)
    if not isinstance(free, bool):
        raise ConfigError(
            "serving.free_gpu_memory_on_pause: expected true or false",
            field="serving.free_gpu_memory_on_pause",
        )
    min_switch = _number(table, "min_switch_s", "serving.min_switch_s", 60.0, 0.0, 86_400.0)
    windows_raw = table.get("schedule", [])
    if not isinstance(windows_raw, list):
        raise ConfigError(
            "serving.schedule: expected an array of tables [[serving.schedule]]",
            field="serving.schedule",
        )
    return ServingConfig(
        when=when,
        idle_minutes=idle,
        pause_when_running=tuple(n.strip() for n in names),
        on_battery=on_battery,
        gpu_temp_pause_c=t_pause,
        gpu_temp_resume_c=t_resume,
        free_gpu_memory_on_pause=free,
        min_switch_s=min_switch,
        schedule=tuple(
            _schedule_window(w, i)
            for i, w in enumerate(windows_raw)
            if not isinstance(w, _SetAside)
        ),
    )


def _schedule_window(entry: Any, i: int) -> ScheduleWindow:
    where = f"serving.schedule[{i}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a table", field=where)
    _known_keys_only(entry, SCHEDULE_KEYS, where)
    start = _clock(entry, "start", f"{where}.start")
    end = _clock(entry, "end", f"{where}.end")
    if start == end:
        raise ConfigError(f"{where}.end: must differ from start ({start})", field=f"{where}.end")
    days = entry.get("days", list(WEEKDAYS))
    if (
        not isinstance(days, list)
        or not days
        or not all(isinstance(d, str) and d.lower() in WEEKDAYS for d in days)
    ):
        raise ConfigError(
            f"{where}.days: expected a non-empty array of {', '.join(WEEKDAYS)}",
            field=f"{where}.days",
        )
    return ScheduleWindow(start=start, end=end, days=tuple(d.lower() for d in days))


def parse_clock(text: str) -> tuple[int, int] | None:
    """ "HH:MM" (24-hour) -> (hours, minutes), or None."""
    parts = text.split(":")
    if len(parts) != 2 or not all(p.isdigit() and len(p) == 2 for p in parts):
        return None
    h, m = int(parts[0]), int(parts[1])
    if h > 23 or m > 59:
        return None
    return h, m


def _clock(table: Mapping[str, Any], key: str, name: str) -> str:
    value = _str(table, key, name, required=True)
    assert value is not None
    if parse_clock(value) is None:
        raise ConfigError(f'{name}: expected a 24-hour time "HH:MM", got {value!r}', field=name)
    return value


def _choice(
    table: Mapping[str, Any], key: str, name: str, allowed: tuple[str, ...], default: str
) -> str:
    value = _str(table, key, name)
    if value is None:
        return default
    if value not in allowed:
        choices = " or ".join(f'"{a}"' for a in allowed)
        raise ConfigError(f"{name}: expected {choices}, got {value!r}", field=name)
    return value


def _number(
    table: Mapping[str, Any], key: str, name: str, default: float, lo: float, hi: float
) -> float:
    value = table.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name}: expected a number", field=name)
    value = float(value)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ConfigError(f"{name}: must be within [{lo:g}, {hi:g}], got {value:g}", field=name)
    return value


def quote_key(key: str) -> str:
    """A table key as it appears in a field path: bare when it can be, else quoted."""
    return key if key.replace("_", "").replace("-", "").isalnum() else f'"{key}"'


def _table(raw: Mapping[str, Any], name: str, *, required: bool = False) -> Mapping[str, Any]:
    value = raw.get(name)
    if value is None:
        if required:
            raise ConfigError(f"{name}: missing required table [{name}]", field=name)
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name}: expected a table [{name}]", field=name)
    return value


def _str(table: Mapping[str, Any], key: str, name: str, *, required: bool = False) -> str | None:
    value = table.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{name}: missing required key", field=name)
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{name}: expected a string", field=name)
    return value


def _int(table: Mapping[str, Any], key: str, name: str, *, required: bool = False) -> int | None:
    value = table.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{name}: missing required key", field=name)
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}: expected an integer", field=name)
    return value


# ---------------------------------------------------------------------------------------------
# Saving


def render_config(config: Config, existing_text: str | None = None) -> str:
    """TOML text for `config`, keeping the comments and layout of `existing_text` where it can.

    Only values that changed are touched, so `500_000` stays `500_000`. No secret is ever part of
    the model (API keys live in the keyring), so none can be written.
    """
    doc = tomlkit.parse(existing_text) if existing_text else _new_document()

    if config.operator is not None:
        op = _ensure_table(doc, "operator")
        _sync(op, "display_name", config.operator.display_name)
        _sync(op, "wallet", config.operator.wallet)
        _sync(op, "contact_email", config.operator.contact_email)
    elif "operator" in doc:
        del doc["operator"]

    coord = _ensure_table(doc, "coordinator")
    _sync(coord, "url", config.coordinator.url)
    _sync(coord, "enrollment_code", config.coordinator.enrollment_code)

    if config.identity_key_path is not None:
        _sync(_ensure_table(doc, "identity"), "key_path", config.identity_key_path)
    elif "identity" in doc:
        _sync(doc["identity"], "key_path", None)  # type: ignore[arg-type]

    _sync_backends(doc, config.backends)

    pricing = _ensure_table(doc, "pricing")
    _sync(pricing, "default_input_per_1m", config.pricing.default_input_per_1m)
    _sync(pricing, "default_output_per_1m", config.pricing.default_output_per_1m)
    _sync_model_prices(pricing, config.pricing.models)

    if config.limits != LimitsConfig() or "limits" in doc:
        lim = _ensure_table(doc, "limits")
        _sync(lim, "max_concurrent", config.limits.max_concurrent)
        _sync(lim, "max_tokens_per_minute", config.limits.max_tokens_per_minute)

    if config.observability != ObservabilityConfig() or "observability" in doc:
        obs = _ensure_table(doc, "observability")
        _sync(obs, "prometheus_addr", config.observability.prometheus_addr)
        _sync(obs, "log_level", config.observability.log_level)

    _sync_serving(doc, config.serving)
    if config.model_aliases or "model_aliases" in doc:
        if not config.model_aliases:
            del doc["model_aliases"]
        else:
            aliases = _ensure_table(doc, "model_aliases")
            for gone in [k for k in aliases if k not in config.model_aliases]:
                del aliases[gone]
            for backend_id, advertised in config.model_aliases.items():
                _sync(aliases, backend_id, advertised)

    return tomlkit.dumps(doc)


class ConfigChangedError(ConfigError):
    """agent.toml changed on disk since this process loaded it: a save would overwrite that."""

    title = "agent.toml changed on disk"


#: Content hash of each agent.toml this process loaded or saved, by real path.
_LOADED: dict[str, str] = {}
_LOADED_LOCK = threading.Lock()


def _content_hash(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None
    except OSError:
        return None


def remember_loaded(path: Path) -> None:
    """Record what `path` holds now, as the base a later :func:`save_config` must find."""
    digest = _content_hash(path)
    with _LOADED_LOCK:
        if digest is None:
            _LOADED.pop(os.path.realpath(path), None)
        else:
            _LOADED[os.path.realpath(path)] = digest


def save_config(config: Config, path: str | Path, *, allow_insecure: bool = True) -> None:
    """Write agent.toml atomically (temp file, fsync, rename), keeping comments and layout.

    The rendered text is parsed and validated again before anything touches the disk (every
    problem of it, see :func:`problems`, in one :class:`ConfigProblemsError`); on any
    failure the previous file is left byte-identical. A symlinked agent.toml is written
    through to its target (the link stays). When this process loaded (or saved) the file
    and it has changed on disk since (another program, an editor, the reference agent), the
    save is refused with :class:`ConfigChangedError` instead of overwriting that change:
    reload, then save again.
    """
    target = Path(os.path.realpath(path))
    raw = target.read_bytes() if target.is_file() else None
    with _LOADED_LOCK:
        base = _LOADED.get(str(target))
    if base is not None and (raw is None or hashlib.sha256(raw).hexdigest() != base):
        raise ConfigChangedError(
            f"{path} was changed on disk since it was loaded; nothing was saved. Reload it "
            "(Revert in the settings) and apply your changes again"
        )
    existing = None
    if raw is not None:  # as read_text() reads it: universal newlines; a BOM is dropped
        decoded = decode_config_bytes(raw, target)
        existing = decoded.replace("\r\n", "\n").replace("\r", "\n")
    text = render_config(config, existing)
    raw = tomlkit.parse(text).unwrap()
    found = problems(raw, allow_insecure=allow_insecure)
    if found:
        raise ConfigProblemsError(found)
    reparsed = config_from_dict(raw, allow_insecure=allow_insecure)
    if reparsed != config:
        raise ConfigError("internal error: rendered agent.toml does not match the settings")
    atomic_write_text(target, text)
    with _LOADED_LOCK:
        _LOADED[str(target)] = hashlib.sha256(text.encode("utf-8")).hexdigest()


def _new_document() -> tomlkit.TOMLDocument:
    doc = tomlkit.document()
    doc.add(tomlkit.comment("Use Pod provider agent configuration (shared with usepod-agent)."))
    doc.add(tomlkit.comment("API keys are kept in the OS keyring, never in this file."))
    return doc


def _ensure_table(doc: Any, name: str) -> Any:
    if name not in doc:
        doc[name] = tomlkit.table()
    return doc[name]


def _sync(table: Any, key: str, value: Any) -> None:
    """Set `table[key] = value` only when it differs; `None` removes the key."""
    if value is None:
        if key in table:
            del table[key]
        return
    current = table.get(key)
    unwrapped = current.unwrap() if hasattr(current, "unwrap") else current
    if key in table and unwrapped == value and type(unwrapped) is type(value):
        return
    table[key] = list(value) if isinstance(value, tuple) else value


def _backend_fields(backend: BackendConfig) -> dict[str, Any]:
    return {
        "kind": backend.kind,
        "url": backend.url,
        "api_key_env": backend.api_key_env,
        "markup": backend.markup,
        "models": list(backend.models) if backend.models is not None else None,
    }


def backend_to_dict(backend: BackendConfig) -> dict[str, Any]:
    """One `[[backends]]` entry as agent.toml holds it (absent keys left out)."""
    return {key: value for key, value in _backend_fields(backend).items() if value is not None}


def _table_identity(table: Any) -> tuple[str, str | None]:
    kind = str(table.get("kind"))
    key = table.get("api_key_env") if kind in REMOTE_KINDS else table.get("url")
    return (kind, None if key is None else str(key))


def _fill_backend_table(table: Any, backend: BackendConfig) -> None:
    for key, value in _backend_fields(backend).items():
        if key == "models" and value is not None:
            current = table.get("models")
            if current is not None and list(current.unwrap()) == value:
                continue
            arr = tomlkit.array()
            arr.extend(value)
            table["models"] = arr
            continue
        _sync(table, key, value)


def _sync_backends(doc: Any, backends: tuple[BackendConfig, ...]) -> None:
    """Edit `[[backends]]` in place: keep matching entries (and their comments), drop removed ones,
    append new ones. Only a reorder rebuilds the array."""
    if not backends:
        if "backends" in doc:
            del doc["backends"]
        return
    if "backends" not in doc:
        aot = AoT([])
        for backend in backends:
            table = tomlkit.table()
            _fill_backend_table(table, backend)
            aot.append(table)
        doc.append("backends", aot)
        return
    aot = doc["backends"]
    wanted = {b.identity: b for b in backends}
    for i in reversed(range(len(aot))):
        if _table_identity(aot[i]) not in wanted:
            del aot[i]
    present = {_table_identity(t) for t in aot}
    for table in aot:
        _fill_backend_table(table, wanted[_table_identity(table)])
    for backend in backends:
        if backend.identity not in present:
            table = tomlkit.table()
            _fill_backend_table(table, backend)
            table.add(tomlkit.nl())
            aot.append(table)
    if [_table_identity(t) for t in aot] != [b.identity for b in backends]:
        by_id = {_table_identity(t): t for t in aot}
        doc["backends"] = AoT([by_id[b.identity] for b in backends])


def _toml_number(value: float) -> int | float:
    """10.0 is written as 10 (as people write it), 0.5 stays 0.5."""
    return int(value) if float(value).is_integer() else value


def _sync_serving(doc: Any, serving: ServingConfig) -> None:
    """Write `[serving]` when it differs from the defaults or is already there; a key is written
    when it differs from its default or is already present (comments are kept)."""
    default = ServingConfig()
    if serving == default and "serving" not in doc:
        return
    table = _ensure_table(doc, "serving")
    values: dict[str, Any] = {
        "when": serving.when,
        "idle_minutes": serving.idle_minutes,
        "pause_when_running": serving.pause_when_running,
        "on_battery": serving.on_battery,
        "gpu_temp_pause_c": serving.gpu_temp_pause_c,
        "gpu_temp_resume_c": serving.gpu_temp_resume_c,
        "free_gpu_memory_on_pause": serving.free_gpu_memory_on_pause,
        "min_switch_s": serving.min_switch_s,
    }
    for key, value in values.items():
        if key not in table and value == getattr(default, key):
            continue
        current = table.get(key)
        unwrapped = current.unwrap() if hasattr(current, "unwrap") else current
        if isinstance(value, float):
            if isinstance(unwrapped, int | float) and not isinstance(unwrapped, bool):
                if float(unwrapped) == value:
                    continue
            value = _toml_number(value)
        elif isinstance(value, tuple):
            if isinstance(unwrapped, list) and [str(v).strip() for v in unwrapped] == list(value):
                continue
        _sync(table, key, value)
    current_windows = table.get("schedule")
    wanted = [{"days": list(w.days), "start": w.start, "end": w.end} for w in serving.schedule]
    if not serving.schedule:
        if current_windows is not None:
            del table["schedule"]
        return
    if current_windows is not None:
        try:
            present = [_schedule_window(w, i) for i, w in enumerate(current_windows.unwrap())]
        except ConfigError:
            present = []
        if present == list(serving.schedule):
            return
        del table["schedule"]
    aot = AoT([])
    for window in wanted:
        t = tomlkit.table()
        if tuple(window["days"]) != WEEKDAYS:
            t["days"] = window["days"]
        t["start"] = window["start"]
        t["end"] = window["end"]
        aot.append(t)
    table.append("schedule", aot)


def _sync_model_prices(pricing: Any, models: Mapping[str, ModelPrice]) -> None:
    if not models:
        if "models" in pricing:
            del pricing["models"]
        return
    if "models" not in pricing:
        pricing["models"] = tomlkit.table()
    table = pricing["models"]
    for model_id in [m for m in table if m not in models]:
        del table[model_id]
    for model_id, price in models.items():
        current = table.get(model_id)
        wanted = {"input_per_1m": price.input_per_1m, "output_per_1m": price.output_per_1m}
        if current is not None and dict(current.unwrap()) == wanted:
            continue
        inline = tomlkit.inline_table()
        inline.update(wanted)
        table[model_id] = inline
