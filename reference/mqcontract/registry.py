"""Provider selection by name, entry point or ``module:factory``.

A provider is an async factory ``(MessagingConfig) -> MessagingService``. The
names used here are the names used everywhere: environment, CLI, tox envs and reports.
Third-party packages register theirs under the ``mqcontract.providers`` entry-point group
and are found by installing them.
"""

from __future__ import annotations

import importlib
import os
import sys
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
    """Import ``module:attribute`` (attribute may be dotted).

    A module Python cannot find is looked for in the current directory too, last (as
    ``python -m`` would find it, without shadowing an installed package): the
    ``mqcontract`` command's own directory is the script's, so a provider module next to
    its author was "not found" unless installed or put on ``PYTHONPATH``. Every xdist
    worker runs in the same directory and finds it the same way.
    """
    module_name, _, attr_path = spec.partition(":")
    if not module_name or not attr_path:
        raise ConfigurationError("provider", spec, "expected NAME or module:attribute")
    try:
        target: object = _import(module_name)
        for part in attr_path.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError("provider", spec, f"cannot import: {exc}") from exc
    return target


def _import(module_name: str) -> object:
    top = module_name.partition(".")[0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != top:
            raise  # found, and something it imports is missing: that is the error
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != top:
                raise
    raise ModuleNotFoundError(
        f"No module named {top!r} (looked for on sys.path and in the current directory,"
        f" {here}; install it or run from the directory holding it)",
        name=top,
    )


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
