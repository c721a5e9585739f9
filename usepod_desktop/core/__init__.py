"""The Qt-free core: config, identity, secrets, backends, discovery, link, executor.

Nothing under this package may import PySide6 or qasync (a test checks it).
"""
