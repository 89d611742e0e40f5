"""The run's state, kept in ``config.stash``: options, timing, provisioned harnesses, results.

Each process (the controller and every xdist worker) has its own; harnesses are set up
through :mod:`..provisioning`, once per process and provider, on first use. On the
controller the plugin registers a :class:`~.recording.ResultRecorder` to collect the results.
"""

from __future__ import annotations

import os

import pytest

import mqcontract
from mqcontract.config import MessagingConfig, load_config
from mqcontract.errors import ConfigurationError
from mqcontract.testing import Harness
from mqcontract_conformance.plugin.command_line import RunOptions, flag, selected_rules
from mqcontract_conformance.provisioning import Provisioner, process_run_id
from mqcontract_conformance.registry import SUITE_VERSION
from mqcontract_conformance.results import ProviderResult, check_writable
from mqcontract_conformance.timing import TimingProfile

__all__ = ["STATE", "RunState", "check", "pytest_report_header", "start", "state_of"]


class RunState:
    """Per-process state: harnesses, run id, and (on the controller) results."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.options = RunOptions.of(config)
        self.providers = self.options.providers
        self.timing = TimingProfile.from_scale(self.options.timing_scale)
        self.base_config = _load_config()
        self.run_id = process_run_id()
        self._provisioners: dict[str, Provisioner] = {}
        #: Filled by the recorder on the controller.
        self.results: dict[str, ProviderResult] = {}
        #: Providers for which no rule ran, and which of them could not be reached.
        self.empty_providers: list[str] = []
        self.unavailable_providers: list[str] = []

    @property
    def require(self) -> bool:
        return self.options.require

    def provisioner(self, provider: str) -> Provisioner:
        """The provider's harness and its setup (not run until :meth:`Provisioner.provision`)."""
        if provider not in self._provisioners:
            try:
                self._provisioners[provider] = Provisioner.for_provider(
                    provider,
                    required=self.require,
                    config=self.base_config,
                    run_id=self.run_id,
                    extra={"real_time": "1" if self.options.real_time else ""},
                )
            except ConfigurationError as exc:
                raise pytest.UsageError(
                    f"{flag(self.config, 'provider')} {provider}: {exc}"
                ) from exc
        return self._provisioners[provider]

    def harness(self, provider: str) -> Harness:
        return self.provisioner(provider).harness

    def teardown(self) -> None:
        for provisioner in self._provisioners.values():
            provisioner.teardown()


STATE = pytest.StashKey[RunState]()


def state_of(config: pytest.Config) -> RunState:
    """The run's state (set up by :func:`pytest_configure`)."""
    return config.stash[STATE]


def _load_config() -> MessagingConfig:
    try:
        return load_config(validate_backend=False)
    except ConfigurationError as exc:
        where = os.environ.get("MQCONTRACT_CONFIG")
        source = f"MQCONTRACT_CONFIG={where}" if where else "mqcontract"
        raise pytest.UsageError(f"{source}: {exc}") from None


def start(config: pytest.Config) -> RunState:
    """The run's state, made once per process and kept in ``config.stash``."""
    config.addinivalue_line("markers", "mq_rule(id): a conformance case for rule id")
    state = RunState(config)
    config.stash[STATE] = state
    return state


def check(config: pytest.Config) -> None:
    """Everything a user can get wrong fails here, as one line, before any rule runs."""
    state = config.stash[STATE]
    if not state.options.named:
        return
    selected_rules(config)
    path = state.options.json
    if path is not None and not path.strip():
        raise pytest.UsageError(f"{flag(config, 'json')} names no file (it is empty)")
    if path and not hasattr(config, "workerinput"):
        try:
            check_writable(path)
        except OSError as exc:
            raise pytest.UsageError(
                f"{flag(config, 'json')} {path}: cannot write the results there "
                f"({exc.strerror or exc})"
            ) from None
    for provider in state.providers:
        state.provisioner(provider)


def pytest_report_header(config: pytest.Config) -> str | None:
    state = config.stash.get(STATE, None)
    if state is None or not state.options.named:
        return None
    return (
        f"mqcontract {mqcontract.__version__}, suite {SUITE_VERSION}: "
        f"providers {', '.join(state.providers)}"
    )
