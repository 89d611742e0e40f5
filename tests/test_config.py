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
