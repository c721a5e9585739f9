"""Nothing that was scaffolding while the app was built in parallel ships any more."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import usepod_desktop
from usepod_desktop import cli
from usepod_desktop.core.agent import Agent
from usepod_desktop.sandbox.demo import SandboxSession

PACKAGE = Path(usepod_desktop.__file__).parent


def test_no_shipped_text_says_a_part_is_not_built() -> None:
    hits = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "not built yet" in path.read_text(encoding="utf-8")
    ]
    assert hits == []


def _import_error_handlers(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and node.type is not None:
            names = [n.id for n in ast.walk(node.type) if isinstance(n, ast.Name)]
            if {"ImportError", "ModuleNotFoundError"} & set(names):
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("module", ["gui/controller.py", "cli.py", "commands/gui.py"])
def test_no_import_guard_for_modules_that_always_ship(module: str) -> None:
    assert _import_error_handlers(PACKAGE / module) == []


def test_every_subcommand_module_exists() -> None:
    for name in cli.COMMANDS:
        assert hasattr(cli._command_module(name), "add_parser"), name
    with pytest.raises(ModuleNotFoundError):
        cli._command_module("no_such_command")


def test_dead_api_is_gone() -> None:
    from usepod_desktop.gui import tasks

    assert not hasattr(Agent, "from_file")
    assert not hasattr(tasks, "wait_pending")
    assert not hasattr(SandboxSession, "is_demo")
