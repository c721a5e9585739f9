"""`forget [--identity [--yes]] [--keep-keyring]`: remove what this app left outside its own
files, before uninstalling it.

- start at login (the XDG entry, the LaunchAgent or the HKCU Run value);
- the headless service (systemd user unit or LaunchAgent; stopped first when it is running);
- this app's OS keyring items: the host token from pairing and the BYOK API keys named by the
  config's `api_key_env` (plus the usual OPENROUTER_API_KEY / VENICE_API_KEY names), unless
  `--keep-keyring`;
- only with `--identity`, and after a confirmation (or `--yes`), the identity key file. A new
  identity is a new provider: the machine has to be enrolled (paired) again.

agent.toml, the earnings ledger and the logs are kept: they are the user's records (the
uninstaller of each OS never deletes them either). Each step prints one line; the exit code is
1 when something could not be removed, 2 when the identity was to be deleted without a
confirmation.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

from usepod_desktop.commands.common import handle_user_errors, init_logging

#: Key names the set-up and the settings suggest for BYOK backends; removed even when the
#: config no longer names them (a backend removed from agent.toml leaves its key behind).
CONVENTIONAL_KEY_NAMES = ("OPENROUTER_API_KEY", "VENICE_API_KEY")


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "forget",
        parents=parents,
        help="remove start at login, the service and the keyring items (before uninstalling)",
        description="Remove what the app keeps outside its own folder: the start-at-login "
        "entry, the headless service (stopped first), and the OS keyring items of service "
        "'usepod-agent' (the host token and the API keys named by agent.toml's api_key_env; "
        "the reference usepod-agent reads the same items). agent.toml, the earnings ledger and "
        "the logs are kept. The identity key is deleted only with --identity, after a "
        "confirmation: a new identity means enrolling this machine again.",
    )
    p.add_argument(
        "--identity",
        action="store_true",
        help="also delete the identity key (asks first; a new identity must be enrolled again)",
    )
    p.add_argument(
        "--yes", action="store_true", help="with --identity: do not ask, delete it (scripts)"
    )
    p.add_argument(
        "--keep-keyring",
        action="store_true",
        help="leave the keyring items alone (an uninstaller whose user said no to removing them)",
    )


def _config_facts(args: argparse.Namespace) -> tuple[list[str], Path | None, str | None]:
    """(api_key_env names, identity key path, problem) from agent.toml, read leniently: a
    config that no longer validates still names its keys and its identity."""
    from usepod_desktop.core import paths
    from usepod_desktop.core.config import find_config, load_config
    from usepod_desktop.core.errors import ConfigError

    explicit = getattr(args, "config", None)
    try:
        config = load_config(explicit, allow_insecure=True)
    except ConfigError as exc:
        try:
            found = find_config(explicit)
        except ConfigError:
            return [], None, str(exc)
        try:
            raw = tomllib.loads(found.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return [], None, str(exc)
        names = [
            b["api_key_env"]
            for b in raw.get("backends", [])
            if isinstance(b, dict) and isinstance(b.get("api_key_env"), str)
        ]
        key_path = raw.get("identity", {}).get("key_path")
        path = paths.expand_user(key_path) if isinstance(key_path, str) and key_path else None
        return names, path, str(exc)
    names = [b.api_key_env for b in config.backends if b.api_key_env]
    return names, config.key_path, None


def _forget_autostart() -> bool:
    from usepod_desktop.core import autostart

    where = autostart.describe()
    try:
        removed = autostart.disable()
    except OSError as exc:
        print(f"start at login: could not remove {where}: {exc.strerror or exc}")
        return False
    print(f"start at login: {'removed ' if removed else 'was off; no '}{where}")
    return True


def _forget_service() -> bool:
    from usepod_desktop.core import service

    try:
        result = service.uninstall(stop=True)
    except service.ServiceError:
        return True  # Windows: there is no service
    except OSError as exc:
        print(f"service: could not remove it: {exc.strerror or exc}")
        return False
    for command, code in result.ran:
        print(f"service: ran {command} (exit {code})")
    print(f"service: {'removed ' if result.removed else 'not installed; no '}{result.path}")
    return True


def _forget_keyring(names: list[str]) -> bool:
    from usepod_desktop.core.errors import SecretStoreError
    from usepod_desktop.core.pairing.values import HOST_TOKEN_KEY
    from usepod_desktop.core.secrets import SERVICE, SecretStore

    store = SecretStore()
    problem = store.unavailable_reason()
    if problem is not None:
        print(f"keyring: nothing removed: {problem}")
        return True
    ok = True
    removed: list[str] = []
    absent: list[str] = []
    wanted = list(dict.fromkeys([HOST_TOKEN_KEY, *names, *CONVENTIONAL_KEY_NAMES]))
    for i, name in enumerate(wanted):
        try:
            (removed if store.delete(name) else absent).append(name)
        except SecretStoreError as exc:
            # A locked keyring refuses every item (and may pop up a prompt for each): stop.
            print(f"keyring: {exc}; not removed: {', '.join(wanted[i:])} (is it unlocked?)")
            ok = False
            break
    if removed:
        print(f"keyring: removed {', '.join(removed)} (service {SERVICE!r})")
    if absent:
        print(f"keyring: not there: {', '.join(absent)}")
    return ok


def _confirm(prompt: str) -> bool:
    """Ask on stdout, read one line of stdin (a terminal or a pipe); no answer means no."""
    print(prompt, end="", flush=True)
    try:
        answer = sys.stdin.readline(16)
    except (OSError, ValueError):  # no stdin at all
        answer = ""
    if not answer.endswith("\n"):
        print()
    return answer.strip().lower() in ("y", "yes")


def _forget_identity(path: Path, assume_yes: bool) -> int:
    """0 deleted (or absent), 2 not confirmed, 1 failed."""
    from usepod_desktop.core import identity
    from usepod_desktop.core.errors import IdentityError

    if not path.exists():
        print(f"identity: no key at {path}")
        return 0
    try:
        ident = identity.load(path)
        who = f"public key {ident.public_key_b64}, provider id {ident.provider_id or 'none yet'}"
    except IdentityError:
        who = "unreadable"
    print(f"identity: {path} ({who})")
    print(
        "identity: deleting it cannot be undone. The coordinator knows this machine by this "
        "key: a new identity is a new provider, so you will have to enroll (pair) this machine "
        "again, and the earnings of the old provider id stay with the old key."
    )
    if not assume_yes and not _confirm("Delete the identity key? [y/N] "):
        print("identity: kept (delete it without asking with --yes)")
        return 2
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        print(f"identity: could not delete {path}: {exc.strerror or exc}")
        return 1
    print(f"identity: deleted {path}")
    return 0


@handle_user_errors
def run(args: argparse.Namespace) -> int:
    from usepod_desktop.core import paths
    from usepod_desktop.core.ledger import LEDGER_FILE_NAME

    init_logging(args)
    names, key_path, problem = _config_facts(args)
    if problem:
        print(f"config: {problem} (removing the usual keyring items only)")
    ok = _forget_autostart()
    ok = _forget_service() and ok
    if args.keep_keyring:
        print("keyring: kept (--keep-keyring)")
    else:
        ok = _forget_keyring(names) and ok
    code = 0 if ok else 1
    if args.identity:
        identity_code = _forget_identity(key_path or paths.default_identity_path(), args.yes)
        code = max(code, identity_code)
    else:
        where = key_path or paths.default_identity_path()
        print(f"identity: kept {where} (add --identity to delete it)")
    config_path = getattr(args, "config", None) or paths.default_config_path()
    print(
        f"kept: agent.toml ({config_path}), the earnings ledger "
        f"({paths.data_dir() / LEDGER_FILE_NAME}) and the logs ({paths.log_dir()})"
    )
    return code
