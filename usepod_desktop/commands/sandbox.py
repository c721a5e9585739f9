"""`sandbox`: run a local coordinator and send test jobs to your agent, no account needed.

Prints the agent URL and the agent.toml lines to use, reports providers as they connect
and what they advertise, then sends every line typed on stdin as a chat job to the first
advertised model (or `--model`), printing the answer as it streams in, then the token
counts and the time. `--rate S` also sends a demo job every S seconds. EOF (Ctrl-D) or
Ctrl-C stops.

The sandbox serves one agent: the key given with `--agent-key`, else the first key that
authenticates (it says so); any other key is refused, so typed prompts never reach another
local process. Everything an agent sends is printed with control characters escaped, frames
are limited in size and rate, and an answer larger than 16 MiB is cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
from typing import Any

from usepod_desktop.commands.common import fail, init_logging

DEFAULT_PORT = 8787
#: Largest frame accepted from the agent (its chunks are far smaller).
MAX_FRAME_BYTES = 8 * 1024 * 1024
#: Per connection: frames and bytes per second (bursts of twice that), then it is closed.
MAX_FRAMES_PER_SECOND = 5_000
MAX_BYTES_PER_SECOND = 64 * 1024 * 1024
#: An answer larger than this is cancelled.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
#: Capabilities / heartbeat frames kept per connection.
HISTORY_LIMIT = 20
DEMO_PROMPTS = (
    "Say hello in five words.",
    "Name three primary colors.",
    "What is 17 times 3?",
    "Write a haiku about GPUs.",
    "Give one tip for writing clear code.",
)


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sandbox",
        parents=parents,
        help="run a local sandbox coordinator and send test jobs to your agent",
        description="Run a coordinator on 127.0.0.1 that speaks the real protocol, so an agent "
        "can be tried without an account. Prompts typed on stdin (one per line) are sent as "
        "chat jobs and the streamed answers printed. EOF or Ctrl-C stops.",
    )
    p.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        metavar="N",
        help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    p.add_argument(
        "--rate",
        type=float,
        metavar="SECONDS",
        help="also send a demo job every SECONDS seconds",
    )
    p.add_argument("--model", metavar="ID", help="model to send jobs to (default: the first one)")
    p.add_argument(
        "--agent-key",
        metavar="BASE64",
        help="serve only the agent with this public key (`usepod-desktop enroll` prints it); "
        "default: the first agent that connects, and no other",
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        default=256,
        metavar="N",
        help="max_tokens of each job (default 256)",
    )
    p.add_argument(
        "--pairing",
        action="store_true",
        help="also serve the pairing endpoints, for `usepod-desktop setup --coordinator URL`; "
        "approve a code by typing `approve CODE` (`codes` lists them)",
    )
    p.add_argument(
        "--format",
        choices=("openai", "anthropic"),
        default="openai",
        help="job format: OpenAI chat completions (default) or Anthropic Messages",
    )


def run(args: argparse.Namespace) -> int:
    init_logging(args)
    if not 0 <= args.port <= 65535:
        return fail(f"--port {args.port} is not a port number")
    if args.rate is not None and args.rate <= 0:
        return fail("--rate must be a positive number of seconds")
    if args.max_tokens <= 0:
        return fail("--max-tokens must be positive")
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        _say("\nsandbox stopped")
        return 130


# --------------------------------------------------------------------------- helpers


def _say(text: str = "", end: str = "\n", *, keep_newlines: bool = False) -> None:
    """Print `text` with control characters escaped: much of it comes from the agent (model
    ids, errors, answers) and must not drive the terminal. An answer keeps its line breaks
    and tabs (`keep_newlines`)."""
    from usepod_desktop.core.text import escape_controls

    if keep_newlines:
        shown = "\n".join(
            "\t".join(escape_controls(part) for part in line.split("\t"))
            for line in text.split("\n")
        )
    else:
        shown = escape_controls(text)
    sys.stdout.write(shown + end)
    sys.stdout.flush()


def _price(micro_usd_per_1m: object) -> str:
    if not isinstance(micro_usd_per_1m, int):
        return "?"
    return f"${micro_usd_per_1m / 1_000_000:.2f}"


def build_request(model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    """A one-message chat request; OpenAI chat completions and Anthropic Messages share it."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": True,
    }


def _banner(url: str) -> None:
    _say(f"Sandbox coordinator listening on {url}")
    _say()
    _say("Point an agent at it with a config file of its own (e.g. sandbox.toml; your real")
    _say("agent.toml stays as it is). Jobs from a sandbox are recorded as sandbox jobs, never")
    _say("as earnings:")
    _say()
    _say("    [coordinator]")
    _say(f'    url = "{url}"')
    _say()
    _say("and start it with --allow-insecure (a ws:// URL is not encrypted), e.g.")
    _say("    usepod-desktop run --allow-insecure --config sandbox.toml")
    _say()
    _say("Type a prompt and press Enter to send it as a job. Ctrl-D or Ctrl-C quits.")


def _on_event(event: Any, coordinator: Any = None) -> None:
    session = event.session
    pid = session.provider_id
    if event.kind == "connected":
        _say(f"provider {pid} connected (agent {session.agent_version})")
        pinned = getattr(coordinator, "pinned_key", None)
        if pinned is not None and pinned == session.pubkey_b64 and session.serial == 1:
            _say(
                f"this sandbox now serves only agent key {pinned} (the first one that "
                "connected); other keys are refused. Restart it, or use --agent-key, to "
                "serve another agent."
            )
    elif event.kind == "auth_failed":
        _say(f"an agent failed auth: {session.auth_failed_reason}")
    elif event.kind == "disconnected":
        _say(f"provider {pid} disconnected (close code {session.close_code})")
    elif event.kind == "capabilities":
        models = session.capabilities[-1].models
        if not models:
            _say(f"provider {pid} advertises no models (no healthy backend?)")
            return
        _say(f"provider {pid} advertises {len(models)} model(s):")
        for m in models:
            _say(
                f"  {m['model_id']}  ({m.get('backend')}, input {_price(m.get('input_per_1m'))}"
                f" / output {_price(m.get('output_per_1m'))} per 1M tokens)"
            )


def _start_stdin_reader(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
    """Lines of stdin into `queue`, then None at EOF. A daemon thread: never blocks exit."""

    def put(item: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def reader() -> None:
        try:
            while line := sys.stdin.readline():
                put(line)
        except (OSError, ValueError):
            pass
        put(None)

    threading.Thread(target=reader, name="sandbox-stdin", daemon=True).start()


# --------------------------------------------------------------------------- main


class _Sandbox:
    def __init__(self, args: argparse.Namespace, coordinator: Any) -> None:
        self.args = args
        self.coord = coordinator
        self.print_lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[None]] = set()
        self.demo_count = 0

    def _target(self) -> tuple[Any, str] | str:
        """(session, model) to send to, or why there is none."""
        if not self.coord.providers:
            return "no provider connected yet (start the agent, see above)"
        session = max(self.coord.providers.values(), key=lambda s: s.serial)
        model = self.args.model or (session.models[0] if session.models else None)
        if model is None:
            return f"provider {session.provider_id} advertises no models; pass --model ID"
        return session, model

    async def _dispatch(self, prompt: str) -> tuple[Any, Any] | str:
        target = self._target()
        if isinstance(target, str):
            return target
        session, model = target
        request = build_request(model, prompt, self.args.max_tokens)
        try:
            handle = await self.coord.dispatch(
                model, request, format=self.args.format, provider=session
            )
        except (LookupError, ConnectionError) as exc:
            return str(exc)
        return handle, model

    def _summary(self, handle: Any) -> str:
        from usepod_desktop.core.protocol import JobDone

        terminal = handle.terminal
        if terminal is None:
            return f"[job ended without an answer: {handle.lost or 'cancelled'}]"
        took = f"{handle.elapsed:.2f} s"
        if handle.time_to_first_chunk is not None:
            took += f", first byte after {handle.time_to_first_chunk:.2f} s"
        if isinstance(terminal, JobDone):
            return (
                f"[{terminal.input_tokens} input / {terminal.output_tokens} output tokens "
                f"(agent's count), {took}]"
            )
        return f"[job_error {terminal.error_code}: {terminal.message}] ({took})"

    async def _finish(self, handle: Any, deadline_s: float) -> None:
        with contextlib.suppress(Exception):
            await handle.wait(deadline_s)

    async def ask(self, prompt: str) -> None:
        """Send one prompt and stream its answer to stdout."""
        from usepod_desktop.core.backends.sse import AnswerDecoder

        dispatched = await self._dispatch(prompt)
        if isinstance(dispatched, str):
            _say(dispatched)
            return
        handle, model = dispatched
        decoder = AnswerDecoder(self.args.format)
        limit = handle.deadline_ms / 1000 + 10
        async with self.print_lock:
            _say(f"[{model}] ", end="")
            try:
                async with asyncio.timeout(limit):
                    async for chunk in handle.stream():
                        text = decoder.feed(chunk)
                        if text:
                            _say(text, end="", keep_newlines=True)
            except TimeoutError:
                _say(f"\n[no answer within {limit:.0f} s; cancelling]")
                await self.coord.cancel(handle.job_id)
            tail = decoder.close()
            _say(tail, keep_newlines=True)
            if decoder.error:
                _say(f"[error in the stream: {decoder.error}]")
            await self._finish(handle, 1.0)
            _say(self._summary(handle))
        self.coord.forget(handle.job_id)

    async def demo(self) -> None:
        """Send one demo prompt; print its answer on one line when done."""
        from usepod_desktop.core.backends.sse import extract_text

        self.demo_count += 1
        number = self.demo_count
        prompt = DEMO_PROMPTS[(number - 1) % len(DEMO_PROMPTS)]
        dispatched = await self._dispatch(prompt)
        if isinstance(dispatched, str):
            async with self.print_lock:
                _say(f"[demo {number}] skipped: {dispatched}")
            return
        handle, model = dispatched
        await self._finish(handle, handle.deadline_ms / 1000 + 10)
        if not handle.finished:
            await self.coord.cancel(handle.job_id)
        answer = " ".join(extract_text(handle.data, self.args.format).split())
        if len(answer) > 120:
            answer = answer[:117] + "..."
        async with self.print_lock:
            _say(f"[demo {number}] {model}: {prompt!r} -> {answer!r} {self._summary(handle)}")
        self.coord.forget(handle.job_id)

    async def demo_loop(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            task = asyncio.create_task(self.demo())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)


async def _main(args: argparse.Namespace) -> int:
    from usepod_desktop.sandbox.coordinator import SandboxCoordinator

    coordinator = SandboxCoordinator(
        port=args.port,
        allowed_keys={args.agent_key} if getattr(args, "agent_key", None) else None,
        pin_first_agent=not getattr(args, "agent_key", None),
        max_msg_size=MAX_FRAME_BYTES,
        max_frames_per_second=MAX_FRAMES_PER_SECOND,
        max_bytes_per_second=MAX_BYTES_PER_SECOND,
        max_job_bytes=MAX_ANSWER_BYTES,
        history_limit=HISTORY_LIMIT,
    )
    desk = None
    if getattr(args, "pairing", False):
        from usepod_desktop.sandbox import pairing

        desk = pairing.enable_pairing(coordinator)
        desk.add_listener(pairing.event_printer(_say))
    try:
        url = await coordinator.start()
    except OSError as exc:
        return fail(
            f"cannot start the sandbox coordinator ({exc.strerror or exc}); "
            "pick another --port, or --port 0 for a free one"
        )
    sandbox = _Sandbox(args, coordinator)
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    demo_task: asyncio.Task[None] | None = None
    try:
        _banner(url)
        if desk is not None:
            _say()
            _say(pairing.terminal_help(coordinator.http_url), keep_newlines=True)
        coordinator.add_listener(lambda event: _on_event(event, coordinator))
        if getattr(args, "agent_key", None):
            _say(f"Serving only the agent with key {args.agent_key}; other keys are refused.")
        else:
            _say("The first agent that connects will be the only one served.")
        if args.rate is not None:
            _say(f"Sending a demo job every {args.rate:g} s.")
            demo_task = asyncio.create_task(sandbox.demo_loop(args.rate))
        _start_stdin_reader(asyncio.get_running_loop(), lines)
        while (line := await lines.get()) is not None:
            prompt = line.strip()
            if desk is not None and (reply := desk.command(prompt)) is not None:
                if reply:
                    _say(reply, keep_newlines=True)
            elif prompt:
                await sandbox.ask(prompt)
    finally:
        pending = list(sandbox.tasks)
        if demo_task is not None:
            pending.append(demo_task)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await coordinator.stop()
    _say("sandbox stopped")
    return 0
