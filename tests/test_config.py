"""Configuration: defaults from the architecture document, TOML, environment, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from mqcontract.config import load_config
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
