"""A misbehaving OpenAI-compatible judge endpoint: a real HTTP server on loopback, for the
reward service's ``openai`` backend under test (the fake sits at the endpoint seam).

It answers ``POST /v1/chat/completions`` with a whole-token score (``score=N`` in the question's
text picks N, default 7), or misbehaves as a marker in the question's text says:

- ``always-500``: 500 on every try.
- ``trickle``: 200 headers, then one byte every 0.2 s (never finishing).
- ``huge-answer``: 200 with a body far over any sane answer (streamed until the client leaves).
- ``logprob=nan`` / ``logprob=inf`` / ``logprob=positive`` / ``logprob=text``: that score token's
  log-probability is NaN / Infinity / +0.7 / a string (JSON as Python's json writes them).
- ``usage=negative`` / ``usage=huge``: token usage of -5 / 10**30.
- ``echo-key-late``: 400 whose message echoes the bearer token after 290 characters.
- ``echo-key-reason``: 400 with the bearer token as the HTTP reason phrase and no JSON body.
- ``echo-key-text``: a generate-mode answer whose text holds the bearer token.

``model_name`` is what the endpoint reports as its model; ``"echo-key"`` reports the bearer token.
Every request's Authorization header is kept (``authorizations``).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_SCORE = re.compile(r"score=(\d+)")
TRICKLE_LIMIT_S = 60.0  # the server stops trickling after this, whatever the client does


def completion(score: int = 7, *, model: str = "fake-judge-1", logprob: Any = -0.05) -> dict:
    top = [{"token": str(score), "logprob": logprob}]
    top += [{"token": str(s), "logprob": -6.0 - s / 10} for s in (0, 3, 5, 10) if s != score]
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": str(score)},
                "logprobs": {
                    "content": [{"token": str(score), "logprob": logprob, "top_logprobs": top}]
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 100, "completion_tokens": 1, "total_tokens": 101},
    }


class FakeJudgeEndpoint:
    def __init__(self, model_name: str = "fake-judge-1") -> None:
        self.model_name = model_name
        self.authorizations: list[str] = []
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                endpoint.answer(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @contextlib.contextmanager
    def running(self) -> Iterator[FakeJudgeEndpoint]:
        self.thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()

    # ------------------------------------------------------------------ answers

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = json.loads(handler.rfile.read(length) or b"{}")
        token = (handler.headers.get("Authorization") or "").removeprefix("Bearer ")
        with self.lock:
            self.authorizations.append(handler.headers.get("Authorization") or "")
        text = json.dumps(body.get("messages", []))
        found = _SCORE.search(text)
        score = int(found.group(1)) if found else 7
        model = token if self.model_name == "echo-key" else self.model_name
        if "always-500" in text:
            return self._json(handler, 500, {"error": {"message": "internal error"}})
        if "echo-key-late" in text:
            message = "x" * 290 + f" the key {token} is not allowed to see this image"
            return self._json(handler, 400, {"error": {"message": message}})
        if "echo-key-reason" in text:
            handler.send_response(400, f"Bad key {token}")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return None
        if "trickle" in text:
            return self._trickle(handler)
        if "huge-answer" in text:
            return self._huge(handler)
        answer = completion(score, model=model)
        first = answer["choices"][0]["logprobs"]["content"][0]
        for marker, value in (
            ("logprob=nan", float("nan")),
            ("logprob=inf", float("inf")),
            ("logprob=positive", 0.7),
            ("logprob=text", "high"),
        ):
            if marker in text:
                first["logprob"] = value
                first["top_logprobs"][0]["logprob"] = value
        if "usage=negative" in text:
            answer["usage"] = {"prompt_tokens": -5, "completion_tokens": -1, "total_tokens": -6}
        if "usage=huge" in text:
            answer["usage"] = {"prompt_tokens": 10**30, "completion_tokens": 1}
        if "echo-key-text" in text:
            answer["choices"][0]["message"]["content"] = f"Score: {score} (key {token})"
        return self._json(handler, 200, answer)

    @staticmethod
    def _json(handler: BaseHTTPRequestHandler, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()  # NaN and Infinity as Python writes them
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    @staticmethod
    def _trickle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        deadline = time.monotonic() + TRICKLE_LIMIT_S
        with contextlib.suppress(OSError):
            while time.monotonic() < deadline:
                handler.wfile.write(b" ")
                handler.wfile.flush()
                time.sleep(0.2)
        handler.close_connection = True

    @staticmethod
    def _huge(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        chunk = b" " * 65536
        framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        with contextlib.suppress(OSError):
            for _ in range(2000):  # 128 MiB at most
                handler.wfile.write(framed)
        handler.close_connection = True
