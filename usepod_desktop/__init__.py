"""Use Pod provider agent as a desktop tray app.

`usepod_desktop.core` is the Qt-free core shared by the headless agent and the GUI.
"""

__version__ = "0.1.0"

#: The reference agent's protocol level we speak (sent as `agent_version` on the wire).
PROTOCOL_VERSION = "0.3.3"

APP_NAME = "usepod-desktop"
