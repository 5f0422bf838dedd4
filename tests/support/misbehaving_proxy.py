"""A replica that misbehaves: a real HTTP proxy on loopback in front of a real service, which
passes everything through except the job calls (POST), which it answers as ``mode`` says:

- ``pass``: unchanged;
- ``garbage``: 200 with a body that is not the shared schema;
- ``busy``: 429 with Retry-After (the replica refuses work);
- ``revision``: unchanged, but the answer's model revision rewritten (the replica was redeployed
  with another revision mid-run); its /v1/info still names the old one, as a replica that
  changes between probes does.

``posts`` counts the job calls it was sent.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


class MisbehavingProxy:
    def __init__(self, upstream: str, mode: str = "pass") -> None:
        self.upstream = upstream.rstrip("/")
        self.mode = mode
        self.posts = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                proxy.forward(self, "GET")

            def do_POST(self) -> None:
                proxy.forward(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.http = httpx.Client(timeout=300)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @contextlib.contextmanager
    def running(self) -> Iterator[MisbehavingProxy]:
        self.thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()
            self.http.close()

    def forward(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        if method == "POST":
            with self.lock:
                self.posts += 1
            if self.mode == "garbage":
                return self._send(handler, 200, b'{"ok": "yes", "image": 17}', {})
            if self.mode == "busy":
                refusal = {"error": {"type": "queue_full", "message": "busy", "retryable": True}}
                headers = {"Retry-After": "30"}
                return self._send(handler, 429, json.dumps(refusal).encode(), headers)
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP | {"host"}}
        answer = self.http.request(
            method, self.upstream + handler.path, content=body, headers=headers
        )
        content = answer.content
        if method == "POST" and self.mode == "revision" and answer.status_code == 200:
            data = json.loads(content)
            data["model"]["revision"] = "redeployed-other-revision"
            content = json.dumps(data).encode()
        kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
        return self._send(handler, answer.status_code, content, kept)

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str]
    ) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
