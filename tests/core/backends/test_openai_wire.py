"""core/backends/openai_compat.py without a network: what a job's request becomes upstream and
what a whole (non-streamed) answer means. The client that sends it is tested over loopback in
test_execute.py."""

from __future__ import annotations

import json

import pytest

from usepod_desktop.core.backends.base import BackendError, JobRequest
from usepod_desktop.core.backends.openai_compat import (
    encode_request,
    is_error_answer,
    is_json_content_type,
    usage_of_answer,
)
from usepod_desktop.core.protocol import ErrorCode


def test_an_openai_job_is_forced_to_stream_with_usage_on_the_routed_model() -> None:
    job = JobRequest("j1", "routed-id", {})
    body = {"model": "asked", "stream": False, "stream_options": {"x": 1}, "temperature": 0.5}
    endpoint, payload, headers = encode_request(body, job, kind="vllm", supports_anthropic=True)
    assert endpoint == "chat"
    assert headers == {"Content-Type": "application/json"}
    assert json.loads(payload) == {
        "model": "routed-id",
        "stream": True,
        "stream_options": {"x": 1, "include_usage": True},
        "temperature": 0.5,
    }


def test_an_anthropic_job_goes_to_messages_or_is_refused_where_there_is_none() -> None:
    job = JobRequest("j2", "claude-ish", {}, format="anthropic")
    endpoint, payload, headers = encode_request({}, job, kind="vllm", supports_anthropic=True)
    assert endpoint == "messages" and headers["anthropic-version"] == "2023-06-01"
    assert json.loads(payload) == {"model": "claude-ish", "stream": True}
    with pytest.raises(BackendError, match="no Anthropic Messages endpoint") as info:
        encode_request({}, job, kind="oldserver", supports_anthropic=False)
    assert info.value.code == ErrorCode.INTERNAL


def test_an_unknown_format_or_an_unencodable_request_fails_before_any_io() -> None:
    with pytest.raises(BackendError, match="unknown job format"):
        encode_request(
            {}, JobRequest("j", "m", {}, format="grpc"), kind="k", supports_anthropic=True
        )
    with pytest.raises(BackendError, match="cannot be encoded"):
        encode_request({"x": {1, 2}}, JobRequest("j", "m", {}), kind="k", supports_anthropic=True)


def test_whole_answers_error_or_usage() -> None:
    assert is_json_content_type("application/json; charset=utf-8")
    assert is_json_content_type("application/problem+json")
    assert not is_json_content_type("text/event-stream")
    assert is_error_answer(b'{"error": {"message": "no"}}')
    assert not is_error_answer(b'{"error": null, "choices": []}')
    assert not is_error_answer(b"not json")
    usage = usage_of_answer(b'{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}')
    assert (usage.input_tokens, usage.output_tokens) == (3, 4)
