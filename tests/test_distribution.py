"""The installed package is complete: every subpackage is listed for setuptools, and the tray
icons from resources/ are installed as usepod_desktop/resources (where the GUI looks)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_in_the_distribution() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(meta["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "usepod_desktop").rglob("__init__.py")
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert meta["tool"]["setuptools"]["package-dir"]["usepod_desktop.resources"] == "resources"


def test_tray_icons_are_shipped_for_every_state() -> None:
    from usepod_desktop.core.events import AgentState

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = meta["tool"]["setuptools"]["package-data"]["usepod_desktop.resources"]
    shipped = {p for pattern in patterns for p in (ROOT / "resources").glob(pattern)}
    for state in AgentState:
        for variant in ("light", "dark"):
            icon = ROOT / "resources" / "icons" / f"tray-{state.value}-on-{variant}.svg"
            assert icon in shipped, icon
