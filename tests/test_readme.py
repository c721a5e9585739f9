"""The README's agent.toml example is a file the agent accepts, with the units stated."""

from __future__ import annotations

import re
from pathlib import Path

from usepod_desktop.core.config import parse_config

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_agent_toml_example_loads_and_states_units() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("### agent.toml", 1)[1]
    example = re.search(r"```toml\n(.*?)```", section, re.S)
    assert example is not None
    config = parse_config(example.group(1))
    assert config.pricing.default_input_per_1m == 500_000
    assert "integer micro-USD per 1M" in section and "$0.50 per million tokens" in section
    for field in (
        "coordinator.url",
        "[[backends]] kind",
        "limits.max_concurrent",
        "[model_aliases]",
    ):
        assert f"`{field}" in section, field
    assert "compiles llama.cpp" in text and "minutes" in text
