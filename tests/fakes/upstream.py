"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests: the outside world, faked.

``FakeUpstream(reply)`` serves ``/v1/models`` and ``/v1/chat/completions`` from a thread; ``reply``
maps the parsed request body to a ``Reply`` (status, JSON body or raw bytes, delay), so a test
programs latency, errors and malformed output per request. Requests are recorded.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    raw: bytes | None = None
    delay_s: float = 0.0
    events: list[str] | None = None  # server-sent events (each a ``data:`` payload), sent as a stream
    event_delay_s: float = 0.0


def sse_events(pieces: list[str], finish_reason: str | None = "stop", prompt_tokens: int = 5,
               done: bool = True, model: str = "fake") -> list[str]:
    """The ``data:`` payloads of a streamed completion: role, one chunk per piece, finish, usage, [DONE].

    ``finish_reason=None`` and ``done=False`` make a stream cut short, as a dying server sends it.
    """
    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return json.dumps({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    out = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": p}) for p in pieces]
    if finish_reason is not None:
        out.append(chunk({}, finish_reason))
        out.append(json.dumps({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
                               "choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(pieces),
                                                        "total_tokens": prompt_tokens + len(pieces)}}))
    if done:
        out.append("[DONE]")
    return out


def completion(content: str | None = "ok", tool_calls: list[dict[str, Any]] | None = None,
               finish_reason: str = "stop", prompt_tokens: int = 5, completion_tokens: int = 3,
               model: str = "fake") -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


@dataclass
class FakeUpstream:
    reply: Callable[[dict[str, Any]], Reply] = field(default=lambda body: Reply(body=completion()))
    models: tuple[str, ...] = ("fake",)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, reply: Reply) -> None:
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.events is not None:
                    # No content-length and the connection closes after: the body ends at EOF, so a
                    # stream without [DONE] looks exactly like a server that died mid-answer.
                    self.send_response(reply.status)
                    self.send_header("content-type", "text/event-stream")
                    self.send_header("connection", "close")
                    self.end_headers()
                    for event in reply.events:
                        if reply.event_delay_s:
                            time.sleep(reply.event_delay_s)
                        self.wfile.write(f"data: {event}\n\n".encode())
                        self.wfile.flush()
                    self.close_connection = True
                    return
                data = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._send(Reply(body={"object": "list", "data": [{"id": m, "object": "model"} for m in owner.models]}))
                else:
                    self._send(Reply(404, {"error": {"message": "not found"}}))

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                owner.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(Reply(404, {"error": {"message": "not found"}}))
                    return
                self._send(owner.reply(body))

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
