"""Serve alongside the owner: the `[serving]` rules (policy), the sensors that feed them, the
loop that applies them to the agent, and the local control channel (pause/resume/status)."""
