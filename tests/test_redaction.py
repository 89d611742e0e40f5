"""Credentials never appear in errors, logs or reports, whatever fails and wherever.

Each case provokes a real failure with a URL carrying a password, then searches the
exception (its message, its attributes and the whole chained traceback) and everything
logged at DEBUG for the password.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from mqcontract import redact
from mqcontract.config import MessagingConfig, PgmqConfig, RabbitMqConfig, load_config
from mqcontract.errors import BackendUnavailable, MessagingError
from mqcontract.providers.pgmq import install_pgmq, open_pgmq
from mqcontract.providers.rabbitmq import open_rabbitmq
from mqcontract.providers.rabbitmq._management import ManagementClient
from mqcontract_conformance.provisioning import backends_required, unavailable

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
        unavailable(f"PostgreSQL unavailable: {exc}", required=backends_required()).enforce()
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
        unavailable(f"PostgreSQL unavailable: {exc}", required=backends_required()).enforce()
    _assert_hidden(json.dumps(account.to_dict()), "the stress account")
    _assert_hidden(caplog.text, "the stress run's logs")
    printed = capsys.readouterr()
    _assert_hidden(printed.out + printed.err, "the stress run's output")


#: Passwords as users type them into URLs, unencoded characters included: each makes the
#: URL ambiguous to a parser, which then echoes pieces of it in its own error text.
TYPED_PASSWORDS = [
    "Pl4in5ecretValue",
    "w1th/sl4sh/1ns1de",
    "w1th#h4sh#1ns1de",
    "w1th sp4ce 1ns1de",
    "w1th@4t@1ns1de",
    "w1th:c0l0n:1ns1de",
    "w1th?qu3ry=1ns1de",
    "p3rc3nt%2F3nc0ded",
    "ünïcødé-sécr3t9",
]


def _pieces_leaked(password: str, text: str) -> list[str]:
    """Runs of ``password`` of 4+ characters between URL delimiters found in ``text``."""
    from mqcontract._redact import _pieces

    return sorted(p for p in _pieces(password) if p in text)


@pytest.mark.parametrize("password", TYPED_PASSWORDS)
def test_the_url_pattern_hides_any_typed_password(password: str) -> None:
    for url in (
        f"postgresql://user:{password}@db.example:5432/app",
        f"amqp://user:{password}@broker:5672/%2F",
        f"redis://:{password}@cache:6379/0",
        f"amqp://user:{password}@broker",  # a bare host: no port, no path
    ):
        shown = redact(f"cannot reach {url} (refused)")
        assert password not in shown, shown
        assert shown.endswith("(refused)"), shown  # the text after the URL survives
        for quoted in (f"dsn='{url}'", f'url="{url}"', url, f"{url}, retrying"):
            assert password not in redact(quoted), redact(quoted)


@pytest.mark.parametrize("password", TYPED_PASSWORDS)
async def test_a_driver_that_rejects_the_url_never_echoes_the_password(
    password: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "pgmq": lambda: open_pgmq(_pg(f"postgresql://mqc_nobody:{password}@127.0.0.1:1/test")),
        "pgmq install": lambda: install_pgmq(
            f"postgresql://mqc_nobody:{password}@127.0.0.1:1/test", within=5
        ),
        "rabbitmq": lambda: open_rabbitmq(_rabbit(f"amqp://guest:{password}@127.0.0.1:1/%2F")),
    }
    for name, call in calls.items():
        try:
            await call()
        except Exception as exc:  # the type is another rule's business; the text is ours
            text = _everything(exc)
        else:
            pytest.fail(f"{name}: expected a failure")
        assert not _pieces_leaked(password, text), f"{name}: {text[:2000]}"
    assert not _pieces_leaked(password, caplog.text)


def test_configuration_reprs_hide_typed_passwords() -> None:
    for password in TYPED_PASSWORDS:
        config = _rabbit(f"amqp://guest:{password}@broker:5672/%2F")
        assert not _pieces_leaked(password, repr(config))


def test_verify_json_and_output_never_show_a_typed_password(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    password = "pa/ss#w rd@x9"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQCONTRACT_")}
    env["RABBITMQ_URL"] = f"amqp://guest:{password}@127.0.0.1:1/%2F"
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "mqcontract_conformance.cli", "verify", "--provider", "rabbitmq",
         "--rules", "LIFE-1", "--json", str(out)],
        capture_output=True, text=True, check=False, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0  # the backend is unreachable: the gate fails
    for where, text in (("output", proc.stdout + proc.stderr), ("JSON", out.read_text())):
        assert not _pieces_leaked(password, text), f"{where}: {text[-2000:]}"


#: Strings holding several URLs, and what redaction shows of them: their passwords, and
#: nothing else, go. A URL's userinfo ends within its own authority; it once ran from a
#: URL without a password to the next one's ``@`` ("postgresql://db:***@h/").
MIXED = [
    (
        "failed postgresql://db:5432/x; then amqp://u:secret@h/",
        "failed postgresql://db:5432/x; then amqp://u:***@h/",
    ),
    (
        "postgresql://db:5432/x then amqp://u:secret@h:5672/%2F",
        "postgresql://db:5432/x then amqp://u:***@h:5672/%2F",
    ),
    (
        "PgmqConfig(database_url='postgresql://127.0.0.1:5432/test', batch_size=100),"
        " rabbitmq=RabbitMqConfig(url='amqp://guest:s3cret@127.0.0.1:5672/%2F')",
        "PgmqConfig(database_url='postgresql://127.0.0.1:5432/test', batch_size=100),"
        " rabbitmq=RabbitMqConfig(url='amqp://guest:***@127.0.0.1:5672/%2F')",
    ),
    # passwords holding '@', ':' and '/' percent-encoded
    (
        "amqp://u:p%40ss%3Aw0rd@h:5672/%2F and postgresql://v:x%2Fy%40z@db/app",
        "amqp://u:***@h:5672/%2F and postgresql://v:***@db/app",
    ),
    # several with passwords, of several schemes
    (
        "a=postgresql://a:pw1@h1/db b=amqp://b:pw2@h2/ c=http://c:pw3@h3:15672 d=redis://:pw4@h4",
        "a=postgresql://a:***@h1/db b=amqp://b:***@h2/ c=http://c:***@h3:15672 d=redis://:***@h4",
    ),
    # broker lists as RABBITMQ_URL takes them
    (
        "amqp://u:pw1@n1:5672/%2F,amqp://u:pw2@n2:5672/%2F",
        "amqp://u:***@n1:5672/%2F,amqp://u:***@n2:5672/%2F",
    ),
    (
        "amqp://u:pw1@n1:5672/%2F, amqp://u:pw2@n2:5672/%2F",
        "amqp://u:***@n1:5672/%2F, amqp://u:***@n2:5672/%2F",
    ),
    ("amqp://n1:5672/%2F,amqp://u:pw2@n2:5672/%2F", "amqp://n1:5672/%2F,amqp://u:***@n2:5672/%2F"),
    ("amqp://n1:5672,amqp://u:pw2@n2:5672", "amqp://n1:5672,amqp://u:***@n2:5672"),
    ("amqp://u:pw1@n1:5672,amqp://n2:5672", "amqp://u:***@n1:5672,amqp://n2:5672"),
    # a typed (unencoded) password beside another URL: both hidden, the rest kept
    (
        "postgresql://u:w1th/sl4sh@db:5432/app; amqp://g:pw2@h/",
        "postgresql://u:***@db:5432/app; amqp://g:***@h/",
    ),
    (
        "postgresql://u:w1th sp4ce@db:5432/app and amqp://db:5432/x",
        "postgresql://u:***@db:5432/app and amqp://db:5432/x",
    ),
    # a typed password with a ``/`` or ``#``, the URL in parentheses with a bare host
    ("connect failed (amqp://u:pw/x@rabbit)", "connect failed (amqp://u:***@rabbit)"),
    (
        "(amqp://u:p#w?x@rabbit) and (amqp://v:s3cret@h2)",
        "(amqp://u:***@rabbit) and (amqp://v:***@h2)",
    ),
    # no password, a port and a path, then an ``@`` before a ``)``: nothing to hide
    ("(http://rabbit:15672/api/queues?owner=admin@corp)", None),
    ("[a](amqp://rabbit:5672/)[b](mailto:ops@corp)", None),
    ("urls=(amqp://a:5672/v,amqp://u:p@h)", "urls=(amqp://a:5672/v,amqp://u:***@h)"),
    # no password, then an address that is no URL's
    ("postgresql://db:5432/x; mail admin@example.com", None),
    ("postgresql://db:5432/x (owner admin@example.com)", None),
    ("postgresql://db:5432/x, admin@example.com:22/", None),
]


@pytest.mark.parametrize(("text", "shown"), MIXED)
def test_a_urls_userinfo_never_runs_into_what_follows_it(text: str, shown: str | None) -> None:
    assert redact(text) == (text if shown is None else shown)


def test_a_config_repr_shows_every_field_beside_a_url_with_a_password() -> None:
    """The outside tester's case: a DSN without a password, then an AMQP URL with one."""
    config = MessagingConfig(
        pgmq=PgmqConfig(database_url="postgresql://127.0.0.1:5432/test"),
        rabbitmq=RabbitMqConfig(url=f"amqp://guest:{SECRET}@127.0.0.1:5672/%2F"),
    )
    shown = repr(config)
    assert SECRET not in shown
    assert "database_url='postgresql://127.0.0.1:5432/test'" in shown
    assert "batch_size=100" in shown
    assert "rabbitmq=RabbitMqConfig(url='amqp://guest:***@127.0.0.1:5672/%2F'" in shown


def test_remembering_the_passwords_of_several_urls_remembers_only_passwords() -> None:
    from mqcontract._redact import remember_secrets

    tag = uuid.uuid4().hex[:8]
    host, database, secret = f"dbhost{tag}", f"dbname{tag}", f"pw{tag}secret"
    remember_secrets(f"postgresql://{host}:6543/{database}; then amqp://u:{secret}@h:5672/")
    remember_secrets(f"amqp://{host}:6543/%2F,amqp://u:{secret}@{host}:5672/%2F")
    text = f"{host} port 6543 database {database}, amqp and {secret}"
    assert redact(text) == f"{host} port 6543 database {database}, amqp and ***"


#: Texts on which a pattern that scans past the next URL takes time quadratic in their
#: length (seconds at this size: 10 s for the first, 7 s for the second, once).
ADVERSARIAL = {
    "schemes back to back": "amqp://u:" * 10_000,
    "a long URL list": ",".join(f"amqp://r{i}:5672/" for i in range(5_000)),
    "unclosed userinfo": "x" + "a://b:" * 20_000 + ")",
}


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_redaction_time_grows_linearly_with_the_text(name: str) -> None:
    text = ADVERSARIAL[name]
    started = time.monotonic()
    redact(text)
    assert time.monotonic() - started < 1.0, name
