"""The settings window, one module per tab (see window.py for how they fit together).

- `window.py`: :class:`SettingsWindow`: loading, Apply (the core checks the whole draft),
  the repair mode for an agent.toml that does not validate.
- `tab.py`: the :class:`SettingsTab` protocol every tab follows, and the :class:`FieldMap`
  from a core problem's field path to the widget that shows it.
- `coordinator.py`, `backends.py` (+ `backend_dialogs.py`), `pricing.py`, `keys.py`,
  `limits.py`, `serving.py`, `app_tab.py`: the tabs.
"""

from usepod_desktop.gui.settings.window import TAB_NAMES, SettingsWindow

__all__ = ["TAB_NAMES", "SettingsWindow"]
