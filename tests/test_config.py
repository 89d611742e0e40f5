"""Configuration: defaults from the architecture document, TOML, environment, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from mqcontract.config import ManagementEndpoint, load_config
from mqcontract.errors import ConfigurationError


def test_defaults_match_the_architecture_document() -> None:
    config = load_config(environ={})
    assert config.backend == "pgmq"
    assert config.pgmq.visibility_timeout_seconds == 60
    assert config.pgmq.max_message_size_bytes == 1_048_576
    assert config.pgmq.batch_size == 100
    assert config.rabbitmq.prefetch_count == 100
    assert config.rabbitmq.connection_timeout_seconds == 30
    assert config.rabbitmq.heartbeat_seconds == 60


def test_environment_selects_backend_and_urls() -> None:
    config = load_config(
        environ={
            "TASKER_MESSAGING_BACKEND": "rabbitmq",
            "RABBITMQ_URL": "amqp://u:p@mq:5672/%2F",
            "DATABASE_URL": "postgresql://db/x",
        }
    )
    assert config.backend == "rabbitmq"
    assert config.rabbitmq.url == "amqp://u:p@mq:5672/%2F"
    assert config.pgmq.database_url == "postgresql://db/x"


def test_toml_sections_then_environment_wins(tmp_path: Path) -> None:
    path = tmp_path / "mq.toml"
    path.write_text(
        '[messaging]\nbackend = "memory"\n'
        "[pgmq]\nvisibility_timeout_seconds = 5\nbatch_size = 7\n"
        "[rabbitmq]\nprefetch_count = 10\n"
    )
    config = load_config(path, environ={"TASKER_MESSAGING_BACKEND": "pgmq"})
    assert config.backend == "pgmq"
    assert config.pgmq.visibility_timeout_seconds == 5.0
    assert config.pgmq.batch_size == 7
    assert config.rabbitmq.prefetch_count == 10


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "mq.toml"
    path.write_text("[memory]\nmax_message_size_bytes = 64\n")
    config = load_config(environ={"MQCONTRACT_CONFIG": str(path)})
    assert config.memory.max_message_size_bytes == 64


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[pgmq]\nbatch_size = -1\n", "pgmq.batch_size"),
        ("[pgmq]\nbatch_size = 'many'\n", "pgmq.batch_size"),
        ("[pgmq]\nvisibility_timeout_seconds = 'inf'\n", "pgmq.visibility_timeout_seconds"),
        ("[pgmq]\nno_such_key = 1\n", "pgmq.no_such_key"),
        ("[nosection]\na = 1\n", "nosection"),
        ("pgmq = 3\n", "pgmq"),
        ("[pgmq]\narchive_on_ack = 'maybe'\n", "pgmq.archive_on_ack"),
        ("[messaging]\nunknown = 1\n", "messaging.unknown"),
        ("[pgmq\n", "MQCONTRACT_CONFIG"),
    ],
)
def test_malformed_configuration_is_a_clear_error(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigurationError) as info:
        load_config(path, environ={})
    assert info.value.key == key


def test_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match="memory") as info:
        load_config(environ={"TASKER_MESSAGING_BACKEND": "kafka"})
    assert info.value.key == "TASKER_MESSAGING_BACKEND"


def test_missing_config_file() -> None:
    with pytest.raises(ConfigurationError, match="not found"):
        load_config("/nonexistent/mq.toml", environ={})


def test_module_factory_backend_is_accepted() -> None:
    assert load_config(environ={"TASKER_MESSAGING_BACKEND": "pkg.mod:factory"}).backend


def test_every_provider_name_is_registered() -> None:
    from mqcontract.registry import provider_names

    assert {"memory", "pgmq", "rabbitmq", "rabbitmq-quorum"} <= provider_names()


# -- the RabbitMQ management API: derived in one place, as the README's table says ------

SECRET = "Cfg-s3cret"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, ManagementEndpoint("http://guest:guest@127.0.0.1:15672", configured=False)),
        (
            {"RABBITMQ_URL": "amqp://me:p%40ss@mq.example:5673/vh"},
            ManagementEndpoint("http://me:p%40ss@mq.example:15672", configured=False),
        ),
        ({"RABBITMQ_URL": "amqp://[::1]/"}, ManagementEndpoint("http://[::1]:15672", False)),
        (
            {"RABBITMQ_MANAGEMENT_URL": "https://admin:x@mgmt:443/rabbit"},
            ManagementEndpoint("https://admin:x@mgmt:443/rabbit", configured=True),
        ),
        ({"RABBITMQ_URL": "amqps://me:p@mq:5671/"}, None),  # no password in clear to a guess
    ],
)
def test_the_management_url_is_configured_or_derived(
    environ: dict[str, str], expected: ManagementEndpoint | None
) -> None:
    assert load_config(environ=environ).rabbitmq.management_endpoint() == expected


def test_use_management_api_false_means_no_management_api(tmp_path: Path) -> None:
    path = tmp_path / "mq.toml"
    path.write_text("[rabbitmq]\nuse_management_api = false\n")
    environ = {"RABBITMQ_MANAGEMENT_URL": "http://mgmt:15672"}
    assert load_config(path, environ=environ).rabbitmq.management_endpoint() is None


def test_a_management_url_that_is_not_http_is_rejected_without_its_password() -> None:
    environ = {"RABBITMQ_MANAGEMENT_URL": f"amqp://guest:{SECRET}@mq:5672/"}
    with pytest.raises(ConfigurationError, match="http") as info:
        load_config(environ=environ)
    assert info.value.key == "rabbitmq.management_url"
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value.value)


def test_configuration_reprs_hide_passwords() -> None:
    config = load_config(
        environ={
            "DATABASE_URL": f"postgresql://app:{SECRET}@db/x",
            "RABBITMQ_URL": f"amqp://app:{SECRET}@mq/%2F",
            "RABBITMQ_MANAGEMENT_URL": f"http://admin:{SECRET}@mq:15672",
        }
    )
    endpoint = config.rabbitmq.management_endpoint()
    for shown in (repr(config), repr(config.rabbitmq), str(config.pgmq), repr(endpoint)):
        assert SECRET not in shown
        assert "***" in shown
    assert config.rabbitmq.url == f"amqp://app:{SECRET}@mq/%2F"  # the value itself is intact


def test_a_provider_module_in_the_current_directory_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``mqcontract`` command's ``sys.path`` starts at its script's directory, so a
    provider module beside its author was "No module named" unless installed: the
    current directory is looked in too, last, and a miss says where it looked."""
    import sys

    from mqcontract.registry import load_object

    name = f"mq_here_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text("async def open_it(config):\n    return config\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert callable(load_object(f"{name}:open_it"))
    assert sys.path[-1] == str(tmp_path)  # after everything installed: it shadows nothing
    with pytest.raises(ConfigurationError, match=r"current directory, .*install it"):
        load_object("mq_nowhere_to_be_found:open_it")
    monkeypatch.delitem(sys.modules, name)


# -- a config file that cannot be read: a ConfigurationError naming it and why ------------


def _unreadable_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    directory = tmp_path / "dir.toml"
    directory.mkdir()
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b'[queues]\nnamespace_suffix = "_k\xf6"\n')
    return {
        "directory": (directory, "directory"),
        "not UTF-8": (latin1, "UTF-8"),
    }


@pytest.mark.parametrize("case", ["directory", "not UTF-8"])
@pytest.mark.parametrize("from_env", [False, True])
def test_an_unreadable_config_file_is_a_configuration_error(
    tmp_path: Path, case: str, from_env: bool
) -> None:
    path, reason = _unreadable_cases(tmp_path)[case]
    given = None if from_env else path
    environ = {"MQCONTRACT_CONFIG": str(path)} if from_env else {}
    with pytest.raises(ConfigurationError, match=reason) as info:
        load_config(given, environ=environ)
    assert info.value.key == "MQCONTRACT_CONFIG"
    assert str(path) in str(info.value)


def test_a_config_file_without_read_permission_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secret.toml"
    path.write_text('[messaging]\nbackend = "memory"\n')

    def refuse(self: Path, *args: object, **kwargs: object) -> object:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", refuse)  # root reads a mode-0 file: refuse it here
    with pytest.raises(ConfigurationError, match="Permission denied") as info:
        load_config(environ={"MQCONTRACT_CONFIG": str(path)})
    assert info.value.key == "MQCONTRACT_CONFIG"
    assert str(path) in str(info.value)


# -- numeric settings have ranges, checked at load --------------------------------------


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[rabbitmq]\nprefetch_count = 70000\n", "rabbitmq.prefetch_count"),
        ("[rabbitmq]\nprefetch_count = 0\n", "rabbitmq.prefetch_count"),
        ("[memory]\nprefetch_count = 0\n", "memory.prefetch_count"),
        ("[memory]\nprefetch_count = 70000\n", "memory.prefetch_count"),
        ("[messaging]\noperation_timeout_seconds = 0\n", "messaging.operation_timeout_seconds"),
        ("[messaging]\noperation_timeout_seconds = 1e300\n", "messaging.operation_timeout_seconds"),
        ("[messaging]\noperation_timeout_seconds = 86401\n", "messaging.operation_timeout_seconds"),
        ("[pgmq]\npush_threshold_bytes = 3000000000\n", "pgmq.push_threshold_bytes"),
        ("[pgmq]\npush_threshold_bytes = 8000\n", "pgmq.push_threshold_bytes"),
        ("[pgmq]\nbatch_size = 0\n", "pgmq.batch_size"),
        ("[pgmq]\nbatch_size = 99999999999999999999999\n", "pgmq.batch_size"),
        ("[pgmq]\nvisibility_timeout_seconds = 0\n", "pgmq.visibility_timeout_seconds"),
        ("[pgmq]\nvisibility_timeout_seconds = 1e300\n", "pgmq.visibility_timeout_seconds"),
        (
            "[pgmq]\nfallback_polling_interval_seconds = 0\n",
            "pgmq.fallback_polling_interval_seconds",
        ),
        ("[pgmq]\nmax_message_size_bytes = 0\n", "pgmq.max_message_size_bytes"),
        (
            "[pgmq]\nmax_message_size_bytes = 99999999999999999999999\n",
            "pgmq.max_message_size_bytes",
        ),
        ("[pgmq]\npool_max_size = 0\n", "pgmq.pool_max_size"),
        ("[pgmq]\npool_min_size = 50\npool_max_size = 2\n", "pgmq.pool_min_size"),
        ("[rabbitmq]\nconnection_timeout_seconds = 0\n", "rabbitmq.connection_timeout_seconds"),
        ("[rabbitmq]\nconnection_timeout_seconds = 1e300\n", "rabbitmq.connection_timeout_seconds"),
        ("[rabbitmq]\nheartbeat_seconds = 0\n", "rabbitmq.heartbeat_seconds"),
        ("[rabbitmq]\nheartbeat_seconds = 70000\n", "rabbitmq.heartbeat_seconds"),
        ("[rabbitmq]\nmax_message_size_bytes = 0\n", "rabbitmq.max_message_size_bytes"),
        ("[rabbitmq]\nmax_message_size_bytes = 1073741824\n", "rabbitmq.max_message_size_bytes"),
        (
            "[rabbitmq]\npush_visibility_timeout_seconds = 0\n",
            "rabbitmq.push_visibility_timeout_seconds",
        ),
        (
            "[memory]\npush_visibility_timeout_seconds = 1e300\n",
            "memory.push_visibility_timeout_seconds",
        ),
        ("[memory]\nmax_message_size_bytes = 0\n", "memory.max_message_size_bytes"),
    ],
)
def test_a_numeric_setting_out_of_its_range_is_rejected_at_load(
    tmp_path: Path, toml: str, key: str
) -> None:
    path = tmp_path / "range.toml"
    path.write_text(toml)
    with pytest.raises(ConfigurationError, match="must be") as info:
        load_config(path, environ={})
    assert info.value.key == key
    assert key in str(info.value)


@pytest.mark.parametrize(
    "toml",
    [
        "[rabbitmq]\nprefetch_count = 1\nheartbeat_seconds = 65535\n",
        "[rabbitmq]\nprefetch_count = 65535\n",
        "[memory]\nprefetch_count = 1\n",
        "[messaging]\noperation_timeout_seconds = 86400\n",
        "[messaging]\noperation_timeout_seconds = 0.001\n",
        "[pgmq]\npush_threshold_bytes = 0\n",  # never inline: always a signal
        "[pgmq]\npush_threshold_bytes = 7999\n",
        "[pgmq]\npool_min_size = 0\npool_max_size = 1\n",
        "[pgmq]\npool_min_size = 10\npool_max_size = 10\n",
    ],
)
def test_the_edges_of_each_range_load(tmp_path: Path, toml: str) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(toml)
    load_config(path, environ={})


def test_ranges_apply_to_string_values_too(tmp_path: Path) -> None:
    """Strings (as environment variables give) are parsed, then checked."""
    path = tmp_path / "env.toml"
    path.write_text("[messaging]\noperation_timeout_seconds = '0'\n")
    with pytest.raises(ConfigurationError, match="must be") as info:
        load_config(path, environ={})
    assert info.value.key == "messaging.operation_timeout_seconds"


def test_the_push_threshold_range_is_the_notify_payload_cap() -> None:
    from mqcontract.config import PGMQ_MAX_PUSH_THRESHOLD_BYTES
    from mqcontract.providers.pgmq._sql import MAX_NOTIFY_BYTES

    assert PGMQ_MAX_PUSH_THRESHOLD_BYTES == MAX_NOTIFY_BYTES


def test_the_defaults_are_inside_every_range() -> None:
    load_config(environ={})


# -- DATABASE_URL is checked at load like RABBITMQ_URL, password hidden --------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"postgresql://app:{SECRET}@db:abc/x", "port"),
        (f"postgresql://app:{SECRET}@db:99999/x", "port"),
        (f"postgresql://app:{SECRET}@db:0/x", "port"),
        (f"postgresql://app:{SECRET}@:5432/x", "host"),
        (f"postgresql://app:{SECRET}@db1:5432,/x", "host"),
        (f"mysql://app:{SECRET}@db/x", "postgresql://"),
        (f"postgresql://app:{SECRET}@[::1/x", "URL"),
        (f"postgresql://app:{SECRET}/Cfg-p4rt@db/x", "port is not"),  # raw '/': not quoted
        ("postgresql://db:" + "9" * 5000 + "/x", "port is not"),
    ],
)
def test_a_malformed_database_url_is_a_configuration_error_at_load(url: str, reason: str) -> None:
    environ = {"DATABASE_URL": url, "TASKER_MESSAGING_BACKEND": "pgmq"}
    with pytest.raises(ConfigurationError, match=reason) as info:
        load_config(environ=environ)
    assert info.value.key == "pgmq.database_url"
    for secret in (SECRET, "Cfg-p4rt"):
        assert secret not in str(info.value)
        assert secret not in repr(info.value.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://db/x",
        "postgres://u:p@db:5433/x?sslmode=disable",
        "postgresql:///x",  # libpq's local default (PGHOST, else the socket)
        "postgresql:///x?host=/var/run/postgresql",
        "postgresql://u@[::1]:5432/x",
        "postgresql://h1:5432,h2:5433/x",  # several hosts, as libpq and asyncpg allow
    ],
)
def test_a_well_formed_database_url_loads(url: str) -> None:
    config = load_config(environ={"DATABASE_URL": url, "TASKER_MESSAGING_BACKEND": "pgmq"})
    assert config.pgmq.database_url == url


def test_a_bad_database_url_does_not_stop_another_backend_from_loading() -> None:
    environ = {"DATABASE_URL": "postgresql://db:abc/x", "TASKER_MESSAGING_BACKEND": "memory"}
    assert load_config(environ=environ).backend == "memory"
