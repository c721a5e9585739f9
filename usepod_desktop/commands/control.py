"""Shared by `pause`, `resume` and `status`: talk to the running agent over the local control
channel (a 0600 Unix socket / a per-user named pipe; never TCP) and print its status.

Exit codes: 0 done, 1 the agent refused the request, 2 bad arguments, 3 no agent running.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

NO_AGENT_EXIT = 3


def send(payload: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
    from usepod_desktop.core.serving.control import AgentNotRunning, control_address, request

    try:
        answer = request(payload)
    except AgentNotRunning:
        print(
            "no usepod-desktop agent is running for this user "
            f"(nothing answers on {control_address()})",
            file=sys.stderr,
        )
        return NO_AGENT_EXIT, None
    except (OSError, RuntimeError) as exc:
        print(f"error: the agent did not answer properly: {exc}", file=sys.stderr)
        return 1, None
    if not answer.get("ok"):
        print(f"error: {str(answer.get('error'))[:300]}", file=sys.stderr)
        return 1, None
    status = answer.get("status")
    return 0, status if isinstance(status, dict) else {}


def print_status(status: dict[str, Any], *, as_json: bool = False) -> None:
    if as_json:
        print(json.dumps(status, indent=2, sort_keys=True))
        return
    state = status.get("state", "?")
    reason = status.get("paused_because") or status.get("reason") or ""
    print(f"state: {state}" + (f" ({reason})" if reason else ""))
    paused_by = status.get("paused_by") or []
    if paused_by:
        print(f"paused by: {', '.join(paused_by)}")
    if status.get("resumes_at"):
        print(f"resumes at: {_local(status['resumes_at'])}")
    models = status.get("models") or []
    print(f"models advertised: {', '.join(models) if models else 'none'}")
    print(f"jobs running: {status.get('jobs_running', 0)}")
    beat = status.get("last_heartbeat_s_ago")
    if isinstance(beat, int | float):
        print(f"last heartbeat sent: {beat:.0f} s ago")
    idle = status.get("idle_seconds")
    if status.get("idle_source") not in (None, "not needed"):
        shown = f"{idle:.0f} s" if isinstance(idle, int | float) else "unknown"
        print(f"user idle: {shown} ({status.get('idle_source')})")
    for gpu in status.get("gpus") or []:
        print(f"GPU: {_gpu(gpu)}")
    if status.get("gpu_sensor"):
        print(f"GPU: {status['gpu_sensor']}")
    for line in status.get("gpu_memory") or []:
        print(f"GPU memory: {line}")
    for note in status.get("notes") or []:
        print(f"note: {note}")


def _local(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M %Z")
    except ValueError:
        return iso


def _gpu(g: dict[str, Any]) -> str:
    from usepod_desktop.core.serving.sensors import GpuReading

    return GpuReading.from_status(g).summary(labelled=True)
