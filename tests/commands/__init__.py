"""Tests of the CLI commands, one module per `usepod_desktop/commands/<command>.py`."""
