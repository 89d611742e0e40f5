"""A tiny client for the RabbitMQ management HTTP API (stdlib only, run in a thread).

AMQP 0-9-1 cannot list queues; the management plugin can. The URL may carry credentials
(``http://user:pass@host:15672``); they become a Basic ``Authorization`` header and never
appear in errors.
"""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from mqcontract._redact import redact
from mqcontract.errors import BackendUnavailable

__all__ = ["ManagementClient", "vhost_of"]


def vhost_of(amqp_url: str) -> str:
    """The virtual host an AMQP URL names (``/`` when the path is empty)."""
    path = urllib.parse.urlsplit(amqp_url).path
    return urllib.parse.unquote(path[1:]) if len(path) > 1 else "/"


class ManagementClient:
    """JSON calls against ``/api``; every failure is :class:`BackendUnavailable`."""

    def __init__(self, url: str, *, provider: str, timeout: float = 10.0) -> None:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "127.0.0.1"
        netloc = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            netloc = f"{netloc}:{parts.port}"
        self._base = urllib.parse.urlunsplit(
            (parts.scheme or "http", netloc, parts.path.rstrip("/"), "", "")
        )
        user = urllib.parse.unquote(parts.username or "guest")
        password = urllib.parse.unquote(parts.password or "guest")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
        self._provider = provider
        self._timeout = timeout
        self.display_url = redact(url)

    def _call(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self._base}/api{path}", data=data, headers=self._headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if method == "DELETE" and exc.code == 404:
                return None
            raise BackendUnavailable(
                self._provider, self.display_url, f"management API {method} {path}: {exc.code}"
            ) from exc
        except (OSError, ValueError) as exc:
            raise BackendUnavailable(
                self._provider, self.display_url, f"management API {method} {path}: {exc}"
            ) from exc
        return json.loads(raw) if raw else None

    async def call(self, method: str, path: str, body: object = None) -> Any:
        """Run one request in a worker thread."""
        return await asyncio.to_thread(self._call, method, path, body)

    async def queues(self, vhost: str) -> list[dict[str, Any]]:
        """Every queue of ``vhost`` with its name and declare arguments."""
        vh = urllib.parse.quote(vhost, safe="")
        result = await self.call("GET", f"/queues/{vh}?columns=name,arguments")
        return list(result or [])

    async def connections(self) -> list[dict[str, Any]]:
        """Every connection with its name and client-provided name."""
        result = await self.call("GET", "/connections?columns=name,client_properties")
        return list(result or [])

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

    async def overview(self) -> dict[str, Any]:
        """Broker version and node facts."""
        result = await self.call("GET", "/overview")
        return dict(result or {})
