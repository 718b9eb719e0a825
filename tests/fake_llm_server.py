"""A scripted OpenAI-compatible chat-completions server for tests.

Real HTTP on 127.0.0.1 (``http.server`` in a thread, port chosen by the OS),
so the tests exercise the real ``openai`` client end to end.  Each request to
``POST /v1/chat/completions`` takes the next behaviour from a script:

- a route: the first queue whose key occurs in the request's last user
  message (so concurrent heads can be scripted independently), else
- the default queue, else
- ``default`` (a reply with one good program unless told otherwise).

Behaviours: `Reply` (an answer text; ``None`` for a message whose content is
null), `Status` (an HTTP error such as 500 or 429, optionally with
``retry-after``), `Slow` (wait, then behave: beyond the client's timeout it
is a timeout), `Garbage` (a 200 whose body is not JSON), `Malformed` (a 200
whose JSON is not a chat completion, e.g. no choices).  Every request is
recorded (`requests`, `count`).

Answers the real models gave (issue 15) are kept as constants, so tests
replay them: `NO_TERMS` (a program with no terms, which a small model then
repeated word for word as its "repair") and `ECHOED_LISTING` (a program
followed by the prompt's own sequence listing echoed back).
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


@dataclass(frozen=True)
class Malformed:
    """A 200 with a JSON body that is not a usable chat completion."""

    payload: str = '{"id": "x", "object": "chat.completion", "choices": []}'


Behaviour = Union[Reply, Status, Slow, Garbage, Malformed]

#: Qwen2.5-Coder-1.5B on head 5.3: the invalid program (it was sent again, identical, as the repair)
NO_TERMS = "```attn\nprogram uniform { fallback self }\n```"

#: Qwen2.5-Coder-1.5B's refinement answer on head 16.0: one program, then the prompt's listing echoed back
ECHOED_LISTING = (
    "```attn\n# previous token with a little sink\nprogram prev_sink {\n    0.9 * [k == q - 1]\n"
    "    + 0.1 * [k == 0]\n}\n```\n\n"
    "Sequences where it fits worst:\nSequence 3 (IoU 0.412): 0:Once 1:upon 2:a 3:time\n"
    "  the top keys differ on 2 of 3 rows; among the tokens shown (strongest disagreements):\n"
    "  q=2 \"a\": head -> k=0 \"Once\" (0.61); program -> k=1 \"upon\" (0.90)\n"
    "```\nSequences where it fits best:\nSequence 1 (IoU 0.9): 0:The 1:cat\n```\n"
    "# The best program so far\nMean soft IoU on the synthesis sequences: 0.625 (1 = perfect).\n"
)


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
            elif isinstance(behaviour, Malformed):
                self._send(handler, 200, behaviour.payload.encode(), "application/json", {})
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
