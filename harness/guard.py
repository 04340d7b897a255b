"""Who may reach a kvbench server: the key check the server runs, where it may listen, and
the key a client of it sends. docs/security.md.

**The server side** is :class:`Guard`, a pure ASGI middleware that ``harness/server.py`` adds
to every vLLM server it starts (``--middleware harness.guard.Guard``). vLLM's own API key
(``VLLM_API_KEY``, which kvbench sets to a random key per server, in the environment only)
guards only ``/v1/*``; the dev-mode endpoints that a shared server needs
(``/reset_prefix_cache``) and others (``/server_info``, ``/collective_rpc``, ``/sleep``,
``/pause``, ``/abort_requests``, ``/metrics``, ...) answer anyone who can connect. The guard
answers 401 to every HTTP request and websocket without ``Authorization: Bearer <key>``,
whatever its path or method, except ``GET``/``HEAD /health`` (liveness, polled before the
key matters). The key is compared in constant time (``hmac.compare_digest`` of SHA-256
digests, so not even its length leaks). Without a key in the environment the server refuses
to start rather than serve unguarded.

**Where it may listen**: :func:`is_loopback` (``127.0.0.0/8``, ``::1``, ``localhost``, or a
name that resolves only to those); anything else needs ``expose=true`` (``launch/validate.py``),
and :func:`exposure` is the warning the server then logs and its manifest records.

**The client side**: :func:`register` records, in this process only, the key of a server
this process started, by its URL; :func:`auth_headers` gives the header for a URL, so every
caller (the metrics scraper, the cache reset) sends it.

Standard library only: this file runs in the server's interpreter, the Continuum fork's too
(loaded there by its file path: ``harness/policies/continuum_site/kvbench_guard.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import socket

KEY_ENV = "VLLM_API_KEY"
OPEN_PATHS = frozenset({"/health"})  # GET/HEAD only
OPEN_METHODS = frozenset({"GET", "HEAD"})
UNAUTHORIZED = b'{"error":"Unauthorized"}'


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


class Guard:
    """ASGI middleware: every request needs the server's key, except ``GET /health``."""

    def __init__(self, app, key: str | None = None) -> None:
        key = os.environ.get(KEY_ENV, "") if key is None else key
        if not key:
            raise RuntimeError(
                f"kvbench guard: {KEY_ENV} is unset or empty; refusing to serve unguarded"
            )
        self.app = app
        self._key = _digest(key.encode())

    def allows(self, scope) -> bool:
        path = scope.get("path") or ""
        root = scope.get("root_path") or ""
        if root and path.startswith(root):
            path = path[len(root):]
        if path in OPEN_PATHS and scope.get("method") in OPEN_METHODS:  # not a websocket
            return True
        for name, value in scope.get("headers") or ():
            if name.lower() != b"authorization":
                continue
            scheme, _, token = bytes(value).strip().partition(b" ")
            if scheme.lower() == b"bearer" and hmac.compare_digest(
                _digest(token.strip()), self._key
            ):
                return True
        return False

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket") or self.allows(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":  # closed before accept: the client gets HTTP 403
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({
            "type": "http.response.start",
            "status": 401,
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(UNAUTHORIZED)).encode()),
                        (b"www-authenticate", b"Bearer")],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": UNAUTHORIZED})


# Where a server may listen.


def addresses(host: str) -> list[str]:
    """The addresses ``host`` resolves to here; socket.gaierror if it does not resolve."""
    if not host or host != host.strip():
        raise socket.gaierror(socket.EAI_NONAME, "empty or padded host name")
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]).split("%")[0] for info in infos})


def is_loopback(host: str) -> bool:
    """Whether a server bound to ``host`` is reachable from this machine only. Resolves a
    name (socket.gaierror if it does not resolve); an unspecified address (0.0.0.0, ::)
    binds every interface, so it is not loopback."""
    if host.lower() == "localhost":
        return True
    return all(ipaddress.ip_address(a).is_loopback for a in addresses(host))


def client_host(host: str) -> str:
    """The host a client on this machine connects to for a server bound to ``host``: the
    loopback address for an unspecified one, brackets around an IPv6 address."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if ip.is_unspecified:
        return "127.0.0.1" if ip.version == 4 else "[::1]"
    return f"[{host}]" if ip.version == 6 else host


def exposure(host: str, port: int) -> str | None:
    """The warning for a server that listens beyond loopback (None: it does not)."""
    if is_loopback(host):
        return None
    return (f"expose=true: the server listens on {host}:{port}, beyond this machine's "
            "loopback; reachable from the network: the OpenAI API (/v1), /metrics and every "
            "other endpoint of the server, each guarded by the per-cell API key "
            "(harness/guard.py), and /health, open")


# The client side: the key of each server this process started, by URL.

_KEYS: dict[str, str] = {}


def register(url: str, key: str) -> None:
    _KEYS[url.rstrip("/")] = key


def forget(url: str) -> None:
    _KEYS.pop(url.rstrip("/"), None)


def auth_headers(url: str, key: str | None = None) -> dict[str, str]:
    """``Authorization`` for a request to the server at ``url``: ``key``, else the key
    registered for ``url`` by the server's starter in this process; {} if neither."""
    key = key or _KEYS.get(url.rstrip("/"))
    return {"Authorization": f"Bearer {key}"} if key else {}
