"""Configuration from the environment and TOML, read in this one module.

Precedence, lowest to highest: built-in defaults → TOML file (``MQCONTRACT_CONFIG`` or
an explicit path) → environment variables. Sections and keys follow the architecture
document (``[pgmq]``, ``[rabbitmq]``) plus ``[messaging]``, ``[memory]`` and ``[queues]``.
Unknown keys, malformed values, numbers out of their range, a config file that cannot be
read and unknown backends raise ``ConfigurationError``, when the configuration is loaded.

Numeric ranges (checked by :func:`load_config` and :func:`provider_settings`, not when a
dataclass is built in code): every ``*_seconds`` timeout and interval is finite, above 0
and at most a day (86400); ``prefetch_count`` is 1..65535 (AMQP's unsigned short; 0 would
mean "nothing" on one provider and "unlimited" on another); ``heartbeat_seconds`` 1..65535;
``batch_size`` 1..2147483647 (PGMQ reads a PostgreSQL ``integer``); ``push_threshold_bytes``
0..7999 (a NOTIFY payload must stay under 8000 bytes; 0: never inline);
``max_message_size_bytes`` from 1 to 268435455 on PGMQ (a ``jsonb`` value's limit) and
536870912 (RabbitMQ's 512 MiB) on RabbitMQ and memory; ``pool_max_size`` 1..262143
(PostgreSQL's ``max_connections`` limit) and ``pool_min_size`` 0..``pool_max_size``.
Each field's range is its ``metadata["range"]``; a provider outside this package may give
its own fields one too.

When the selected backend is ``pgmq`` its ``database_url`` is checked at load
(:func:`check_postgres_url`), and for ``rabbitmq``/``rabbitmq-quorum`` the broker URLs
(:func:`check_amqp_urls`); another backend's URL is not, so it cannot stop this one.

Environment variables: ``TASKER_MESSAGING_BACKEND`` (provider name; default ``pgmq``),
``DATABASE_URL``, ``RABBITMQ_URL``, ``RABBITMQ_MANAGEMENT_URL``, ``MQCONTRACT_CONFIG``.

The RabbitMQ management API (``list_queues`` needs it) is found here and nowhere else:
``management_url`` when set (used as given), else derived from an ``amqp://`` URL (same
host and credentials, ``http``, port 15672) and used only when it answers; none for
``amqps://`` (credentials never go in clear to a port nobody named) or with
``use_management_api = false``. See :meth:`RabbitMqConfig.management_endpoint`.
Reprs of these classes show URLs with their passwords as ``***``.

``[rabbitmq] url`` may list several brokers (the nodes of a cluster), separated by commas:
the provider connects to the first that answers and, when a connection is lost, moves on
to the next. :meth:`RabbitMqConfig.urls` splits and checks the list; the management URL
is derived from the first.

Providers outside this package keep their settings in ``[providers.NAME]`` tables of the
same file: ``load_config`` keeps them as given, and the provider reads its own with
:func:`provider_settings`, which checks them exactly like the built-in sections.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import unquote, urlsplit

from mqcontract._entry_points import provider_names
from mqcontract._redact import redact, remember_secrets
from mqcontract.errors import ConfigurationError

T = TypeVar("T")

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DEFAULT_MANAGEMENT_PORT",
    "DEFAULT_RABBITMQ_URL",
    "PGMQ_MAX_PUSH_THRESHOLD_BYTES",
    "ManagementEndpoint",
    "MemoryConfig",
    "MessagingConfig",
    "PgmqConfig",
    "QueueNamingConfig",
    "RabbitMqConfig",
    "check_amqp_urls",
    "check_management_url",
    "check_postgres_url",
    "derived_management_url",
    "load_config",
    "provider_settings",
    "split_url_list",
]

DEFAULT_DATABASE_URL = "postgresql://127.0.0.1:5432/test"
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
#: Port of the management API derived from an AMQP URL (the plugin's default).
DEFAULT_MANAGEMENT_PORT = 15672
#: The largest ``push_threshold_bytes``: a NOTIFY payload must stay under 8000 bytes (the
#: PGMQ provider's notify function clamps to the same ``MAX_NOTIFY_BYTES``).
PGMQ_MAX_PUSH_THRESHOLD_BYTES = 7999
#: The longest timeout or interval a setting may name: one day.
MAX_SECONDS = 86_400.0
_AMQP_SHORT = 65_535
_MIB = 1_048_576


@dataclass(frozen=True)
class _Range:
    """The values a numeric setting may take: ``low`` (excluded when ``low_open``)..``high``."""

    low: float
    high: float
    low_open: bool = False

    def check(self, number: float) -> None:
        below = number <= self.low if self.low_open else number < self.low
        if below or not number <= self.high:  # NaN fails both
            low = f"above {_number(self.low)}" if self.low_open else f"at least {_number(self.low)}"
            raise ValueError(f"must be {low} and at most {_number(self.high)}")


def _number(value: float) -> str:
    """``value`` as a person writes it: ``86400``, not ``86400.0`` or ``2.14748e+09``."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _ranged(default: T, low: float, high: float, *, low_open: bool = False) -> T:
    """A dataclass field with ``default`` whose loaded values must lie in the range."""
    return field(default=default, metadata={"range": _Range(low, high, low_open)})


def _seconds(default: float) -> float:
    """A timeout or interval: finite, above 0, at most :data:`MAX_SECONDS`."""
    return _ranged(default, 0.0, MAX_SECONDS, low_open=True)


def _prefetch(default: int) -> int:
    """A prefetch count: 1..65535 (0 is rejected: "nothing" here, "unlimited" in AMQP)."""
    return _ranged(default, 1, _AMQP_SHORT)


#: A comma that starts another URL: one followed by a scheme, so that a single URL whose
#: password holds a raw comma stays one URL.
_URL_LIST_COMMA = re.compile(r"\s*,\s*(?=[a-zA-Z][a-zA-Z0-9+.-]*://)")
_AMQP_SCHEMES = frozenset({"amqp", "amqps"})


def split_url_list(text: str) -> list[str]:
    """The URLs of a comma-separated list, stripped (one item for a single URL)."""
    return [part.strip() for part in _URL_LIST_COMMA.split(text)]


def _remember_secrets(text: str | None) -> None:
    """:func:`remember_secrets` URL by URL: a list read as one URL would make every piece
    after its first ``user:`` a "password", and redaction would then hide hosts and ports."""
    for part in split_url_list(text or ""):
        remember_secrets(part)


def _vhost(url: str) -> str:
    """The virtual host ``url`` names (as the provider's ``vhost_of``; no import cycle)."""
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def check_amqp_urls(value: str, key: str = "rabbitmq.url") -> tuple[str, ...]:
    """The AMQP URLs in ``value`` (comma-separated), or ``ConfigurationError`` naming ``key``.

    Each must parse and be ``amqp://`` or ``amqps://``; all must name the same virtual
    host, since queues (and the id lease) live in one.
    """
    urls = split_url_list(value)
    for index, url in enumerate(urls, 1):
        where = f"URL {index} of {len(urls)}: " if len(urls) > 1 else ""
        if not url or url.endswith(","):
            raise ConfigurationError(key, redact(value), f"{where}empty entry in the URL list")
        try:
            parts = urlsplit(url)
            _ = parts.hostname, parts.port  # a malformed host or port raises ValueError
        except ValueError as exc:
            raise ConfigurationError(key, redact(url), f"{where}{exc}") from None
        if parts.scheme not in _AMQP_SCHEMES:
            reason = "expected an amqp:// or amqps:// URL"
            raise ConfigurationError(key, redact(url), f"{where}{reason}")
    vhosts = {_vhost(url) for url in urls}
    if len(vhosts) > 1:
        shown = ", ".join(sorted(vhosts))
        reason = f"every URL must name the same virtual host (found {shown})"
        raise ConfigurationError(key, redact(value), reason)
    return tuple(urls)


_POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})
#: One host of a PostgreSQL URL's (comma-separated) host list: ``host``, ``[v6]``, with
#: an optional ``:port``.
_PG_HOST = re.compile(r"(?:\[(?P<v6>[^\]]*)\]|(?P<host>[^:\[\]]*))(?::(?P<port>.*))?")


def check_postgres_url(value: str, key: str = "pgmq.database_url") -> str:
    """``value`` if it is a well-formed PostgreSQL URL, else ``ConfigurationError`` naming
    ``key`` (password redacted).

    The scheme is ``postgresql://`` or ``postgres://``; each host of its host list (libpq
    allows several, comma-separated) is non-empty, with a port, when given, an integer
    1..65535. A URL naming no host at all (``postgresql:///db``) is libpq's local default
    (``PGHOST``, else the Unix socket) and is accepted.
    """
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        raise ConfigurationError(key, redact(value), f"malformed URL: {exc}") from None
    if parts.scheme not in _POSTGRES_SCHEMES:
        reason = "expected a postgresql:// or postgres:// URL"
        raise ConfigurationError(key, redact(value), reason)
    hosts = parts.netloc.rpartition("@")[2]
    if not hosts:
        return value
    entries = hosts.split(",")
    for index, entry in enumerate(entries, 1):
        where = f"host {index} of {len(entries)}: " if len(entries) > 1 else ""
        match = _PG_HOST.fullmatch(entry)
        if match is None:
            raise ConfigurationError(key, redact(value), f"{where}malformed host")
        if not (match["v6"] or match["host"]):
            raise ConfigurationError(key, redact(value), f"{where}empty host")
        port = match["port"]
        if port is None:
            continue
        # The port's text is quoted only when it is digits: in a URL whose password holds
        # a raw '/' or '#', what parses as the port is a piece of the password.
        digits = port.isascii() and port.isdigit()
        if not digits or len(port) > 5 or not 1 <= int(port) <= 65535:
            shown = f" {port}" if digits and len(port) <= 20 else ""
            reason = f"{where}port{shown} is not an integer 1..65535"
            raise ConfigurationError(key, redact(value), reason)
    return value


class _RedactedRepr:
    """A dataclass repr with URL passwords as ``***``: configurations reach logs and errors.

    Every string field is also handed to :func:`remember_secrets`, so a password in a
    configured URL is hidden wherever it later appears, even in a driver's own words.
    """

    def __post_init__(self) -> None:
        for f in dataclasses.fields(cast(Any, self)):
            value = getattr(self, f.name)
            if isinstance(value, str):
                _remember_secrets(value)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(cast(Any, self))
            if f.repr
        )
        return redact(f"{type(self).__name__}({shown})")


def check_management_url(url: object, key: str = "rabbitmq.management_url") -> str:
    """``url`` if it is an ``http(s)://`` URL with a host, else ``ConfigurationError``."""
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
        valid = parts is not None and parts.scheme in {"http", "https"} and bool(parts.hostname)
        if parts is not None and valid:
            _ = parts.port  # a malformed port raises ValueError
    except ValueError:
        valid = False
    if not valid:
        shown = redact(url) if isinstance(url, str) else url
        raise ConfigurationError(key, shown, "expected an http:// or https:// URL with a host")
    return cast(str, url)


def derived_management_url(amqp_url: str) -> str | None:
    """``http://user:pass@host:15672`` for an ``amqp://`` URL; ``None`` for any other."""
    try:
        parts = urlsplit(amqp_url)
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme != "amqp" or not host:
        return None
    userinfo = parts.netloc.rpartition("@")[0]
    at = f"{userinfo}@" if userinfo else ""
    bracketed = f"[{host}]" if ":" in host else host
    return f"http://{at}{bracketed}:{DEFAULT_MANAGEMENT_PORT}"


@dataclass(frozen=True)
class ManagementEndpoint:
    """Where the management API should be, and whether configuration named it.

    ``configured``: used as given (a failure is an error); else derived, used only when a
    probe answers.
    """

    url: str
    configured: bool

    def __repr__(self) -> str:
        return f"ManagementEndpoint(url={redact(self.url)!r}, configured={self.configured})"


@dataclass(frozen=True, kw_only=True, repr=False)
class PgmqConfig(_RedactedRepr):
    """``[pgmq]``: PGMQ on PostgreSQL."""

    #: Checked (:func:`check_postgres_url`) at load when ``pgmq`` is the backend.
    database_url: str = DEFAULT_DATABASE_URL
    visibility_timeout_seconds: float = _seconds(60.0)
    #: 1..268435455 (the largest ``jsonb`` value).
    max_message_size_bytes: int = _ranged(_MIB, 1, 268_435_455)
    #: 1..2147483647 (a PostgreSQL ``integer``).
    batch_size: int = _ranged(100, 1, 2_147_483_647)
    #: NOTIFY carries the message when its whole JSON payload is at most this many bytes:
    #: 0..7999 (a NOTIFY payload must stay under 8000 bytes; 0: never, always a signal).
    push_threshold_bytes: int = _ranged(7000, 0, PGMQ_MAX_PUSH_THRESHOLD_BYTES)
    fallback_polling_interval_seconds: float = _seconds(5.0)
    #: Ack archives into ``pgmq.a_<queue>`` instead of deleting.
    archive_on_ack: bool = False
    #: 0..``pool_max_size`` (0: connections are opened when first needed).
    pool_min_size: int = _ranged(1, 0, 262_143)
    #: 1..262143 (PostgreSQL's largest ``max_connections``).
    pool_max_size: int = _ranged(10, 1, 262_143)


@dataclass(frozen=True, kw_only=True, repr=False)
class RabbitMqConfig(_RedactedRepr):
    """``[rabbitmq]``: RabbitMQ over AMQP 0-9-1."""

    #: One broker URL, or several separated by commas (see :attr:`urls`).
    url: str = DEFAULT_RABBITMQ_URL
    #: The management API (``list_queues``); unset: see :meth:`management_endpoint`.
    management_url: str | None = None
    #: ``False``: never use the management API (``list_queues`` is not claimed).
    use_management_api: bool = True
    #: Claimed deliveries a subscription may hold unsettled; their visibility timeout
    #: runs while they wait, so about the number of workers behind it is right.
    #: 1..65535 (AMQP's unsigned short); 0, AMQP's "unlimited", is rejected.
    prefetch_count: int = _prefetch(100)
    connection_timeout_seconds: float = _seconds(30.0)
    #: The longest heartbeat asked for; the provider asks for at most a third of
    #: ``push_visibility_timeout_seconds`` (never below 5 s): the broker drops a frozen
    #: holder's connection, and requeues its claims, after three silent heartbeats.
    #: 1..65535 (AMQP's unsigned short; 0, "no heartbeat", is rejected).
    heartbeat_seconds: int = _ranged(60, 1, _AMQP_SHORT)
    #: 1..536870912 (RabbitMQ's largest message, 512 MiB).
    max_message_size_bytes: int = _ranged(_MIB, 1, 512 * _MIB)
    #: Visibility timeout applied to pushed (consumed) messages.
    push_visibility_timeout_seconds: float = _seconds(60.0)

    @property
    def urls(self) -> tuple[str, ...]:
        """The broker URLs of ``url``, in the order to try them (one for a single URL).

        ``ConfigurationError`` naming ``rabbitmq.url`` for a malformed one; checked when
        used, so a bad ``RABBITMQ_URL`` does not stop other providers from loading.
        """
        return check_amqp_urls(self.url)

    def management_endpoint(self) -> ManagementEndpoint | None:
        """The management API to use: configured, derived from the first URL, or none."""
        if not self.use_management_api:
            return None
        if self.management_url:
            return ManagementEndpoint(check_management_url(self.management_url), configured=True)
        derived = derived_management_url(split_url_list(self.url)[0])
        return ManagementEndpoint(derived, configured=False) if derived else None


@dataclass(frozen=True, kw_only=True, repr=False)
class MemoryConfig(_RedactedRepr):
    """``[memory]``: the in-process provider."""

    #: 1..536870912 (as RabbitMQ's).
    max_message_size_bytes: int = _ranged(_MIB, 1, 512 * _MIB)
    push_visibility_timeout_seconds: float = _seconds(60.0)
    #: As ``[rabbitmq] prefetch_count``: claimed pushes a subscription holds at once,
    #: 1..65535 (0, which would push nothing, is rejected).
    prefetch_count: int = _prefetch(100)


@dataclass(frozen=True, kw_only=True, repr=False)
class QueueNamingConfig(_RedactedRepr):
    """``[queues]``: how the queue classifier names queues."""

    namespace_suffix: str = "_queue"
    orchestration_prefix: str = "orchestration"
    step_results: str = "orchestration_step_results"
    task_requests: str = "orchestration_task_requests"
    task_finalizations: str = "orchestration_task_finalizations"


@dataclass(frozen=True, kw_only=True, repr=False)
class MessagingConfig(_RedactedRepr):
    """Everything a provider, the client and the event system need."""

    backend: str = "pgmq"
    operation_timeout_seconds: float = _seconds(30.0)
    pgmq: PgmqConfig = field(default_factory=PgmqConfig)
    rabbitmq: RabbitMqConfig = field(default_factory=RabbitMqConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    queues: QueueNamingConfig = field(default_factory=QueueNamingConfig)
    #: ``[providers.NAME]`` tables, unchecked here: see :func:`provider_settings`.
    providers: Mapping[str, Mapping[str, object]] = field(default_factory=dict)

    def with_backend(self, backend: str) -> MessagingConfig:
        """A copy selecting another provider."""
        return dataclasses.replace(self, backend=backend)


_SECTIONS: dict[str, type[Any]] = {
    "pgmq": PgmqConfig,
    "rabbitmq": RabbitMqConfig,
    "memory": MemoryConfig,
    "queues": QueueNamingConfig,
}
_ENV_KEYS: dict[str, tuple[str, str]] = {
    "DATABASE_URL": ("pgmq", "database_url"),
    "RABBITMQ_URL": ("rabbitmq", "url"),
    "RABBITMQ_MANAGEMENT_URL": ("rabbitmq", "management_url"),
}


def _coerce(
    key: str, value: object, default: object, annotation: str, bounds: _Range | None = None
) -> object:
    """Check ``value`` against the field's type and ``bounds``; strings (from the
    environment) are parsed."""
    wants_optional = "None" in annotation
    if value is None and wants_optional:
        return None
    base = annotation.replace("| None", "").strip()
    try:
        if base == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in {"1", "true", "yes", "0", "false", "no"}:
                return value.lower() in {"1", "true", "yes"}
            raise ValueError("expected a boolean")
        if base == "int":
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise ValueError("expected an integer")
            number = int(value)
            if number < 0:
                raise ValueError("must not be negative")
            if bounds is not None:
                bounds.check(number)
            return number
        if base == "float":
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError("expected a number")
            seconds = float(value)
            if not seconds >= 0 or seconds == float("inf"):
                raise ValueError("must be a finite, non-negative number")
            if bounds is not None:
                bounds.check(seconds)
            return seconds
        if base == "str":
            if not isinstance(value, str) or not value:
                raise ValueError("expected a non-empty string")
            return value
    except ValueError as exc:
        raise ConfigurationError(key, value, str(exc)) from None
    raise ConfigurationError(key, value, f"unsupported type {annotation}")  # pragma: no cover


def _build(section: str, cls: type[Any], values: Mapping[str, object]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, object] = {}
    for key, value in values.items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigurationError(f"{section}.{key}", value, f"unknown key (known: {known})")
        f = fields[key]
        annotation = f.type.__name__ if isinstance(f.type, type) else str(f.type)
        bounds = f.metadata.get("range")
        kwargs[key] = _coerce(f"{section}.{key}", value, f.default, annotation, bounds)
    built = cls(**kwargs)
    if cls is PgmqConfig and built.pool_min_size > built.pool_max_size:
        reason = f"must be at most pool_max_size ({built.pool_max_size})"
        raise ConfigurationError(f"{section}.pool_min_size", built.pool_min_size, reason)
    return built


def provider_settings(
    config: MessagingConfig,
    name: str,
    cls: type[T],
    *,
    env_keys: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> T:
    """Settings of a provider outside this package, checked like the built-in sections.

    ``cls`` is a dataclass whose fields are ``bool``, ``int``, ``float`` or ``str`` (or
    ``X | None``) with defaults (a numeric field may bound its values with
    ``metadata={"range": ...}``, as the built-in sections do). Precedence: those defaults,
    then ``[providers.NAME]`` from the TOML file, then the environment variables named in
    ``env_keys`` (variable -> field). Unknown keys and malformed values raise
    ``ConfigurationError``.
    """
    values: dict[str, object] = dict(config.providers.get(name, {}))
    env = os.environ if environ is None else environ
    for variable, field_name in (env_keys or {}).items():
        if env.get(variable):
            values[field_name] = env[variable]
    for value in values.values():
        if isinstance(value, str):
            _remember_secrets(value)
    return cast(T, _build(f"providers.{name}", cls, values))


def _remember_strings(value: object) -> None:
    if isinstance(value, str):
        _remember_secrets(value)
    elif isinstance(value, dict):
        for item in value.values():
            _remember_strings(item)
    elif isinstance(value, list):
        for item in value:
            _remember_strings(item)


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    validate_backend: bool = True,
) -> MessagingConfig:
    """Load configuration: defaults, then TOML (``path`` or ``MQCONTRACT_CONFIG``), then env."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    toml_path = path if path is not None else env.get("MQCONTRACT_CONFIG")
    if toml_path:
        try:
            with Path(toml_path).open("rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigurationError(
                "MQCONTRACT_CONFIG", str(toml_path), "file not found"
            ) from None
        except IsADirectoryError:
            raise ConfigurationError(
                "MQCONTRACT_CONFIG", str(toml_path), "is a directory, not a TOML file"
            ) from None
        except OSError as exc:  # permission denied, an I/O error, ...
            reason = f"cannot be read: {exc.strerror or exc}"
            raise ConfigurationError("MQCONTRACT_CONFIG", str(toml_path), reason) from None
        except UnicodeDecodeError as exc:
            reason = f"not UTF-8 (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
            raise ConfigurationError("MQCONTRACT_CONFIG", str(toml_path), reason) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError("MQCONTRACT_CONFIG", str(toml_path), str(exc)) from None

    _remember_strings(data)  # before any check can quote a value back
    for env_key in _ENV_KEYS:
        _remember_secrets(env.get(env_key))
    sections: dict[str, dict[str, object]] = {name: {} for name in _SECTIONS}
    top: dict[str, object] = {}
    providers: dict[str, dict[str, object]] = {}
    for key, value in data.items():
        if key == "providers":
            if not isinstance(value, dict):
                raise ConfigurationError(key, value, "expected a table of [providers.NAME] tables")
            for name, table in value.items():
                if not isinstance(table, dict):
                    raise ConfigurationError(f"providers.{name}", table, "expected a table")
                providers[name] = dict(table)
        elif key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigurationError(key, value, "expected a table")
            sections[key].update(value)
        elif key == "messaging":
            if not isinstance(value, dict):
                raise ConfigurationError(key, value, "expected a table")
            top.update(value)
        else:
            raise ConfigurationError(key, value, "unknown section")
    for env_key, (section, field_name) in _ENV_KEYS.items():
        if env.get(env_key):
            sections[section][field_name] = env[env_key]
    if env.get("TASKER_MESSAGING_BACKEND"):
        top["backend"] = env["TASKER_MESSAGING_BACKEND"]

    built = {name: _build(name, cls, sections[name]) for name, cls in _SECTIONS.items()}
    messaging_fields = {
        f.name: f for f in dataclasses.fields(MessagingConfig) if f.name not in _SECTIONS
    }
    messaging_fields.pop("providers")
    kwargs: dict[str, Any] = {}
    for key, value in top.items():
        if key not in messaging_fields:
            raise ConfigurationError(f"messaging.{key}", value, "unknown key")
        f = messaging_fields[key]
        bounds = f.metadata.get("range")
        kwargs[key] = _coerce(f"messaging.{key}", value, None, str(f.type), bounds)
    config = MessagingConfig(**kwargs, **built, providers=providers)
    if config.rabbitmq.management_url:
        check_management_url(config.rabbitmq.management_url)
    if config.backend == "pgmq":
        check_postgres_url(config.pgmq.database_url)
    elif config.backend in {"rabbitmq", "rabbitmq-quorum"}:
        check_amqp_urls(config.rabbitmq.url)
    if validate_backend:
        names = provider_names()
        if config.backend not in names and ":" not in config.backend:
            raise ConfigurationError(
                "TASKER_MESSAGING_BACKEND",
                config.backend,
                f"unknown provider (known: {', '.join(sorted(names))}, or module:factory)",
            )
    return config
