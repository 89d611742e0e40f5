"""Finding the harness for a provider name or ``module:factory`` spec.

Order: a harness registered under ``mqcontract.harnesses`` with the same name; else the
provider registered under ``mqcontract.providers`` wrapped in a plain :class:`Harness`.
A ``module:attribute`` spec may name either a harness factory (returns a ``Harness``)
or a provider factory (an async function returning a service).
"""

from __future__ import annotations

import inspect
import traceback
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from mqcontract.errors import ConfigurationError, MessagingError
from mqcontract.registry import load_object, resolve
from mqcontract.testing import Harness, HarnessSettings

__all__ = ["HARNESS_GROUP", "load_harness"]

HARNESS_GROUP = "mqcontract.harnesses"


def load_harness(spec: str, settings: HarnessSettings) -> Harness:
    """Build the harness for ``spec``."""
    if ":" in spec:
        target = load_object(spec)
        if inspect.iscoroutinefunction(target):
            return Harness(spec, settings, target)
        if not callable(target):
            raise ConfigurationError("provider", spec, "is not callable")
        try:
            inspect.signature(target).bind(settings)
        except ValueError:
            pass  # no signature to read (a C callable): calling it tells
        except TypeError:
            raise ConfigurationError(
                "provider",
                spec,
                "must be an async provider factory (taking the config) or a harness factory "
                "(taking the HarnessSettings, returning a Harness)",
            ) from None
        made = _call_harness_factory(spec, target, settings)
        if not isinstance(made, Harness):
            raise ConfigurationError(
                "provider", spec, "must be an async provider factory or return a Harness"
            )
        return made
    for ep in entry_points(group=HARNESS_GROUP):
        if ep.name == spec:
            try:
                factory = ep.load()
            except ImportError as exc:
                raise ConfigurationError(
                    "provider", spec, f"its harness cannot be imported ({exc})"
                ) from exc
            harness = factory(settings)
            if not isinstance(harness, Harness):
                raise ConfigurationError("provider", spec, "harness factory returned no Harness")
            return harness
    return Harness(spec, settings, resolve(spec))


def _call_harness_factory(spec: str, factory: Any, settings: HarnessSettings) -> object:
    """Call the ``module:attribute`` a spec names as a harness factory (it is not async);
    a failure other than the kit's own errors is a ``ConfigurationError`` saying how it
    was called and where it failed: a plain ``def`` provider factory lands here, and
    reads the settings as its config."""
    try:
        return factory(settings)
    except MessagingError:
        raise
    except Exception as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
        raise ConfigurationError(
            "provider",
            spec,
            f"was called as a harness factory (with the HarnessSettings) and raised"
            f" {type(exc).__name__}{where}: {exc}. If it is a provider factory, it must be"
            " async (`async def factory(config)`, taking the MessagingConfig)",
        ) from exc
