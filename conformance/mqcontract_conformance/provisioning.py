"""Provisioning a backend for tests, and what its absence means: one decision for all.

The contract plugin, the fault fixtures and the project's own tests all set a harness up
through a :class:`Provisioner`: ``harness.setup()`` runs once (keep one provisioner per
provider and process), and its outcome is a :class:`Verdict` that every later test of
that provider repeats. A backend that is not there (``BackendUnavailable``) skips, naming
what was tried, or fails when backends are required (``--mq-require-backends`` /
``MQCONTRACT_REQUIRE_BACKENDS=1``, as in CI); any other setup error fails, always.
"""

from __future__ import annotations

import enum
import logging
import os
import secrets
import traceback
from collections.abc import Mapping
from dataclasses import dataclass

import pytest

from mqcontract.config import MessagingConfig, load_config
from mqcontract.errors import BackendUnavailable, MessagingError
from mqcontract.testing import Harness, HarnessSettings
from mqcontract_conformance.harnesses import load_harness
from mqcontract_conformance.leftovers import clean_up
from mqcontract_conformance.loop import StepExpired, run_bounded, within

__all__ = [
    "REQUIRE_ENV",
    "Provisioner",
    "Readiness",
    "Verdict",
    "backends_required",
    "process_run_id",
    "unavailable",
]

#: Set (``1``, ``true``, ``yes``) to make a missing backend a failure.
REQUIRE_ENV = "MQCONTRACT_REQUIRE_BACKENDS"

#: Seconds a harness's setup, and its teardown, may take: past it setup is the harness's
#: failure and teardown is left, rather than the run hanging on a call that never
#: returns. Above every bound of the kit's own harnesses (a container start, image pull
#: included, has 300 s; a private cluster starts in under a minute).
HARNESS_BOUND = 600.0

log = logging.getLogger(__name__)
#: What a skip for a missing backend suggests.
_HINT = "(set the URL, or start the service)"


def backends_required(flag: bool = False) -> bool:
    """Whether a missing backend fails: the command-line ``flag`` or :data:`REQUIRE_ENV`."""
    return flag or os.environ.get(REQUIRE_ENV, "").lower() in {"1", "true", "yes"}


def process_run_id() -> str:
    """A short id unique to this run and xdist worker, for the names a harness creates."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw")
    return f"{secrets.token_hex(3)}{worker.replace('gw', 'w')}"


class Readiness(enum.Enum):
    """How provisioning went."""

    READY = "ready"
    #: The backend could not be reached: a skip, or a failure when backends are required.
    UNAVAILABLE = "unavailable"
    #: Setup itself went wrong: always a failure.
    BROKEN = "broken"


@dataclass(frozen=True)
class Verdict:
    """What a test needing the backend does: run, skip or fail (with :attr:`message`)."""

    readiness: Readiness
    message: str = ""
    required: bool = False

    @property
    def skips(self) -> bool:
        return self.readiness is Readiness.UNAVAILABLE and not self.required

    @property
    def fails(self) -> bool:
        return self.readiness is Readiness.BROKEN or (
            self.readiness is Readiness.UNAVAILABLE and self.required
        )

    def enforce(self) -> None:
        """Return when ready; otherwise skip or fail the running test."""
        if self.fails:
            prefix = "required backend missing: " if self.readiness is Readiness.UNAVAILABLE else ""
            pytest.fail(prefix + self.message, pytrace=False)
        if self.skips:
            pytest.skip(self.message)


def unavailable(message: str, *, required: bool) -> Verdict:
    """The verdict for a backend found missing (``message`` says which and why)."""
    return Verdict(Readiness.UNAVAILABLE, message, required)


class Provisioner:
    """One harness, set up at most once; every caller gets the same :class:`Verdict`."""

    def __init__(self, harness: Harness, *, required: bool, name: str = "") -> None:
        self.harness = harness
        self.required = required
        #: How messages name the provider (the spec the user gave; else the harness's name).
        self.name = name or harness.name
        self._verdict: Verdict | None = None

    @classmethod
    def for_provider(
        cls,
        spec: str,
        *,
        required: bool,
        config: MessagingConfig | None = None,
        run_id: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> Provisioner:
        """The harness of ``spec`` (a name or ``module:factory``), not yet set up.

        Raises ``ConfigurationError`` when ``spec`` or the configuration is wrong.
        """
        base = config if config is not None else load_config(validate_backend=False)
        settings = HarnessSettings(
            config=base.with_backend(spec),
            run_id=run_id or process_run_id(),
            require_backend=required,
            extra=dict(extra or {}),
        )
        return cls(load_harness(spec, settings), required=required, name=spec)

    def provision(self) -> Verdict:
        """Set the harness up on the first call (in an event loop of its own)."""
        if self._verdict is None:
            self._verdict = self._setup()
        return self._verdict

    def ready(self) -> Harness:
        """The set-up harness, or skip or fail the running test as the verdict says."""
        self.provision().enforce()
        return self.harness

    def teardown(self) -> None:
        """Tear down what setup made, if it was made; the next provision sets up again."""
        verdict, self._verdict = self._verdict, None
        if verdict is not None and verdict.readiness is Readiness.READY:
            try:
                run_bounded(within(self._teardown(), HARNESS_BOUND))
            except StepExpired:
                log.warning(
                    "%s: harness teardown did not finish within %g s and was left",
                    self.name,
                    HARNESS_BOUND,
                )

    async def _teardown(self) -> None:
        try:
            await clean_up(self.harness)  # what the kit left for later cases, first
        finally:
            await self.harness.teardown()

    def _setup(self) -> Verdict:
        try:
            run_bounded(within(self.harness.setup(), HARNESS_BOUND))
        except StepExpired:
            message = f"{self.name}: harness setup did not finish within {HARNESS_BOUND:g} s"
            return Verdict(Readiness.BROKEN, message, self.required)
        except BackendUnavailable as exc:
            message = f"{self.name}: backend unavailable: {exc} {_HINT}"
            return unavailable(message, required=self.required)
        except Exception as exc:  # anything else is the harness's fault, never a skip
            message = f"{self.name}: harness setup failed: {type(exc).__name__}: {exc}"
            if not isinstance(exc, MessagingError):  # a bug: show where
                message += "\n" + traceback.format_exc()
            return Verdict(Readiness.BROKEN, message, self.required)
        return Verdict(Readiness.READY, required=self.required)
