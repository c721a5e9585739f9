"""The doctor's checks, in the order of the README's "Not earning?" section.

One run returns every check (it never stops at the first failure): each is OK, WARN or FAIL with
a one-line reason and, unless OK, a one-line fix. A fix that is one click in the GUI also names
an :class:`Action` (open settings at a tab, start pairing, resume serving).

Run standalone (`usepod-desktop doctor`): the coordinator checks open their own connection (DNS,
TCP, TLS, then a real authentication with the identity, closed right after `auth_ok`). Run with a
live agent (the GUI's "Diagnose..."): the link's own state and figures are used instead of a
second authentication, so a connected session is never disturbed.

Qt-free. Every network step is bounded by `timeout`; nothing here raises for what it checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import enum
import re
import socket
import sqlite3
import ssl
import stat
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from usepod_desktop import PROTOCOL_VERSION, __version__
from usepod_desktop.core.errors import UserFacingError
from usepod_desktop.core.logsetup import redact

if TYPE_CHECKING:
    from usepod_desktop.core.agent import Agent
    from usepod_desktop.core.config import Config
    from usepod_desktop.core.discovery import DiscoveryResult
    from usepod_desktop.core.doctor.history import ConnectionHistory
    from usepod_desktop.core.doctor.market import MarketPrices
    from usepod_desktop.core.view import LinkView

__all__ = [
    "Action",
    "Check",
    "DoctorOptions",
    "Report",
    "Status",
    "looks_like_local_tag",
    "run_doctor",
    "sanitize",
]

NETWORK_TIMEOUT_S = 8.0
#: Jobs whose first byte comes later than this are at risk against typical deadlines (60 s).
SLOW_TTFB_MS = 15_000.0
#: Error (incl. timeout) share of finished jobs above which the coordinator's reputation
#: score suffers: WARN above the first, FAIL above the second.
ERROR_RATE_WARN = 0.05
ERROR_RATE_FAIL = 0.25
_MAX_REASON = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@\"']+@")


class Status(enum.StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


class Action(enum.StrEnum):
    """A fix that is one click in the GUI."""

    OPEN_SETTINGS_COORDINATOR = "settings:coordinator"
    OPEN_SETTINGS_BACKENDS = "settings:backends"
    OPEN_SETTINGS_PRICING = "settings:pricing"
    OPEN_SETTINGS_KEYS = "settings:keys"
    OPEN_SETTINGS_LIMITS = "settings:limits"
    PAIR = "pair"
    RESUME = "resume"
    UPGRADE = "upgrade"


@dataclass(frozen=True, slots=True)
class Check:
    section: str
    name: str
    status: Status
    reason: str
    fix: str = ""
    action: Action | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "name": self.name,
            "status": str(self.status),
            "reason": self.reason,
            "fix": self.fix,
            "action": None if self.action is None else str(self.action),
        }


@dataclass(slots=True)
class Report:
    checks: list[Check] = field(default_factory=list)
    #: What the run found, for the support bundle (never rendered as is).
    config: Config | None = field(default=None, repr=False)
    config_path: Path | None = None
    #: The capabilities frame the agent would send (discover --json), when discovery ran.
    capabilities: str | None = field(default=None, repr=False)

    @property
    def failed(self) -> bool:
        return any(c.status == Status.FAIL for c in self.checks)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def counts(self) -> dict[str, int]:
        return {s.value: sum(1 for c in self.checks if c.status == s) for s in Status}

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.failed,
            "counts": self.counts(),
            "checks": [c.to_dict() for c in self.checks],
        }

    def render(self) -> str:
        out: list[str] = []
        section = None
        for c in self.checks:
            if c.section != section:
                section = c.section
                if out:
                    out.append("")
                out.append(section)
            out.append(f"  [{c.status.value:<4}] {c.name}: {c.reason}")
            if c.fix and c.status != Status.OK:
                out.append(f"         fix: {c.fix}")
        n = self.counts()
        out.append("")
        out.append(f"{n['OK']} OK, {n['WARN']} warning(s), {n['FAIL']} failure(s)")
        return "\n".join(out)


@dataclass(slots=True)
class DoctorOptions:
    config_path: str | Path | None = None
    allow_insecure: bool = False
    #: A running agent (the GUI's): its live state replaces a second authentication.
    agent: Agent | None = None
    #: The agent's connection history (connected for how long, reconnects in the last hour).
    history: ConnectionHistory | None = None
    #: Authenticate once to the coordinator when there is no live agent (`--skip-handshake`:
    #: no; a second session with the same identity may replace a running agent's session).
    handshake: bool = True
    timeout: float = NETWORK_TIMEOUT_S
    market_url: str | None = None
    #: Ask the release feed (the cached answer is used when it is less than a day old).
    check_updates: bool = True
    ledger_path: Path | None = None
    now: float | None = None


def sanitize(text: object, limit: int = _MAX_REASON) -> str:
    """One line: control characters out, secrets redacted, cut to `limit`."""
    line = _CONTROL.sub(" ", str(text)).strip()
    line = _URL_CREDENTIALS.sub(lambda m: m.group(1), re.sub(r"\s+", " ", line))
    line = redact(line)
    return line if len(line) <= limit else line[: limit - 3].rstrip() + "..."


def strip_url_credentials(url: str) -> str:
    """The URL without `user:pass@` (kept shape: scheme, host, port, path)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# ------------------------------------------------------------------------- local tags

_QUANT = re.compile(
    r"(?i)(?:^|[-_.])(?:i?q[1-8](?:_[a-z0-9]{1,2}){0,2}|f16|f32|bf16|fp16|ggml|gguf)(?:$|[-_.])"
)
_FILE_SUFFIX = re.compile(r"(?i)\.(gguf|ggml|bin|safetensors|pt|pth|onnx|llamafile)$")


def looks_like_local_tag(model_id: str) -> str | None:
    """Why `model_id` looks like a local name marketplace users will not ask for, or None.

    Flags Ollama tags (`llama3.1:8b`), file names and paths (`model.gguf`, `/models/x`), and
    quantisation suffixes (`Q4_K_M`, `IQ3_XS`, `f16`)."""
    if _FILE_SUFFIX.search(model_id):
        return "a file name"
    if model_id.startswith(("/", "~", "./", "../")) or re.match(r"^[A-Za-z]:[\\/]", model_id):
        return "a file path"
    if "\\" in model_id:
        return "a file path"
    if ":" in model_id:
        return "a local tag (name:tag)"
    if _QUANT.search(model_id):
        return "a quantisation suffix"
    return None


# ------------------------------------------------------------------------- the run


class _Run:
    def __init__(self, options: DoctorOptions) -> None:
        self.o = options
        self.report = Report()
        self.config: Config | None = None
        self.identity: Any = None
        self.discovery: DiscoveryResult | None = None
        self.connected: bool | None = None
        self.all_under_cap: bool | None = None

    def add(
        self,
        section: str,
        name: str,
        status: Status,
        reason: str,
        fix: str = "",
        action: Action | None = None,
    ) -> None:
        self.report.checks.append(
            Check(section, sanitize(name, 160), status, sanitize(reason), sanitize(fix), action)
        )

    async def run(self) -> Report:
        try:
            return await self._run_steps()
        finally:
            self.report.config = self.config

    async def _run_steps(self) -> Report:
        steps = (
            self.check_config,
            self.check_coordinator,
            self.check_serving,
            self.check_backends,
            self.check_prices,
            self.check_recent_work,
            self.check_versions,
        )
        for step in steps:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in one check must not hide the others
                self.add(
                    "Doctor",
                    step.__name__.removeprefix("check_").replace("_", " "),
                    Status.WARN,
                    f"this check crashed: {type(exc).__name__}: {exc}",
                    "report this with a support bundle (usepod-desktop doctor --bundle FILE.zip)",
                )
        return self.report

    # ---- 1. configuration and identity -------------------------------------------------

    async def check_config(self) -> None:
        from usepod_desktop.core import identity as identity_mod
        from usepod_desktop.core.config import find_config, load_config

        s = "Configuration"
        agent = self.o.agent
        if agent is not None:
            self.config = agent.config
            self.report.config_path = agent.config_path
            where = agent.config_path or "the sandbox"
            self.add(s, "agent.toml", Status.OK, f"loaded ({where})")
        else:
            try:
                path = await asyncio.to_thread(find_config, self.o.config_path)
                self.report.config_path = path
                self.config = await asyncio.to_thread(
                    load_config, path, allow_insecure=self.o.allow_insecure
                )
            except UserFacingError as exc:
                missing = "not found" in str(exc) or "no agent.toml" in str(exc)
                self.add(
                    s,
                    "agent.toml",
                    Status.FAIL,
                    str(exc),
                    "pair this computer: usepod-desktop setup"
                    if missing
                    else "fix the named field (usepod-desktop validate shows it)",
                    Action.PAIR if missing else None,
                )
                return
            n = len(self.config.backends)
            self.add(s, "agent.toml", Status.OK, f"valid, {n} backend(s) ({path})")
        key_path = self.config.key_path
        if agent is not None and agent.identity is not None:
            self.identity = agent.identity
        elif not key_path.is_file():
            self.add(
                s,
                "identity",
                Status.FAIL,
                f"no identity key at {key_path}",
                "pair this computer: usepod-desktop setup (it creates the key)",
                Action.PAIR,
            )
            return
        else:
            try:
                self.identity = await asyncio.to_thread(identity_mod.load, key_path)
            except UserFacingError as exc:
                self.add(
                    s,
                    "identity",
                    Status.FAIL,
                    str(exc),
                    f"restore {key_path} from a backup, or pair again (usepod-desktop setup)",
                )
                return
        mode_note = ""
        if sys.platform != "win32" and key_path.is_file():
            mode = stat.S_IMODE(key_path.stat().st_mode)
            if mode & 0o077:
                self.add(
                    s,
                    "identity",
                    Status.WARN,
                    f"{key_path} has mode {mode:04o}: other users can read the secret key",
                    f"chmod 600 {key_path}",
                )
            else:
                mode_note = ", mode 0600"
        if not any(c.name == "identity" for c in self.report.checks):
            self.add(s, "identity", Status.OK, f"present ({key_path}{mode_note})")
        provider_id = getattr(self.identity, "provider_id", None)
        link = agent.snapshot().link if agent is not None else None
        if link is not None and link.sandbox:
            self._sandbox_session(s, link.connected, link.session_provider_id, link.detail)
        elif provider_id:
            self.add(s, "paired", Status.OK, f"provider id {provider_id}")
        elif self.config.coordinator.enrollment_code:
            self.add(
                s,
                "paired",
                Status.WARN,
                "no provider id yet; the enrollment code in agent.toml pairs on first connection",
                "start the agent (usepod-desktop run) and watch for 'connected'",
            )
        else:
            self.add(
                s,
                "paired",
                Status.FAIL,
                "not paired: no provider id and no enrollment code",
                "pair this computer: usepod-desktop setup",
                Action.PAIR,
            )

    def _sandbox_session(
        self, s: str, connected: bool, provider_id: str | None, detail: str = ""
    ) -> None:
        """The "paired" row for a session with a local sandbox coordinator: it needs no
        pairing and gives a throw-away provider id per session (docs/sandbox.md), so the
        identity's missing provider id is no failure; the session's state is what matters."""
        if connected:
            who = f"provider id {provider_id}" if provider_id else "no provider id"
            check = Check(
                s,
                "paired",
                Status.OK,
                sanitize(
                    f"sandbox session: {who} (the local sandbox's, for this session only; "
                    "never stored)"
                ),
            )
        else:
            check = Check(
                s,
                "paired",
                Status.WARN,
                sanitize(
                    "sandbox session: not connected now"
                    + (f" ({detail})" if detail else "")
                    + "; the local sandbox needs no pairing"
                ),
                "see the coordinator checks below; the agent keeps retrying by itself",
            )
        checks = self.report.checks
        for i, old in enumerate(checks):
            if old.section == s and old.name == "paired":
                checks[i] = check
                return
        checks.append(check)

    # ---- 2. coordinator ----------------------------------------------------------------

    async def check_coordinator(self) -> None:
        s = "Coordinator"
        if self.config is None:
            self.add(s, "coordinator", Status.WARN, "skipped: no valid agent.toml")
            return
        url = self.config.coordinator.url
        shown = strip_url_credentials(url)
        parts = urlsplit(url)
        host = parts.hostname or ""
        secure = parts.scheme == "wss"
        try:
            port = parts.port or (443 if secure else 80)
        except ValueError:
            self.add(s, "URL", Status.FAIL, f"bad port in {shown}", "fix coordinator.url")
            return
        loopback = host in ("127.0.0.1", "localhost", "::1")
        proxy = None if loopback else _proxy_for(parts.scheme, host)
        if proxy:
            self.add(
                s,
                "proxy",
                Status.OK,
                f"connecting through the proxy {strip_url_credentials(proxy)} "
                "(from the *_PROXY environment variables)",
            )
        else:
            self.add(s, "proxy", Status.OK, "none (direct connection)")
        soft = Status.WARN if proxy else Status.FAIL  # behind a proxy, direct may be blocked
        t = self.o.timeout
        # DNS
        try:
            async with asyncio.timeout(t):
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM
                )
            addrs = sorted({str(i[4][0]) for i in infos})
            self.add(s, "DNS", Status.OK, f"{host} -> {', '.join(addrs[:3])}")
        except (OSError, TimeoutError) as exc:
            self.add(
                s,
                "DNS",
                soft,
                f"cannot resolve {host}: {_oserror(exc)}",
                "check the network / DNS settings, or the host name in coordinator.url",
                Action.OPEN_SETTINGS_COORDINATOR,
            )
            if not proxy:
                await self._handshake_or_live(s, shown, skip="no DNS answer")
                return
        # TCP (+ TLS)
        started = time.perf_counter()
        writer = None
        try:
            async with asyncio.timeout(t):
                _, writer = await asyncio.open_connection(host, port)
            ms = (time.perf_counter() - started) * 1000
            self.add(s, "TCP", Status.OK, f"{host}:{port} accepts connections ({ms:.0f} ms)")
        except (OSError, TimeoutError) as exc:
            self.add(
                s,
                "TCP",
                soft,
                f"cannot connect to {host}:{port}: {_oserror(exc)}",
                "check a firewall or the port in coordinator.url",
                Action.OPEN_SETTINGS_COORDINATOR,
            )
            if not proxy:
                await self._handshake_or_live(s, shown, skip="no TCP connection")
                return
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
        if secure:
            await self._tls(s, host, port, soft)
        else:
            self.add(
                s,
                "TLS",
                Status.WARN if not loopback else Status.OK,
                "not encrypted (ws://)" + ("; fine for the local sandbox" if loopback else ""),
                "" if loopback else "use a wss:// coordinator URL",
                None if loopback else Action.OPEN_SETTINGS_COORDINATOR,
            )
        await self._handshake_or_live(s, shown)

    async def _tls(self, s: str, host: str, port: int, soft: Status) -> None:
        from usepod_desktop.core.link import default_ssl_context

        writer = None
        try:
            async with asyncio.timeout(self.o.timeout):
                _, writer = await asyncio.open_connection(
                    host, port, ssl=default_ssl_context(), server_hostname=host
                )
            cert = writer.get_extra_info("peercert") or {}
            until = cert.get("notAfter", "?")
            self.add(s, "TLS", Status.OK, f"certificate valid for {host} (until {until})")
        except ssl.SSLCertVerificationError as exc:
            self.add(
                s,
                "TLS",
                Status.FAIL,
                f"certificate rejected: {exc.verify_message}",
                "a proxy or antivirus may intercept TLS; check the system clock and trust store",
            )
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            self.add(
                s,
                "TLS",
                soft,
                f"TLS handshake failed: {_oserror(exc)}",
                "check that coordinator.url points at a wss:// endpoint",
            )
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _handshake_or_live(self, s: str, shown: str, skip: str | None = None) -> None:
        agent = self.o.agent
        link = agent.snapshot().link if agent is not None else None
        if link is not None:
            self._live_link(s, link)
            return
        if skip is not None:
            self.add(s, "handshake", Status.FAIL, f"skipped: {skip}", "fix the steps above first")
            self.connected = False
            return
        if self.identity is None:
            self.add(s, "handshake", Status.WARN, "skipped: no identity to authenticate with")
            return
        if not self.o.handshake:
            self.add(s, "handshake", Status.OK, "skipped (--skip-handshake)")
            return
        assert self.config is not None
        if not getattr(self.identity, "provider_id", None) and (
            self.config.coordinator.enrollment_code
        ):
            # the test connection must not spend the enrollment code: the agent pairs with it
            self.add(
                s,
                "handshake",
                Status.WARN,
                "skipped: not paired yet; the agent pairs with the enrollment code on its first "
                "connection",
                "start the agent (usepod-desktop run or the app)",
            )
            return
        try:
            provider_id, sandbox = await handshake(
                self.config.coordinator.url,
                self.identity,
                allow_insecure=self.o.allow_insecure,
                timeout=self.o.timeout,
            )
        except HandshakeRejected as exc:
            self.connected = False
            unpaired = not getattr(self.identity, "provider_id", None)
            self.add(
                s,
                "handshake",
                Status.FAIL,
                f"auth_failed: {exc}",
                "pair this computer again: usepod-desktop setup"
                if unpaired or "enroll" in str(exc).lower()
                else "the coordinator refused this identity; pair again or contact support",
                Action.PAIR,
            )
            return
        except HandshakeBroken as exc:
            self.connected = False
            self.add(
                s,
                "handshake",
                Status.FAIL,
                str(exc),
                "check coordinator.url (it must be the provider WebSocket endpoint)",
                Action.OPEN_SETTINGS_COORDINATOR,
            )
            return
        self.connected = True
        paired = next((c for c in self.report.checks if c.name == "paired"), None)
        if sandbox and paired is not None and paired.status != Status.OK:
            # the agent.toml of a sandbox session (`run --sandbox` writes one): no pairing
            self._sandbox_session("Configuration", True, provider_id)
        who = f" as {provider_id}" if provider_id else ""
        self.add(
            s,
            "handshake",
            Status.OK,
            f"auth_ok{who} from {shown} (a test connection, closed at once; "
            "live figures need the running app's Diagnose window)",
        )

    def _live_link(self, s: str, link: LinkView) -> None:
        from usepod_desktop.core.doctor.history import format_duration
        from usepod_desktop.core.link import LinkState

        reconnects = max(0, int(link.sessions) - 1)
        history = self.o.history
        if link.connected:
            self.connected = True
            detail = f"{link.sessions} session(s) since start ({reconnects} reconnect(s))"
            since = history.connected_for() if history is not None else None
            if history is not None and since is not None:
                detail = (
                    f"for {format_duration(since)}; {history.reconnects_last_hour()} "
                    f"reconnect(s) in the last hour"
                )
            self.add(s, "handshake", Status.OK, f"connected now, {detail}")
            self._heartbeat(s, link)
            if history is not None and history.reconnects_last_hour() >= 3:
                self.add(
                    s,
                    "stability",
                    Status.WARN,
                    f"{history.reconnects_last_hour()} reconnects in the last hour: jobs "
                    "running at a drop are lost",
                    "check the network (Wi-Fi, sleep settings, a proxy closing idle connections)",
                )
        elif link.state == LinkState.AUTH_FAILED or link.last_auth_failure:
            self.connected = False
            self.add(
                s,
                "handshake",
                Status.FAIL,
                f"auth_failed: {link.last_auth_failure or link.detail}",
                "pair this computer again",
                Action.PAIR,
            )
        else:
            self.connected = False
            retry = f", retrying in {link.retry_in_s:.0f} s" if link.retry_in_s else ""
            self.add(
                s,
                "handshake",
                Status.FAIL,
                f"not connected: {link.detail or link.state}{retry}",
                "see the steps above; the agent keeps retrying by itself",
                Action.OPEN_SETTINGS_COORDINATOR,
            )

    def _heartbeat(self, s: str, link: LinkView) -> None:
        """How long ago the live session's last heartbeat went out (the agent facade's figure).
        Late by more than two intervals: the coordinator may take the session for dead."""
        from usepod_desktop.core.doctor.history import format_duration

        interval = float(link.heartbeat_interval_s or 0)
        span = f"{interval:.3g} s" if interval < 60 else format_duration(interval)
        every = f"every {span}" if interval else "on a timer"
        age = getattr(self.o.agent, "heartbeat_age_s", None)
        if age is None:
            due = f" (the first is due within {span})" if interval else ""
            self.add(s, "heartbeat", Status.OK, f"none sent yet in this session{due}")
        elif interval and age > 2 * interval + 1:
            self.add(
                s,
                "heartbeat",
                Status.WARN,
                f"last heartbeat sent {format_duration(age)} ago (due {every}): the "
                "coordinator may drop this session",
                "check the log for a stalled connection; a busy or sleeping computer delays it",
            )
        else:
            self.add(
                s,
                "heartbeat",
                Status.OK,
                f"last heartbeat sent {format_duration(age)} ago ({every})",
            )

    # ---- 3. serving state --------------------------------------------------------------

    async def check_serving(self) -> None:
        s = "Serving"
        if self.config is None:
            return
        agent = self.o.agent
        if agent is None:
            self.add(
                s,
                "state",
                Status.OK,
                "no running agent in this process (start it with usepod-desktop run or the app)",
            )
        elif agent.paused:
            self.add(
                s,
                "state",
                Status.WARN,
                "paused by you: no models are advertised, no jobs arrive",
                "resume serving",
                Action.RESUME,
            )
        else:
            self.add(s, "state", Status.OK, f"{agent.state.label}: {agent.reason}")
        limits = self.config.limits
        tpm = limits.max_tokens_per_minute
        tpm_text = f", at most {tpm:,} tokens/min" if tpm else ", no tokens/min limit"
        status = Status.OK
        fix = ""
        if tpm is not None and tpm < 2000:
            status, fix = Status.WARN, "raise limits.max_tokens_per_minute (one job can use more)"
        self.add(
            s,
            "limits",
            status,
            f"{limits.max_concurrent} concurrent job(s){tpm_text}",
            fix,
            Action.OPEN_SETTINGS_LIMITS if fix else None,
        )

    # ---- 4. backends and model ids -----------------------------------------------------

    async def check_backends(self) -> None:
        s = "Backends"
        if self.config is None:
            return
        config = self.config
        if not config.backends:
            self.add(
                s,
                "backends",
                Status.FAIL,
                "no [[backends]] in agent.toml",
                "add your inference server in Settings > Backends",
                Action.OPEN_SETTINGS_BACKENDS,
            )
            return
        result = await self._discovery()
        self.discovery = result
        paused = bool(self.o.agent is not None and self.o.agent.paused)
        self.report.capabilities = result.capabilities_frame(config, paused=paused)
        for report in result.reports:
            name = report.config.label
            latency = "" if report.latency_ms is None else f", {report.latency_ms:.0f} ms"
            if report.status == "ok":
                found = report.models_found
                listed = ", ".join(found[:8]) + (" ..." if len(found) > 8 else "")
                self.add(
                    s,
                    name,
                    Status.OK,
                    f"reachable{latency}; serves {len(found)} model(s): {listed or 'none'}",
                )
            elif report.status == "no_key":
                self.add(
                    s,
                    name,
                    Status.FAIL,
                    "no API key",
                    f"usepod-desktop keys set {report.config.api_key_env}",
                    Action.OPEN_SETTINGS_KEYS,
                )
            elif report.status == "loading":
                self.add(s, name, Status.WARN, f"loading a model{latency}", "wait a minute")
            else:
                self.add(
                    s,
                    name,
                    Status.FAIL,
                    f"{report.status}: {report.detail}",
                    "start the inference server, or fix its URL in Settings > Backends",
                    Action.OPEN_SETTINGS_BACKENDS,
                )
            if report.status != "ok" or report.config.models is None:
                continue
            found_set = set(report.models_found)
            for wanted in report.config.models:
                if wanted in found_set:
                    continue
                close = _closest(wanted, report.models_found)
                hint = f"; it serves {close!r}" if close else ""
                self.add(
                    s,
                    f"model {wanted}",
                    Status.FAIL,
                    f"in the allow-list of {name} but not served under exactly that id{hint}",
                    f"use the id the backend serves{f' ({close})' if close else ''} in the "
                    "allow-list, or load that model",
                    Action.OPEN_SETTINGS_BACKENDS,
                )
        served = {m for r in result.reports for m in r.models_found}
        for priced in sorted(config.pricing.models):
            if priced not in served and any(r.status == "ok" for r in result.reports):
                close = _closest(priced, sorted(served))
                hint = f"; a backend serves {close!r}" if close else ""
                self.add(
                    s,
                    f"model {priced}",
                    Status.WARN,
                    f"priced in [pricing.models] but no backend serves that exact id{hint}",
                    "rename the price entry to the served id",
                    Action.OPEN_SETTINGS_PRICING,
                )
        for model in result.models:
            why = looks_like_local_tag(model.model_id)
            if why:
                self.add(
                    s,
                    f"model {model.model_id}",
                    Status.WARN,
                    f"advertised, but the id looks like {why}: marketplace users ask for "
                    "published ids (e.g. Qwen/Qwen3-8B)",
                    "serve it under its published id (e.g. vllm --served-model-name, or an "
                    "Ollama model named after it)",
                    Action.OPEN_SETTINGS_BACKENDS,
                )
        if result.models:
            self.add(
                s,
                "advertised",
                Status.OK,
                f"{len(result.models)} model(s): "
                + ", ".join(m.model_id for m in result.models[:8])
                + (" ..." if len(result.models) > 8 else ""),
            )
        else:
            self.add(
                s,
                "advertised",
                Status.FAIL,
                "no model is advertised: nothing healthy, allowed and priced",
                "fix the backends above (usepod-desktop discover shows details)",
                Action.OPEN_SETTINGS_BACKENDS,
            )

    async def _discovery(self) -> DiscoveryResult:
        agent = self.o.agent
        if agent is not None:
            return await agent.rediscover()
        from usepod_desktop.core.discovery import BackendPool, discover
        from usepod_desktop.core.secrets import SecretStore

        assert self.config is not None
        pool = BackendPool(SecretStore())
        try:
            return await discover(self.config, pool)
        finally:
            await pool.aclose()

    # ---- 5. prices against the market --------------------------------------------------

    async def check_prices(self) -> None:
        from usepod_desktop.core.doctor.market import MarketUnavailable, load_market

        s = "Prices"
        if self.discovery is None or not self.discovery.models:
            self.add(s, "market", Status.WARN, "skipped: no advertised model to compare")
            return
        try:
            market = await load_market(
                url=self.o.market_url, timeout=self.o.timeout, now=self.o.now
            )
        except MarketUnavailable as exc:
            self.add(
                s,
                "market",
                Status.WARN,
                f"skipped: cannot reach the price list ({exc})",
                "run doctor again when online",
            )
            return
        self.all_under_cap = True
        for model in self.discovery.models:
            self._price_verdict(s, model, market)

    def _price_verdict(self, s: str, model: Any, market: MarketPrices) -> None:
        from usepod_desktop.core.money import format_rate

        ours = f"{format_rate(model.input_per_1m)} in / {format_rate(model.output_per_1m)} out"
        byok = ""
        if model.upstream is not None:
            byok = (
                f"; BYOK: covers the upstream cost "
                f"{format_rate(model.upstream.input_per_1m)} / "
                f"{format_rate(model.upstream.output_per_1m)}"
            )
            if model.below_cost:
                byok = "; BYOK: BELOW the upstream cost"
        cap = market.cheapest(model.model_id)
        if cap is None:
            self.add(s, model.model_id, Status.OK, f"{ours}; no public price found{byok}")
            return
        cap_text = (
            f"{format_rate(cap.input_per_1m, places=10)} in / "
            f"{format_rate(cap.output_per_1m, places=10)} out ({cap.market_id})"
        )
        over_in = Decimal(model.input_per_1m) > cap.input_per_1m
        over_out = Decimal(model.output_per_1m) > cap.output_per_1m
        if over_in or over_out:
            self.all_under_cap = False
            self.add(
                s,
                model.model_id,
                Status.FAIL,
                f"{ours} is above the cap {cap_text}: the coordinator caps it / you will get "
                f"no marketplace jobs{byok}",
                f"set a price at or below {cap_text.split(' (')[0]} in Settings > Pricing",
                Action.OPEN_SETTINGS_PRICING,
            )
            return
        pct = max(
            Decimal(model.input_per_1m) / cap.input_per_1m,
            Decimal(model.output_per_1m) / cap.output_per_1m,
        )
        status = Status.WARN if model.below_cost else Status.OK
        self.add(
            s,
            model.model_id,
            status,
            f"{ours}: at {pct * 100:.0f}% of the cap {cap_text}{byok}",
            "raise the price or the markup so the upstream cost is covered"
            if model.below_cost
            else "",
            Action.OPEN_SETTINGS_PRICING if model.below_cost else None,
        )

    # ---- 6. recent work ----------------------------------------------------------------

    async def check_recent_work(self) -> None:
        s = "Recent work"
        now = time.time() if self.o.now is None else self.o.now
        try:
            hour, day = await asyncio.to_thread(ledger_figures, self.o.ledger_path, now)
        except (sqlite3.Error, OSError) as exc:
            self.add(
                s,
                "ledger",
                Status.WARN,
                f"cannot read the ledger: {exc}",
                "see the log; the ledger file may be locked or damaged",
            )
            hour = day = None
        if hour is not None and day is not None:
            self.add(
                s,
                "jobs",
                Status.OK,
                f"{hour['jobs']} in the last hour, {day['jobs']} in the last 24 h "
                f"({day['done']} done, {day['errors']} errors, {day['cancelled']} cancelled)",
            )
            finished = day["done"] + day["errors"]
            if finished:
                rate = day["errors"] / finished
                timeouts = day["timeouts"] / finished
                status = (
                    Status.FAIL
                    if rate > ERROR_RATE_FAIL
                    else Status.WARN
                    if rate > ERROR_RATE_WARN
                    else Status.OK
                )
                self.add(
                    s,
                    "error rate",
                    status,
                    f"{rate:.0%} errors, {timeouts:.0%} timeouts over 24 h: errors and "
                    "timeouts cost reputation (and can cost the bond)"
                    if status != Status.OK
                    else f"{rate:.0%} errors, {timeouts:.0%} timeouts over 24 h",
                    "" if status == Status.OK else "check the backends (log: View log...)",
                )
            ttfb = day["avg_ttfb_ms"]
            if ttfb is not None:
                slow = ttfb > SLOW_TTFB_MS
                self.add(
                    s,
                    "first byte",
                    Status.WARN if slow else Status.OK,
                    f"{ttfb / 1000:.1f} s on average over 24 h (jobs have about 60 s by default)",
                    "a smaller or warmer model, fewer concurrent jobs" if slow else "",
                )
            elif day["jobs"] == 0:
                if self.connected and self.all_under_cap:
                    self.add(
                        s,
                        "demand",
                        Status.OK,
                        "no jobs in 24 h while connected and priced under the cap: demand for "
                        "your models may simply be low",
                    )
                elif self.connected is False:
                    self.add(
                        s,
                        "demand",
                        Status.WARN,
                        "no jobs in 24 h, and not connected now",
                        "fix the coordinator checks above",
                    )
        agent = self.o.agent
        if agent is not None:
            figures = agent.snapshot().live
            self.add(
                s,
                "live",
                Status.OK,
                f"{agent.jobs_running} running; last 60 s: p50 first byte "
                f"{figures.p50_latency_ms} ms, {figures.tokens_per_sec_p50:.1f} tokens/s, "
                f"error rate {figures.error_rate_60s:.0%}",
            )

    # ---- 7. versions -------------------------------------------------------------------

    async def check_versions(self) -> None:
        from usepod_desktop.core import updates

        s = "Versions"
        self.add(
            s,
            "versions",
            Status.OK,
            f"usepod-desktop {__version__}, protocol {PROTOCOL_VERSION}, Python "
            f"{sys.version.split()[0]}",
        )
        if not self.o.check_updates:
            return
        now = time.time() if self.o.now is None else self.o.now
        info = updates.load_cached()
        if info is None or now - info.checked_at >= updates.CHECK_INTERVAL_S:
            try:
                info = await asyncio.to_thread(updates.check_for_update)
            except updates.UpdateCheckError as exc:
                self.add(
                    s, "update", Status.WARN, f"could not check: {exc}", "usepod-desktop upgrade"
                )
                return
        if info.available:
            self.add(
                s,
                "update",
                Status.WARN,
                f"usepod-desktop {info.newest} is available (you run {info.current})",
                info.how_to_upgrade(),
                Action.UPGRADE,
            )
        else:
            self.add(s, "update", Status.OK, f"up to date (newest release {info.newest})")


# ------------------------------------------------------------------------- the handshake


class HandshakeRejected(Exception):
    """auth_failed: the (sanitised) reason."""


class HandshakeBroken(Exception):
    """The connection or the handshake failed for another reason (one line)."""


async def handshake(
    url: str,
    identity: Any,
    *,
    allow_insecure: bool = False,
    timeout: float = NETWORK_TIMEOUT_S,  # noqa: ASYNC109 - also the connect timeout
) -> tuple[str | None, bool]:
    """One real authentication (auth_challenge -> signed auth_response -> auth_ok), closed
    right after the answer, never with an enrollment code (it must not pair or spend a code).
    Returns the provider id and whether the coordinator is a local sandbox (`"sandbox": true`
    in auth_ok); raises HandshakeRejected / HandshakeBroken."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import WebSocketException

    from usepod_desktop.core import protocol
    from usepod_desktop.core.link import default_ssl_context
    from usepod_desktop.core.link_session import describe_failure

    parts = urlsplit(url)
    if parts.scheme == "ws" and not allow_insecure:
        raise HandshakeBroken("ws:// needs --allow-insecure (use wss://)")
    kwargs: dict[str, Any] = {
        "max_size": protocol.MAX_FRAME_BYTES,
        "compression": None,
        "open_timeout": timeout,
        "close_timeout": 2,
        "user_agent_header": f"usepod-desktop doctor (protocol {PROTOCOL_VERSION})",
    }
    if parts.hostname in ("127.0.0.1", "localhost", "::1"):
        kwargs["proxy"] = None
    if parts.scheme == "wss":
        kwargs["ssl"] = default_ssl_context()
    try:
        async with asyncio.timeout(timeout), connect(url, **kwargs) as ws:
            while True:
                raw = await ws.recv()
                frame = protocol.parse_inbound(raw)
                if isinstance(frame, protocol.AuthChallenge):
                    break
                if not isinstance(frame, protocol.UnknownFrame):
                    raise HandshakeBroken(f"expected auth_challenge, got {type(frame).__name__}")
            await ws.send(
                protocol.auth_response(
                    identity.public_key_b64, identity.sign_b64(frame.nonce), PROTOCOL_VERSION
                )
            )
            while True:
                frame = protocol.parse_inbound(await ws.recv())
                if isinstance(frame, protocol.AuthFailed):
                    raise HandshakeRejected(sanitize(frame.reason, 200) or "(no reason given)")
                if isinstance(frame, protocol.AuthOk):
                    return frame.provider_id, frame.sandbox
                if not isinstance(frame, protocol.UnknownFrame):
                    raise HandshakeBroken(f"expected auth_ok, got {type(frame).__name__}")
    except (HandshakeRejected, HandshakeBroken):
        raise
    except TimeoutError:
        raise HandshakeBroken(f"no handshake answer within {timeout:.0f} s") from None
    except protocol.FrameError as exc:
        raise HandshakeBroken(sanitize(f"malformed frame during the handshake: {exc}")) from None
    except (OSError, WebSocketException) as exc:
        raise HandshakeBroken(sanitize(describe_failure(exc))) from None


# ------------------------------------------------------------------------- helpers


def ledger_figures(path: Path | None, now: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Counts for the last hour and 24 h of coordinator jobs (no prompts, no answers)."""
    from usepod_desktop.core.ledger import default_ledger_path

    target = path or default_ledger_path()
    empty = {
        "jobs": 0,
        "done": 0,
        "errors": 0,
        "timeouts": 0,
        "cancelled": 0,
        "avg_ttfb_ms": None,
    }
    if not target.is_file():
        return dict(empty), dict(empty)
    conn = sqlite3.connect(f"{target.resolve().as_uri()}?mode=ro", uri=True, timeout=2)
    try:
        out = []
        for seconds in (3600, 86400):
            since = int((now - seconds) * 1000)
            row = conn.execute(
                "SELECT COUNT(*), "
                "COALESCE(SUM(outcome='done'),0), COALESCE(SUM(outcome='error'),0), "
                "COALESCE(SUM(outcome='error' AND error_code='backend_timeout'),0), "
                "COALESCE(SUM(outcome='cancelled'),0), AVG(ttfb_ms) "
                "FROM jobs WHERE ended_at_ms >= ? AND source = 'coordinator'",
                (since,),
            ).fetchone()
            out.append(
                {
                    "jobs": int(row[0]),
                    "done": int(row[1]),
                    "errors": int(row[2]),
                    "timeouts": int(row[3]),
                    "cancelled": int(row[4]),
                    "avg_ttfb_ms": None if row[5] is None else float(row[5]),
                }
            )
    finally:
        conn.close()
    return out[0], out[1]


def _proxy_for(scheme: str, host: str) -> str | None:
    proxies = urllib.request.getproxies()
    key = "https" if scheme == "wss" else "http"
    proxy = proxies.get(key) or proxies.get("all")
    if not proxy:
        return None
    with contextlib.suppress(Exception):
        if urllib.request.proxy_bypass(host):
            return None
    return proxy


def _oserror(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return exc.strerror or str(exc)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return sanitize(text, 160)


def _closest(wanted: str, candidates: Sequence[str]) -> str | None:
    lower = {c.lower(): c for c in candidates}
    if wanted.lower() in lower:
        return lower[wanted.lower()]
    tail = wanted.lower().rsplit("/", 1)[-1]
    for c in candidates:
        if c.lower().rsplit("/", 1)[-1].split(":")[0] == tail:
            return c
    found = difflib.get_close_matches(wanted, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


async def run_doctor(options: DoctorOptions | None = None) -> Report:
    """Run every check (see the module docs); never raises for what it finds."""
    return await _Run(options or DoctorOptions()).run()
