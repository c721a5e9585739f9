"""`keys set|delete|status NAME`: BYOK API keys in the OS keyring.

The key is read from a hidden prompt (or from stdin when it is not a terminal), never from an
argument, so it does not end up in shell history or the process list.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from usepod_desktop.commands.common import fail, handle_user_errors, init_logging


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "keys",
        parents=parents,
        help="manage BYOK API keys in the OS keyring",
        description="Store, delete or inspect API keys for openrouter/venice backends. NAME is "
        "the backend's api_key_env (e.g. OPENROUTER_API_KEY). The key is read from a "
        "prompt or stdin, never from the command line.",
    )
    p.add_argument("action", choices=("set", "delete", "status"))
    p.add_argument("name", metavar="NAME", help="the api_key_env name, e.g. OPENROUTER_API_KEY")


def _unused_name_warning(args: argparse.Namespace, name: str) -> str | None:
    """Why `name` looks like a typo: no backend of agent.toml reads it (None: one does, or
    there is no agent.toml to check against)."""
    from usepod_desktop.core.config import find_config, load_config
    from usepod_desktop.core.errors import ConfigError

    try:
        path = find_config(getattr(args, "config", None))
        config = load_config(path, allow_insecure=True)
    except ConfigError:
        return None
    used = sorted({b.api_key_env for b in config.backends if b.api_key_env})
    if name in used:
        return None
    which = f"they use {', '.join(used)}" if used else "none of them needs an API key"
    return (
        f"no backend in {path} uses {name} ({which}); the key is stored, but nothing will "
        "read it until a backend's api_key_env names it"
    )


@handle_user_errors
def run(args: argparse.Namespace) -> int:
    from usepod_desktop.core.secrets import SERVICE, SecretStore

    init_logging(args)
    store = SecretStore()
    name: str = args.name
    if args.action == "set":
        unused = _unused_name_warning(args, name)
        if unused:
            print(f"warning: {unused}", file=sys.stderr)
        if sys.stdin.isatty():
            value = getpass.getpass(f"API key for {name} (input hidden): ")
        else:
            value = sys.stdin.readline()
        value = value.strip()
        if not value:
            return fail("no key given; nothing stored")
        store.set(name, value)
        print(f"stored {name} in the OS keyring (service {SERVICE!r})")
        return 0
    if args.action == "delete":
        if store.delete(name):
            print(f"deleted {name} from the OS keyring")
        else:
            print(f"{name} was not in the OS keyring")
        return 0
    status = store.status(name)
    keyring_state = "set" if status.in_keyring else "not set"
    if status.keyring_problem:
        keyring_state = f"unavailable ({status.keyring_problem})"
    print(f"{name}: keyring {keyring_state}; environment {'set' if status.in_env else 'not set'}")
    if status.in_keyring:
        print(f"{name}: the agent uses the keyring value")
    elif status.in_env:
        print(f"{name}: the agent uses ${name}")
    else:
        print(f"{name}: no key; backends using it are skipped")
    return 0
