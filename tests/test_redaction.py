"""Credentials never appear in errors, logs or reports, whatever fails and wherever.

Each case provokes a real failure with a URL carrying a password, then searches the
exception (its message, its attributes and the whole chained traceback) and everything
logged at DEBUG for the password.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import traceback
from collections.abc import Awaitable, Callable

import pytest

from mqcontract import redact
from mqcontract.config import MessagingConfig, PgmqConfig, RabbitMqConfig, load_config
from mqcontract.errors import BackendUnavailable, MessagingError
from mqcontract.providers.pgmq import install_pgmq, open_pgmq
from mqcontract.providers.rabbitmq import open_rabbitmq
from mqcontract.providers.rabbitmq._management import ManagementClient

SECRET = "Pa55w0rd-s3cret"
CLOSED_PORT = 1  # nothing listens there: connection refused
CONFIG = load_config(validate_backend=False)


def _everything(exc: BaseException) -> str:
    """Every text an error can leak through: message, repr, attributes, traceback."""
    parts = [str(exc), repr(exc), *traceback.format_exception(exc)]
    parts += [repr(v) for v in vars(exc).values()] if hasattr(exc, "__dict__") else []
    return "\n".join(parts)


async def _failure(call: Callable[[], Awaitable[object]]) -> MessagingError:
    try:
        await call()
    except MessagingError as exc:
        return exc
    pytest.fail("expected the call to fail")


def _assert_hidden(text: str, where: str) -> None:
    assert SECRET not in text, f"the password leaked into {where}: {text[:2000]}"


def _pg_url(host_port: str, user: str = "mqc_nobody", db: str = "test") -> str:
    return f"postgresql://{user}:{SECRET}@{host_port}/{db}"


def _pg(url: str) -> MessagingConfig:
    return MessagingConfig(operation_timeout_seconds=5, pgmq=PgmqConfig(database_url=url))


def _rabbit(url: str, management: str | None = None) -> MessagingConfig:
    rabbit = RabbitMqConfig(url=url, management_url=management, connection_timeout_seconds=5)
    return MessagingConfig(operation_timeout_seconds=5, rabbitmq=rabbit)


def _rabbit_base() -> str:
    """host:port of the configured broker."""
    return CONFIG.rabbitmq.url.split("@")[-1].split("/")[0]


def _pg_base() -> str:
    return CONFIG.pgmq.database_url.split("@")[-1].split("//")[-1].split("/")[0]


CASES: dict[str, Callable[[], Awaitable[object]]] = {
    "pgmq: nothing listening": lambda: open_pgmq(_pg(_pg_url(f"127.0.0.1:{CLOSED_PORT}"))),
    "pgmq: unknown role": lambda: open_pgmq(_pg(_pg_url(_pg_base()))),
    "pgmq: unknown database": lambda: open_pgmq(
        _pg(_pg_url(_pg_base(), user="postgres", db="mqc_missing_db"))
    ),
    "pgmq install: nothing listening": lambda: install_pgmq(
        _pg_url(f"127.0.0.1:{CLOSED_PORT}"), within=5
    ),
    "rabbitmq: nothing listening": lambda: open_rabbitmq(
        _rabbit(f"amqp://guest:{SECRET}@127.0.0.1:{CLOSED_PORT}/%2F")
    ),
    "rabbitmq: wrong password": lambda: open_rabbitmq(
        _rabbit(f"amqp://guest:{SECRET}@{_rabbit_base()}/%2F")
    ),
    "rabbitmq management: nothing listening": lambda: ManagementClient(
        f"http://guest:{SECRET}@127.0.0.1:{CLOSED_PORT}", provider="rabbitmq", timeout=5
    ).overview(),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_connection_errors_never_show_the_password(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    exc = await _failure(CASES[case])
    _assert_hidden(_everything(exc), f"the {type(exc).__name__} of {case!r}")
    _assert_hidden(caplog.text, f"the logs of {case!r}")
    for record in caplog.records:
        _assert_hidden(repr(record.args), f"a log record's arguments ({case!r})")
    if isinstance(exc, BackendUnavailable):
        assert "***" in exc.target or SECRET not in exc.target


def test_redact_covers_urls_and_key_value_pairs() -> None:
    assert SECRET not in redact(f"postgresql://u:{SECRET}@h/db and amqp://g:{SECRET}@h:5672/")
    assert SECRET not in redact(f"host=h password={SECRET} dbname=x")
    assert SECRET not in redact(f"password = '{SECRET} with space'")


async def test_harness_descriptions_hide_the_password() -> None:
    """What reports show about a backend comes from ``describe()``."""
    from mqcontract.testing import HarnessSettings
    from mqcontract_fixtures.pgmq import PgmqHarness

    url = CONFIG.pgmq.database_url.replace("://", f"://postgres:{SECRET}@", 1)
    if "@" in CONFIG.pgmq.database_url:
        pytest.skip("DATABASE_URL already carries credentials")
    config = dataclasses.replace(CONFIG, pgmq=PgmqConfig(database_url=url))
    harness = PgmqHarness("pgmq", HarnessSettings(config=config, run_id="redact"))
    try:
        await harness.setup()
    except BackendUnavailable as exc:
        _assert_hidden(_everything(exc), "a harness setup error")
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    try:
        _assert_hidden(json.dumps(harness.describe()), "the harness description")
    finally:
        await harness.teardown()


async def test_a_stress_account_never_shows_the_password(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    from mqcontract_conformance.stress import StressSettings, run_stress

    if "@" in CONFIG.pgmq.database_url:
        pytest.skip("DATABASE_URL already carries credentials")
    caplog.set_level(logging.DEBUG)
    url = CONFIG.pgmq.database_url.replace("://", f"://postgres:{SECRET}@", 1)
    config = dataclasses.replace(CONFIG, pgmq=PgmqConfig(database_url=url))
    settings = StressSettings(
        provider="pgmq", messages=50, producers=1, consumers=1, vt=1.0, max_seconds=30
    )
    import sys

    try:
        account = await run_stress(settings, config=config, out=sys.stderr)
    except BackendUnavailable as exc:
        _assert_hidden(_everything(exc), "a stress error")
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    _assert_hidden(json.dumps(account.to_dict()), "the stress account")
    _assert_hidden(caplog.text, "the stress run's logs")
    printed = capsys.readouterr()
    _assert_hidden(printed.out + printed.err, "the stress run's output")
