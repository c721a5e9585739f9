"""`enroll`: show the identity's public key, provider id and enrollment code."""

from __future__ import annotations

import argparse

from usepod_desktop.commands.common import handle_user_errors, init_logging, load_config


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    sub.add_parser(
        "enroll",
        parents=parents,
        help="print the public key and provider id (creates the identity if missing)",
        description="Print this computer's identity: its public key (what the coordinator "
        "knows it by), its provider id once enrolled, and the enrollment code from agent.toml "
        "if there is one. The identity key file (identity.key_path in agent.toml, default "
        "~/.usepod-agent/identity.key) is created when it is missing. To pair with an "
        "account, use `usepod-desktop setup`.",
    )


@handle_user_errors
def run(args: argparse.Namespace) -> int:
    from usepod_desktop.core import identity

    init_logging(args)
    config = load_config(args)
    ident = identity.load_or_create(config.key_path)
    print(f"public_key: {ident.public_key_b64}")
    print(f"provider_id: {ident.provider_id or '<not yet enrolled>'}")
    if config.coordinator.enrollment_code:
        print(f"enrollment_code: {config.coordinator.enrollment_code}")
    return 0
