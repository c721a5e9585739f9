"""A vLLM-like backend on the standard library's `ThreadingHTTPServer`, for the benchmark.

`python benchmarks/stdlib_backend.py PORT TOKENS [--keep-alive]`

Many real servers are not aiohttp: this one is the stdlib's threaded server with its defaults
(HTTP/1.0, a new thread per connection, the connection closed after each answer, Nagle's
algorithm left on, unbuffered writes: the headers and each SSE event are separate `send()`s).
`--keep-alive` answers HTTP/1.1 with chunked encoding and keeps the connection.

The first SSE event of each answer carries `"x_recv_ns"`: `time.monotonic_ns()` (CLOCK_MONOTONIC,
shared by every process of the machine) taken when the request line was read, so a client can
split a first-byte time into "until the backend got the request" and "after".
"""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "bench-model"


class Handler(BaseHTTPRequestHandler):
    tokens = 20
    keep_alive = False

    def parse_request(self) -> bool:
        self.recv_ns = time.monotonic_ns()
        return super().parse_request()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _json(self, status: int, obj: object) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/health":
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": MODEL, "max_model_len": 4096}]})
        else:
            self._json(404, {"error": "not found"})

    def _write(self, data: bytes) -> None:
        if self.keep_alive:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path != "/v1/chat/completions":
            self._json(404, {"error": "not found"})
            return
        n = min(int(body.get("max_tokens") or self.tokens), self.tokens)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        if self.keep_alive:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        common = f'"id":"c1","object":"chat.completion.chunk","created":1,"model":"{MODEL}"'
        self._write(
            f'data: {{{common},"x_recv_ns":{self.recv_ns},"choices":[{{"index":0,'
            f'"delta":{{"role":"assistant","content":""}},"finish_reason":null}}]}}\n\n'.encode()
        )
        for i in range(n):
            self._write(
                f'data: {{{common},"choices":[{{"index":0,"delta":{{"content":" tok{i}"}},'
                f'"finish_reason":null}}]}}\n\n'.encode()
            )
        self._write(
            f'data: {{{common},"choices":[],"usage":{{"prompt_tokens":3,'
            f'"completion_tokens":{n},"total_tokens":{n + 3}}}}}\n\ndata: [DONE]\n\n'.encode()
        )
        if self.keep_alive:
            self.wfile.write(b"0\r\n\r\n")


def main() -> None:
    port, tokens = int(sys.argv[1]), int(sys.argv[2])
    Handler.tokens = tokens
    if "--keep-alive" in sys.argv:
        Handler.keep_alive = True
        Handler.protocol_version = "HTTP/1.1"
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
