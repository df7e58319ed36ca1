"""The service's settings: one frozen dataclass mirroring ``serve.py``'s flags."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_QUERY_CHARS = 100_000


@dataclass(frozen=True)
class Settings:
    """Runtime settings of the router service.

    Attributes:
        host: interface to bind (``serve.py --host``); loopback by default.
        port: TCP port (``--port``); 0 picks a free one.
        max_body_bytes: largest accepted request body in bytes (``--max-body-bytes``);
            a larger body is answered 413.
        max_query_chars: largest accepted query, in Unicode code points
            (``--max-query-chars``); a longer query is answered 413.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS

    def __post_init__(self) -> None:
        """Reject settings that cannot work, with a message naming the flag."""
        if not self.host:
            raise ValueError("--host must not be empty")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in 0..65535, got {self.port}")
        if self.max_body_bytes < 1:
            raise ValueError(f"--max-body-bytes must be >= 1, got {self.max_body_bytes}")
        if self.max_query_chars < 1:
            raise ValueError(f"--max-query-chars must be >= 1, got {self.max_query_chars}")
