"""compose/: valid YAML, health-checked services, and an .env that points at them."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from mqcontract.config import load_config

COMPOSE = Path(__file__).parent.parent / "compose"


def published(service: dict[str, Any]) -> dict[int, int]:
    """``{container port: host port}`` from short-syntax ``ports``."""
    ports = {}
    for entry in service["ports"]:
        host, container = str(entry).rsplit(":", 1)[-2:]
        ports[int(container)] = int(host.rsplit(":", 1)[-1])
    return ports


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    pairs = {}
    for line in (COMPOSE / ".env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def test_both_services_are_pinned_and_health_checked(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "rabbitmq", "redis"}
    assert services["postgres"]["image"].startswith("ghcr.io/pgmq/pg17-pgmq:v")
    assert services["rabbitmq"]["image"].endswith("-management")
    for service in services.values():
        assert not service["image"].endswith(":latest")
        check = service["healthcheck"]
        assert check["test"][0] in {"CMD", "CMD-SHELL"}
        assert {"interval", "timeout", "retries"} <= set(check)
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"][1]
    assert "rabbitmq-diagnostics" in services["rabbitmq"]["healthcheck"]["test"]


def test_the_env_file_points_at_the_published_ports_with_the_right_credentials(
    compose: dict[str, Any], env: dict[str, str]
) -> None:
    postgres, rabbitmq = compose["services"]["postgres"], compose["services"]["rabbitmq"]
    database = urllib.parse.urlsplit(env["DATABASE_URL"])
    pg_env = postgres["environment"]
    assert database.scheme == "postgresql"
    assert (database.username, database.password) == (
        pg_env["POSTGRES_USER"],
        pg_env["POSTGRES_PASSWORD"],
    )
    assert database.path == f"/{pg_env['POSTGRES_DB']}"
    assert database.port == published(postgres)[5432]

    amqp = urllib.parse.urlsplit(env["RABBITMQ_URL"])
    rabbit_env = rabbitmq["environment"]
    assert amqp.scheme == "amqp"
    assert (amqp.username, amqp.password) == (
        rabbit_env["RABBITMQ_DEFAULT_USER"],
        rabbit_env["RABBITMQ_DEFAULT_PASS"],
    )
    assert amqp.port == published(rabbitmq)[5672]
    management = urllib.parse.urlsplit(env["RABBITMQ_MANAGEMENT_URL"])
    assert management.port == published(rabbitmq)[15672]
    redis = urllib.parse.urlsplit(env["REDIS_URL"])
    assert redis.port == published(compose["services"]["redis"])[6379]


def test_the_env_file_is_configuration_mqcontract_reads(env: dict[str, str]) -> None:
    config = load_config(environ=env, validate_backend=False)
    assert config.pgmq.database_url == env["DATABASE_URL"]
    assert config.rabbitmq.url == env["RABBITMQ_URL"]
    assert config.rabbitmq.management_url == env["RABBITMQ_MANAGEMENT_URL"]


def test_the_ci_workflow_runs_the_tox_matrix_against_its_service_containers() -> None:
    path = COMPOSE.parent / ".github" / "workflows" / "mqcontract.yml"
    workflow = yaml.safe_load(path.read_text())
    (job,) = workflow["jobs"].values()
    services, env = job["services"], job["env"]
    assert env["MQCONTRACT_REQUIRE_BACKENDS"] == "1"
    assert urllib.parse.urlsplit(env["DATABASE_URL"]).port == published(services["postgres"])[5432]
    assert urllib.parse.urlsplit(env["RABBITMQ_URL"]).port == published(services["rabbitmq"])[5672]
    management = urllib.parse.urlsplit(env["RABBITMQ_MANAGEMENT_URL"])
    assert management.port == published(services["rabbitmq"])[15672]
    assert urllib.parse.urlsplit(env["REDIS_URL"]).port == published(services["redis"])[6379]
    for service in services.values():
        assert "--health-cmd" in service["options"]
    runs = [step.get("run", "") for step in job["steps"]]
    assert "tox" in runs
    uploads = [step for step in job["steps"] if "upload-artifact" in step.get("uses", "")]
    assert "reports/compatibility.*" in uploads[0]["with"]["path"]
