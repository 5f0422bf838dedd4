"""An OpenAI-compatible judge endpoint that keeps every request it answers: a real HTTP server on
loopback, for end-to-end tests of what the reward service's ``openai`` backend shows the judge
(the rendered messages, images included). The fake sits at the endpoint seam.

Each answer carries a score for every name the built-in benchmark protocols read, derived from
the question's text (so scores vary across questions, and a rerun gets the same ones): a JSON
object with ``consistency_score``, ``instruction_score``, ``knowledge_score`` and
``quality_score`` (KRIS-Bench's extractors), then ``Final Score: N`` (RISEBench's extract), N in
0/1 for the prompts that ask for 0/1.
"""

from __future__ import annotations

import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.fake_openai_judge import FakeJudgeEndpoint, completion


def answer_text(question: str) -> str:
    score = 1 + zlib.crc32(question.encode()) % 5
    final = score % 2 if "(0/1" in question or "0 or 1" in question else score
    scores = {
        "consistency_score": score,
        "instruction_score": 1 + (score + 1) % 5,
        "knowledge_score": 1 + (score + 2) % 5,
        "quality_score": 1 + (score + 3) % 5,
    }
    return f"{json.dumps(scores)}\n**Final Score:** {final}"


class RecordingJudgeEndpoint(FakeJudgeEndpoint):
    def __init__(self, model_name: str = "recording-judge") -> None:
        super().__init__(model_name)
        self.requests: list[list[dict[str, Any]]] = []  # each request's messages
        self._recording = threading.Lock()

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = json.loads(handler.rfile.read(length) or b"{}")
        messages = body.get("messages", [])
        with self._recording:
            self.requests.append(messages)
        text = next(
            (
                part["text"]
                for message in messages
                if isinstance(message.get("content"), list)
                for part in message["content"]
                if part.get("type") == "text"
            ),
            "",
        )
        made = completion(7, model=self.model_name)
        made["choices"][0]["message"]["content"] = answer_text(text)
        return self._json(handler, 200, made)

    def user_turns(self) -> list[list[dict[str, Any]]]:
        """Every request's user content parts, in order."""
        with self._recording:
            return [
                list(message["content"])
                for messages in self.requests
                for message in messages
                if message.get("role") == "user" and isinstance(message.get("content"), list)
            ]
