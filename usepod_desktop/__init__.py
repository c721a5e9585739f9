"""Use Pod provider agent as a desktop tray app.

`usepod_desktop.core` is the Qt-free core shared by the headless agent and the GUI.
"""

__version__ = "0.1.0"

#: The reference agent release whose protocol we speak, sent as `agent_version` on the wire
#: (auth_response, capabilities, pairing poll); docs/protocol.md, "Versions". The app's own
#: version is `__version__`, sent only as `capabilities.metadata.client`.
PROTOCOL_VERSION = "0.3.3"

APP_NAME = "usepod-desktop"
