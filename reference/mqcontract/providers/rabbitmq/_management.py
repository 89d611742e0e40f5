"""A tiny client for the RabbitMQ management HTTP API (stdlib only, run in a thread).

AMQP 0-9-1 cannot list queues; the management plugin can, and it is off by default. So
every way the API can be missing (nothing listening, a refusal, a 404, an HTML page,
something that is not HTTP, JSON of the wrong shape) is one error,
:class:`BackendUnavailable`, naming the call; callers decide whether that means "not
claimed" or "failed". The URL may carry credentials (``http://user:pass@host:15672``);
they become a Basic ``Authorization`` header and never appear in errors.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from mqcontract._redact import redact, remember_secrets
from mqcontract.config import RabbitMqConfig, check_management_url
from mqcontract.errors import BackendUnavailable

__all__ = ["PROBE_TIMEOUT", "ManagementClient", "ManagementRefused", "find_management", "vhost_of"]

log = logging.getLogger(__name__)

#: Bound on probing a derived management URL at connect (a missing plugin refuses at once).
PROBE_TIMEOUT = 2.0


class ManagementRefused(BackendUnavailable):
    """The API answered and said no (HTTP 401 or 403): the user may not do this.

    Told apart from every other failure because a refusal is an answer (the caller may
    fall back, say to a shared virtual host), while a timeout leaves it unknown whether
    the call took effect.
    """


def vhost_of(amqp_url: str) -> str:
    """The virtual host an AMQP URL names (``/`` when the path is empty)."""
    path = urllib.parse.urlsplit(amqp_url).path
    return urllib.parse.unquote(path[1:]) if len(path) > 1 else "/"


class ManagementClient:
    """JSON calls against ``/api``; every failure is :class:`BackendUnavailable`.

    A URL that is not ``http(s)://host…`` is a ``ConfigurationError`` at construction.
    """

    def __init__(self, url: str, *, provider: str, timeout: float = 10.0) -> None:
        remember_secrets(url)
        parts = urllib.parse.urlsplit(check_management_url(url))
        host = parts.hostname or "127.0.0.1"
        netloc = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            netloc = f"{netloc}:{parts.port}"
        self._base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        user = urllib.parse.unquote(parts.username or "guest")
        password = urllib.parse.unquote(parts.password or "guest")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
        self._provider = provider
        self._timeout = timeout
        self.display_url = redact(url)

    def _fail(
        self, method: str, path: str, why: str, kind: type[BackendUnavailable] = BackendUnavailable
    ) -> BackendUnavailable:
        detail = f"management API {method} {path}: {why}"
        return kind(self._provider, self.display_url, detail)

    def _call(self, method: str, path: str, body: object = None, missing_ok: bool = False) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self._base}/api{path}", data=data, headers=self._headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                raw = response.read()
                kind = response.headers.get_content_type()
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and (method == "DELETE" or missing_ok):
                return None
            refused = exc.code in (401, 403)
            kind = ManagementRefused if refused else BackendUnavailable
            raise self._fail(method, path, f"HTTP {exc.code} {exc.reason}", kind) from exc
        except (OSError, ValueError, http.client.HTTPException) as exc:
            # OSError: refused, unreachable, timed out; HTTPException: not HTTP at all.
            raise self._fail(method, path, f"{type(exc).__name__}: {exc}") from exc
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:  # an HTML page, a proxy's error text, anything but JSON
            raise self._fail(method, path, f"answered {kind}, not JSON") from exc

    async def call(
        self, method: str, path: str, body: object = None, *, missing_ok: bool = False
    ) -> Any:
        """Run one request in a worker thread (``missing_ok``: a 404 answers None)."""
        return await asyncio.to_thread(self._call, method, path, body, missing_ok)

    async def _records(self, path: str) -> list[dict[str, Any]]:
        result = await self.call("GET", path)
        if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
            raise self._fail("GET", path, f"expected a JSON list of objects, got {_kind(result)}")
        return result

    async def _object(self, path: str) -> dict[str, Any]:
        result = await self.call("GET", path)
        if not isinstance(result, dict):
            raise self._fail("GET", path, f"expected a JSON object, got {_kind(result)}")
        return result

    async def queues(self, vhost: str) -> list[dict[str, Any]]:
        """Every queue of ``vhost`` with its name and declare arguments."""
        vh = urllib.parse.quote(vhost, safe="")
        return await self._records(f"/queues/{vh}?columns=name,arguments")

    async def policies(self, vhost: str) -> list[dict[str, Any]]:
        """The policies of ``vhost`` (name, pattern, apply-to, priority, definition)."""
        return await self._records(f"/policies/{urllib.parse.quote(vhost, safe='')}")

    async def operator_policies(self, vhost: str) -> list[dict[str, Any]]:
        """The operator policies of ``vhost`` (set by an administrator, applied beside)."""
        return await self._records(f"/operator-policies/{urllib.parse.quote(vhost, safe='')}")

    async def queue_arguments(self, vhost: str, name: str) -> dict[str, Any]:
        """The declare arguments of queue ``name`` ({} when it is not there)."""
        vh, q = urllib.parse.quote(vhost, safe=""), urllib.parse.quote(name, safe="")
        found = await self.call("GET", f"/queues/{vh}/{q}?columns=arguments", missing_ok=True)
        arguments = found.get("arguments") if isinstance(found, dict) else None
        return dict(arguments) if isinstance(arguments, dict) else {}

    async def connections(self) -> list[dict[str, Any]]:
        """Every connection with its name and client-provided name."""
        return await self._records("/connections?columns=name,client_properties")

    async def close_connection(self, name: str) -> None:
        """Force-close a connection (the client sees CONNECTION_FORCED)."""
        await self.call("DELETE", f"/connections/{urllib.parse.quote(name, safe='')}")

    async def delete_queue(self, vhost: str, name: str) -> None:
        """Delete a queue; a missing one is not an error."""
        vh = urllib.parse.quote(vhost, safe="")
        await self.call("DELETE", f"/queues/{vh}/{urllib.parse.quote(name, safe='')}")

    async def create_vhost(self, vhost: str, user: str) -> None:
        """Create ``vhost`` (idempotent) and give ``user`` full permissions on it."""
        vh = urllib.parse.quote(vhost, safe="")
        await self.call("PUT", f"/vhosts/{vh}", {})
        everything = {"configure": ".*", "write": ".*", "read": ".*"}
        await self.call("PUT", f"/permissions/{vh}/{urllib.parse.quote(user, safe='')}", everything)

    async def delete_vhost(self, vhost: str) -> None:
        """Delete ``vhost`` and everything in it; a missing one is not an error."""
        await self.call("DELETE", f"/vhosts/{urllib.parse.quote(vhost, safe='')}")

    async def vhost(self, vhost: str) -> dict[str, Any]:
        """One virtual host: the cheapest call that proves its queues can be listed."""
        return await self._object(f"/vhosts/{urllib.parse.quote(vhost, safe='')}")

    async def overview(self) -> dict[str, Any]:
        """Broker version and node facts."""
        return await self._object("/overview")


def _kind(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


async def find_management(
    config: RabbitMqConfig, *, provider: str, timeout: float
) -> ManagementClient | None:
    """The management API a provider uses, per :meth:`RabbitMqConfig.management_endpoint`.

    A configured URL is used as given; a derived one only if it answers a probe bounded
    by :data:`PROBE_TIMEOUT`, so a broker without the plugin (RabbitMQ's default) simply
    does not claim ``list_queues``.
    """
    endpoint = config.management_endpoint()
    if endpoint is None:
        return None
    client = ManagementClient(endpoint.url, provider=provider, timeout=timeout)
    if endpoint.configured:
        return client
    bound = min(timeout, PROBE_TIMEOUT)
    probe = ManagementClient(endpoint.url, provider=provider, timeout=bound)
    try:
        async with asyncio.timeout(bound + 1.0):  # name resolution is not under the socket's
            await probe.vhost(vhost_of(config.urls[0]))
    except (BackendUnavailable, TimeoutError) as exc:
        log.info("list_queues not claimed: %s", exc or f"no answer from {probe.display_url}")
        return None
    return client
