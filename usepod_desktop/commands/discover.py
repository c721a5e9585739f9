"""`discover`: run one discovery pass for the current config and show what would be advertised.

Without flags it prints a table (backend, status, latency, models found / advertised, prices in
$ per 1M tokens, below-cost and skip warnings). `--json` prints exactly the `capabilities`
frame the agent would send, as one JSON document on stdout. `--probe` instead lists the local
servers answering on the four well-known ports (no config needed).

Everything a backend reported is printed with control characters escaped, and backend URLs
without their `user:password@` part.

Exit status: 0 whenever the pass ran, even with no healthy backend; 2 with one line on stderr
for an invalid or missing agent.toml.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from usepod_desktop.commands.common import handle_user_errors, init_logging, load_config

if TYPE_CHECKING:
    from usepod_desktop.core.config import Config
    from usepod_desktop.core.discovery import DiscoveryResult, ProbeResult


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "discover",
        parents=parents,
        help="check the configured backends and show the models that would be advertised",
        description="Run one discovery pass: health, models, allow-lists and prices of every "
        "configured backend. Exits 0 even when no backend is healthy.",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print exactly the capabilities frame the agent would send",
    )
    p.add_argument(
        "--probe",
        action="store_true",
        help="list local servers on the well-known ports (vLLM 8000, llama.cpp 8080, "
        "LM Studio 1234, Ollama 11434) instead",
    )


@handle_user_errors
def run(args: argparse.Namespace) -> int:
    if args.probe:
        init_logging(args, default="error")
        found = asyncio.run(_probe())
        print(_safe(_render_probe(found, as_json=bool(args.json))))
        return 0
    # The table shows every warning itself; with --json they go to stderr as log lines.
    init_logging(args, default="warning" if args.json else "error")
    config = load_config(args)
    result = asyncio.run(_discover(config))
    if args.json:
        print(result.capabilities_frame(config))
    else:
        print(_safe(render_table(result)))
    return 0


def _safe(text: str) -> str:
    """Lines with control characters escaped: model ids and details come from the backends
    and must not drive the terminal. (JSON output escapes them itself.)"""
    from usepod_desktop.core.text import escape_controls

    return "\n".join(escape_controls(line) for line in text.split("\n"))


async def _discover(config: Config) -> DiscoveryResult:
    from usepod_desktop.core.discovery import BackendPool, discover
    from usepod_desktop.core.secrets import SecretStore

    pool = BackendPool(SecretStore())
    try:
        return await discover(config, pool)
    finally:
        await pool.aclose()


async def _probe() -> list[ProbeResult]:
    from usepod_desktop.core.discovery import probe_local

    return await probe_local()


def _columns(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def render_table(result: DiscoveryResult) -> str:
    """The human-readable report of one pass."""
    from usepod_desktop.core.money import format_rate

    out: list[str] = []
    if not result.reports:
        out.append("No backends configured ([[backends]] in agent.toml).")
    else:
        rows = [("BACKEND", "STATUS", "LATENCY", "MODELS", "DETAIL")]
        for report in result.reports:
            latency = "-" if report.latency_ms is None else f"{report.latency_ms:.0f} ms"
            models = "-"
            if report.status == "ok":
                models = (
                    f"{len(report.models_found)} found, {len(report.models_advertised)} advertised"
                )
            detail = "" if report.status == "ok" else report.detail
            rows.append((report.config.label, report.status, latency, models, detail))
        out.append("Backends")
        out.extend(_columns(rows))
        warnings = [(r.config.label, w) for r in result.reports for w in r.warnings]
        if warnings:
            out.append("")
            out.append("Warnings")
            for label, text in warnings:
                shown = text if text.startswith(label) else f"{label}: {text}"
                out.append(f"  ! {shown}")
    out.append("")
    if not result.models:
        out.append("Advertised models: none (nothing healthy, allowed and priced)")
        return "\n".join(out)
    out.append(f"Advertised models ({len(result.models)})")
    rows = [("MODEL", "BACKEND", "INPUT $/1M", "OUTPUT $/1M", "CONTEXT", "NOTE")]
    for m in result.models:
        notes = []
        if m.upstream is not None:
            notes.append(
                f"upstream {format_rate(m.upstream.input_per_1m)} / "
                f"{format_rate(m.upstream.output_per_1m)}"
            )
        if m.below_cost:
            notes.append("BELOW COST")
        rows.append(
            (
                m.model_id,
                m.backend,
                format_rate(m.input_per_1m),
                format_rate(m.output_per_1m),
                "-" if m.context_window is None else str(m.context_window),
                "; ".join(notes),
            )
        )
    out.extend(_columns(rows))
    return "\n".join(out)


def _render_probe(found: list[ProbeResult], *, as_json: bool) -> str:
    if as_json:
        return json.dumps(
            [{"kind": p.kind, "url": p.url, "models": p.models} for p in found], indent=None
        )
    if not found:
        return "No local inference server found on the well-known ports."
    rows = [("KIND", "URL", "MODELS")]
    for p in found:
        rows.append((p.kind, p.url, ", ".join(p.models)))
    return "\n".join(["Local servers", *_columns(rows)])
