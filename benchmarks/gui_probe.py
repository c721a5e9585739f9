"""GUI-mode probe for benchmarks/run.py: the real tray app (offscreen), plus a lag meter.

`python benchmarks/gui_probe.py AGENT_TOML LAG_SECONDS` runs the app's loop (gui/loop.py: ready
callbacks in slices); with `USEPOD_BENCH_GUI_LOOP=qasync` in the environment, qasync's own
loop (one Qt timer per callback), to compare. It prints one JSON line when the tray icon
is shown, one when it starts measuring, and one with the event-loop lag figures (a QTimer asked
to fire every 10 ms; lag = actual interval - 10 ms), then runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    created = psutil.Process().create_time()
    config, lag_seconds = sys.argv[1], float(sys.argv[2])
    import os

    import qasync
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from usepod_desktop.core.events import JobFinished
    from usepod_desktop.gui.controller import AppController, StartOptions
    from usepod_desktop.gui.loop import SlicedQEventLoop

    app = QApplication(sys.argv[:1])
    app.setQuitOnLastWindowClosed(False)
    plain = os.environ.get("USEPOD_BENCH_GUI_LOOP") == "qasync"
    loop = qasync.QEventLoop(app) if plain else SlicedQEventLoop(app)
    asyncio.set_event_loop(loop)
    controller = AppController()
    finished = [0]

    def emit(obj: dict[str, object]) -> None:
        print(json.dumps(obj), flush=True)

    async def run() -> None:
        controller.show_ui(tray_available=True)
        emit({"tray_shown_s": time.time() - created})
        await controller.start(StartOptions(config=config, allow_insecure=True))
        assert controller.agent is not None
        controller.agent.events.subscribe(
            lambda e: (
                finished.__setitem__(0, finished[0] + 1) if isinstance(e, JobFinished) else None
            )
        )
        await asyncio.sleep(3)
        emit({"ready": True})
        intervals: list[float] = []
        last = [time.perf_counter()]
        timer = QTimer()
        timer.setInterval(10)

        def tick() -> None:
            now = time.perf_counter()
            intervals.append(now - last[0])
            last[0] = now

        timer.timeout.connect(tick)
        start_jobs = finished[0]
        timer.start()
        await asyncio.sleep(lag_seconds)
        timer.stop()
        lags = sorted(max(0.0, i - 0.010) * 1000 for i in intervals[1:])
        emit(
            {
                "ticks": len(lags),
                "p50_ms": lags[len(lags) // 2],
                "p99_ms": lags[min(len(lags) - 1, int(len(lags) * 0.99))],
                "max_ms": lags[-1],
                "jobs_finished": finished[0] - start_jobs,
            }
        )
        stop = asyncio.Event()
        signal.signal(signal.SIGTERM, lambda *_: loop.call_soon_threadsafe(stop.set))
        wake = QTimer()
        wake.start(200)
        await stop.wait()
        await controller.shutdown()

    with loop:
        loop.run_until_complete(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
