"""`usepod-desktop doctor`: why am I not earning? (Qt-free; the GUI's Diagnose window and the
CLI share it.)

- :mod:`.checks`: the checks (configuration, coordinator, serving, backends and model ids,
  prices against the market, recent work, versions), each OK / WARN / FAIL with a reason and
  a fix;
- :mod:`.market`: the public market price list (OpenRouter's model list, cached a day);
- :mod:`.bundle`: the support bundle (a zip with secrets removed).
"""

from usepod_desktop.core.doctor.checks import (
    Action,
    Check,
    DoctorOptions,
    Report,
    Status,
    looks_like_local_tag,
    run_doctor,
)

__all__ = [
    "Action",
    "Check",
    "DoctorOptions",
    "Report",
    "Status",
    "looks_like_local_tag",
    "run_doctor",
]
