"""Serve safely: the one app-wide layer that decides which requests reach any route.

inference's HTTP app, as its Docker images run it, trusts every caller: CORS ``*`` with
credentials, custom Python in workflows on, any ``Host`` header served. On a desktop that
means any web page the user visits can run code on the machine (a cross-origin request, or a
DNS-rebinding page whose name resolves to 127.0.0.1). :class:`SecurityMiddleware` is a pure
ASGI middleware wrapped around the whole app (``build_app`` adds it last, so it is the
outermost layer and covers every route, inference's and ours, including routes added later).
For each HTTP or WebSocket request it checks, in this order:

1. ``Host``: the name (without port) must be one the server answers to: the bound address,
   ``localhost``, ``127.0.0.1``, ``::1`` (``[::1]``) and the names given with ``--allow-host``
   (``*`` for any). Otherwise 400 — this is what defeats DNS rebinding.
2. ``Origin`` (when the request has one): the server's own origin (same scheme and host:port
   as the request's ``Host``), or one of the allowed origins (``--allow-origin``, or
   inference's ``ALLOW_ORIGINS`` when the operator set it; ``*`` for any). Otherwise 403 —
   also for requests a browser sends without a preflight ("simple" POSTs).
3. Token (when one is in force): ``Authorization: Bearer <token>``, compared in constant time
   (:func:`hmac.compare_digest`). Exempt: ``/info``, GET/HEAD of the static files under
   :data:`STATIC_PREFIX` (package data, no secrets) and CORS preflights from an allowed origin
   (browsers never send credentials on a preflight). Otherwise 401.
4. Custom Python (unless allowed): a request body that carries a non-empty
   ``dynamic_blocks_definitions`` anywhere in its JSON is refused with 403 before any route
   sees it. This is the clear 4xx; the authority is inference's own
   ``ALLOW_CUSTOM_PYTHON_EXECUTION_IN_WORKFLOWS=False``, which ``app.py`` sets before inference
   is imported, so a workflow that slips past this check (one stored on Roboflow, a body this
   check cannot read) still cannot compile custom Python.

A refused request gets a JSON body ``{"message": "<one line>"}`` naming the switch that would
allow it; never a stack trace.

Contract for pages served by this app (the click-to-segment page, issue 22)
--------------------------------------------------------------------------
- The page lives at :data:`PAGE_PATH` (``GET /sam_block/annotate``); its static files under
  :data:`STATIC_PREFIX` (``/sam_block/static/``), which are served without a token (GET/HEAD
  only) because a ``<script src>`` or ``<link href>`` cannot carry a header.
- When a token is in force, the start-up output prints the page URL with the token as a query
  parameter, ``http://127.0.0.1:9001/sam_block/annotate?token=…`` (as Jupyter does).
- A GET (or HEAD) of a path in ``token_query_paths`` (by default only :data:`PAGE_PATH`)
  accepts the token as the ``token`` query parameter, as an alternative to the header. No other
  request accepts a token in the URL.
- The page's JavaScript reads ``token`` from ``location.search`` (and may drop it from the
  address bar with ``history.replaceState``) and sends ``Authorization: Bearer <token>`` on
  every API call it makes (``/sam2/*``, ``/workflows/*``). Its calls are same-origin, so they
  pass the ``Origin`` check with no ``--allow-origin``.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, FrozenSet, Iterable, Optional, Tuple
from urllib.parse import parse_qs

PAGE_PATH = "/sam_block/annotate"
STATIC_PREFIX = "/sam_block/static/"
PUBLIC_PATHS = frozenset({"/info"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
ANY = "*"
CUSTOM_PYTHON_KEY = "dynamic_blocks_definitions"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
logger = logging.getLogger("sam_block.server")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (``localhost``, 127.0.0.0/8, ::1)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """The name part of a ``Host`` header, lower-case, without port, brackets or a trailing dot.

    >>> host_name("[::1]:9001"), host_name("LocalHost.:80"), host_name("127.0.0.1"), host_name("fe80::1")
    ('::1', 'localhost', '127.0.0.1', 'fe80::1')
    """
    value = host_header.strip().lower()
    if value.startswith("["):
        name = value[1 : value.find("]")] if "]" in value else value[1:]
    elif value.count(":") > 1:  # a bare IPv6 address (an --allow-host or --host value): no port to strip
        name = value
    else:
        name = re.sub(r":\d*$", "", value)
    return name.rstrip(".")


def bound_origins(names: Iterable[str], port: int, scheme: str = "http") -> Tuple[str, ...]:
    """The origins a browser uses for this server under each of ``names`` (IPv6 in brackets)."""
    origins = []
    for name in names:
        if name == ANY or name in ("0.0.0.0", "::"):
            continue
        shown = f"[{name}]" if ":" in name else name
        origins.append(f"{scheme}://{shown}:{port}")
    return tuple(dict.fromkeys(origins))


def contains_custom_python(value: Any) -> bool:
    """Whether a parsed JSON value holds a non-empty ``dynamic_blocks_definitions`` at any depth."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if key == CUSTOM_PYTHON_KEY and child:
                    return True
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)
    return False


def body_carries_custom_python(body: bytes) -> bool:
    """Whether a request body is JSON carrying custom Python blocks (see :func:`contains_custom_python`).

    Only bodies that contain the key's bytes, or a JSON ``\\u`` escape that could spell it, are parsed.
    """
    if CUSTOM_PYTHON_KEY.encode() not in body and b"\\u" not in body:
        return False
    try:
        return contains_custom_python(json.loads(body))
    except (ValueError, RecursionError):
        return False  # not JSON: no route parses it as a workflow either


@dataclass(frozen=True)
class SecurityPolicy:
    """What the server accepts; built by ``app.py`` from the command line and the environment."""

    allowed_hosts: FrozenSet[str]  # names as host_name() returns them; "*" = any
    allowed_origins: FrozenSet[str] = frozenset()  # exact origins, lower-case; "*" = any
    token: Optional[str] = None
    allow_custom_python: bool = False
    token_query_paths: FrozenSet[str] = frozenset({PAGE_PATH})
    public_paths: FrozenSet[str] = PUBLIC_PATHS
    public_get_prefixes: Tuple[str, ...] = (STATIC_PREFIX,)

    def host_allowed(self, name: str) -> bool:
        return ANY in self.allowed_hosts or name in self.allowed_hosts

    def origin_allowed(self, origin: str, scheme: str, host_header: str) -> bool:
        origin = origin.strip().lower().rstrip("/")
        if ANY in self.allowed_origins or origin in self.allowed_origins:
            return True
        scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
        return origin == f"{scheme}://{host_header.strip().lower()}"

    def token_matches(self, given: Optional[str]) -> bool:
        if given is None:
            return False
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self.token.encode("utf-8"))


class Refusal(Exception):
    """A refused request: HTTP status, the one-line message, extra headers, a short form for WebSockets."""

    def __init__(self, status: int, message: str, headers: Tuple[Tuple[bytes, bytes], ...] = (), short: str = ""):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers
        self.short = short or message  # a WebSocket close frame's reason holds 123 bytes


def _headers(scope) -> dict:
    """Request headers, lower-case names; the first value of a repeated header wins."""
    out: dict = {}
    for name, value in scope.get("headers") or ():
        out.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return out


def _bearer(headers: dict) -> Optional[str]:
    value = headers.get("authorization")
    if value is None:
        return None
    scheme, _, credentials = value.strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


class SecurityMiddleware:
    """ASGI middleware enforcing a :class:`SecurityPolicy` on every HTTP and WebSocket request."""

    def __init__(self, app, policy: SecurityPolicy):
        self.app = app
        self.policy = policy

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            self._check_headers(scope)
            if (
                scope["type"] == "http"
                and not self.policy.allow_custom_python
                and scope.get("method", "GET").upper() in _BODY_METHODS
            ):
                receive = await self._check_body(receive)
        except Refusal as refusal:
            method, path = scope.get("method", "WEBSOCKET"), scope.get("path", "")
            logger.warning("refused %s %s: %s", method, path, refusal.message)
            await self._refuse(scope, receive, send, refusal)
            return
        await self.app(scope, receive, send)

    def _check_headers(self, scope) -> None:
        policy, headers = self.policy, _headers(scope)
        path, method = scope.get("path", ""), scope.get("method", "GET").upper()
        host_header = headers.get("host")
        if host_header is None:
            raise Refusal(400, "no Host header: this server answers only requests that name it (see --allow-host)")
        name = host_name(host_header)
        if not policy.host_allowed(name):
            raise Refusal(
                400,
                f"Host {name!r} is not served (a DNS name that points here is how a web page reaches this "
                f"server): start the server with --allow-host {name} to serve it",
                short=f"Host {name!r} is not served: --allow-host {name} serves it",
            )
        origin = headers.get("origin")
        if origin is not None and not policy.origin_allowed(origin, scope.get("scheme", "http"), host_header):
            raise Refusal(
                403,
                f"Origin {origin!r} is not allowed (a page from another site may not call this server): "
                f"start the server with --allow-origin {origin} to allow it",
                short=f"Origin not allowed: --allow-origin {origin} allows it",
            )
        if policy.token is None or path in policy.public_paths:
            return
        if method in ("GET", "HEAD") and path.startswith(policy.public_get_prefixes):
            return
        preflight = method == "OPTIONS" and origin is not None and "access-control-request-method" in headers
        if preflight:
            return
        given = _bearer(headers)
        if given is None and method in ("GET", "HEAD") and path in policy.token_query_paths:
            values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
            given = values[0] if values else None
        if given is None:
            raise Refusal(
                401,
                "token required: send 'Authorization: Bearer <token>' with the token printed when the server "
                "started (or its SAM_BLOCK_TOKEN); --no-token serves without one",
                ((b"www-authenticate", b"Bearer"),),
                short="token required: send 'Authorization: Bearer <token>'",
            )
        if not policy.token_matches(given):
            raise Refusal(
                401,
                "wrong token: send 'Authorization: Bearer <token>' with the token printed when the server started "
                "(or its SAM_BLOCK_TOKEN)",
                ((b"www-authenticate", b'Bearer error="invalid_token"'),),
                short="wrong token",
            )

    async def _check_body(self, receive):
        """Read the whole body, refuse custom Python in it, and replay it to the app."""
        messages, chunks = [], []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        if body_carries_custom_python(b"".join(chunks)):
            raise Refusal(
                403,
                f"custom Python in workflows is off on this server (the request carries {CUSTOM_PYTHON_KEY}): "
                "start the server with --allow-custom-python to run it (any client that can reach the server "
                "can then run code on this machine)",
            )
        pending = iter(messages)

        async def replay():
            for message in pending:
                return message
            return await receive()

        return replay

    @staticmethod
    async def _refuse(scope, receive, send, refusal: Refusal) -> None:
        if scope["type"] == "websocket":
            await receive()  # websocket.connect; closing before accepting answers the handshake with 403
            reason = refusal.short.encode()[:123].decode(errors="ignore")
            await send({"type": "websocket.close", "code": 1008, "reason": reason})
            return
        body = json.dumps({"message": refusal.message}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"vary", b"Origin"),
            *refusal.headers,
        ]
        await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
