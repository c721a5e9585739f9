"""core/errors.py: one documented tree of the agent's exceptions."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import usepod_desktop.core
from usepod_desktop.core import errors
from usepod_desktop.core.errors import UsePodError, UserFacingError


def _core_exception_classes() -> set[type[BaseException]]:
    found: set[type[BaseException]] = set()
    for info in pkgutil.walk_packages(usepod_desktop.core.__path__, "usepod_desktop.core."):
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, UsePodError) and obj.__module__.startswith("usepod_desktop.core"):
                found.add(obj)
    return found


def test_every_agent_error_is_drawn_in_the_tree() -> None:
    tree = errors.__doc__ or ""
    missing = sorted(c.__name__ for c in _core_exception_classes() if f" {c.__name__} " not in tree)
    assert missing == []


def test_the_tree_matches_the_classes() -> None:
    from usepod_desktop.core.autostart import AutostartError
    from usepod_desktop.core.backends.base import BackendError, MissingKeyError
    from usepod_desktop.core.config import ConfigChangedError
    from usepod_desktop.core.ledger import LedgerError
    from usepod_desktop.core.pairing import PairingCancelled, PairingError, PairingExpired
    from usepod_desktop.core.service import NotInstalled, ServiceError
    from usepod_desktop.core.updates import UpdateCheckError

    # the old import locations still give the one class
    assert MissingKeyError is errors.MissingKeyError
    assert LedgerError is errors.LedgerError
    assert PairingError is errors.PairingError
    assert ServiceError is errors.ServiceError
    assert AutostartError is errors.AutostartError
    assert UpdateCheckError is errors.UpdateCheckError
    for cls in (
        errors.ConfigError,
        errors.IdentityError,
        errors.SecretStoreError,
        MissingKeyError,
        LedgerError,
        PairingError,
        ServiceError,
        AutostartError,
        UpdateCheckError,
    ):
        assert issubclass(cls, UserFacingError), cls
    assert issubclass(ConfigChangedError, errors.ConfigError)
    assert issubclass(PairingExpired, PairingError)
    assert issubclass(PairingCancelled, PairingError)
    assert issubclass(NotInstalled, ServiceError)
    assert issubclass(BackendError, UsePodError)
    assert not issubclass(BackendError, UserFacingError)
