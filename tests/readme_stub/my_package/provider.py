"""``my_package.provider:open_provider``: an async factory ``(MessagingConfig) -> service``."""

from __future__ import annotations

from mqcontract.providers.memory import open_memory as open_provider

__all__ = ["open_provider"]
