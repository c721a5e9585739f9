"""`setup`: pair this computer with a Use Pod account (the device flow: docs/protocol.md,
"Pairing requests").

Detects the local backends, shows a pair code in big letters with the page to enter it on and a
live countdown, waits for the approval on the website, then writes agent.toml (keeping the old
one as a timestamped backup) and prints what was activated and the command to start serving.
Exit status: 0 paired, 1 expired or failed (one line on stderr), 130 cancelled (Ctrl-C; nothing
is written).
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from usepod_desktop.commands.common import fail, init_logging
from usepod_desktop.core.kinds import LOCAL_KINDS
from usepod_desktop.core.text import escape_controls, redact_url

if TYPE_CHECKING:
    from usepod_desktop.core.pairing.flow import PairingFlow
    from usepod_desktop.core.pairing.values import (
        BackendsDetected,
        CoordinatorUnreachable,
        IdentityReady,
        PairCode,
        PairingEvent,
        PairingResult,
    )

DEFAULT_COORDINATOR = "https://api.usepod.ai"

# A 5x5 font for the pair code ('#' = a filled cell).
_GLYPHS: dict[str, tuple[str, ...]] = {
    "A": (" ### ", "#   #", "#####", "#   #", "#   #"),
    "B": ("#### ", "#   #", "#### ", "#   #", "#### "),
    "C": (" ####", "#    ", "#    ", "#    ", " ####"),
    "D": ("#### ", "#   #", "#   #", "#   #", "#### "),
    "E": ("#####", "#    ", "#### ", "#    ", "#####"),
    "F": ("#####", "#    ", "#### ", "#    ", "#    "),
    "G": (" ####", "#    ", "#  ##", "#   #", " ####"),
    "H": ("#   #", "#   #", "#####", "#   #", "#   #"),
    "I": ("#####", "  #  ", "  #  ", "  #  ", "#####"),
    "J": ("#####", "   # ", "   # ", "#  # ", " ##  "),
    "K": ("#   #", "#  # ", "###  ", "#  # ", "#   #"),
    "L": ("#    ", "#    ", "#    ", "#    ", "#####"),
    "M": ("#   #", "## ##", "# # #", "#   #", "#   #"),
    "N": ("#   #", "##  #", "# # #", "#  ##", "#   #"),
    "O": (" ### ", "#   #", "#   #", "#   #", " ### "),
    "P": ("#### ", "#   #", "#### ", "#    ", "#    "),
    "Q": (" ### ", "#   #", "# # #", "#  # ", " ## #"),
    "R": ("#### ", "#   #", "#### ", "#  # ", "#   #"),
    "S": (" ####", "#    ", " ### ", "    #", "#### "),
    "T": ("#####", "  #  ", "  #  ", "  #  ", "  #  "),
    "U": ("#   #", "#   #", "#   #", "#   #", " ### "),
    "V": ("#   #", "#   #", "#   #", " # # ", "  #  "),
    "W": ("#   #", "#   #", "# # #", "## ##", "#   #"),
    "X": ("#   #", " # # ", "  #  ", " # # ", "#   #"),
    "Y": ("#   #", " # # ", "  #  ", "  #  ", "  #  "),
    "Z": ("#####", "   # ", "  #  ", " #   ", "#####"),
    "0": (" ### ", "#  ##", "# # #", "##  #", " ### "),
    "1": ("  #  ", " ##  ", "  #  ", "  #  ", " ### "),
    "2": (" ### ", "#   #", "  ## ", " #   ", "#####"),
    "3": ("#### ", "    #", " ### ", "    #", "#### "),
    "4": ("#   #", "#   #", "#####", "    #", "    #"),
    "5": ("#####", "#    ", "#### ", "    #", "#### "),
    "6": (" ### ", "#    ", "#### ", "#   #", " ### "),
    "7": ("#####", "    #", "   # ", "  #  ", "  #  "),
    "8": (" ### ", "#   #", " ### ", "#   #", " ### "),
    "9": (" ### ", "#   #", " ####", "    #", " ### "),
    "-": ("   ", "   ", "###", "   ", "   "),
    " ": ("  ", "  ", "  ", "  ", "  "),
}


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "setup",
        parents=parents,
        help="pair this computer with your Use Pod account (shows a code to enter on the website)",
        description="Pair this computer with your Use Pod account: detect the local backends, "
        "show a pair code to enter on the website, and once you approve it there write "
        "agent.toml (--config, default: the shared config dir). An existing agent.toml is kept "
        "as agent.toml.bak-YYYYMMDD-HHMMSS. Ctrl-C cancels without writing anything.",
    )
    p.add_argument(
        "--coordinator",
        metavar="URL",
        default=DEFAULT_COORDINATOR,
        help=f"coordinator to pair with (default {DEFAULT_COORDINATOR})",
    )
    p.add_argument(
        "--probe-port",
        metavar="KIND=PORT",
        action="append",
        default=[],
        help="look for KIND (vllm, llamacpp, lmstudio, ollama) on PORT instead of its default "
        "port (repeatable)",
    )


def parse_probe_ports(values: list[str]) -> dict[str, int] | None:
    """`["vllm=8001"]` -> the default ports with vllm on 8001; None when nothing changes."""
    if not values:
        return None
    from usepod_desktop.core.discovery import PROBE_PORTS

    ports = dict(PROBE_PORTS)
    for value in values:
        kind, sep, port = value.partition("=")
        kind = kind.strip().lower()
        if not sep or kind not in LOCAL_KINDS or not port.strip().isdigit():
            raise ValueError(
                f"--probe-port {value!r}: expected KIND=PORT, KIND one of " + ", ".join(LOCAL_KINDS)
            )
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError(f"--probe-port {value!r}: {number} is not a port number")
        ports[kind] = number
    return ports


def run(args: argparse.Namespace) -> int:
    init_logging(args)
    try:
        ports = parse_probe_ports(args.probe_port)
    except ValueError as exc:
        return fail(str(exc))
    from usepod_desktop.core import paths
    from usepod_desktop.core.errors import UserFacingError
    from usepod_desktop.core.pairing.flow import PairingFlow

    config_path = Path(args.config).expanduser() if args.config else paths.default_config_path()
    screen = Screen(sys.stdout)
    try:
        flow = PairingFlow(
            args.coordinator, config_path=config_path, probe_ports=ports, on_event=screen.on_event
        )
    except UserFacingError as exc:
        return fail(str(exc))
    try:
        return asyncio.run(_pair(flow, screen, explicit_config=bool(args.config)))
    except KeyboardInterrupt:
        screen.end_countdown()
        if flow.commit_started:
            print("\ninterrupted while saving the pairing; check agent.toml", file=sys.stderr)
        else:
            print("\npairing cancelled; nothing was written", file=sys.stderr)
        return 130


async def _pair(flow: PairingFlow, screen: Screen, *, explicit_config: bool) -> int:
    from usepod_desktop.core.errors import UserFacingError
    from usepod_desktop.core.pairing.values import PollExpired

    screen.say(f"usepod-desktop setup: pairing with {flow.base}")
    screen.say()
    try:
        await flow.prepare()
        code = await flow.issue()
        if code.sandbox and not explicit_config and flow.config_path.exists():
            return fail(
                f"{flow.base} is a local sandbox coordinator: pairing with it would replace "
                f"your agent.toml at {flow.config_path}; pass --config FILE to write a "
                "separate one (e.g. --config sandbox.toml)",
                1,
            )
        screen.banner(code, config_path=flow.config_path)
        countdown = asyncio.create_task(screen.countdown(flow, code))
        try:
            outcome = await flow.wait(code)
        finally:
            countdown.cancel()
            screen.end_countdown()
        if isinstance(outcome, PollExpired):
            return fail(
                f"pair code {code.pair_code} expired before it was approved; run "
                f"`{setup_again(flow, explicit_config)}` again for a new code",
                1,
            )
        result = await flow.complete(outcome)
    except UserFacingError as exc:
        screen.end_countdown()
        return fail(str(exc), 1)
    screen.success(result, explicit_config=explicit_config)
    return 0


def setup_again(flow: PairingFlow, explicit_config: bool) -> str:
    """The setup command line that pairs with the same coordinator (and config file) again."""
    from usepod_desktop.core.pairing.wire import normalize_base

    command = ["usepod-desktop", "setup"]
    if flow.base != normalize_base(DEFAULT_COORDINATOR):
        command += ["--coordinator", flow.base]
    if explicit_config:
        command += ["--config", str(flow.config_path)]
    return shlex.join(command)


# --------------------------------------------------------------------------- output


def big_text(text: str, cell: str = "█") -> list[str]:
    """`text` in 5-row block letters; [] when a character has no glyph."""
    glyphs = [_GLYPHS.get(ch) for ch in text.upper()]
    if any(g is None for g in glyphs):
        return []
    rows = ["  ".join(g[row] for g in glyphs if g is not None) for row in range(5)]
    return [row.replace("#", cell).rstrip() for row in rows]


def spaced(code: str) -> str:
    return " ".join(code)


def _price(micro: int) -> str:
    return f"${micro / 1_000_000:.2f}"


class Screen:
    """What `setup` prints, driven by the pairing flow's events."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        encoding = getattr(out, "encoding", None) or "ascii"
        try:
            "█✓✗".encode(encoding)
            self.fancy = True
        except (UnicodeEncodeError, LookupError):
            self.fancy = False
        self._countdown_shown = False
        from usepod_desktop.core.pairing import values

        #: What each pairing event prints; events not in it print nothing (the countdown
        #: and the result are printed by `_pair`).
        self._handlers: dict[type, Callable[[Any], None]] = {
            values.IdentityReady: self.identity_ready,
            values.BackendsDetected: self.backends,
            values.CoordinatorUnreachable: self.unreachable,
        }

    def say(self, text: str = "") -> None:
        """Print one line. Control characters are escaped: the pair code, model ids and
        provider id come from the coordinator and must not drive the terminal."""
        self.out.write(escape_controls(text) + "\n")
        self.out.flush()

    # ---- events

    def on_event(self, event: PairingEvent) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def identity_ready(self, event: IdentityReady) -> None:
        note = " (new; saved once paired)" if event.new else ""
        self.say(f"Agent key: {event.public_key}{note}")
        self.say(f"           {event.path}")
        self.say()

    def unreachable(self, event: CoordinatorUnreachable) -> None:
        self.end_countdown()
        self.say(
            f"Cannot reach {redact_url(event.url)} ({event.detail}); "
            f"retrying in {event.retry_in:.0f} s"
        )

    def backends(self, event: BackendsDetected) -> None:
        if not event.backends:
            from usepod_desktop.core.discovery import PROBE_PORTS
            from usepod_desktop.core.pairing.values import BACKEND_HINTS

            self.say("No local backend detected on the standard ports. You can pair anyway and")
            self.say("add backends later in the settings, or start one of:")
            for kind, (name, hint) in BACKEND_HINTS.items():
                port = PROBE_PORTS.get(kind)
                self.say(f"  - {name + ':':<11} {hint}  (port {port})")
            self.say()
            return
        self.say("Detected backends:")
        mark = "✓" if self.fancy else "*"
        for b in event.backends:
            names = ", ".join(b.models[:4]) + (", ..." if len(b.models) > 4 else "")
            self.say(f"  {mark} {b.kind:<9} at {b.url}  ({len(b.models)} model(s): {names})")
        self.say()

    def banner(self, code: PairCode, *, config_path: Path | None = None) -> None:
        if code.sandbox:
            self.say("This is a local sandbox coordinator: no account, no real earnings.")
            if config_path is not None:
                self.say(f"Pairing writes {config_path} pointing at it.")
            self.say()
            self.say(f"Approve the code in the sandbox's terminal: type  approve {code.pair_code}")
            self.say()
        else:
            self.say("Pair this computer with your Use Pod account:")
            self.say()
            self.say(f"  1. Open  {code.page_url}")
            self.say(f"  2. Enter the code  {code.pair_code}")
            self.say()
        art = big_text(code.pair_code, "█" if self.fancy else "#")
        for line in art:
            self.say("     " + line)
        if art:
            self.say()
        self.say("     " + spaced(code.pair_code))
        self.say()
        if not code.sandbox:
            self.say("  then choose the models and prices to offer and approve.")
            self.say()

    async def countdown(self, flow: PairingFlow, code: PairCode) -> None:
        """A live `Waiting for approval... 9:41 left` line (a line a minute without a tty)."""
        last_minute: int | None = None
        while True:
            left = int(flow.remaining(code))
            text = f"Waiting for approval... {left // 60}:{left % 60:02d} left (Ctrl-C cancels)"
            if self.tty:
                self.out.write("\r" + text + "\x1b[K")
                self.out.flush()
                self._countdown_shown = True
            elif left // 60 != last_minute:
                last_minute = left // 60
                self.say(text)
            await asyncio.sleep(1.0 if self.tty else 5.0)

    def end_countdown(self) -> None:
        if self._countdown_shown:
            self.out.write("\n")
            self.out.flush()
            self._countdown_shown = False

    def success(self, result: PairingResult, *, explicit_config: bool) -> None:
        mark = "✓" if self.fancy else "OK:"
        self.say()
        self.say(f"{mark} Paired as provider {result.provider_id}")
        if result.models:
            self.say("  Activated model(s), input / output price per 1M tokens:")
            width = max(len(m.model_id) for m in result.models)
            for m in result.models:
                self.say(
                    f"    {m.model_id:<{width}}  {_price(m.input_per_1m)} / "
                    f"{_price(m.output_per_1m)}"
                )
        else:
            self.say("  No model was activated yet; the default prices apply.")
        self.say(f"  Wrote {result.config_path}")
        if result.backup_path is not None:
            self.say(f"  (the previous one is kept as {result.backup_path})")
        if result.token_stored:
            self.say("  Host token saved in the OS keyring.")
        for warning in result.warnings:
            self.say(f"  Note: {warning}")
        options: list[str] = []
        if explicit_config:
            options += ["--config", str(result.config_path)]
        if result.insecure:
            options.append("--allow-insecure")
        self.say()
        self.say("Start serving:")
        self.say("  " + shlex.join(["usepod-desktop", "run", *options]))
        self.say("or start the tray app: " + shlex.join(["usepod-desktop", *options]))
