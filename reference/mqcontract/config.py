"""Configuration from the environment and TOML, read in this one module.

Precedence, lowest to highest: built-in defaults → TOML file (``MQCONTRACT_CONFIG`` or
an explicit path) → environment variables. Sections and keys follow the architecture
document (``[pgmq]``, ``[rabbitmq]``) plus ``[messaging]``, ``[memory]`` and ``[queues]``.
Unknown keys, malformed values and unknown backends raise ``ConfigurationError``.

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
    "ManagementEndpoint",
    "MemoryConfig",
    "MessagingConfig",
    "PgmqConfig",
    "QueueNamingConfig",
    "RabbitMqConfig",
    "check_amqp_urls",
    "check_management_url",
    "derived_management_url",
    "load_config",
    "provider_settings",
    "split_url_list",
]

DEFAULT_DATABASE_URL = "postgresql://127.0.0.1:5432/test"
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
#: Port of the management API derived from an AMQP URL (the plugin's default).
DEFAULT_MANAGEMENT_PORT = 15672


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

    database_url: str = DEFAULT_DATABASE_URL
    visibility_timeout_seconds: float = 60.0
    max_message_size_bytes: int = 1_048_576
    batch_size: int = 100
    #: NOTIFY carries the message when its whole JSON payload is at most this many bytes.
    push_threshold_bytes: int = 7000
    fallback_polling_interval_seconds: float = 5.0
    #: Ack archives into ``pgmq.a_<queue>`` instead of deleting.
    archive_on_ack: bool = False
    pool_min_size: int = 1
    pool_max_size: int = 10


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
    prefetch_count: int = 100
    connection_timeout_seconds: float = 30.0
    #: The longest heartbeat asked for; the provider asks for at most a third of
    #: ``push_visibility_timeout_seconds`` (never below 5 s): the broker drops a frozen
    #: holder's connection, and requeues its claims, after three silent heartbeats.
    heartbeat_seconds: int = 60
    max_message_size_bytes: int = 1_048_576
    #: Visibility timeout applied to pushed (consumed) messages.
    push_visibility_timeout_seconds: float = 60.0

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

    max_message_size_bytes: int = 1_048_576
    push_visibility_timeout_seconds: float = 60.0
    #: As ``[rabbitmq] prefetch_count``: claimed pushes a subscription holds at once.
    prefetch_count: int = 100


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
    operation_timeout_seconds: float = 30.0
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


def _coerce(key: str, value: object, default: object, annotation: str) -> object:
    """Check ``value`` against the field's type; strings from the environment are parsed."""
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
            return number
        if base == "float":
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError("expected a number")
            seconds = float(value)
            if not seconds >= 0 or seconds == float("inf"):
                raise ValueError("must be a finite, non-negative number")
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
        kwargs[key] = _coerce(f"{section}.{key}", value, f.default, annotation)
    return cls(**kwargs)


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
    ``X | None``) with defaults. Precedence: those defaults, then ``[providers.NAME]`` from
    the TOML file, then the environment variables named in ``env_keys`` (variable ->
    field). Unknown keys and malformed values raise ``ConfigurationError``.
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
    messaging_fields = {"backend": "str", "operation_timeout_seconds": "float"}
    kwargs: dict[str, Any] = {}
    for key, value in top.items():
        if key not in messaging_fields:
            raise ConfigurationError(f"messaging.{key}", value, "unknown key")
        kwargs[key] = _coerce(f"messaging.{key}", value, None, messaging_fields[key])
    config = MessagingConfig(**kwargs, **built, providers=providers)
    if config.rabbitmq.management_url:
        check_management_url(config.rabbitmq.management_url)
    if validate_backend:
        names = provider_names()
        if config.backend not in names and ":" not in config.backend:
            raise ConfigurationError(
                "TASKER_MESSAGING_BACKEND",
                config.backend,
                f"unknown provider (known: {', '.join(sorted(names))}, or module:factory)",
            )
    return config
