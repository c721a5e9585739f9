"""Discovery: health -> models -> allow-list -> price -> dedupe -> capabilities (docs/files.md,
"Discovery"), and the local probe used by "Detect" and pairing (docs/protocol.md, "Pairing
requests").

A pass looks at every `[[backends]]` entry concurrently (one slow or hanging backend costs the
pass its own probe timeout, not the sum of all of them), then assembles the results in config
order:

1. build the adapter (a remote kind without a key is skipped, naming where the key was looked
   for); 2. `health()` (not ok: skipped); 3. `list_models()` (failure: skipped); 4. the entry's
   allow-list (`models` absent = all, `[]` = nothing); 5. the price: local kinds use the
   reference rule (per-model entry, else the defaults; a 0 price drops the model); remote kinds
   use an explicit per-model price when there is one (warned when below the upstream cost),
   else `upstream / share x (1 + markup)` rounded up, else (upstream price unknown) they are not
   advertised (`core/money.py` `resolve_price`); 6. dedupe across backends by kind priority
   (vllm first, openrouter last; the first seen wins a tie), sorted by model id.

:class:`BackendPool` keeps the adapters (and so their pooled connections) from one pass to the
next and rebuilds only the entries whose connection settings or key changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import httpx

from usepod_desktop import PROTOCOL_VERSION, __version__
from usepod_desktop.core import protocol
from usepod_desktop.core.backends import KIND_PRIORITY
from usepod_desktop.core.backends.base import (
    Backend,
    BackendError,
    Health,
    MissingKeyError,
    ModelInfo,
    UpstreamPrice,
    one_line,
)
from usepod_desktop.core.backends.http import MAX_MODELS_BODY, PROBE_TIMEOUT, local_base_url
from usepod_desktop.core.backends.openrouter import OpenRouterBackend
from usepod_desktop.core.backends.registry import build_backend
from usepod_desktop.core.backends.venice import VeniceBackend
from usepod_desktop.core.config import BackendConfig, Config, ModelPrice
from usepod_desktop.core.kinds import KINDS, LOCAL_KINDS
from usepod_desktop.core.money import resolve_price
from usepod_desktop.core.net import BodyTooLarge, read_limited
from usepod_desktop.core.secrets import SecretStore

__all__ = [
    "PROBE_PORTS",
    "AdvertisedModel",
    "BackendPool",
    "BackendReport",
    "DiscoveryResult",
    "ProbeResult",
    "discover",
    "probe_local",
]

log = logging.getLogger(__name__)

ReportStatus = Literal["ok", "unreachable", "loading", "no_key", "error"]

#: The local kinds on their default ports (docs/protocol.md, discovery).
PROBE_PORTS: dict[str, int] = {k: KINDS[k].default_port or 0 for k in LOCAL_KINDS}
#: The reference probes `localhost`, and pairing writes the URLs it finds into agent.toml.
PROBE_HOST = "localhost"
#: Largest model list a local probe reads (then it stops reading and skips that port).
MAX_PROBE_BODY = MAX_MODELS_BODY

_BASE_URL_ENVS = {cls.kind: cls.base_url_env for cls in (OpenRouterBackend, VeniceBackend)}


# ------------------------------------------------------------------------------ results


@dataclass
class AdvertisedModel:
    """One model in the capabilities frame, plus what the router and the UI need."""

    model_id: str
    input_per_1m: int
    output_per_1m: int
    max_concurrent: int
    backend: str  # the kind, as on the wire
    context_window: int | None
    upstream: UpstreamPrice | None
    below_cost: bool
    backend_ref: Backend = field(repr=False, compare=False)
    #: The id the backend itself knows the model by, when `[model_aliases]` renamed it.
    backend_model_id: str | None = None

    @property
    def served_as(self) -> str:
        """The model id to send to the backend (jobs for the advertised id go there)."""
        return self.backend_model_id or self.model_id

    @property
    def backend_label(self) -> str:
        """The serving backend's label (`vllm @ http://localhost:8000`)."""
        return self.backend_ref.label

    def to_wire(self) -> dict[str, Any]:
        """The model's entry in the capabilities frame (the reference's field order)."""
        wire: dict[str, Any] = {
            "model_id": self.model_id,
            "input_per_1m": self.input_per_1m,
            "output_per_1m": self.output_per_1m,
            "max_concurrent": self.max_concurrent,
            "backend": self.backend,
        }
        if self.context_window is not None:
            wire["context_window"] = self.context_window
        return wire


@dataclass
class BackendReport:
    """What one pass found for one `[[backends]]` entry (for the table, the UI and events)."""

    config: BackendConfig
    status: ReportStatus
    detail: str
    latency_ms: float | None = None
    models_found: list[str] = field(default_factory=list)
    models_advertised: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class DiscoveryResult:
    reports: list[BackendReport]
    models: list[AdvertisedModel]
    routes: dict[str, Backend]  # model_id -> the backend that won it

    def capabilities_frame(self, config: Config, *, paused: bool = False) -> str:
        """The `capabilities` frame to send (an empty model list while paused)."""
        models = [] if paused else [m.to_wire() for m in self.models]
        return protocol.capabilities(
            models,
            config.limits.max_concurrent,
            config.limits.max_tokens_per_minute,
            {"agent_version": PROTOCOL_VERSION, "client": f"usepod-desktop/{__version__}"},
        )

    def advertised_key(self) -> tuple[tuple[Any, ...], ...]:
        """Everything about the advertised models that the frame carries, to compare passes
        (the limits come from the config and are not part of it)."""
        return tuple(
            (
                m.model_id,
                m.input_per_1m,
                m.output_per_1m,
                m.max_concurrent,
                m.backend,
                m.context_window,
            )
            for m in self.models
        )


# ------------------------------------------------------------------------------ the pool


@dataclass
class _Entry:
    config: BackendConfig
    fingerprint: tuple[Any, ...]
    backend: Backend | None
    error: Exception | None


class BackendPool:
    """The adapters across discovery passes, so their HTTP connections are reused.

    :meth:`sync` builds adapters for a config, keeping those whose connection settings (kind,
    URL, key, base-URL override) did not change; an entry whose only change is its allow-list
    or markup keeps its adapter. It reads keys from the keyring (a blocking call): from a
    running event loop prefer letting :func:`discover` call it in a worker thread. Replaced
    adapters are closed once no job runs on them and a later pass has completed (its routes
    replace theirs), or in :meth:`aclose`.
    """

    def __init__(self, secrets: SecretStore, *, probe_timeout: float = PROBE_TIMEOUT) -> None:
        self.secrets = secrets
        self.probe_timeout = probe_timeout
        self._entries: dict[tuple[str, str | None], _Entry] = {}
        # Replaced adapters and the pass count when they were replaced: the routes of the last
        # published result may still point at them until a newer pass completes.
        self._retired: list[tuple[Backend, int]] = []
        self._passes = 0
        self._lock = threading.Lock()
        self._last_warnings: dict[tuple[str, str | None], set[str]] = {}

    @property
    def backends(self) -> list[Backend]:
        """The live adapters, in config order."""
        return [e.backend for e in self._entries.values() if e.backend is not None]

    def _fingerprint(self, cfg: BackendConfig) -> tuple[Any, ...]:
        if not cfg.is_remote:
            return (cfg.kind, local_base_url(cfg.url or ""))
        env = _BASE_URL_ENVS.get(cfg.kind)
        lookup = self.secrets.get(cfg.api_key_env or "")
        digest = hashlib.sha256(lookup.value.encode()).hexdigest() if lookup.value else None
        return (cfg.kind, cfg.api_key_env, digest, os.environ.get(env) if env else None)

    def sync(self, config: Config, *, force: bool = False) -> None:
        """Match the adapters to `config` (`force`: rebuild every one)."""
        with self._lock:
            fresh: dict[tuple[str, str | None], _Entry] = {}
            for cfg in config.backends:
                ident = cfg.identity
                if ident in fresh:
                    continue  # a duplicate (only possible in an unvalidated Config)
                fingerprint = self._fingerprint(cfg)
                old = self._entries.get(ident)
                if (
                    old is not None
                    and not force
                    and old.fingerprint == fingerprint
                    and old.backend is not None
                ):
                    old.config = cfg
                    old.backend.config = cfg
                    fresh[ident] = old
                    continue
                backend: Backend | None = None
                error: Exception | None = None
                try:
                    backend = build_backend(cfg, self.secrets)
                except (MissingKeyError, ValueError) as exc:
                    error = exc
                else:
                    if hasattr(backend, "probe_timeout"):
                        backend.probe_timeout = self.probe_timeout  # type: ignore[attr-defined]
                fresh[ident] = _Entry(cfg, fingerprint, backend, error)
            for ident, entry in self._entries.items():
                if entry.backend is not None and fresh.get(ident) is not entry:
                    self._retired.append((entry.backend, self._passes))
            self._entries = fresh

    def get(self, cfg: BackendConfig) -> tuple[Backend | None, Exception | None]:
        """The adapter for an entry, or the reason there is none."""
        entry = self._entries.get(cfg.identity)
        if entry is None:
            return None, ValueError(f"{cfg.label}: not set up (call BackendPool.sync first)")
        return entry.backend, entry.error

    async def close_retired(self) -> None:
        """Close replaced adapters that no job uses and no published route can reach any more
        (replaced before the last completed pass, whose routes supersede theirs)."""
        keep: list[tuple[Backend, int]] = []
        for backend, retired_at in self._retired:
            if retired_at >= self._passes or getattr(backend, "inflight", 0):
                keep.append((backend, retired_at))
            else:
                with contextlib.suppress(Exception):
                    await backend.aclose()
        self._retired = keep

    def pass_completed(self) -> None:
        """Called by :func:`discover` when a pass produced a result."""
        self._passes += 1

    async def aclose(self) -> None:
        """Close every adapter (jobs still running on them fail)."""
        with self._lock:
            backends = self.backends + [backend for backend, _ in self._retired]
            self._entries = {}
            self._retired = []
        for backend in backends:
            with contextlib.suppress(Exception):
                await backend.aclose()

    def _log_warnings(self, cfg: BackendConfig, warnings: list[str]) -> None:
        """Warnings new since the last pass at WARNING, repeats at DEBUG (a pass every 5 min
        must not fill the log with the same lines)."""
        ident = cfg.identity
        before = self._last_warnings.get(ident, set())
        for text in warnings:
            shown = text if text.startswith(cfg.label) else f"{cfg.label}: {text}"
            log.log(logging.DEBUG if text in before else logging.WARNING, "%s", shown)
        self._last_warnings[ident] = set(warnings)


# ------------------------------------------------------------------------------ one pass


_STATE_TO_STATUS: dict[str, ReportStatus] = {
    "unreachable": "unreachable",
    "timeout": "unreachable",
    "loading": "loading",
    "error": "error",
}


async def _inspect(
    cfg: BackendConfig, backend: Backend | None, error: Exception | None
) -> tuple[BackendReport, list[ModelInfo]]:
    """Health and models of one backend; never raises."""
    if backend is None:
        if isinstance(error, MissingKeyError):
            warning = (
                f"{cfg.label}: skipped, no API key; looked in {error.where_looked} "
                f"(add it with `usepod-desktop keys set {cfg.api_key_env}` or in the settings)"
            )
            return BackendReport(cfg, "no_key", "no API key", warnings=[warning]), []
        detail = one_line(str(error)) if error else "not built"
        return BackendReport(cfg, "error", detail, warnings=[f"{cfg.label}: skipped, {detail}"]), []
    try:
        health = await backend.health()
    except Exception as exc:  # health() must not raise; a buggy adapter must not stop the pass
        health = Health(False, None, one_line(f"{type(exc).__name__}: {exc}"), "error")
    if not health.ok:
        status = _STATE_TO_STATUS.get(health.state, "error")
        return (
            BackendReport(
                cfg,
                status,
                health.status,
                health.latency_ms,
                warnings=[f"{cfg.label}: skipped, {health.status}"],
            ),
            [],
        )
    try:
        models = await backend.list_models()
    except Exception as exc:
        text = exc.message if isinstance(exc, BackendError) else f"{type(exc).__name__}: {exc}"
        detail = one_line(f"model list failed: {text}")
        warning = f"{cfg.label}: skipped, {detail}"
        return BackendReport(cfg, "error", detail, health.latency_ms, warnings=[warning]), []
    report = BackendReport(
        cfg, "ok", health.status, health.latency_ms, models_found=[m.model_id for m in models]
    )
    return report, models


def _price(
    cfg: BackendConfig, model: ModelInfo, config: Config
) -> tuple[ModelPrice | None, bool, str | None]:
    """(price or None when not advertised, below cost, warning): `core/money.py`'s rule."""
    choice = resolve_price(
        model.model_id,
        model.upstream_price,
        config.pricing,
        remote=cfg.is_remote,
        markup=cfg.markup,
    )
    return choice.price, choice.below_cost, choice.warning


_WEIGHT_FILES = (".gguf", ".bin", ".safetensors", ".pt", ".pth", ".onnx", ".ggml")


def looks_like_a_path(model_id: str) -> bool:
    """A model listed under a local file path (llama.cpp's `-m .venv/.../model.gguf`): users
    would see the operator's directories and an unusable id."""
    text = model_id.strip()
    if text.startswith(("/", "./", "../", "~/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", text):
        return True
    return text.lower().endswith(_WEIGHT_FILES) or "/." in text or "\\" in text


def suggested_id(model_id: str) -> str:
    """`/x/y/SmolLM2-135M-Q8_0.gguf` -> `SmolLM2-135M-Q8_0`."""
    name = re.split(r"[\\/]", model_id.rstrip("/\\"))[-1]
    for ext in _WEIGHT_FILES:
        if name.lower().endswith(ext):
            return name[: -len(ext)] or name
    return name


def path_id_warning(model_id: str) -> str:
    return (
        f"{model_id}: looks like a local file path, which users would see as the model id; "
        f'name it in agent.toml: [model_aliases] "{model_id}" = "{suggested_id(model_id)}"'
    )


async def discover(config: Config, pool: BackendPool) -> DiscoveryResult:
    """One discovery pass over `config.backends` (see the module docs). Never raises for a
    backend's failure: it is reported and skipped."""
    await asyncio.to_thread(pool.sync, config)
    await pool.close_retired()
    entries = [(cfg, *pool.get(cfg)) for cfg in config.backends]
    inspected = await asyncio.gather(
        *(_inspect(cfg, backend, error) for cfg, backend, error in entries)
    )

    reports: list[BackendReport] = []
    best: dict[str, AdvertisedModel] = {}
    for (cfg, backend, _), (report, models) in zip(entries, inspected, strict=True):
        reports.append(report)
        if backend is None or report.status != "ok":
            continue
        allow = cfg.models
        if allow is not None:
            found = set(report.models_found)
            for wanted in allow:
                if wanted not in found:
                    report.warnings.append(f"{wanted}: in the allow-list but not offered")
            allowed = set(allow)
            models = [m for m in models if m.model_id in allowed]
        for found in models:
            alias = config.model_aliases.get(found.model_id)
            model = replace(found, model_id=alias) if alias else found  # priced as advertised
            if alias is None and looks_like_a_path(found.model_id):
                report.warnings.append(path_id_warning(found.model_id))
            price, below, warning = _price(cfg, model, config)
            if warning:
                report.warnings.append(warning)
            if price is None:
                continue
            candidate = AdvertisedModel(
                backend_model_id=found.model_id if alias else None,
                model_id=model.model_id,
                input_per_1m=price.input_per_1m,
                output_per_1m=price.output_per_1m,
                max_concurrent=config.limits.max_concurrent,
                backend=cfg.kind,
                context_window=model.context_window,
                upstream=model.upstream_price,
                below_cost=below,
                backend_ref=backend,
            )
            current = best.get(model.model_id)
            if current is None or KIND_PRIORITY.get(cfg.kind, 100) < KIND_PRIORITY.get(
                current.backend, 100
            ):
                best[model.model_id] = candidate

    advertised = sorted(best.values(), key=lambda m: m.model_id)
    winner_of = {m.model_id: m.backend_ref for m in advertised}
    for (cfg, backend, _), report in zip(entries, reports, strict=True):
        if backend is None or report.status != "ok":
            pool._log_warnings(cfg, report.warnings)
            continue
        for model_id in report.models_found:
            owner = winner_of.get(config.model_aliases.get(model_id, model_id))
            if owner is backend:
                report.models_advertised.append(model_id)
            elif owner is not None and (cfg.models is None or model_id in cfg.models):
                report.warnings.append(f"{model_id}: served by {owner.label} instead (priority)")
        report.models_advertised.sort()
        pool._log_warnings(cfg, report.warnings)
    pool.pass_completed()
    return DiscoveryResult(reports, advertised, winner_of)


# ------------------------------------------------------------------------------ local probe


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """A local server that answered with at least one model."""

    kind: str
    url: str
    models: list[str]


def _model_names(kind: str, body: Any) -> list[str]:
    if not isinstance(body, dict):
        return []
    names: list[str] = []
    if kind == "ollama":
        for entry in body.get("models") or []:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry["name"]:
                names.append(entry["name"])
        return names
    data = body.get("data")
    if isinstance(data, list):
        for entry in data:
            if isinstance(entry, dict) and isinstance(entry.get("id"), str) and entry["id"]:
                names.append(entry["id"])
    elif isinstance(body.get("id"), str) and body["id"]:  # llama.cpp, older builds
        names.append(body["id"])
    return names


async def _probe_one(
    client: httpx.AsyncClient,
    kind: str,
    host: str,
    port: int,
    timeout: float,  # noqa: ASYNC109 (a bound per probe, applied with asyncio.timeout)
) -> ProbeResult | None:
    url = f"http://{host}:{port}"
    spec = KINDS.get(kind)  # tests probe made-up kinds: they speak the OpenAI list
    path = spec.models_path if spec else "/v1/models"
    try:
        async with asyncio.timeout(timeout), client.stream("GET", url + path) as response:
            if not response.is_success:
                return None
            content = await read_limited(response, MAX_PROBE_BODY)
        names = _model_names(kind, json.loads(content))
    except (TimeoutError, httpx.HTTPError, ValueError):
        return None
    except BodyTooLarge as exc:
        log.warning("probe of %s %s: %s", kind, url, exc)
        return None
    if not names:
        return None  # LM Studio's 200 {"error": ...} lands here too
    return ProbeResult(kind, url, list(dict.fromkeys(names)))


async def probe_local(
    host: str = PROBE_HOST,
    ports: Mapping[str, int] | None = None,
    timeout: float = 0.8,  # noqa: ASYNC109 (seconds per probe; the probes run concurrently)
) -> list[ProbeResult]:
    """Which local kinds answer on their default ports with at least one model (all probed
    at once; `ports` replaces the defaults, e.g. for tests). Never raises."""
    chosen = dict(PROBE_PORTS if ports is None else ports)
    shown_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    async with httpx.AsyncClient(
        trust_env=False,
        timeout=httpx.Timeout(timeout),
        headers={"Accept-Encoding": "identity", "User-Agent": f"usepod-desktop/{__version__}"},
    ) as client:
        results = await asyncio.gather(
            *(_probe_one(client, kind, shown_host, port, timeout) for kind, port in chosen.items())
        )
    return [r for r in results if r is not None]
