"""Provider selection by name, entry point or ``module:factory``.

A provider is an async factory ``(MessagingConfig) -> MessagingService``. The
names used here are the names used everywhere: environment, CLI, tox envs and reports.
Third-party packages register theirs under the ``mqcontract.providers`` entry-point group
and are found by installing them.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points
from typing import cast

from mqcontract._entry_points import ENTRY_POINT_GROUP, provider_names
from mqcontract.config import MessagingConfig
from mqcontract.errors import ConfigurationError
from mqcontract.service import MessagingService

__all__ = ["ENTRY_POINT_GROUP", "ProviderFactory", "load_object", "provider_names", "resolve"]

ProviderFactory = Callable[[MessagingConfig], Awaitable[MessagingService]]


def load_object(spec: str) -> object:
    """Import ``module:attribute`` (attribute may be dotted)."""
    module_name, _, attr_path = spec.partition(":")
    if not module_name or not attr_path:
        raise ConfigurationError("provider", spec, "expected NAME or module:attribute")
    try:
        target: object = importlib.import_module(module_name)
        for part in attr_path.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError("provider", spec, f"cannot import: {exc}") from exc
    return target


def resolve(spec: str) -> ProviderFactory:
    """The factory for a provider name or ``module:factory`` spec."""
    if ":" in spec:
        target = load_object(spec)
    else:
        matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == spec]
        if not matches:
            known = ", ".join(sorted(provider_names()))
            raise ConfigurationError("provider", spec, f"unknown provider (known: {known})")
        try:
            target = matches[0].load()
        except ImportError as exc:
            raise ConfigurationError(
                "provider", spec, f"its driver is not installed ({exc}); install mqcontract[all]"
            ) from exc
    if not callable(target):
        raise ConfigurationError("provider", spec, "is not callable")
    return cast(ProviderFactory, target)
