"""A scripted OpenAI-compatible chat-completions server for tests.

Real HTTP on 127.0.0.1 (``http.server`` in a thread, port chosen by the OS),
so the tests exercise the real ``openai`` client end to end.  Each request to
``POST /v1/chat/completions`` takes the next behaviour from a script:

- a route: the first queue whose key occurs in the request's last user
  message (so concurrent heads can be scripted independently), else
- the default queue, else
- ``default`` (a reply with one good program unless told otherwise).

Behaviours: `Reply` (an answer text), `Status` (an HTTP error, optionally
with ``retry-after``), `Slow` (wait, then behave), `Garbage` (a 200 whose body
is not JSON).  Every request is recorded (`requests`, `count`).
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Union

GOOD_PROGRAM = "```attn\nprogram previous {\n    fallback self\n    1 * [k == q - 1]\n}\n```"


@dataclass(frozen=True)
class Reply:
    text: str | None  # None: a message whose content is null
    prompt_tokens: int = 100
    completion_tokens: int = 20


@dataclass(frozen=True)
class Status:
    code: int
    retry_after: str | None = None
    message: str = "scripted error"


@dataclass(frozen=True)
class Slow:
    delay_s: float
    then: "Behaviour"


@dataclass(frozen=True)
class Garbage:
    body: str = "<html>bad gateway</html>"


Behaviour = Union[Reply, Status, Slow, Garbage]


class FakeLLMServer:
    def __init__(self, script=(), routes: dict[str, list] | None = None, default: Behaviour | None = None):
        self.queue = deque(script)
        self.routes = {key: deque(items) for key, items in (routes or {}).items()}
        self.default = default if default is not None else Reply(GOOD_PROGRAM)
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {}
                behaviour = server._next(self.path, body)
                server._respond(self, body, behaviour)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    # -- lifecycle
    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> "FakeLLMServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- script
    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def _next(self, path: str, body: dict) -> Behaviour:
        messages = body.get("messages") or []
        last_user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        first_user = next((m.get("content", "") for m in messages if m.get("role") == "user"), "")
        with self._lock:
            self.requests.append({"path": path, "body": body})
            if not path.endswith("/chat/completions"):
                return Status(404, message=f"no route {path}")
            for key, queue in self.routes.items():
                if queue and (key in last_user or key in first_user):
                    return queue.popleft()
            if self.queue:
                return self.queue.popleft()
            return self.default

    def _respond(self, handler: BaseHTTPRequestHandler, body: dict, behaviour: Behaviour) -> None:
        if isinstance(behaviour, Slow):
            time.sleep(behaviour.delay_s)
            behaviour = behaviour.then
        try:
            if isinstance(behaviour, Status):
                payload = json.dumps({"error": {"message": behaviour.message, "type": "scripted", "code": behaviour.code}})
                headers = {"retry-after": behaviour.retry_after} if behaviour.retry_after is not None else {}
                self._send(handler, behaviour.code, payload.encode(), "application/json", headers)
            elif isinstance(behaviour, Garbage):
                self._send(handler, 200, behaviour.body.encode(), "application/json", {})
            else:
                payload = {
                    "id": f"chatcmpl-{len(self.requests)}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "fake"),
                    "choices": [{
                        "index": 0,
                        "message": {"role": "assistant", "content": behaviour.text},
                        "finish_reason": "stop",
                    }],
                    "usage": {
                        "prompt_tokens": behaviour.prompt_tokens,
                        "completion_tokens": behaviour.completion_tokens,
                        "total_tokens": behaviour.prompt_tokens + behaviour.completion_tokens,
                    },
                }
                self._send(handler, 200, json.dumps(payload).encode(), "application/json", {})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): nothing to answer

    @staticmethod
    def _send(handler, code: int, data: bytes, content_type: str, headers: dict) -> None:
        handler.send_response(code)
        handler.send_header("content-type", content_type)
        handler.send_header("content-length", str(len(data)))
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)
        handler.wfile.flush()
