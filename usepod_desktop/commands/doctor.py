"""`doctor`: why am I not earning? Every check, each OK / WARN / FAIL with a reason and a fix.

The checks, in order: agent.toml and identity; the coordinator (DNS, TCP, TLS, proxy, a real
authentication with this computer's identity); the serving state and limits; each backend and
each advertised model id; prices against the market's public list; recent work from the
ledger; versions and updates. It never stops at the first failure.

Exit status: 0 when nothing FAILs, 1 otherwise. `--json` prints one JSON document;
`--bundle FILE.zip` also writes a support bundle with secrets removed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from usepod_desktop.commands.common import fail, init_logging


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "doctor",
        parents=parents,
        help="explain why this computer is not earning: every check with a reason and a fix",
        description="Run every check (configuration, coordinator, serving state, backends and "
        "model ids, prices against the market, recent work, versions). Exit status 0 when "
        "nothing fails, 1 otherwise. The market price list comes from OpenRouter's public model "
        "list (cached a day; USEPOD_MARKET_PRICES_URL overrides the URL).",
    )
    p.add_argument("--json", action="store_true", help="print the checks as one JSON document")
    p.add_argument(
        "--bundle",
        metavar="FILE.zip",
        help="also write a support bundle (doctor output, versions, OS, discover --json, "
        "agent.toml and the last log lines with secrets removed, ledger counts)",
    )
    p.add_argument("--no-update-check", action="store_true", help="do not ask the release feed")
    p.add_argument(
        "--skip-handshake",
        action="store_true",
        help="do not authenticate to the coordinator (the test connection uses this computer's "
        "identity for a moment; skip it while a headless agent with the same identity serves)",
    )


def run(args: argparse.Namespace) -> int:
    from usepod_desktop.core.doctor import DoctorOptions, run_doctor

    init_logging(args, default="error")
    options = DoctorOptions(
        config_path=args.config,
        allow_insecure=bool(args.allow_insecure),
        check_updates=not args.no_update_check,
        handshake=not args.skip_handshake,
    )
    report = asyncio.run(run_doctor(options))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.render())
    if args.bundle:
        from usepod_desktop.core.doctor.bundle import write_bundle

        try:
            path = write_bundle(
                args.bundle,
                report,
                config=report.config,
                config_path=report.config_path,
                capabilities=report.capabilities,
            )
        except OSError as exc:
            return fail(f"cannot write the support bundle {args.bundle}: {exc.strerror or exc}", 1)
        print(f"support bundle written: {path}", file=sys.stderr)
    return report.exit_code
