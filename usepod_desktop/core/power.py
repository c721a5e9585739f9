"""Keeping macOS from napping the agent while it serves.

App Nap slows the timers and network of an app with no visible window, which is the tray app's
normal state: the 15 s heartbeat would slip and jobs relayed through the coordinator would
stall. While the agent is connected (or reconnecting) the app holds an activity assertion,
`-[NSProcessInfo beginActivityWithOptions:reason:]` with
`NSActivityUserInitiatedAllowingIdleSystemSleep`: no App Nap, but the Mac may still sleep when
idle (keeping a whole machine awake is the user's choice, not ours). It is ended as soon as the
agent stops.

The Objective-C runtime is reached through ctypes (:class:`MacActivity`, no PyObjC dependency);
:class:`ActivityGuard` holds at most one assertion through the small :class:`Activity` seam, so
tests drive it with a recording fake on any OS. Other systems do not nap a process: the guard is
a no-op there. No Qt here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from typing import Any, Protocol

log = logging.getLogger(__name__)

#: NSActivityUserInitiated (0x00FFFFFF) without NSActivityIdleSystemSleepDisabled (1 << 20).
NS_ACTIVITY_USER_INITIATED_ALLOWING_IDLE_SYSTEM_SLEEP = 0x00FFFFFF & ~(1 << 20)
REASON = "Use Pod is serving AI inference jobs (heartbeat and job relay must not be delayed)"


class Activity(Protocol):
    def begin(self, reason: str) -> Any:
        """Start an assertion; returns a token for :meth:`end`."""

    def end(self, token: Any) -> None:
        """End the assertion `token`."""


class MacActivity:
    """`NSProcessInfo` activity assertions through the Objective-C runtime (macOS only)."""

    def __init__(self) -> None:
        objc_path = ctypes.util.find_library("objc")
        if objc_path is None:
            raise OSError("libobjc not found")
        self._objc = ctypes.cdll.LoadLibrary(objc_path)
        ctypes.cdll.LoadLibrary("/System/Library/Frameworks/Foundation.framework/Foundation")
        self._objc.objc_getClass.restype = ctypes.c_void_p
        self._objc.objc_getClass.argtypes = [ctypes.c_char_p]
        self._objc.sel_registerName.restype = ctypes.c_void_p
        self._objc.sel_registerName.argtypes = [ctypes.c_char_p]
        self._send_address = ctypes.cast(self._objc.objc_msgSend, ctypes.c_void_p).value

    def _send(self, restype: Any, receiver: int, selector: str, *args: tuple[Any, Any]) -> Any:
        # objc_msgSend must be called through a prototype with the exact argument types
        # (arm64 passes variadic and fixed arguments differently).
        prototype = ctypes.CFUNCTYPE(
            restype, ctypes.c_void_p, ctypes.c_void_p, *(kind for kind, _ in args)
        )
        function = prototype(self._send_address)
        sel = self._objc.sel_registerName(selector.encode())
        return function(receiver, sel, *(value for _, value in args))

    def _class(self, name: str) -> int:
        return int(self._objc.objc_getClass(name.encode()))

    def _process_info(self) -> int:
        return int(self._send(ctypes.c_void_p, self._class("NSProcessInfo"), "processInfo"))

    def begin(self, reason: str) -> Any:
        text = self._send(
            ctypes.c_void_p,
            self._class("NSString"),
            "stringWithUTF8String:",
            (ctypes.c_char_p, reason.encode("utf-8")),
        )
        token = self._send(
            ctypes.c_void_p,
            self._process_info(),
            "beginActivityWithOptions:reason:",
            (ctypes.c_uint64, NS_ACTIVITY_USER_INITIATED_ALLOWING_IDLE_SYSTEM_SLEEP),
            (ctypes.c_void_p, text),
        )
        if not token:
            raise OSError("beginActivityWithOptions:reason: returned nil")
        # The token is autoreleased: keep it alive until endActivity:.
        self._send(ctypes.c_void_p, token, "retain")
        return token

    def end(self, token: Any) -> None:
        self._send(None, self._process_info(), "endActivity:", (ctypes.c_void_p, token))
        self._send(None, token, "release")


class ActivityGuard:
    """Holds one activity assertion while :meth:`update` is told the agent needs it."""

    def __init__(self, platform: str | None = None, activity: Activity | None = None) -> None:
        self.platform = platform or sys.platform
        self._activity = activity
        self._token: Any = None
        self._failed = False

    @property
    def held(self) -> bool:
        return self._token is not None

    def _backend(self) -> Activity | None:
        if self._activity is None and self.platform == "darwin" and not self._failed:
            try:
                self._activity = MacActivity()
            except Exception as exc:
                self._failed = True
                log.warning("cannot keep App Nap away (%s); serving may slow down", exc)
        return self._activity

    def update(self, needed: bool) -> None:
        """Hold the assertion when `needed`, end it otherwise (idempotent)."""
        if needed and self._token is None:
            backend = self._backend()
            if backend is None:
                return
            try:
                self._token = backend.begin(REASON)
                log.debug("App Nap assertion taken")
            except Exception as exc:
                self._failed = True
                self._activity = None
                log.warning("cannot keep App Nap away (%s); serving may slow down", exc)
        elif not needed and self._token is not None:
            token, self._token = self._token, None
            try:
                assert self._activity is not None
                self._activity.end(token)
                log.debug("App Nap assertion ended")
            except Exception as exc:
                log.warning("cannot end the App Nap assertion: %s", exc)

    def release(self) -> None:
        self.update(False)
