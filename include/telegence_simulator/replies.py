"""Building the simulator's HTTP answers (shared by the contract routes and the admin API)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .faults import echo_secret_body


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(obj, separators=(",", ":")).encode()


def json_reply(status: int, obj: Any, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer."""
    return web.Response(status=status, body=dumps(obj), content_type="application/json", headers=headers)


def bad_request(message: str, errors: list[str]) -> web.Response:
    """A 400 naming the first 25 errors."""
    shown = errors[:25]
    more = f"; ... and {len(errors) - 25} more" if len(errors) > 25 else ""
    return json_reply(400, {"message": message, "errorDescription": "; ".join(shown) + more})


def apply_echo_secret(response: web.Response, secret: str) -> None:
    """Apply an ``echo_secret`` fault: put the caller's app-secret into the JSON answer."""
    body = response.body
    if isinstance(body, bytes):
        echoed = echo_secret_body(response.status, body, secret)
        if echoed is not None:
            response.body = echoed


def drop_connection(request: web.Request) -> None:
    """Close the client connection without sending a response."""
    transport = request.transport
    if transport is not None:
        transport.close()
