"""How to reach an OpenAI-compatible judge endpoint: plain data, no HTTP client.

Built by the settings (``REWARD_OPENAI_*``) and carried to the worker in the backend spec's
options. The API key never appears in a repr, a log line, a response or a record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

OPTION = "openai_endpoint"  # the key of this config in BackendSpec.options


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    base_url: str  # e.g. https://api.openai.com/v1 or http://vllm:8000/v1
    api_key: str | None = field(default=None, repr=False)
    api_key_file: Path | None = None  # read at load time; wins over api_key when set
    max_concurrency: int = 8  # requests in flight at once, per replica
    timeout_s: float = 120.0  # one try, end to end (headers and body), a hard deadline
    connect_timeout_s: float = 10.0
    max_retries: int = 4  # on 429, 5xx and connection errors; never on other 4xx
    top_logprobs: int = 20  # OpenAI's maximum; expected mode reads them
    max_answer_bytes: int = 8 * 1024 * 1024  # a larger answer is not read

    def key(self) -> str | None:
        """The API key: from the secret file when one is named (whitespace stripped)."""
        if self.api_key_file is not None:
            return self.api_key_file.read_text(encoding="utf-8").strip() or None
        return self.api_key or None

    @property
    def public_url(self) -> str:
        """The base URL without any user:password part, for logs and provenance."""
        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
