"""Subcommands of `usepod-desktop`: one module each, `add_parser()` + `run()`."""
