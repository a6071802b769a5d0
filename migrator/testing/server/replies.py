"""What a route of the fake vLLM server returns: a reply, an error in vLLM's JSON shape, or a dropped connection."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

_ERROR_TYPES = {
    400: "BadRequestError",
    401: "UnauthorizedError",
    404: "NotFoundError",
    429: "RateLimitError",
    500: "InternalServerError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
    504: "GatewayTimeoutError",
}


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class _Abort(Exception):
    """Drop the connection: optionally after *partial* bytes, with a TCP RST."""

    def __init__(self, partial: bytes = b"", reset: bool = False):
        super().__init__("connection dropped")
        self.partial = partial
        self.reset = reset


class _ApiError(Exception):
    """An error vLLM reports in its JSON error shape."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, err_type: Optional[str] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.err_type = err_type or _ERROR_TYPES.get(status, "Error")


def _json_bytes(obj: Any) -> bytes:
    # Compact like Starlette's JSONResponse; NaN/Infinity pass through as
    # Python's json writes them (only the `nan` fault ever produces them).
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _json_reply(status: int, obj: Any, headers: Optional[dict] = None) -> _Reply:
    return _Reply(status, _json_bytes(obj), "application/json", dict(headers or {}))
