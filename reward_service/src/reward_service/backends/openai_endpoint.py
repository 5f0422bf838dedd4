"""How to reach an OpenAI-compatible judge endpoint: plain data, no HTTP client.

Built by the settings (``REWARD_OPENAI_*``) and carried to the worker in the backend spec's
options. The API key never appears in a repr, a log line, a response or a record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from reward_service.backends.base import InvalidOption

OPTION = "openai_endpoint"  # the key of this config in BackendSpec.options
# Whole numbers and their least value, and numbers of seconds (each above 0): see check().
_COUNTS = {"max_concurrency": 1, "max_retries": 0, "top_logprobs": 1, "max_answer_bytes": 1}
_SECONDS = ("timeout_s", "connect_timeout_s")


def _setting(name: str) -> str:
    return (
        "openai endpoint option top_logprobs"
        if name == "top_logprobs"
        else f"REWARD_OPENAI_{name.upper()}"
    )


def url_refusal(base_url: object) -> str | None:
    """Why ``base_url`` cannot be an endpoint's base URL (never echoing it: it may hold a
    password); None when it can."""
    try:
        parts = urlsplit(base_url) if isinstance(base_url, str) else None
        # .port raises ValueError for a port that is not a number in range
        if parts and parts.scheme in ("http", "https") and parts.hostname and parts.port != 0:
            return None
    except ValueError:
        pass
    return (
        "REWARD_OPENAI_BASE_URL must be an http:// or https:// URL with a host, e.g. "
        "https://api.openai.com/v1 or http://vllm:8000/v1"
    )


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

    def check(self) -> None:
        """InvalidOption naming the first setting the backend cannot use (the settings bound
        the same values; this guards a config built elsewhere)."""
        refusal = url_refusal(self.base_url)
        if refusal is not None:
            raise InvalidOption(refusal)
        for name, least in _COUNTS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise InvalidOption(
                    f"{_setting(name)} must be a whole number >= {least}, not {value!r}"
                )
        for name in _SECONDS:
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 < value < math.inf
            ):
                raise InvalidOption(
                    f"{_setting(name)} must be a number of seconds above 0, not {value!r}"
                )

    def key(self) -> str | None:
        """The API key: from the secret file when one is named (whitespace stripped). A file
        that cannot be read is refused (InvalidOption), never echoed."""
        if self.api_key_file is not None:
            try:
                text = self.api_key_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise InvalidOption(
                    f"REWARD_OPENAI_API_KEY_FILE: cannot read {self.api_key_file} "
                    f"({exc.strerror or type(exc).__name__})"
                ) from None
            except UnicodeDecodeError:
                raise InvalidOption(
                    f"REWARD_OPENAI_API_KEY_FILE: {self.api_key_file} is not UTF-8 text"
                ) from None
            return text.strip() or None
        return self.api_key or None

    @property
    def public_url(self) -> str:
        """The base URL without any user:password part, for logs and provenance."""
        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
