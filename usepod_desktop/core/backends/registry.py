"""Builds the adapter for a `[[backends]]` entry from the kinds table (core/kinds.py).

This is the only module that imports the concrete adapters, so `base.py` depends on none of
them and the backends package has no import cycle.
"""

from __future__ import annotations

import importlib

from usepod_desktop.core.backends.base import Backend, MissingKeyError
from usepod_desktop.core.config import BackendConfig
from usepod_desktop.core.kinds import KINDS
from usepod_desktop.core.secrets import SecretStore


def adapter_class(kind: str) -> type[Backend]:
    """The adapter class of `kind` (the table's "module:Class"). KeyError for an unknown kind."""
    module_name, _, class_name = KINDS[kind].adapter.partition(":")
    module = importlib.import_module(f"usepod_desktop.core.backends.{module_name}")
    cls: type[Backend] = getattr(module, class_name)
    return cls


def build_backend(cfg: BackendConfig, secrets: SecretStore) -> Backend:
    """The adapter for one `[[backends]]` entry. Remote kinds read their key from `secrets`
    (a blocking keyring call: from async code run this in a thread). Raises MissingKeyError
    for a remote kind without a key, ValueError for an unknown kind."""
    kind = KINDS.get(cfg.kind)
    if kind is None:
        raise ValueError(f"unknown backend kind {cfg.kind!r}")
    cls = adapter_class(cfg.kind)
    if not kind.remote:
        if not cfg.url:
            raise ValueError(f"{cfg.kind}: a url is required")
        return cls(cfg)  # type: ignore[call-arg]
    if not cfg.api_key_env:
        raise ValueError(f"{cfg.kind}: api_key_env is required")
    lookup = secrets.get(cfg.api_key_env)
    if not lookup.value:
        raise MissingKeyError(cfg, lookup.where_looked)
    return cls(cfg, lookup.value)  # type: ignore[call-arg]
